#include "cm_sigv4.h"
#include "cm_err.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One canonical header: lowercase name and the comma-joined, trimmed values of
 * every header with that name, in the order they were given. */
struct canon_hdr {
    char name[128];
    struct cm_buf value;
    size_t first; /* index of first appearance: keeps the sort stable */
};

static void to_hex(const unsigned char *p, size_t n, char *hex)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < n; i++) {
        hex[2 * i] = digits[p[i] >> 4];
        hex[2 * i + 1] = digits[p[i] & 15];
    }
    hex[2 * n] = '\0';
}

/* SHA-256 fetched once: EVP_sha256() and the one-shot SHA256()/HMAC() look
 * the algorithm up again on every call (a lock and a hash table in OpenSSL
 * 3), which was most of a signature's cost. NULL if the fetch failed; the
 * callers then fall back to the implicit fetch. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static const EVP_MD *sha256(void)
{
    pthread_once(&sha256_once, sha256_fetch);
    return sha256_md ? sha256_md : EVP_sha256();
}

static int digest2(const void *a, size_t an, const void *b, size_t bn, unsigned char *out)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, sha256(), NULL) && EVP_DigestUpdate(ctx, a, an) &&
             EVP_DigestUpdate(ctx, b, bn) && EVP_DigestFinal_ex(ctx, out, NULL);

    EVP_MD_CTX_free(ctx);
    return ok ? 0 : CM_ENOMEM;
}

void cm_sigv4_sha256_hex(const void *p, size_t n, char *hex)
{
    unsigned char md[SHA256_DIGEST_LENGTH];

    if (digest2(p, n, "", 0, md))
        SHA256(p, n, md);
    to_hex(md, sizeof(md), hex);
}

void cm_sigv4_amz_date(long long unix_secs, char *out)
{
    time_t t = (time_t)unix_secs;
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

int cm_sigv4_equal(const char *a, const char *b)
{
    size_t n = strlen(a);

    if (n != strlen(b))
        return 0;
    return CRYPTO_memcmp(a, b, n) == 0;
}

static int unreserved(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

int cm_sigv4_uri_encode(struct cm_buf *b, const char *s, size_t n, int keep_slash)
{
    static const char digits[] = "0123456789ABCDEF";
    size_t i;
    int rc = 0;

    for (i = 0; i < n && !rc; i++) {
        unsigned char c = (unsigned char)s[i];

        if (unreserved(c) || (keep_slash && c == '/')) {
            rc = cm_buf_add(b, &s[i], 1);
        } else {
            char esc[3] = {'%', digits[c >> 4], digits[c & 15]};
            rc = cm_buf_add(b, esc, 3);
        }
    }
    return rc;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes %XX escapes of one query component into |b| so it can be encoded
 * exactly once, whether the caller sent it raw or already encoded. */
static int percent_decode(struct cm_buf *b, const char *s, size_t n)
{
    size_t i;
    int rc = 0;

    for (i = 0; i < n && !rc; i++) {
        if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            char c = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            rc = cm_buf_add(b, &c, 1);
            i += 2;
        } else {
            rc = cm_buf_add(b, &s[i], 1);
        }
    }
    return rc;
}

/* RFC 3986 remove_dot_segments plus collapsing of empty segments, keeping a
 * trailing slash: what botocore's normalize_url_path does. */
static int normalize_path(struct cm_buf *out, const char *path)
{
    const char *segs[256];
    size_t lens[256];
    size_t nseg = 0, i, plen = strlen(path);
    const char *p = path;
    int trailing = plen > 0 && path[plen - 1] == '/';
    int rc = 0;

    while (*p) {
        const char *s;
        size_t n;

        while (*p == '/')
            p++;
        s = p;
        while (*p && *p != '/')
            p++;
        n = (size_t)(p - s);
        if (n == 0 || (n == 1 && s[0] == '.'))
            continue;
        if (n == 2 && s[0] == '.' && s[1] == '.') {
            if (nseg)
                nseg--;
            continue;
        }
        if (nseg == 256)
            return CM_EINVAL;
        segs[nseg] = s;
        lens[nseg] = n;
        nseg++;
    }
    rc = cm_buf_add(out, "/", 1);
    for (i = 0; i < nseg && !rc; i++) {
        rc = cm_buf_add(out, segs[i], lens[i]);
        if (!rc && (i + 1 < nseg || trailing))
            rc = cm_buf_add(out, "/", 1);
    }
    return rc;
}

