/* cm_buf: a growable byte buffer with a hard cap fixed at init (curl's dynbuf model).
 *
 * Every buffer a peer can grow is a cm_buf: appending past |cap| fails with
 * CM_ETOOBIG and leaves the contents as they were. The data is always kept
 * NUL-terminated (the terminator is not counted in |len| nor in |cap|). */
#ifndef CM_BUF_H
#define CM_BUF_H

#include <stddef.h>

struct cm_buf {
    char *data; /* NULL until the first append */
    size_t len;
    size_t alloc;
    size_t cap;
};

void cm_buf_init(struct cm_buf *b, size_t cap);
/* Frees the storage; the buffer may be reused after another cm_buf_init. NULL is fine. */
void cm_buf_free(struct cm_buf *b);
/* Keeps the storage, empties the contents. */
void cm_buf_reset(struct cm_buf *b);
/* Allocates room for exactly |n| bytes (+ the NUL) at once, when the final
 * size is known (a Content-Length): no doubling, no copy as it fills.
 * 0, CM_ETOOBIG or CM_ENOMEM. */
int cm_buf_reserve(struct cm_buf *b, size_t n);
/* 0, CM_ETOOBIG (would pass the cap) or CM_ENOMEM. */
int cm_buf_add(struct cm_buf *b, const void *p, size_t n);
int cm_buf_addstr(struct cm_buf *b, const char *s);
/* printf-style append; same return codes. */
int cm_buf_printf(struct cm_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Hands the NUL-terminated storage to the caller (free() it) and re-inits |b|
 * with the same cap. Returns an empty string, not NULL, for an empty buffer;
 * NULL only on allocation failure. */
char *cm_buf_steal(struct cm_buf *b);

#endif
