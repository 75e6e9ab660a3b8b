#define _GNU_SOURCE /* strptime, timegm */
#include "aw_creds.h"
#include "cm_buf.h"
#include "cm_err.h"
#include "cm_json.h"
#include "cm_util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define REFRESH_MARGIN_S 300
#define RETRY_AFTER_FAILURE_MS 1000
#define MAX_BODY (1024 * 1024)

struct aw_creds {
    struct aw_creds_config cfg; /* strings point into |strings| */
    char *strings[16];
    int nstrings;
    struct aw_endpoint sm; /* Secrets Manager */
    pthread_mutex_t lock;  /* the fields below; never held while a source is asked */
    pthread_cond_t cond;   /* a resolution finished */
    struct aw_credentials cur;
    long long refresh_at; /* unix seconds when |cur| is to be fetched again; 0 never */
    int have, stale;
    int resolving;      /* one thread asks the sources; the others use |cur| or wait */
    uint64_t failed_at; /* monotonic ms of the last failed resolution */
    char failure[768];
    char last_source[32];
};

/* ---- parsers ---- */

static void put(char *dst, size_t cap, const char *src)
{
    cm_strlcpy(dst, src ? src : "", cap);
}

long long aw_creds_iso8601(const char *s)
{
    struct tm tm;
    const char *rest;

    memset(&tm, 0, sizeof(tm));
    if (!s || !(rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm)))
        return -1;
    if (*rest == '.')
        while (isdigit((unsigned char)*++rest))
            ;
    if (*rest == 'Z' || *rest == '\0')
        return (long long)timegm(&tm);
    /* "+HH:MM" or "+HHMM", nothing after: UTC offsets lie within +-14:00
     * (and a number read by atoi could overflow h * 3600). */
    if (*rest == '+' || *rest == '-') {
        const char *d = rest + 1;
        int h, m;

        if (!isdigit((unsigned char)d[0]) || !isdigit((unsigned char)d[1]))
            return -1;
        h = (d[0] - '0') * 10 + (d[1] - '0');
        d += 2 + (d[2] == ':');
        if (!isdigit((unsigned char)d[0]) || !isdigit((unsigned char)d[1]) || d[2] || h > 14)
            return -1;
        m = (d[0] - '0') * 10 + (d[1] - '0');
        if (m > 59)
            return -1;
        return (long long)timegm(&tm) - (*rest == '+' ? 1 : -1) * (long long)(h * 3600 + m * 60);
    }
    return -1;
}

/* Reads a key pair (and token, expiry) stored under the given names. */
static int from_json(json_t *o, const char *k_akid, const char *k_secret, const char *k_token,
                     const char *k_exp, struct aw_credentials *out)
{
    const char *akid = NULL, *secret = NULL, *token = NULL, *exp = NULL;

    memset(out, 0, sizeof(*out));
    cm_json_opt_str(o, k_akid, &akid, NULL, 0);
    cm_json_opt_str(o, k_secret, &secret, NULL, 0);
    cm_json_opt_str(o, k_token, &token, NULL, 0);
    if (k_exp)
        cm_json_opt_str(o, k_exp, &exp, NULL, 0);
    if (!akid || !*akid || !secret || !*secret) {
        json_decref(o);
        return CM_EINVAL;
    }
    /* The strings belong to |o|: copy them, then wipe them before jansson
     * frees them (free does not clear). */
    put(out->akid, sizeof(out->akid), akid);
    put(out->secret, sizeof(out->secret), secret);
    put(out->token, sizeof(out->token), token);
    out->expires_at = exp ? aw_creds_iso8601(exp) : 0;
    if (out->expires_at < 0)
        out->expires_at = 0;
    OPENSSL_cleanse((char *)secret, strlen(secret));
    if (token)
        OPENSSL_cleanse((char *)token, strlen(token));
    json_decref(o);
    return 0;
}

int aw_creds_parse_json(const char *body, size_t len, struct aw_credentials *out)
{
    return from_json(json_loadb(body, len, 0, NULL), "AccessKeyId", "SecretAccessKey", "Token",
                     "Expiration", out);
}