static int canonical_uri(struct cm_buf *cr, const char *path, int normalize)
{
    struct cm_buf tmp;
    int rc;

    if (!path || !*path)
        path = "/";
    if (!normalize)
        return cm_sigv4_uri_encode(cr, path, strlen(path), 1);
    cm_buf_init(&tmp, CM_SIGV4_MAX_CANONICAL);
    rc = normalize_path(&tmp, path);
    if (!rc)
        rc = cm_sigv4_uri_encode(cr, tmp.data, tmp.len, 1);
    cm_buf_free(&tmp);
    return rc;
}

struct qparam {
    char *key; /* encoded */
    char *val; /* encoded */
};

static int qparam_cmp(const void *a, const void *b)
{
    const struct qparam *x = a, *y = b;
    int c = strcmp(x->key, y->key);

    return c ? c : strcmp(x->val, y->val);
}

static int encode_component(const char *s, size_t n, char **out)
{
    struct cm_buf dec, enc;
    int rc;

    cm_buf_init(&dec, CM_SIGV4_MAX_CANONICAL);
    cm_buf_init(&enc, CM_SIGV4_MAX_CANONICAL);
    rc = percent_decode(&dec, s, n);
    if (!rc)
        rc = cm_sigv4_uri_encode(&enc, dec.data ? dec.data : "", dec.len, 0);
    cm_buf_free(&dec);
    if (rc) {
        cm_buf_free(&enc);
        return rc;
    }
    *out = cm_buf_steal(&enc);
    return *out ? 0 : CM_ENOMEM;
}

static int canonical_query(struct cm_buf *cr, const char *query)
{
    struct qparam *params = NULL;
    size_t n = 0, cap = 0, i;
    const char *p = query;
    int rc = 0;

    while (p && *p && !rc) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t klen = eq ? (size_t)(eq - p) : len;

        if (len > 0) {
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 8;
                struct qparam *np = realloc(params, ncap * sizeof(*np));

                if (!np) {
                    rc = CM_ENOMEM;
                    break;
                }
                params = np;
                cap = ncap;
            }
            params[n].key = NULL;
            params[n].val = NULL;
            n++;
            rc = encode_component(p, klen, &params[n - 1].key);
            if (!rc)
                rc =
                    encode_component(eq ? eq + 1 : "", eq ? len - klen - 1 : 0, &params[n - 1].val);
        }
        p = amp ? amp + 1 : NULL;
    }
    if (!rc && n) {
        qsort(params, n, sizeof(*params), qparam_cmp);
        for (i = 0; i < n && !rc; i++) {
            rc = cm_buf_printf(cr, "%s%s=%s", i ? "&" : "", params[i].key, params[i].val);
        }
    }
    for (i = 0; i < n; i++) {
        free(params[i].key);
        free(params[i].val);
    }
    free(params);
    return rc;
}

/* Trim, and fold runs of whitespace (including obs-fold line breaks) into one space. */
static int add_trimmed(struct cm_buf *b, const char *v)
{
    int pending_space = 0, started = 0, rc = 0;

    for (; *v && !rc; v++) {
        if (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n') {
            pending_space = started;
            continue;
        }
        if (pending_space)
            rc = cm_buf_add(b, " ", 1);
        if (!rc)
            rc = cm_buf_add(b, v, 1);
        pending_space = 0;
        started = 1;
    }
    return rc;
}

static int hdr_cmp(const void *a, const void *b)
{
    const struct canon_hdr *x = a, *y = b;
    int c = strcmp(x->name, y->name);

    if (c)
        return c;
    return x->first < y->first ? -1 : x->first > y->first;
}

