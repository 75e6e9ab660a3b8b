#include "cm_evstream.h"
#include "cm_buf.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t crc(const uint8_t *p, size_t n)
{
    return (uint32_t)crc32(0L, p, (uInt)n);
}

const char *cm_evs_strerror(int err)
{
    switch (err) {
    case CM_EVS_EPRELUDE_CRC:
        return "Prelude checksum mismatch";
    case CM_EVS_EMESSAGE_CRC:
        return "Message checksum mismatch";
    case CM_EVS_ELENGTH:
        return "Invalid frame length";
    case CM_EVS_ETOOBIG:
        return "Frame or headers too large";
    case CM_EVS_EHEADER:
        return "Malformed headers";
    case CM_EVS_ENOMEM:
        return "Out of memory";
    }
    return "Unknown event-stream error";
}

static int parse_headers(const uint8_t *p, size_t n, struct cm_evs_message *m)
{
    size_t pos = 0;

    m->n_headers = 0;
    while (pos < n) {
        struct cm_evs_header *h;
        size_t name_len;

        if (m->n_headers == CM_EVS_MAX_HEADERS)
            return CM_EVS_ETOOBIG;
        h = &m->headers[m->n_headers];
        name_len = p[pos++];
        if (name_len == 0 || n - pos < name_len + 1)
            return CM_EVS_EHEADER;
        h->name = (const char *)p + pos;
        h->name_len = name_len;
        pos += name_len;
        h->type = (enum cm_evs_type)p[pos++];
        h->i = 0;
        h->bytes = NULL;
        h->len = 0;
        switch (h->type) {
        case CM_EVS_TRUE:
        case CM_EVS_FALSE:
            h->i = h->type == CM_EVS_TRUE;
            break;
        case CM_EVS_BYTE:
            if (n - pos < 1)
                return CM_EVS_EHEADER;
            h->i = (int8_t)p[pos];
            pos += 1;
            break;
        case CM_EVS_INT16:
            if (n - pos < 2)
                return CM_EVS_EHEADER;
            h->i = (int16_t)((uint16_t)p[pos] << 8 | p[pos + 1]);
            pos += 2;
            break;
        case CM_EVS_INT32:
            if (n - pos < 4)
                return CM_EVS_EHEADER;
            h->i = (int32_t)be32(p + pos);
            pos += 4;
            break;
        case CM_EVS_INT64:
        case CM_EVS_TIMESTAMP:
            if (n - pos < 8)
                return CM_EVS_EHEADER;
            h->i = (int64_t)((uint64_t)be32(p + pos) << 32 | be32(p + pos + 4));
            pos += 8;
            break;
        case CM_EVS_BYTES:
        case CM_EVS_STRING:
            if (n - pos < 2)
                return CM_EVS_EHEADER;
            h->len = (size_t)p[pos] << 8 | p[pos + 1];
            pos += 2;
            if (n - pos < h->len)
                return CM_EVS_EHEADER;
            h->bytes = p + pos;
            pos += h->len;
            break;
        case CM_EVS_UUID:
            if (n - pos < 16)
                return CM_EVS_EHEADER;
            h->bytes = p + pos;
            h->len = 16;
            pos += 16;
            break;
        default:
            return CM_EVS_EHEADER;
        }
        m->n_headers++;
    }
    return 0;
}

/* Checks the prelude of a frame whose first 12 bytes are at |p|. */
static int check_prelude(const uint8_t *p, size_t max_frame, uint32_t *total, uint32_t *hlen)
{
    *total = be32(p);
    *hlen = be32(p + 4);
    if (crc(p, 8) != be32(p + 8))
        return CM_EVS_EPRELUDE_CRC;
    if (*total < CM_EVS_MIN_FRAME || *hlen > *total - CM_EVS_MIN_FRAME)
        return CM_EVS_ELENGTH;
    if (*total > max_frame || *hlen > CM_EVS_MAX_HEADERS_BYTES)
        return CM_EVS_ETOOBIG;
    return 0;
}

int cm_evs_decode_frame(const uint8_t *p, size_t n, struct cm_evs_message *m)
{
    uint32_t total, hlen;
    int rc;

    if (n < CM_EVS_MIN_FRAME)
        return CM_EVS_ELENGTH;
    rc = check_prelude(p, CM_EVS_MAX_FRAME, &total, &hlen);
    if (rc)
        return rc;
    if (total != n)
        return CM_EVS_ELENGTH;
    if (crc(p, total - 4) != be32(p + total - 4))
        return CM_EVS_EMESSAGE_CRC;
    m->total_length = total;
    m->headers_length = hlen;
    m->prelude_crc = be32(p + 8);
    m->message_crc = be32(p + total - 4);
    m->payload = p + CM_EVS_PRELUDE + hlen;
    m->payload_len = total - hlen - CM_EVS_MIN_FRAME;
    return parse_headers(p + CM_EVS_PRELUDE, hlen, m);
}

void cm_evs_decoder_init(struct cm_evs_decoder *d, size_t max_frame, cm_evs_on_message cb, void *ud)
{
    memset(d, 0, sizeof(*d));
    d->max_frame = max_frame && max_frame < CM_EVS_MAX_FRAME ? max_frame : CM_EVS_MAX_FRAME;
    d->cb = cb;
    d->ud = ud;
}

