/* aw_store_s3: the S3 backend of aw_store (SESSION_STORE=s3).
 *
 * Object "<prefix><aw_store_file_name(id)>" in |bucket|, path-style
 * ("<endpoint>/<bucket>/<key>", which every S3-compatible server speaks).
 * GET If-None-Match answers a cached session with 304; PUT carries If-Match
 * (the ETag it replaces) or If-None-Match: * (a new session), so a turn is
 * never written over another agent-worker's (412 -> AW_STORE_CONFLICT).
 * Transfers run on their own curl multi handle on the loop; credentials come
 * from aw_creds like Bedrock's (a resolution runs on the work pool, requests
 * wait for it in a list). Errors carry S3's code and message, redacted. */
#ifndef AW_STORE_S3_H
#define AW_STORE_S3_H

#include "aw_store.h"

struct aw_creds;

struct aw_store_s3_config {
    uv_loop_t *loop;
    const char *endpoint; /* NULL: https://s3.<region>.amazonaws.com */
    const char *bucket;
    const char *prefix; /* e.g. "sessions/" */
    const char *region;
    struct aw_creds *creds; /* borrowed */
    const char *ca_bundle;  /* or NULL */
    int timeout_ms;         /* whole request */
};

/* NULL with |err| (bad endpoint or bucket, no memory). */
struct aw_store *aw_store_s3_new(const struct aw_store_s3_config *cfg, char *err, size_t errlen);

/* S3's XML error body: <Code> and <Message> into |out| ("Code: Message"),
 * credential-shaped text redacted. No I/O (unit-tested). */
void aw_store_s3_error(int status, const char *body, size_t len, char *out, size_t cap);

#endif