static int canonical_headers(struct cm_buf *cr, const struct cm_sigv4_request *req,
                             char *signed_out, size_t signed_cap)
{
    struct canon_hdr hs[CM_SIGV4_MAX_HEADERS];
    size_t n = 0, i, j, pos = 0;
    int rc = 0;

    if (req->n_headers > CM_SIGV4_MAX_HEADERS)
        return CM_EINVAL;
    for (i = 0; i < req->n_headers && !rc; i++) {
        char lname[128];
        size_t k, len = strlen(req->headers[i].name);

        if (len == 0 || len >= sizeof(lname)) {
            rc = CM_EINVAL; /* the buffers made so far are freed below */
            break;
        }
        for (k = 0; k <= len; k++)
            lname[k] = (char)tolower((unsigned char)req->headers[i].name[k]);
        for (j = 0; j < n && strcmp(hs[j].name, lname); j++)
            ;
        if (j == n) {
            memcpy(hs[n].name, lname, len + 1);
            cm_buf_init(&hs[n].value, CM_SIGV4_MAX_CANONICAL);
            hs[n].first = i;
            n++;
        } else {
            rc = cm_buf_add(&hs[j].value, ",", 1);
        }
        if (!rc)
            rc = add_trimmed(&hs[j].value, req->headers[i].value ? req->headers[i].value : "");
    }
    if (!rc)
        qsort(hs, n, sizeof(hs[0]), hdr_cmp);
    for (i = 0; i < n && !rc; i++) {
        size_t nl = strlen(hs[i].name);

        rc = cm_buf_printf(cr, "%s:%s\n", hs[i].name, hs[i].value.data ? hs[i].value.data : "");
        if (!rc && pos + nl + 2 > signed_cap)
            rc = CM_ETOOBIG;
        if (!rc) {
            if (i)
                signed_out[pos++] = ';';
            memcpy(signed_out + pos, hs[i].name, nl);
            pos += nl;
        }
    }
    signed_out[pos] = '\0';
    for (i = 0; i < n; i++)
        cm_buf_free(&hs[i].value);
    return rc;
}

/* HMAC-SHA256 (RFC 2104) over the prefetched digest. */
static int hmac(const void *key, size_t klen, const void *msg, size_t mlen, unsigned char *out)
{
    unsigned char pad[64], inner[32];
    size_t i;
    int rc;

    if (klen > sizeof(pad)) {
        unsigned int olen = 0;

        return HMAC(sha256(), key, (int)klen, msg, mlen, out, &olen) ? 0 : CM_ENOMEM;
    }
    memset(pad, 0x36, sizeof(pad));
    for (i = 0; i < klen; i++)
        pad[i] ^= ((const unsigned char *)key)[i];
    rc = digest2(pad, sizeof(pad), msg, mlen, inner);
    for (i = 0; i < sizeof(pad); i++)
        pad[i] ^= 0x36 ^ 0x5c;
    if (!rc)
        rc = digest2(pad, sizeof(pad), inner, sizeof(inner), out);
    OPENSSL_cleanse(pad, sizeof(pad));
    OPENSSL_cleanse(inner, sizeof(inner));
    return rc;
}

void cm_sigv4_key_clear(struct cm_sigv4_key *key)
{
    if (key)
        OPENSSL_cleanse(key, sizeof(*key));
}

/* Copies |s| into |dst| (|cap| bytes); 0 if it does not fit. */
static int fits(char *dst, size_t cap, const char *s)
{
    size_t n = strlen(s);

    if (n >= cap)
        return 0;
    memcpy(dst, s, n + 1);
    return 1;
}

/* The signing key for |date| (YYYYMMDD), region and service: from |cache|
 * when it was derived for the same secret key and those, else derived (and
 * kept). */
static int signing_key(const struct cm_sigv4_params *p, const char *date,
                       struct cm_sigv4_key *cache, unsigned char *k4)
{
    unsigned char k1[32], k2[32], k3[32];
    char ksecret[256];
    int rc;

