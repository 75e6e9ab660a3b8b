#include "cm_buf.h"
#include "cm_err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cm_buf_init(struct cm_buf *b, size_t cap)
{
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    b->cap = cap;
}

void cm_buf_free(struct cm_buf *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
}

void cm_buf_reset(struct cm_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

static int grow(struct cm_buf *b, size_t need)
{
    size_t want;
    char *p;

    if (need + 1 <= b->alloc)
        return 0;
    want = b->alloc ? b->alloc : 256;
    while (want < need + 1)
        want *= 2;
    if (want > b->cap + 1)
        want = b->cap + 1;
    p = realloc(b->data, want);
    if (!p)
        return CM_ENOMEM;
    b->data = p;
    b->alloc = want;
    return 0;
}

int cm_buf_reserve(struct cm_buf *b, size_t n)
{
    char *p;

    if (n > b->cap)
        return CM_ETOOBIG;
    if (n + 1 <= b->alloc)
        return 0;
    p = realloc(b->data, n + 1);
    if (!p)
        return CM_ENOMEM;
    if (!b->data)
        p[0] = '\0';
    b->data = p;
    b->alloc = n + 1;
    return 0;
}

int cm_buf_add(struct cm_buf *b, const void *p, size_t n)
{
    int rc;

    if (n > b->cap - b->len)
        return CM_ETOOBIG;
    rc = grow(b, b->len + n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int cm_buf_addstr(struct cm_buf *b, const char *s)
{
    return cm_buf_add(b, s, strlen(s));
}

int cm_buf_printf(struct cm_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n, rc;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return CM_EINVAL;
    if ((size_t)n > b->cap - b->len)
        return CM_ETOOBIG;
    rc = grow(b, b->len + (size_t)n);
    if (rc)
        return rc;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

char *cm_buf_steal(struct cm_buf *b)
{
    char *p = b->data;

    if (!p)
        p = calloc(1, 1);
    cm_buf_init(b, b->cap);
    return p;
}
