/* The do-nothing reader of a unix datagram socket: the bound for a collector on this machine.
 * Binds SOCKET (replacing what is there), mode 0666, and reads with recvmmsg(2), 64 datagrams
 * of up to 8 KiB at a time, counting them and their bytes and nothing else. On SIGTERM or
 * SIGINT it prints "received=N bytes=B cpu_s=C" (C: its user + system CPU time) and exits.
 * Usage: dgram_sink SOCKET */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define BATCH 64
#define SIZE 8192

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s SOCKET\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) {
        fprintf(stderr, "socket path too long: %s\n", path);
        return 1;
    }
    strcpy(addr.sun_path, path);
    unlink(path);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || chmod(path, 0666) != 0) {
        perror(path);
        return 1;
    }

    /* No SA_RESTART: a signal ends a blocked recvmmsg with EINTR. A signal that lands between the
     * check of `stop` and the call is caught by the receive time-out (0.2 s). */
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    struct timeval timeout = {.tv_sec = 0, .tv_usec = 200000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);

    static char buffers[BATCH][SIZE];
    static struct iovec iov[BATCH];
    static struct mmsghdr msgs[BATCH];
    for (int k = 0; k < BATCH; k++) {
        iov[k] = (struct iovec){.iov_base = buffers[k], .iov_len = SIZE};
        msgs[k].msg_hdr = (struct msghdr){.msg_iov = &iov[k], .msg_iovlen = 1};
    }
    long long received = 0, bytes = 0;
    while (!stop) {
        /* MSG_WAITFORONE: block for the first datagram only, then take what is queued. */
        int n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
            perror("recvmmsg");
            return 1;
        }
        received += n;
        for (int k = 0; k < n; k++) bytes += msgs[k].msg_len;
    }

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
                 (double)ru.ru_stime.tv_usec / 1e6;
    printf("received=%lld bytes=%lld cpu_s=%.3f\n", received, bytes, cpu);
    close(fd);
    unlink(path);
    return 0;
}
