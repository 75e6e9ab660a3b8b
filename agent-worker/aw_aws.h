/* aw_aws: what every signed AWS call of the agent-worker shares: endpoints,
 * credentials, and the SigV4-signed header list handed to libcurl. */
#ifndef AW_AWS_H
#define AW_AWS_H

#include "cm_sigv4.h"

#include <curl/curl.h>
#include <stddef.h>

/* A set of credentials. Copied by value; aw_credentials_clear() wipes it. */
struct aw_credentials {
    char akid[128];
    char secret[256];
    char token[4096];     /* "" when not temporary */
    long long expires_at; /* unix seconds; 0 = does not expire */
    char source[32];      /* "environment", "shared-config", ... (never a value) */
};

void aw_credentials_clear(struct aw_credentials *c);

/* What a failed AWS call reports. |message| is the service's text (never a
 * credential); |type| its error type, e.g. "ThrottlingException". */
struct aw_model_error {
    int http_status; /* 0 for transport errors */
    char type[96];
    char message[768];
};

struct aw_endpoint {
    char scheme_host[512]; /* "https://host[:port]" */
    char host[256];        /* signed and sent as Host */
    char base_path[512];   /* path prefix of the endpoint, usually "" */
};

/* Parses "http(s)://host[:port][/path]". 0, or CM_EINVAL with |err|. */
int aw_endpoint_parse(const char *url, struct aw_endpoint *ep, char *err, size_t errlen);

/* Builds the headers of a signed POST of |body| to |path| on |ep|: Host,
 * X-Amz-Date, X-Amz-Security-Token (temporary credentials), Content-Type,
 * |extra| (signed too) and Authorization, plus "Expect:" (no 100-continue).
 * With |bearer| the Authorization is "Bearer <token>" and nothing is signed.
 * |now| is the signing time in unix seconds (our clock plus any learnt skew).
 * Returns the list (free with aw_slist_free_secure) or NULL. */
struct curl_slist *aw_sign_post(const struct aw_endpoint *ep, const char *path, const char *service,
                                const char *region, const struct aw_credentials *cr,
                                const char *bearer, const char *content_type,
                                const struct cm_sigv4_header *extra, size_t n_extra,
                                const char *body, size_t len, long long now);

/* Fills |out| from an AWS JSON error answer: type from the x-amzn-ErrorType
 * header (|type_header| may be NULL), else the body's __type/code; message
 * from the body's message/Message (a short printable excerpt of a non-JSON
 * body). */
void aw_parse_error(int status, const char *type_header, const char *body, size_t len,
                    struct aw_model_error *out);

/* The same for any method: |content_type| NULL sends none (a GET);
 * |s3_path| signs the path as S3 does (not normalised: S3 keys may hold
 * "//" or "."). |path| is the decoded path; the caller sends it encoded
 * once (cm_sigv4_uri_encode with the slashes kept). */
struct aw_sign_req {
    const char *method;
    const struct aw_endpoint *ep;
    const char *path, *service, *region;
    const struct aw_credentials *cr;
    const char *bearer, *content_type;
    const struct cm_sigv4_header *extra;
    size_t n_extra;
    const char *body;
    size_t len;
    long long now;
    int s3_path;
};
struct curl_slist *aw_sign_request(const struct aw_sign_req *r);

/* A curl header line |p| (|len| bytes) that is |name| ("etag:", lowercase,
 * with the colon): its value, trimmed, into |out|. |out| is untouched
 * otherwise. */
void aw_header_value(const char *p, size_t len, const char *name, char *out, size_t cap);

/* Wipes every entry (they hold signatures and tokens) and frees the list. */
void aw_slist_free_secure(struct curl_slist *l);

/* Rewrites |s| in place so nothing credential-shaped is left: access key ids
 * (AKIA.../ASIA...), the values of x-amz-security-token, X-Amz-Signature,
 * Signature=, Credential=, Authorization and any run of 40 or more
 * base64 characters (secret keys, session tokens, signatures) become
 * "[redacted]". AWS error messages may quote the signed request: every
 * message parsed from a service passes through here before a log line or an
 * HTTP body sees it. |cap| is the size of the buffer |s| is in (a short
 * value replaced by "[redacted]" may grow the text; it is cut at |cap|). */
void aw_redact_credentials(char *s, size_t cap);

/* |in| as an HTTP client may read it: credential-shaped text redacted as
 * above, and ARNs, 12-digit account ids and quoted secret names hidden (the
 * agent-worker's log keeps them). Always NUL-terminates |out|. */
void aw_public_message(const char *in, char *out, size_t cap);

#endif