int aw_creds_parse_secret(const char *secret_string, struct aw_credentials *out)
{
    return from_json(json_loads(secret_string, 0, NULL), "AWS_ACCESS_KEY_ID",
                     "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", NULL, out);
}

static char *trim(char *s)
{
    char *e;

    while (*s == ' ' || *s == '\t')
        s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
        *--e = '\0';
    return s;
}

int aw_creds_parse_ini(const char *text, const char *profile, int config,
                       struct aw_credentials *out)
{
    char want[300], *copy = strdup(text), *line, *save = NULL;
    int in = 0, found = 0;

    memset(out, 0, sizeof(*out));
    if (!copy)
        return CM_ENOMEM;
    if (config && strcmp(profile, "default"))
        snprintf(want, sizeof(want), "profile %s", profile);
    else
        snprintf(want, sizeof(want), "%s", profile);
    for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *l = trim(line), *eq;

        if (*l == '#' || *l == ';' || !*l)
            continue;
        if (*l == '[') {
            char *end = strchr(l, ']');

            if (end)
                *end = '\0';
            in = !strcmp(trim(l + 1), want);
            continue;
        }
        if (!in || !(eq = strchr(l, '=')))
            continue;
        *eq = '\0';
        l = trim(l);
        if (!strcmp(l, "aws_access_key_id"))
            put(out->akid, sizeof(out->akid), trim(eq + 1));
        else if (!strcmp(l, "aws_secret_access_key"))
            put(out->secret, sizeof(out->secret), trim(eq + 1));
        else if (!strcmp(l, "aws_session_token"))
            put(out->token, sizeof(out->token), trim(eq + 1));
    }
    found = out->akid[0] && out->secret[0];
    OPENSSL_cleanse(copy, strlen(text));
    free(copy);
    if (!found)
        aw_credentials_clear(out);
    return found ? 0 : CM_ENOENT;
}

/* ---- small HTTP helper (rare calls: a fresh handle each time) ---- */

static size_t collect(char *p, size_t sz, size_t n, void *ud)
{
    return cm_buf_add(ud, p, sz * n) ? 0 : sz * n;
}

/* Returns the HTTP status (0 when the request failed) and the body in |out|. */
static long http(const char *ca_bundle, const char *method, const char *url,
                 struct curl_slist *headers, const char *body, long timeout_ms, struct cm_buf *out,
                 char *why, size_t whylen)
{
    CURL *h = curl_easy_init();
    long status = 0;
    CURLcode cc;

    if (!h) {
        snprintf(why, whylen, "no HTTP handle");
        return 0;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    /* Never follow a redirect: a credential request goes where it was sent. */
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (ca_bundle) /* AWS_CA_BUNDLE: the same trust as Bedrock calls */
        curl_easy_setopt(h, CURLOPT_CAINFO, ca_bundle);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    } else if (!strcmp(method, "PUT")) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
    }
    cc = curl_easy_perform(h);
    if (cc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    else
        snprintf(why, whylen, "%s", curl_easy_strerror(cc));
    curl_easy_cleanup(h);
    return status;
}

/* ---- sources ---- */

