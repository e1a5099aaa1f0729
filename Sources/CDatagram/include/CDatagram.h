#ifndef MTASTS_CDATAGRAM_H
#define MTASTS_CDATAGRAM_H
#include <stddef.h>

/* recvmmsg(2) for the collector (glibc declares it only under _GNU_SOURCE, set in the .c file
   alone so that no other module sees its definitions). The datagrams land in up to `count`
   (at most 64) consecutive slots of `slot` bytes from `region`; their lengths go to `lengths`.
   `wait_for_one`: block until the first datagram (MSG_WAITFORONE), else do not wait at all.
   Returns the number taken, or -1 with errno. */
int mtasts_recv_batch(int fd, unsigned char *region, size_t stride, size_t slot, unsigned count, int wait_for_one,
                      unsigned *lengths);

/* Lowers the calling thread's scheduling weight (nice `increment`; threads have their own on
   Linux): 0 on success, else -1 with errno. */
int mtasts_nice_this_thread(int increment);
#endif