void cm_evs_decoder_cleanup(struct cm_evs_decoder *d)
{
    if (!d)
        return;
    free(d->buf);
    d->buf = NULL;
    d->len = d->alloc = 0;
}

int cm_evs_decoder_idle(const struct cm_evs_decoder *d)
{
    return d->len == 0 && !d->error;
}

static int append(struct cm_evs_decoder *d, const uint8_t *p, size_t n)
{
    if (d->len + n > d->alloc) {
        size_t want = d->alloc ? d->alloc : 4096;
        uint8_t *nb;

        while (want < d->len + n)
            want *= 2;
        nb = realloc(d->buf, want);
        if (!nb)
            return CM_EVS_ENOMEM;
        d->buf = nb;
        d->alloc = want;
    }
    memcpy(d->buf + d->len, p, n);
    d->len += n;
    return 0;
}

/* Moves input into the buffer until it holds |want| bytes or the input ends. */
static int fill(struct cm_evs_decoder *d, const uint8_t **p, size_t *len, size_t want)
{
    size_t take = want > d->len ? want - d->len : 0;
    int rc;

    if (take > *len)
        take = *len;
    rc = take ? append(d, *p, take) : 0;
    *p += take;
    *len -= take;
    return rc;
}

/* Frames wholly inside the caller's chunk are decoded in place; only a frame
 * split across chunks is copied, and only its bytes. */
int cm_evs_decoder_feed(struct cm_evs_decoder *d, const void *data, size_t len)
{
    const uint8_t *p = data;
    uint32_t total, hlen;
    int rc;

    if (d->error)
        return d->error;
    while (len > 0) {
        const uint8_t *frame;

        if (d->len == 0 && len >= CM_EVS_PRELUDE) {
            rc = check_prelude(p, d->max_frame, &total, &hlen);
            if (rc)
                return d->error = rc;
            if (len >= total) {
                frame = p;
                p += total;
                len -= total;
                goto deliver;
            }
        }
        /* Buffer until the prelude, then the whole frame, is here. */
        rc = fill(d, &p, &len, CM_EVS_PRELUDE);
        if (rc)
            return d->error = rc;
        if (d->len < CM_EVS_PRELUDE)
            return 0;
        rc = check_prelude(d->buf, d->max_frame, &total, &hlen);
        if (!rc)
            rc = fill(d, &p, &len, total);
        if (rc)
            return d->error = rc;
        if (d->len < total)
            return 0;
        frame = d->buf;
    deliver:
        rc = cm_evs_decode_frame(frame, total, &d->msg);
        d->len = 0;
        if (rc)
            return d->error = rc;
        rc = d->cb ? d->cb(d->ud, &d->msg) : 0;
        if (rc)
            return d->error = rc;
    }
    return 0;
}

const struct cm_evs_header *cm_evs_find(const struct cm_evs_message *m, const char *name)
{
    size_t n = strlen(name), i;

    for (i = 0; i < m->n_headers; i++) {
        if (m->headers[i].name_len == n && !memcmp(m->headers[i].name, name, n))
            return &m->headers[i];
    }
    return NULL;
}

int cm_evs_is(const struct cm_evs_message *m, const char *name, const char *value)
{
    const struct cm_evs_header *h = cm_evs_find(m, name);
    size_t n = strlen(value);

    return h && h->type == CM_EVS_STRING && h->len == n && !memcmp(h->bytes, value, n);
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

int cm_evs_encode(struct cm_buf *out, const char *const *names, const char *const *values,
                  size_t n_headers, const void *payload, size_t payload_len)
{
    size_t hlen = 0, i, start = out->len, total;
    uint8_t pre[12];
    int rc;

    for (i = 0; i < n_headers; i++) {
        size_t nl = strlen(names[i]), vl = strlen(values[i]);

        if (nl == 0 || nl > 255 || vl > 32767)
            return -1;
        hlen += 1 + nl + 1 + 2 + vl;
    }
    total = CM_EVS_MIN_FRAME + hlen + payload_len;
    if (total > CM_EVS_MAX_FRAME)
        return -1;
    put32(pre, (uint32_t)total);
    put32(pre + 4, (uint32_t)hlen);
    put32(pre + 8, crc(pre, 8));
    rc = cm_buf_add(out, pre, 12);
    for (i = 0; i < n_headers && !rc; i++) {
        size_t nl = strlen(names[i]), vl = strlen(values[i]);
        uint8_t h[4] = {(uint8_t)nl, CM_EVS_STRING, (uint8_t)(vl >> 8), (uint8_t)vl};

        rc = cm_buf_add(out, h, 1);
        if (!rc)
            rc = cm_buf_add(out, names[i], nl);
        if (!rc)
            rc = cm_buf_add(out, h + 1, 3);
        if (!rc)
            rc = cm_buf_add(out, values[i], vl);
    }
    if (!rc && payload_len)
        rc = cm_buf_add(out, payload, payload_len);
    if (!rc) {
        uint8_t c[4];

        put32(c, crc((const uint8_t *)out->data + start, total - 4));
        rc = cm_buf_add(out, c, 4);
    }
    if (rc)
        out->len = start;
    return rc;
}
