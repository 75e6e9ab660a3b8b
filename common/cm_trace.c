/* W3C traceparent: the parsing rules are the spec's §3.2 and §4.3. */
#include "cm_trace.h"
#include "cm_err.h"

#include "cm_util.h"
#include <string.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* upper case is invalid in traceparent */
}

/* |n| bytes from 2n lower-case hex digits; -1 on anything else. */
static int unhex(const char *s, uint8_t *out, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);

        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static int all_zero(const uint8_t *p, size_t n)
{
    while (n--)
        if (*p++)
            return 0;
    return 1;
}

int cm_trace_parse(const char *s, struct cm_trace *out)
{
    uint8_t version;
    size_t len;

    if (!s)
        return CM_EINVAL;
    len = strlen(s);
    if (len < CM_TRACEPARENT_LEN || unhex(s, &version, 1) || version == 0xff || s[2] != '-' ||
        s[35] != '-' || s[52] != '-')
        return CM_EINVAL;
    /* Version 00 is exactly 55 bytes; a later one may add fields after a dash. */
    if ((version == 0 && len != CM_TRACEPARENT_LEN) ||
        (version != 0 && len > CM_TRACEPARENT_LEN && s[55] != '-'))
        return CM_EINVAL;
    if (unhex(s + 3, out->trace_id, 16) || unhex(s + 36, out->span_id, 8) ||
        unhex(s + 53, &out->flags, 1))
        return CM_EINVAL;
    if (all_zero(out->trace_id, 16) || all_zero(out->span_id, 8))
        return CM_EINVAL;
    memset(out->parent_id, 0, sizeof(out->parent_id));
    return 0;
}

static void hex(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

void cm_trace_format(const struct cm_trace *t, char *out)
{
    memcpy(out, "00-", 3);
    hex(t->trace_id, 16, out + 3);
    out[35] = '-';
    hex(t->span_id, 8, out + 36);
    out[52] = '-';
    hex(&t->flags, 1, out + 53);
}

void cm_trace_ids(const struct cm_trace *t, char *trace_hex, char *span_hex)
{
    hex(t->trace_id, 16, trace_hex);
    hex(t->span_id, 8, span_hex);
}

/* Random, never all zeros (the spec's invalid value). */
static int random_id(uint8_t *p, size_t n)
{
    do {
        if (cm_random(p, n))
            return CM_EIO;
    } while (all_zero(p, n));
    return 0;
}

int cm_trace_new(struct cm_trace *out)
{
    out->flags = 1;
    memset(out->parent_id, 0, sizeof(out->parent_id));
    if (random_id(out->trace_id, 16))
        return CM_EIO;
    return random_id(out->span_id, 8);
}

int cm_trace_child(const struct cm_trace *parent, struct cm_trace *out)
{
    uint8_t up[8];

    memcpy(up, parent->span_id, sizeof(up));
    if (out != parent)
        *out = *parent;
    memcpy(out->parent_id, up, sizeof(up));
    return random_id(out->span_id, 8);
}

int cm_trace_continue(const char *incoming, struct cm_trace *out)
{
    struct cm_trace in;

    if (incoming && cm_trace_parse(incoming, &in) == 0)
        return cm_trace_child(&in, out);
    return cm_trace_new(out);
}
