#define _GNU_SOURCE
#include <sys/types.h>
#include <sys/socket.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include "CDatagram.h"

#define BATCH_MAX 64

int mtasts_recv_batch(int fd, unsigned char *region, size_t stride, size_t slot, unsigned count, int wait_for_one,
                      unsigned *lengths) {
    struct mmsghdr msgs[BATCH_MAX];
    struct iovec iov[BATCH_MAX];
    if (count > BATCH_MAX) count = BATCH_MAX;
    memset(msgs, 0, sizeof(struct mmsghdr) * count);
    for (unsigned k = 0; k < count; k++) {
        iov[k].iov_base = region + (size_t)k * stride;
        iov[k].iov_len = slot;
        msgs[k].msg_hdr.msg_iov = &iov[k];
        msgs[k].msg_hdr.msg_iovlen = 1;
    }
    int n = recvmmsg(fd, msgs, count, wait_for_one ? MSG_WAITFORONE : MSG_DONTWAIT, NULL);
    for (int k = 0; k < n; k++) lengths[k] = msgs[k].msg_len;
    return n;
}

int mtasts_nice_this_thread(int increment) {
    return setpriority(PRIO_PROCESS, (id_t)gettid(), increment);
}
