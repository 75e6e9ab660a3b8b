/* The S3 backend: every request is one transfer on the loop's curl multi
 * handle; nothing blocks and no thread waits for S3. */
#include "aw_store_s3.h"
#include "aw_aws.h"
#include "aw_creds.h"
#include "aw_curl.h"
#include "cm_buf.h"
#include "cm_err.h"
#include "cm_sigv4.h"
#include "cm_util.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Bytes of an error body kept (S3's are a few hundred). */
#define ERROR_BODY_CAP 8192

struct s3store {
    struct aw_store base;
    struct aw_endpoint ep;
    char bucket[64], prefix[256], region[64];
    char *ca_bundle;
    int timeout_ms;
    struct aw_creds *creds;
    struct aw_curl *multi;
    struct aw_creds_async cra; /* credentials without waiting on the loop */
};

struct s3req {
    struct s3store *s;
    struct aw_store_op *op;
    int save;
    CURL *h;
    struct curl_slist *headers;
    struct cm_buf rbody;
    char etag[AW_STORE_VERSION_MAX];
    struct aw_creds_waiter cw;
};

void aw_store_s3_error(int status, const char *body, size_t len, char *out, size_t cap)
{
    char code[96] = "", msg[400] = "", *t = strndup(body ? body : "", len);
    const char *p, *q;

    if (t && (p = strstr(t, "<Code>")) && (q = strstr(p, "</Code>")))
        snprintf(code, sizeof(code), "%.*s", (int)(q - p - 6), p + 6);
    if (t && (p = strstr(t, "<Message>")) && (q = strstr(p, "</Message>")))
        snprintf(msg, sizeof(msg), "%.*s", (int)(q - p - 9), p + 9);
    free(t);
    snprintf(out, cap, "S3 answered %d%s%s%s%s", status, code[0] ? " " : "", code,
             msg[0] ? ": " : "", msg);
    aw_redact_credentials(out, cap);
}

static void req_free(struct s3req *r)
{
    if (r->h)
        curl_easy_cleanup(r->h);
    aw_slist_free_secure(r->headers);
    cm_buf_free(&r->rbody);
    free(r);
}

/* Ends |r| with |rc|: the op's done runs, |r| is gone. */
static void finish(struct s3req *r, int rc)
{
    struct aw_store_op *op = r->op;

    req_free(r);
    op->done(op, rc);
}

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    struct s3req *r = ud;

    return cm_buf_add(&r->rbody, p, sz * n) ? 0 : sz * n;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    struct s3req *r = ud;

    aw_header_value(p, sz * n, "etag:", r->etag, sizeof(r->etag));
    return sz * n;
}

static void on_done(void *ud, CURLcode cc)
{
    struct s3req *r = ud;
    struct aw_store_op *op = r->op;
    long status = 0;
    char reason[200];

    if (cc != CURLE_OK) {
        snprintf(op->error, sizeof(op->error), "cannot reach S3 at %.150s: %s",
                 r->s->ep.scheme_host,
                 cc == CURLE_WRITE_ERROR ? "answer over the size cap" : curl_easy_strerror(cc));
        finish(r, AW_STORE_FAILED);
        return;
    }
    curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &status);
    if (r->save && status == 200) {
        cm_strlcpy(op->version, r->etag, sizeof(op->version));
        finish(r, AW_STORE_OK);
    } else if (r->save && (status == 412 || status == 409 || (status == 404 && op->version[0]))) {
        /* 412: another writer's version; 409: a conditional write raced
         * another; 404 with If-Match: the object went away meanwhile. */
        finish(r, AW_STORE_CONFLICT);
    } else if (!r->save && status == 304) {
        finish(r, AW_STORE_UNCHANGED);
    } else if (!r->save && status == 404) {
        op->version[0] = '\0';
        finish(r, AW_STORE_NOT_FOUND);
    } else if (!r->save && status == 200) {
        op->messages = aw_store_decode(op->id, r->rbody.data ? r->rbody.data : "", r->rbody.len,
                                       reason, sizeof(reason));
        /* A corrupt object stays (it is S3's to keep); the next save
         * replaces it conditionally, so its ETag is the version to name. */
        cm_strlcpy(op->version, r->etag, sizeof(op->version));
        if (!op->messages)
            snprintf(op->error, sizeof(op->error),
                     "session object is unreadable (%.200s); starting the session afresh", reason);
        finish(r, op->messages ? AW_STORE_OK : AW_STORE_NOT_FOUND);
    } else {
        if (status == 403)
            aw_creds_invalidate(r->s->creds); /* a rotated key: the next request resolves again */
        aw_store_s3_error((int)status, r->rbody.data, r->rbody.len, op->error, sizeof(op->error));
        finish(r, AW_STORE_FAILED);
    }
}

