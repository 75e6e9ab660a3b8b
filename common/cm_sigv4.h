/* cm_sigv4: AWS Signature Version 4 (header signing), with no I/O.
 *
 * The caller passes every header that is to be signed, exactly as it will be
 * sent: host (with ":port" when not the default), x-amz-date and, with session
 * credentials, x-amz-security-token. Nothing is added behind the caller's back,
 * which is what lets the official test suite and the Bedrock vectors check the
 * canonical request, string to sign and signature byte for byte.
 *
 * |path| is the path as sent on the wire (already percent-encoded where the wire
 * needs it, e.g. "%3A" inside a Bedrock model id). As AWS does for every service
 * but S3, the canonical URI normalises it (when |normalize_path|) and encodes it
 * once more, so "%3A" is signed as "%253A".
 *
 * Sizes: the canonical request grows with the headers; it is capped at
 * CM_SIGV4_MAX_CANONICAL bytes (CM_ETOOBIG beyond). */
#ifndef CM_SIGV4_H
#define CM_SIGV4_H

#include "cm_buf.h"

#include <stddef.h>

#define CM_SIGV4_MAX_CANONICAL (256 * 1024)
#define CM_SIGV4_MAX_HEADERS 64

struct cm_sigv4_header {
    const char *name;
    const char *value;
};

struct cm_sigv4_request {
    const char *method;
    const char *path;
    const char *query; /* without '?'; NULL or "" when none */
    const struct cm_sigv4_header *headers;
    size_t n_headers;
    const void *body;
    size_t body_len;
};

/* A signing key kept for the next signature with the same secret key, day,
 * region and service: four of the five HMACs of a signature derive it, so
 * the AWS SDKs keep it too. It holds a copy of the secret key (what it is
 * compared with); cm_sigv4_key_clear() wipes it. Zero-initialise; one per
 * thread (no lock). */
struct cm_sigv4_key {
    char secret[256];
    char date[9], region[64], service[64]; /* what it was derived for */
    unsigned char k[32];
    int valid;
};
void cm_sigv4_key_clear(struct cm_sigv4_key *key);

struct cm_sigv4_params {
    const char *access_key_id;
    const char *secret_access_key;
    const char *region;
    const char *service;      /* signing name: "bedrock", "secretsmanager", ... */
    const char *amz_date;     /* "YYYYMMDDTHHMMSSZ", the same value as the x-amz-date header */
    int normalize_path;       /* 1 for every service but S3 */
    struct cm_sigv4_key *key; /* NULL: derive the signing key every time */
};

struct cm_sigv4_out {
    struct cm_buf canonical_request;
    struct cm_buf string_to_sign;
    struct cm_buf authorization; /* the full Authorization header value */
    char signed_headers[1024];
    char signature[65];
};

/* Returns 0, CM_EINVAL (bad input, e.g. too many headers or a bad date),
 * CM_ETOOBIG or CM_ENOMEM. |out| must be released with cm_sigv4_out_free()
 * whatever the result. */
int cm_sigv4_sign(const struct cm_sigv4_params *p, const struct cm_sigv4_request *req,
                  struct cm_sigv4_out *out);
void cm_sigv4_out_free(struct cm_sigv4_out *out);

/* Formats |unix_secs| as an x-amz-date value into |out| (>= 17 bytes). */
void cm_sigv4_amz_date(long long unix_secs, char *out);

/* Lowercase hex SHA-256 of |n| bytes into |hex| (65 bytes). */
void cm_sigv4_sha256_hex(const void *p, size_t n, char *hex);

/* Percent-encodes |n| bytes into |b|, leaving A-Za-z0-9-._~ (and '/' when
 * |keep_slash|) as they are. 0 or a cm_buf error. */
int cm_sigv4_uri_encode(struct cm_buf *b, const char *s, size_t n, int keep_slash);

/* Constant-time comparison of two NUL-terminated strings; 1 when equal. */
int cm_sigv4_equal(const char *a, const char *b);

#endif
