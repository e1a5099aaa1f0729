#ifndef MTASTS_CZLIB_SHIM_H
#define MTASTS_CZLIB_SHIM_H
#include <zlib.h>

/* deflateInit2/inflateInit2 are macros; wrap them so Swift can call them. */
static inline int mtasts_inflate_init_gzip(z_streamp strm) {
    /* 15 + 32: accept zlib or gzip headers, detected automatically. */
    return inflateInit2(strm, 15 + 32);
}
static inline int mtasts_deflate_init_gzip(z_streamp strm, int level) {
    /* 15 + 16: write a gzip header and trailer. */
    return deflateInit2(strm, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
}
#endif