static void start(struct s3req *r, const struct aw_credentials *cr)
{
    struct s3store *s = r->s;
    struct aw_store_op *op = r->op;
    char name[256], path[1200], url[4096], sha[65];
    struct cm_sigv4_header extra[2];
    struct aw_sign_req sr;
    struct cm_buf wire;
    size_t n = 0;

    aw_store_file_name(op->id, name, sizeof(name));
    snprintf(path, sizeof(path), "%s/%s/%s%s", s->ep.base_path, s->bucket, s->prefix, name);
    cm_buf_init(&wire, sizeof(path) * 3);
    r->h = curl_easy_init();
    if (!r->h || cm_sigv4_uri_encode(&wire, path, strlen(path), 1)) {
        cm_buf_free(&wire);
        snprintf(op->error, sizeof(op->error), "out of memory");
        finish(r, AW_STORE_FAILED);
        return;
    }
    snprintf(url, sizeof(url), "%s%s", s->ep.scheme_host, wire.data);
    cm_buf_free(&wire);
    cm_sigv4_sha256_hex(r->save ? op->body : "", r->save ? op->len : 0, sha);
    extra[n++] = (struct cm_sigv4_header){"x-amz-content-sha256", sha};
    if (r->save)
        extra[n++] = (struct cm_sigv4_header){op->version[0] ? "if-match" : "if-none-match",
                                              op->version[0] ? op->version : "*"};
    else if (op->version[0])
        extra[n++] = (struct cm_sigv4_header){"if-none-match", op->version};
    sr = (struct aw_sign_req){r->save ? "PUT" : "GET",
                              &s->ep,
                              path,
                              "s3",
                              s->region,
                              cr,
                              NULL,
                              r->save ? "application/json" : NULL,
                              extra,
                              n,
                              r->save ? op->body : NULL,
                              r->save ? op->len : 0,
                              (long long)time(NULL),
                              1};
    r->headers = aw_sign_request(&sr);
    if (!r->headers) {
        snprintf(op->error, sizeof(op->error), "cannot sign the S3 request");
        finish(r, AW_STORE_FAILED);
        return;
    }
    curl_easy_setopt(r->h, CURLOPT_URL, url);
    curl_easy_setopt(r->h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(r->h, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(r->h, CURLOPT_TIMEOUT_MS, (long)s->timeout_ms);
    curl_easy_setopt(r->h, CURLOPT_USERAGENT, "agentcore-c/0.1");
    if (s->ca_bundle)
        curl_easy_setopt(r->h, CURLOPT_CAINFO, s->ca_bundle);
    if (r->save) {
        curl_easy_setopt(r->h, CURLOPT_CUSTOMREQUEST, "PUT");
        curl_easy_setopt(r->h, CURLOPT_POSTFIELDS, op->body);
        curl_easy_setopt(r->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)op->len);
    }
    /* A document within AW_STORE_MAX_DOC; an error body within a few KiB. */
    cm_buf_init(&r->rbody, r->save ? ERROR_BODY_CAP : AW_STORE_MAX_DOC);
    curl_easy_setopt(r->h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(r->h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(r->h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(r->h, CURLOPT_HEADERDATA, r);
    if (aw_curl_add(s->multi, r->h, on_done, r)) {
        snprintf(op->error, sizeof(op->error), "cannot start the S3 transfer");
        finish(r, AW_STORE_FAILED);
    }
}

static void with_credentials(struct s3req *r);

static void creds_ready(struct aw_creds_waiter *w)
{
    with_credentials((struct s3req *)((char *)w - offsetof(struct s3req, cw)));
}

static void with_credentials(struct s3req *r)
{
    struct aw_credentials cr;
    struct aw_model_error e;
    int rc;

    memset(&cr, 0, sizeof(cr));
    r->cw.ready = creds_ready;
    rc = aw_creds_async_get(&r->s->cra, &cr, &r->cw, &e);
    if (rc == 1)
        return; /* creds_ready comes back here */
    if (rc) {
        snprintf(r->op->error, sizeof(r->op->error), "no credentials for S3: %.300s", e.message);
        finish(r, AW_STORE_FAILED);
        return;
    }
    start(r, &cr);
    aw_credentials_clear(&cr);
}

static int submit(struct aw_store *base, struct aw_store_op *op, int save)
{
    struct s3req *r = calloc(1, sizeof(*r));

    if (!r)
        return CM_ENOMEM;
    r->s = (struct s3store *)base;
    r->op = op;
    r->save = save;
    with_credentials(r);
    return 0;
}

static int s3_load(struct aw_store *s, struct aw_store_op *op)
{
    return submit(s, op, 0);
}

static int s3_save(struct aw_store *s, struct aw_store_op *op)
{
    return submit(s, op, 1);
}

static void s3_free(struct aw_store *base)
{
    struct s3store *s = (struct s3store *)base;

    aw_creds_async_cleanup(&s->cra); /* a refresh in flight outlives us */
    aw_curl_free(s->multi);
    free(s->ca_bundle);
    free(s);
}

static const struct aw_store_backend s3_backend = {"s3", s3_load, s3_save, s3_free};

struct aw_store *aw_store_s3_new(const struct aw_store_s3_config *cfg, char *err, size_t errlen)
{
    struct s3store *s;
    char url[512];
    size_t i, n = cfg->bucket ? strlen(cfg->bucket) : 0;

    /* Bucket names: 3..63 of [a-z0-9.-]; nothing that could change the path. */
    for (i = 0; i < n; i++)
        if (!((cfg->bucket[i] >= 'a' && cfg->bucket[i] <= 'z') ||
              (cfg->bucket[i] >= '0' && cfg->bucket[i] <= '9') || cfg->bucket[i] == '.' ||
              cfg->bucket[i] == '-'))
            break;
    if (n < 3 || n > 63 || i < n) {
        snprintf(err, errlen, "SESSION_S3_BUCKET must be a bucket name (3-63 of a-z 0-9 . -)");
        return NULL;
    }
    if (!cfg->creds) {
        snprintf(err, errlen, "the S3 session store needs AWS credentials");
        return NULL;
    }
    if (!(s = calloc(1, sizeof(*s)))) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (cfg->endpoint && *cfg->endpoint)
        cm_strlcpy(url, cfg->endpoint, sizeof(url));
    else
        snprintf(url, sizeof(url), "https://s3.%s.amazonaws.com", cfg->region);
    if (aw_endpoint_parse(url, &s->ep, err, errlen)) {
        free(s);
        return NULL;
    }
    cm_strlcpy(s->bucket, cfg->bucket, sizeof(s->bucket));
    cm_strlcpy(s->prefix, cfg->prefix ? cfg->prefix : "", sizeof(s->prefix));
    cm_strlcpy(s->region, cfg->region, sizeof(s->region));
    s->ca_bundle = cfg->ca_bundle ? strdup(cfg->ca_bundle) : NULL;
    s->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 10000;
    s->creds = cfg->creds;
    aw_creds_async_init(&s->cra, cfg->creds, cfg->loop);
    s->multi = aw_curl_new(cfg->loop, 16);
    if (!s->multi) {
        snprintf(err, errlen, "cannot create the S3 transfer handle");
        free(s->ca_bundle);
        free(s);
        return NULL;
    }
    s->base.be = &s3_backend;
    s->base.loop = cfg->loop;
    return &s->base;
}
