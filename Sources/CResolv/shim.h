#ifndef MTASTS_CRESOLV_SHIM_H
#define MTASTS_CRESOLV_SHIM_H
/* glibc's libresolv through small wrappers: res_ninit/res_nquery are macros, and the
   resolver state is a large struct Swift should only hold by pointer. One state per thread
   at a time; never shared concurrently. */
#include <sys/types.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <resolv.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

typedef struct __res_state mtasts_res_state;

/* A fresh state from /etc/resolv.conf, or NULL. */
static inline mtasts_res_state *mtasts_res_new(void) {
    mtasts_res_state *s = calloc(1, sizeof(*s));
    if (s == NULL) return NULL;
    if (res_ninit(s) != 0) { free(s); return NULL; }
#ifdef RES_TRUSTAD
    s->options |= RES_TRUSTAD; /* glibc >= 2.31 clears the AD bit unless asked to trust it */
#endif
    return s;
}

static inline void mtasts_res_free(mtasts_res_state *s) {
    if (s == NULL) return;
    res_nclose(s);
    free(s);
}

/* Use one IPv4 server, on a chosen port, instead of resolv.conf's. Returns 0 or -1. */
static inline int mtasts_res_set_server(mtasts_res_state *s, const char *ipv4, unsigned short port) {
    struct in_addr addr;
    if (inet_pton(AF_INET, ipv4, &addr) != 1) return -1;
    memset(&s->nsaddr_list[0], 0, sizeof(s->nsaddr_list[0]));
    s->nsaddr_list[0].sin_family = AF_INET;
    s->nsaddr_list[0].sin_port = htons(port);
    s->nsaddr_list[0].sin_addr = addr;
    s->nscount = 1;
    return 0;
}

/* Per-try time-out in seconds, number of tries, TCP only. */
static inline void mtasts_res_set_timing(mtasts_res_state *s, int seconds, int tries, int tcp) {
    s->retrans = seconds < 1 ? 1 : seconds;
    s->retry = tries < 1 ? 1 : tries;
    if (tcp) s->options |= RES_USEVC; else s->options &= ~RES_USEVC;
}

/* Sends a query (class IN). Returns the answer length, or -1 with mtasts_res_herrno set. */
static inline int mtasts_res_query(mtasts_res_state *s, const char *name, int type, unsigned char *answer, int size) {
    return res_nquery(s, name, C_IN, type, answer, size);
}

/* HOST_NOT_FOUND (NXDOMAIN), NO_DATA, TRY_AGAIN (SERVFAIL, time-out), NO_RECOVERY. */
static inline int mtasts_res_herrno(mtasts_res_state *s) { return s->res_h_errno; }
#endif
