#include "tw_job.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static size_t count(const char *const *v, size_t *bytes)
{
    size_t n = 0;

    for (; v && v[n]; n++)
        *bytes += strlen(v[n]) + 1;
    return n;
}

char *tw_job_encode(const char *const *args, const char *const *env, size_t *len)
{
    size_t bytes = 8, na = count(args, &bytes), ne = count(env, &bytes), i, off = 12;
    unsigned char *m;

    if (bytes > TW_JOB_MAX || !(m = malloc(bytes + 4)))
        return NULL;
    put32(m, (uint32_t)bytes);
    put32(m + 4, (uint32_t)na);
    put32(m + 8, (uint32_t)ne);
    for (i = 0; i < na + ne; i++) {
        const char *s = i < na ? args[i] : env[i - na];
        size_t n = strlen(s) + 1;

        memcpy(m + off, s, n);
        off += n;
    }
    *len = off;
    return (char *)m;
}

size_t tw_job_length(const unsigned char prefix[4])
{
    return get32(prefix);
}

int tw_job_decode(char *buf, size_t len, char ***args, char ***env)
{
    size_t na, ne, i, off = 8;
    char **a = NULL, **e = NULL;

    if (len < 8 || len > TW_JOB_MAX)
        return -1;
    na = get32((unsigned char *)buf);
    ne = get32((unsigned char *)buf + 4);
    /* every string takes at least its NUL: more than the bytes is a lie */
    if (na > len - 8 || ne > len - 8 - na)
        return -1;
    if (!(a = calloc(na + 1, sizeof(*a))) || !(e = calloc(ne + 1, sizeof(*e))))
        goto fail;
    for (i = 0; i < na + ne; i++) {
        char *nul = off < len ? memchr(buf + off, '\0', len - off) : NULL;

        if (!nul)
            goto fail;
        if (i < na)
            a[i] = buf + off;
        else
            e[i - na] = buf + off;
        off = (size_t)(nul - buf) + 1;
    }
    if (off != len)
        goto fail;
    for (i = 0; i < ne; i++) {
        if (!strchr(e[i], '=') || e[i][0] == '=')
            goto fail;
    }
    *args = a;
    *env = e;
    return 0;
fail:
    free(a);
    free(e);
    return -1;
}
