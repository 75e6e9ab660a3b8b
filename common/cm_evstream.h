/* cm_evstream: the application/vnd.amazon.eventstream framing, with no I/O.
 *
 *   total_len u32 | headers_len u32 | prelude_crc u32 | headers | payload | message_crc u32
 *
 * (big-endian; CRC-32 IEEE; prelude_crc covers bytes [0,8), message_crc all
 * bytes before it). The decoder takes bytes as they arrive, split anywhere,
 * down to one byte at a time, and hands out each complete, verified frame.
 * It never reads past what it was given; corrupt input is an error, and after
 * an error the decoder stays failed (the stream cannot be resynchronised).
 *
 * Caps: a frame is at most |max_frame| bytes (<= CM_EVS_MAX_FRAME), the headers
 * at most CM_EVS_MAX_HEADERS_BYTES in CM_EVS_MAX_HEADERS entries. */
#ifndef CM_EVSTREAM_H
#define CM_EVSTREAM_H

#include <stddef.h>
#include <stdint.h>

#define CM_EVS_MAX_FRAME (24u * 1024u * 1024u)
#define CM_EVS_MAX_HEADERS_BYTES (128u * 1024u)
#define CM_EVS_MAX_HEADERS 64
#define CM_EVS_PRELUDE 12
#define CM_EVS_MIN_FRAME 16

enum cm_evs_type {
    CM_EVS_TRUE = 0,
    CM_EVS_FALSE = 1,
    CM_EVS_BYTE = 2,
    CM_EVS_INT16 = 3,
    CM_EVS_INT32 = 4,
    CM_EVS_INT64 = 5,
    CM_EVS_BYTES = 6,
    CM_EVS_STRING = 7,
    CM_EVS_TIMESTAMP = 8, /* int64 milliseconds since the epoch */
    CM_EVS_UUID = 9,
};

enum cm_evs_err {
    CM_EVS_EPRELUDE_CRC = -100,
    CM_EVS_EMESSAGE_CRC = -101,
    CM_EVS_ELENGTH = -102, /* lengths that cannot describe a frame */
    CM_EVS_ETOOBIG = -103, /* past a cap */
    CM_EVS_EHEADER = -104, /* malformed headers */
    CM_EVS_ENOMEM = -105,
};

/* Points into the frame being delivered; valid only during the callback. */
struct cm_evs_header {
    const char *name; /* not NUL-terminated */
    size_t name_len;
    enum cm_evs_type type;
    int64_t i;            /* bool (1/0), byte, int16/32/64, timestamp */
    const uint8_t *bytes; /* bytes, string, uuid (16) */
    size_t len;
};

struct cm_evs_message {
    uint32_t total_length, headers_length, prelude_crc, message_crc;
    struct cm_evs_header headers[CM_EVS_MAX_HEADERS];
    size_t n_headers;
    const uint8_t *payload;
    size_t payload_len;
};

/* Returns 0 to go on; anything else stops the decoder and is returned by feed. */
typedef int (*cm_evs_on_message)(void *ud, const struct cm_evs_message *m);

struct cm_evs_decoder {
    uint8_t *buf;
    size_t len, alloc, max_frame;
    cm_evs_on_message cb;
    void *ud;
    int error;
    struct cm_evs_message msg; /* reused for every frame: no allocation per frame */
};

void cm_evs_decoder_init(struct cm_evs_decoder *d, size_t max_frame, cm_evs_on_message cb,
                         void *ud);
void cm_evs_decoder_cleanup(struct cm_evs_decoder *d);
/* Consumes |len| bytes. Returns 0, a cm_evs_err, or the callback's non-zero value. */
int cm_evs_decoder_feed(struct cm_evs_decoder *d, const void *data, size_t len);
/* 1 when no partial frame is buffered (a clean end of stream). */
int cm_evs_decoder_idle(const struct cm_evs_decoder *d);

/* Decodes one whole frame at |p| (|n| bytes, exactly one frame). */
int cm_evs_decode_frame(const uint8_t *p, size_t n, struct cm_evs_message *m);

/* The first header named |name| (NUL-terminated), or NULL. */
const struct cm_evs_header *cm_evs_find(const struct cm_evs_message *m, const char *name);
/* 1 when header |name| is a string equal to |value|. */
int cm_evs_is(const struct cm_evs_message *m, const char *name, const char *value);

/* "Prelude checksum mismatch", "Message checksum mismatch", ... */
const char *cm_evs_strerror(int err);

/* Appends one frame to |out| (a cm_buf): string headers only, which is what
 * AWS services send. Returns 0 or a cm_buf error. */
struct cm_buf;
int cm_evs_encode(struct cm_buf *out, const char *const *names, const char *const *values,
                  size_t n_headers, const void *payload, size_t payload_len);

#endif