    if (cache && cache->valid && !strcmp(cache->date, date) && !strcmp(cache->region, p->region) &&
        !strcmp(cache->service, p->service) && !strcmp(cache->secret, p->secret_access_key)) {
        memcpy(k4, cache->k, 32);
        return 0;
    }
    if (snprintf(ksecret, sizeof(ksecret), "AWS4%s", p->secret_access_key) >= (int)sizeof(ksecret))
        return CM_EINVAL;
    rc = hmac(ksecret, strlen(ksecret), date, 8, k1);
    OPENSSL_cleanse(ksecret, sizeof(ksecret));
    if (!rc)
        rc = hmac(k1, 32, p->region, strlen(p->region), k2);
    if (!rc)
        rc = hmac(k2, 32, p->service, strlen(p->service), k3);
    if (!rc)
        rc = hmac(k3, 32, "aws4_request", 12, k4);
    OPENSSL_cleanse(k1, sizeof(k1));
    OPENSSL_cleanse(k2, sizeof(k2));
    OPENSSL_cleanse(k3, sizeof(k3));
    if (rc || !cache)
        return rc;
    cm_sigv4_key_clear(cache);
    if (fits(cache->secret, sizeof(cache->secret), p->secret_access_key) &&
        fits(cache->date, sizeof(cache->date), date) &&
        fits(cache->region, sizeof(cache->region), p->region) &&
        fits(cache->service, sizeof(cache->service), p->service)) {
        memcpy(cache->k, k4, 32);
        cache->valid = 1;
    } else {
        cm_sigv4_key_clear(cache); /* too long to keep: derived each time */
    }
    return 0;
}

int cm_sigv4_sign(const struct cm_sigv4_params *p, const struct cm_sigv4_request *req,
                  struct cm_sigv4_out *out)
{
    char body_hash[65], creq_hash[65], date[9], scope[256];
    unsigned char k4[32], sig[32];
    int rc;

    cm_buf_init(&out->canonical_request, CM_SIGV4_MAX_CANONICAL);
    cm_buf_init(&out->string_to_sign, 4096);
    cm_buf_init(&out->authorization, 4096);
    out->signed_headers[0] = '\0';
    out->signature[0] = '\0';
    if (!p->amz_date || strlen(p->amz_date) != 16 || p->amz_date[8] != 'T')
        return CM_EINVAL;
    memcpy(date, p->amz_date, 8);
    date[8] = '\0';

    rc = cm_buf_printf(&out->canonical_request, "%s\n", req->method);
    if (!rc)
        rc = canonical_uri(&out->canonical_request, req->path, p->normalize_path);
    if (!rc)
        rc = cm_buf_add(&out->canonical_request, "\n", 1);
    if (!rc)
        rc = canonical_query(&out->canonical_request, req->query);
    if (!rc)
        rc = cm_buf_add(&out->canonical_request, "\n", 1);
    if (!rc)
        rc = canonical_headers(&out->canonical_request, req, out->signed_headers,
                               sizeof(out->signed_headers));
    if (rc)
        return rc;
    cm_sigv4_sha256_hex(req->body ? req->body : "", req->body ? req->body_len : 0, body_hash);
    rc = cm_buf_printf(&out->canonical_request, "\n%s\n%s", out->signed_headers, body_hash);
    if (rc)
        return rc;

    if (snprintf(scope, sizeof(scope), "%s/%s/%s/aws4_request", date, p->region, p->service) >=
        (int)sizeof(scope))
        return CM_EINVAL;
    cm_sigv4_sha256_hex(out->canonical_request.data, out->canonical_request.len, creq_hash);
    rc = cm_buf_printf(&out->string_to_sign, "AWS4-HMAC-SHA256\n%s\n%s\n%s", p->amz_date, scope,
                       creq_hash);
    if (rc)
        return rc;

    rc = signing_key(p, date, p->key, k4);
    if (!rc)
        rc = hmac(k4, 32, out->string_to_sign.data, out->string_to_sign.len, sig);
    OPENSSL_cleanse(k4, sizeof(k4));
    if (rc)
        return rc;
    to_hex(sig, sizeof(sig), out->signature);
    return cm_buf_printf(&out->authorization,
                         "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s",
                         p->access_key_id, scope, out->signed_headers, out->signature);
}

void cm_sigv4_out_free(struct cm_sigv4_out *out)
{
    if (!out)
        return;
    cm_buf_free(&out->canonical_request);
    cm_buf_free(&out->string_to_sign);
    cm_buf_free(&out->authorization);
}
