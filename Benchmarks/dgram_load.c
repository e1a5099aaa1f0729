/* Offers libtlsrpt-shaped datagrams to a unix datagram socket at a fixed rate, as Postfix does:
 * MSG_DONTWAIT, one try per datagram; a datagram the kernel refuses (EAGAIN / ENOBUFS: the
 * receiver's queue is full) is lost at the sender and counted, and the next one is sent.
 * Datagrams are sent in small paced batches with sendmmsg(2), so that the generator is cheap
 * enough not to be the bottleneck (its own CPU time is printed).
 * The pool is byte for byte the one of the former Benchmarks/dgram_load.py: 2000 datagrams over
 * 1000 domains, one in ten with a failure detail.
 * Usage: dgram_load SOCKET RATE SECONDS
 *   → sent=N eagain=M offered=T seconds=S achieved_rate=R client_cpu_s=C */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define POOL 2000
#define MAX_BATCH 1024 /* UIO_MAXIOV: the most sendmmsg takes in one call */

/* Both templates as in the former dgram_load.py ("\\r\\n" is a JSON escape, not a line end). */
static const char *with_failure =
    "{\"dpv\": \"1\",\"d\": \"d%d.example\",\"pr\": \"v=TLSRPTv1; rua=mailto:tlsrpt@d%d.example\","
    "\"policies\":[{\"policy-type\":2,\"policy-domain\": \"d%d.example\","
    "\"policy-string\":[\"version: STSv1\",\"mode: enforce\",\"mx: mx.d%d.example\",\"max_age: 604800\"],"
    "\"mx-host\":[\"mx.d%d.example\"],\"failure-details\":"
    "[{\"c\":205,\"s\": \"192.0.2.1\",\"n\": \"mx.d%d.example\",\"h\": \"250-mx.d%d.example\\r\\n250 STARTTLS\","
    "\"r\": \"198.51.100.%d\",\"f\": \"self-signed_certificate\"}],\"t\":1,\"f\":1}]}";
static const char *success =
    "{\"dpv\": \"1\",\"d\": \"d%d.example\",\"pr\": \"v=TLSRPTv1; rua=mailto:tlsrpt@d%d.example\","
    "\"policies\":[{\"policy-type\":2,\"policy-domain\": \"d%d.example\","
    "\"policy-string\":[\"version: STSv1\",\"mode: enforce\",\"mx: mx.d%d.example\",\"max_age: 604800\"],"
    "\"mx-host\":[\"mx.d%d.example\"],\"t\":0,\"f\":0}]}";

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void sleep_until(double when) {
    struct timespec t = {.tv_sec = (time_t)when, .tv_nsec = (long)((when - (double)(time_t)when) * 1e9)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) == EINTR) {
    }
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s SOCKET RATE SECONDS\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    double rate = atof(argv[2]), seconds = atof(argv[3]);
    if (rate <= 0 || seconds <= 0) {
        fprintf(stderr, "RATE and SECONDS must be positive\n");
        return 2;
    }

    /* The pool, and one iovec per datagram of it. */
    static char *pool[POOL];
    static struct iovec iov[POOL];
    for (int i = 0; i < POOL; i++) {
        int d = i % 1000, n;
        if (i % 10 == 0)
            n = asprintf(&pool[i], with_failure, d, d, d, d, d, d, d, i % 250);
        else
            n = asprintf(&pool[i], success, d, d, d, d, d);
        if (n < 0) {
            perror("asprintf");
            return 1;
        }
        iov[i] = (struct iovec){.iov_base = pool[i], .iov_len = (size_t)n};
    }

    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    int sndbuf = 1 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) {
        fprintf(stderr, "socket path too long: %s\n", path);
        return 1;
    }
    strcpy(addr.sun_path, path);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror(path);
        return 1;
    }

    /* Pacing: a batch every `tick` seconds, about 4 datagrams up to 16,000/s (a burst must not
     * overrun the kernel's default queue of 10 by itself), then at most 4,000 wake-ups a second
     * (a wake-up of the generator and of the reader costs tens of µs of CPU in a VM; at 100 µs
     * ticks the generator took twice the CPU). The default 50 µs timer slack would blur ticks
     * this short. */
    prctl(PR_SET_TIMERSLACK, 1000UL);
    double tick = 4.0 / rate;
    if (tick < 250e-6) tick = 250e-6;
    if (tick > 1e-3) tick = 1e-3;

    static struct mmsghdr msgs[MAX_BATCH];
    long total = (long)(rate * seconds), i = 0, sent = 0, eagain = 0;
    double start = now(), next = start;
    while (i < total) {
        long due = (long)((now() - start) * rate) + 1;
        if (due > total) due = total;
        while (i < due) {
            /* Up to MAX_BATCH datagrams, and not past the end of the pool (so that it can be
             * used in place). */
            long n = due - i;
            if (n > MAX_BATCH) n = MAX_BATCH;
            if (n > POOL - i % POOL) n = POOL - i % POOL;
            for (long k = 0; k < n; k++)
                msgs[k].msg_hdr = (struct msghdr){.msg_iov = &iov[(i + k) % POOL], .msg_iovlen = 1};
            int r = sendmmsg(fd, msgs, (unsigned)n, MSG_DONTWAIT);
            if (r < 0) {
                if (errno == EINTR) continue;
                if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS) {
                    perror("sendmmsg");
                    return 1;
                }
                r = 0;
            }
            sent += r;
            i += r;
            if (r < n) {
                /* The datagram at the failure point was refused (a short count means that the
                 * next one failed; when r > 0 the kernel drops that error, and a socket that is
                 * really broken fails the next call with r < 0 above). One try: it is lost. */
                eagain++;
                i++;
            }
        }
        next += tick;
        double t = now();
        if (next > t)
            sleep_until(next);
        else
            next = t; /* behind: the next batch at once (it holds all that is due by then) */
    }
    double elapsed = now() - start;

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
                 (double)ru.ru_stime.tv_usec / 1e6;
    printf("sent=%ld eagain=%ld offered=%ld seconds=%.2f achieved_rate=%.0f client_cpu_s=%.3f\n", sent, eagain, total,
           elapsed, (double)total / elapsed, cpu);
    return 0;
}