static void why_add(char *why, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void why_add(char *why, size_t cap, const char *fmt, ...)
{
    size_t n = strlen(why);
    va_list ap;

    if (n && n + 2 < cap) {
        memcpy(why + n, "; ", 3);
        n += 2;
    }
    va_start(ap, fmt);
    vsnprintf(why + n, cap - n, fmt, ap);
    va_end(ap);
}

static int from_files(struct aw_creds *c, struct aw_credentials *out, char *why, size_t cap)
{
    const char *profile = c->cfg.profile ? c->cfg.profile : "default";
    const char *files[2] = {c->cfg.credentials_file, c->cfg.config_file};
    int i;

    for (i = 0; i < 2; i++) {
        char *text;

        if (!files[i] || !(text = cm_read_file(files[i], MAX_BODY, NULL)))
            continue;
        if (!aw_creds_parse_ini(text, profile, i == 1, out)) {
            OPENSSL_cleanse(text, strlen(text));
            free(text);
            put(out->source, sizeof(out->source), "shared-config");
            return 0;
        }
        OPENSSL_cleanse(text, strlen(text));
        free(text);
    }
    if (c->cfg.profile)
        why_add(why, cap, "profile '%s' not found in the shared files", profile);
    return CM_ENOENT;
}

/* A container credentials URL may use https to any host, or plain http to
 * the hosts the SDKs allow: loopback, ECS's 169.254.170.2 and EKS's
 * 169.254.170.23 / fd00:ec2::23. The URL is parsed (curl's URL API), not
 * matched by prefix: "http://127.0.0.1@other-host/" names other-host. */
int aw_creds_container_url_ok(const char *url)
{
    static const char *const local[] = {"localhost", "[::1]", "169.254.170.2", "169.254.170.23",
                                        "[fd00:ec2::23]"};
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *user = NULL;
    struct in_addr a;
    size_t i;
    int ok = 0;

    if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
        goto out;
    /* Credentials in the URL itself are refused: they would be sent along. */
    if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK)
        goto out;
    if (!strcmp(scheme, "https")) {
        ok = 1;
        goto out;
    }
    if (strcmp(scheme, "http"))
        goto out;
    if (inet_pton(AF_INET, host, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127) {
        ok = 1;
        goto out;
    }
    for (i = 0; i < sizeof(local) / sizeof(local[0]); i++)
        ok |= !strcasecmp(host, local[i]);
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(user);
    curl_url_cleanup(u);
    return ok;
}

static int from_container(struct aw_creds *c, struct aw_credentials *out, char *why, size_t cap)
{
    char url[2048], token[4096] = "", err[256] = "";
    struct curl_slist *hdrs = NULL;
    struct cm_buf body;
    long status = 0;
    int attempt, rc = CM_ENOENT;

    if (c->cfg.container_relative_uri)
        snprintf(url, sizeof(url), "http://169.254.170.2%s", c->cfg.container_relative_uri);
    else if (c->cfg.container_full_uri)
        snprintf(url, sizeof(url), "%s", c->cfg.container_full_uri);
    else
        return CM_ENOENT;
    if (!aw_creds_container_url_ok(url)) {
        why_add(why, cap, "container credentials URI not allowed (https or a local address)");
        return CM_ENOENT;
    }
    if (c->cfg.container_token_file) {
        char *t = cm_read_file(c->cfg.container_token_file, 16384, NULL);

        if (t) {
            put(token, sizeof(token), t);
            OPENSSL_cleanse(t, strlen(t));
            free(t);
            token[strcspn(token, "\r\n")] = '\0';
        }
    } else if (c->cfg.container_token) {
        put(token, sizeof(token), c->cfg.container_token);
    }
    if (token[0]) {
        char line[4200];

        snprintf(line, sizeof(line), "Authorization: %s", token);
        hdrs = curl_slist_append(NULL, line);
        OPENSSL_cleanse(line, sizeof(line));
        OPENSSL_cleanse(token, sizeof(token));
    }
    for (attempt = 0; attempt < 3 && rc; attempt++) {
        cm_buf_init(&body, MAX_BODY);
        status = http(c->cfg.ca_bundle, "GET", url, hdrs, NULL, 2000, &body, err, sizeof(err));
        if (status == 200 && !aw_creds_parse_json(body.data ? body.data : "", body.len, out))
            rc = 0;
        if (body.data)
            OPENSSL_cleanse(body.data, body.len);
        cm_buf_free(&body);
        if (status >= 400 && status < 500)
            break; /* the token or URI is wrong: asking again will not help */
    }
    aw_slist_free_secure(hdrs);
    if (rc && status == 200)
        why_add(why, cap, "container credentials endpoint: unusable answer");
    else if (rc && status)
        why_add(why, cap, "container credentials endpoint answered %ld", status);
    else if (rc)
        why_add(why, cap, "container credentials endpoint: %s", err);
    else
        put(out->source, sizeof(out->source), "container");
    return rc;
}

static int from_imds(struct aw_creds *c, struct aw_credentials *out, char *why, size_t cap)
{
    const char *base = c->cfg.imds_endpoint ? c->cfg.imds_endpoint : "http://169.254.169.254";
    char url[1024], err[256] = "", role[256], line[512];
    struct curl_slist *hdrs;
    struct cm_buf b;
    long st;
    int rc = CM_ENOENT;

    if (c->cfg.imds_disabled)
        return CM_ENOENT;
    /* Token first (IMDSv2 / MMDSv2): a metadata service that refuses the PUT
     * is reported, never bypassed with a tokenless GET. */
    cm_buf_init(&b, 4096);
    hdrs = curl_slist_append(NULL, "X-aws-ec2-metadata-token-ttl-seconds: 21600");
    snprintf(url, sizeof(url), "%s/latest/api/token", base);
    st = http(c->cfg.ca_bundle, "PUT", url, hdrs, NULL, 1000, &b, err, sizeof(err));
    curl_slist_free_all(hdrs);
    if (st != 200 || !b.len) {
        if (st)
            why_add(why, cap, "instance metadata unavailable: PUT /latest/api/token answered %ld",
                    st);
        else
            why_add(why, cap, "instance metadata unavailable: %s", err);
        cm_buf_free(&b);
        return CM_ENOENT;
    }
    snprintf(line, sizeof(line), "X-aws-ec2-metadata-token: %.400s", b.data);
    OPENSSL_cleanse(b.data, b.len);
    cm_buf_free(&b);
    hdrs = curl_slist_append(NULL, line);
    OPENSSL_cleanse(line, sizeof(line));
    cm_buf_init(&b, 4096);
    snprintf(url, sizeof(url), "%s/latest/meta-data/iam/security-credentials/", base);
    st = http(c->cfg.ca_bundle, "GET", url, hdrs, NULL, 1000, &b, err, sizeof(err));
    if (st == 200 && b.len) {
        snprintf(role, sizeof(role), "%.*s", (int)strcspn(b.data, "\r\n"), b.data);
        cm_buf_free(&b);
        cm_buf_init(&b, MAX_BODY);
        snprintf(url, sizeof(url), "%s/latest/meta-data/iam/security-credentials/%s", base, role);
        st = http(c->cfg.ca_bundle, "GET", url, hdrs, NULL, 1000, &b, err, sizeof(err));
        if (st == 200 && !aw_creds_parse_json(b.data ? b.data : "", b.len, out))
            rc = 0;
        if (b.data)
            OPENSSL_cleanse(b.data, b.len);
    }
    cm_buf_free(&b);
    aw_slist_free_secure(hdrs);
    if (rc)
        why_add(why, cap, "instance metadata has no role credentials (HTTP %ld)", st);
    else
        put(out->source, sizeof(out->source), "instance-metadata");
    return rc;
}

/* Sources 1-4: what signs Bedrock calls, or bootstraps the secret. */
static int resolve_base(struct aw_creds *c, struct aw_credentials *out, char *why, size_t cap)
{
    memset(out, 0, sizeof(*out));
    if (c->cfg.access_key_id && c->cfg.secret_access_key) {
        put(out->akid, sizeof(out->akid), c->cfg.access_key_id);
        put(out->secret, sizeof(out->secret), c->cfg.secret_access_key);
        put(out->token, sizeof(out->token), c->cfg.session_token);
        put(out->source, sizeof(out->source), "environment");
        return 0;
    }
    if (!from_files(c, out, why, cap) || !from_container(c, out, why, cap) ||
        !from_imds(c, out, why, cap))
        return 0;
    return CM_ENOENT;
}

static int fetch_secret(struct aw_creds *c, const struct aw_credentials *boot,
                        struct aw_credentials *out, char *why, size_t cap)
{
    struct cm_sigv4_header target = {"x-amz-target", "secretsmanager.GetSecretValue"};
    json_t *req = json_pack("{s:s}", "SecretId", c->cfg.secret_id), *resp = NULL;
    char *body = req ? cm_json_dump(req) : NULL, url[1100], err[256] = "";
    const char *ss = NULL;
    struct curl_slist *hdrs;
    struct aw_model_error e;
    struct cm_buf b;
    long st;
    int rc = CM_EUPSTREAM;

    json_decref(req);
    if (!body)
        return CM_ENOMEM;
    hdrs = aw_sign_post(&c->sm, c->sm.base_path[0] ? c->sm.base_path : "/", "secretsmanager",
                        c->cfg.region, boot, NULL, "application/x-amz-json-1.1", &target, 1, body,
                        strlen(body), (long long)time(NULL));
    snprintf(url, sizeof(url), "%s%s", c->sm.scheme_host,
             c->sm.base_path[0] ? c->sm.base_path : "/");
    cm_buf_init(&b, MAX_BODY);
    st = hdrs ? http(c->cfg.ca_bundle, "POST", url, hdrs, body, 10000, &b, err, sizeof(err)) : 0;
    aw_slist_free_secure(hdrs);
    free(body);
    if (st == 200) {
        resp = json_loadb(b.data ? b.data : "", b.len, 0, NULL);
        cm_json_opt_str(resp, "SecretString", &ss, NULL, 0);
        if (ss && !aw_creds_parse_secret(ss, out)) {
            /* The secret does not expire: it is re-read every secret_ttl_s
             * (refresh_point). */
            put(out->source, sizeof(out->source), "secrets-manager");
            out->expires_at = 0;
            rc = 0;
        } else {
            why_add(why, cap,
                    "secret '%s' does not hold AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                    c->cfg.secret_id);
        }
        if (ss) /* wiped before jansson frees it, found or not */
            OPENSSL_cleanse((char *)ss, strlen(ss));
        json_decref(resp);
    } else if (st) {
        aw_parse_error((int)st, NULL, b.data, b.len, &e);
        why_add(why, cap, "Secrets Manager GetSecretValue of secret '%s' failed: %s (HTTP %ld): %s",
                c->cfg.secret_id, e.type, st, e.message);
    } else {
        why_add(why, cap, "cannot reach Secrets Manager at %s: %s", c->sm.scheme_host, err);
    }
    if (b.data)
        OPENSSL_cleanse(b.data, b.len);
    cm_buf_free(&b);
    return rc;
}

static int resolve(struct aw_creds *c, struct aw_credentials *out, char *why, size_t cap)
{
    struct aw_credentials boot;
    int rc;

    why[0] = '\0';
    if (!c->cfg.secret_id)
        return resolve_base(c, out, why, cap);
    rc = resolve_base(c, &boot, why, cap);
    if (rc) {
        why_add(why, cap, "no bootstrap credentials to read secret '%s'", c->cfg.secret_id);
        return rc;
    }
    rc = fetch_secret(c, &boot, out, why, cap);
    aw_credentials_clear(&boot);
    return rc;
}

/* ---- lifecycle ---- */

static const char *keep(struct aw_creds *c, const char *s)
{
    char *d;

    if (!s || !*s || c->nstrings == (int)(sizeof(c->strings) / sizeof(c->strings[0])))
        return NULL;
    d = strdup(s);
    c->strings[c->nstrings++] = d;
    return d;
}

struct aw_creds *aw_creds_new(const struct aw_creds_config *cfg, char *err, size_t errlen)
{
    struct aw_creds *c = calloc(1, sizeof(*c));
    char url[600];

    if (!c)
        return NULL;
    c->cfg = *cfg;
    c->cfg.region = keep(c, cfg->region);
    c->cfg.access_key_id = keep(c, cfg->access_key_id);
    c->cfg.secret_access_key = keep(c, cfg->secret_access_key);
    c->cfg.session_token = keep(c, cfg->session_token);
    c->cfg.secret_id = keep(c, cfg->secret_id);
    c->cfg.profile = keep(c, cfg->profile);
    c->cfg.credentials_file = keep(c, cfg->credentials_file);
    c->cfg.config_file = keep(c, cfg->config_file);
    c->cfg.container_full_uri = keep(c, cfg->container_full_uri);
    c->cfg.container_relative_uri = keep(c, cfg->container_relative_uri);
    c->cfg.container_token = keep(c, cfg->container_token);
    c->cfg.container_token_file = keep(c, cfg->container_token_file);
    c->cfg.imds_endpoint = keep(c, cfg->imds_endpoint);
    c->cfg.ca_bundle = keep(c, cfg->ca_bundle);
    c->cfg.secrets_endpoint = NULL;
    if (c->cfg.secret_ttl_s <= 0)
        c->cfg.secret_ttl_s = 3600;
    if (cfg->secrets_endpoint && *cfg->secrets_endpoint)
        snprintf(url, sizeof(url), "%s", cfg->secrets_endpoint);
    else
        snprintf(url, sizeof(url), "https://secretsmanager.%s.amazonaws.com",
                 cfg->region ? cfg->region : "us-east-1");
    if (aw_endpoint_parse(url, &c->sm, err, errlen)) {
        aw_creds_free(c);
        return NULL;
    }
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    return c;
}

void aw_creds_free(struct aw_creds *c)
{
    int i;

    if (!c)
        return;
    for (i = 0; i < c->nstrings; i++) {
        OPENSSL_cleanse(c->strings[i], strlen(c->strings[i]));
        free(c->strings[i]);
    }
    aw_credentials_clear(&c->cur);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
    free(c);
}

void aw_creds_invalidate(struct aw_creds *c)
{
    pthread_mutex_lock(&c->lock);
    c->stale = 1;
    pthread_mutex_unlock(&c->lock);
}

static int usable(const struct aw_credentials *cr, long long now)
{
    return cr->expires_at == 0 || now < cr->expires_at;
}

/* When credentials fetched at |now| are to be fetched again: a secret after
 * its TTL (it may have been rotated; it does not expire), credentials that
 * expire REFRESH_MARGIN_S before they do, others never (0). */
static long long refresh_point(const struct aw_creds *c, const struct aw_credentials *cr,
                               long long now)
{
    if (c->cfg.secret_id)
        return now + c->cfg.secret_ttl_s;
    return cr->expires_at ? cr->expires_at - REFRESH_MARGIN_S : 0;
}

/* Under the lock: a resolution is due and may be tried now. */
static int due_now(struct aw_creds *c, long long now)
{
    int due = !c->have || c->stale || (c->refresh_at && now >= c->refresh_at);

    return due && !c->resolving &&
           (!c->failed_at || cm_now_ms() - c->failed_at >= RETRY_AFTER_FAILURE_MS);
}

/* Under the lock: the current credentials may sign. */
static int current_ok(struct aw_creds *c, long long now)
{
    /* Credentials past their refresh point but not expired still sign. */
    return c->have && (!c->stale || !c->failed_at) && usable(&c->cur, now);
}

static void fill_error(struct aw_creds *c, struct aw_model_error *err)
{
    memset(err, 0, sizeof(*err));
    cm_strlcpy(err->type, c->cfg.secret_id ? "CredentialsError" : "MissingCredentials",
               sizeof(err->type));
    snprintf(err->message, sizeof(err->message), "no usable AWS credentials: %.700s",
             c->failure[0] ? c->failure : "none configured");
}

/* Asks the sources with the lock released, then records the outcome. */
static void resolve_unlocked(struct aw_creds *c, long long now)
{
    struct aw_credentials fresh;
    char why[768], text[900];
    int rc;

    c->resolving = 1;
    pthread_mutex_unlock(&c->lock);
    rc = resolve(c, &fresh, why, sizeof(why));
    pthread_mutex_lock(&c->lock);
    c->resolving = 0;
    pthread_cond_broadcast(&c->cond);
    if (!rc) {
        if (!c->have || strcmp(fresh.source, c->last_source)) {
            snprintf(text, sizeof(text), "AWS credentials from %s", fresh.source);
            if (c->cfg.notify)
                c->cfg.notify(0, text);
        } else if (c->cfg.notify) {
            snprintf(text, sizeof(text), "AWS credentials refreshed from %s", fresh.source);
            c->cfg.notify(-1, text);
        }
        cm_strlcpy(c->last_source, fresh.source, sizeof(c->last_source));
        c->cur = fresh;
        c->refresh_at = refresh_point(c, &fresh, now);
        c->have = 1;
        c->stale = 0;
        c->failed_at = 0;
        aw_credentials_clear(&fresh);
        return;
    }
    aw_credentials_clear(&fresh); /* a source may have filled part of it */
    c->failed_at = cm_now_ms();
    cm_strlcpy(c->failure, why, sizeof(c->failure));
    if (c->cfg.notify) {
        if (c->have && !c->stale && usable(&c->cur, now))
            snprintf(text, sizeof(text),
                     "AWS credentials refresh failed, the current ones sign until they "
                     "expire: %.700s",
                     why);
        else
            snprintf(text, sizeof(text), "no AWS credentials: %.800s", why);
        c->cfg.notify(1, text);
    }
}

int aw_creds_get(struct aw_creds *c, struct aw_credentials *out, struct aw_model_error *err)
{
    long long now = (long long)time(NULL);

    pthread_mutex_lock(&c->lock);
    if (due_now(c, now))
        resolve_unlocked(c, now);
    /* Another thread is asking: wait for it when nothing usable is at hand. */
    while (c->resolving && !current_ok(c, now))
        pthread_cond_wait(&c->cond, &c->lock);
    if (current_ok(c, now)) {
        *out = c->cur;
        pthread_mutex_unlock(&c->lock);
        return 0;
    }
    fill_error(c, err);
    pthread_mutex_unlock(&c->lock);
    return CM_EUPSTREAM;
}

int aw_creds_peek(struct aw_creds *c, struct aw_credentials *out, int *refresh,
                  struct aw_model_error *err)
{
    long long now = (long long)time(NULL);
    int rc;

    pthread_mutex_lock(&c->lock);
    *refresh = due_now(c, now);
    if (current_ok(c, now)) {
        *out = c->cur;
        rc = 0;
    } else if (*refresh || c->resolving) {
        rc = 1;
    } else {
        fill_error(c, err);
        rc = CM_EUPSTREAM;
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

/* ---- on an event loop ---- */

/* A resolution on the work pool. It belongs to itself: its owner may be
 * freed while it runs (shutdown), then |a| is NULL and it only frees itself. */
struct aw_creds_job {
    uv_work_t work;
    struct aw_creds *creds;
    struct aw_creds_async *a;
};

void aw_creds_async_init(struct aw_creds_async *a, struct aw_creds *creds, uv_loop_t *loop)
{
    memset(a, 0, sizeof(*a));
    a->creds = creds;
    a->loop = loop;
}

static void async_work(uv_work_t *w)
{
    struct aw_creds_job *j = w->data;
    struct aw_credentials cr;
    struct aw_model_error e;

    if (!aw_creds_get(j->creds, &cr, &e))
        aw_credentials_clear(&cr);
}

static void async_done(uv_work_t *w, int status)
{
    struct aw_creds_job *j = w->data;
    struct aw_creds_async *a = j->a;
    struct aw_creds_waiter *x, *next;

    (void)status;
    free(j);
    if (!a)
        return; /* its owner is gone */
    a->job = NULL;
    x = a->waiting;
    a->waiting = NULL;
    for (; x; x = next) {
        next = x->next;
        x->next = NULL;
        x->ready(x); /* may queue itself again */
    }
}

static void async_start(struct aw_creds_async *a)
{
    struct aw_creds_job *j = calloc(1, sizeof(*j));

    if (!j)
        return;
    j->creds = a->creds;
    j->a = a;
    j->work.data = j;
    if (uv_queue_work(a->loop, &j->work, async_work, async_done)) {
        free(j);
        return;
    }
    a->job = j;
}

void aw_creds_async_cleanup(struct aw_creds_async *a)
{
    if (a->job)
        a->job->a = NULL;
    a->job = NULL;
    a->waiting = NULL;
}

int aw_creds_async_get(struct aw_creds_async *a, struct aw_credentials *out,
                       struct aw_creds_waiter *w, struct aw_model_error *err)
{
    int refresh = 0, rc = aw_creds_peek(a->creds, out, &refresh, err);

    if (refresh && !a->job)
        async_start(a);
    if (rc == 1 && a->job) {
        w->next = a->waiting;
        a->waiting = w;
        return 1;
    }
    if (rc == 1) {
        memset(err, 0, sizeof(*err));
        cm_strlcpy(err->type, "CredentialsError", sizeof(err->type));
        cm_strlcpy(err->message, "credentials could not be resolved", sizeof(err->message));
        return CM_EUPSTREAM;
    }
    return rc;
}

void aw_creds_async_cancel(struct aw_creds_async *a, struct aw_creds_waiter *w)
{
    struct aw_creds_waiter **p;

    for (p = &a->waiting; *p; p = &(*p)->next) {
        if (*p == w) {
            *p = w->next;
            w->next = NULL;
            return;
        }
    }
}
