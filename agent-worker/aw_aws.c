#include "aw_aws.h"
#include "cm_json.h"
#include "cm_err.h"
#include "cm_util.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <strings.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

void aw_credentials_clear(struct aw_credentials *c)
{
    OPENSSL_cleanse(c, sizeof(*c));
}

int aw_endpoint_parse(const char *url, struct aw_endpoint *ep, char *err, size_t errlen)
{
    const char *hs, *slash;
    size_t n;

    memset(ep, 0, sizeof(*ep));
    if (!strncmp(url, "https://", 8))
        hs = url + 8;
    else if (!strncmp(url, "http://", 7))
        hs = url + 7;
    else {
        snprintf(err, errlen, "endpoint '%.200s' must start with http:// or https://", url);
        return CM_EINVAL;
    }
    slash = strchr(hs, '/');
    if (!slash)
        slash = hs + strlen(hs);
    n = (size_t)(slash - hs);
    if (n == 0 || n >= sizeof(ep->host) || (size_t)(slash - url) >= sizeof(ep->scheme_host) ||
        strlen(slash) >= sizeof(ep->base_path)) {
        snprintf(err, errlen, "endpoint '%.200s' has no valid host", url);
        return CM_EINVAL;
    }
    memcpy(ep->host, hs, n);
    memcpy(ep->scheme_host, url, (size_t)(slash - url));
    cm_strlcpy(ep->base_path, slash, sizeof(ep->base_path));
    n = strlen(ep->base_path);
    if (n && ep->base_path[n - 1] == '/')
        ep->base_path[n - 1] = '\0';
    return 0;
}

static struct curl_slist *add(struct curl_slist *l, const char *name, const char *value, int *ok)
{
    char line[8400];
    struct curl_slist *n;

    snprintf(line, sizeof(line), "%.64s: %.8192s", name, value);
    n = curl_slist_append(l, line);
    OPENSSL_cleanse(line, sizeof(line));
    if (!n)
        *ok = 0;
    return n ? n : l;
}

/* The names as sent: curl takes the headers as given. */
static const char *wire_name(const char *name)
{
    static const char *const names[][2] = {{"content-type", "Content-Type"},
                                           {"host", "Host"},
                                           {"x-amz-date", "X-Amz-Date"},
                                           {"x-amz-security-token", "X-Amz-Security-Token"}};
    size_t i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (!strcmp(name, names[i][0]))
            return names[i][1];
    return name;
}

/* The last signing key this thread derived (each thread signs on its own:
 * the loop, and the threads that fetch credentials or secrets). */
static __thread struct cm_sigv4_key sign_key;

struct curl_slist *aw_sign_request(const struct aw_sign_req *r)
{
    struct cm_sigv4_header hdrs[CM_SIGV4_MAX_HEADERS];
    struct cm_sigv4_request req;
    struct cm_sigv4_params sp;
    struct cm_sigv4_out sig;
    struct curl_slist *l = NULL;
    char amz_date[17], auth[8192];
    size_t nh = 0, i;
    int ok = 1;

    if (r->n_extra + 4 > CM_SIGV4_MAX_HEADERS)
        return NULL;
    cm_sigv4_amz_date(r->now, amz_date);
    if (r->content_type)
        hdrs[nh++] = (struct cm_sigv4_header){"content-type", r->content_type};
    hdrs[nh++] = (struct cm_sigv4_header){"host", r->ep->host};
    hdrs[nh++] = (struct cm_sigv4_header){"x-amz-date", amz_date};
    if (!r->bearer && r->cr->token[0])
        hdrs[nh++] = (struct cm_sigv4_header){"x-amz-security-token", r->cr->token};
    for (i = 0; i < r->n_extra; i++)
        hdrs[nh++] = r->extra[i];
    if (r->bearer) {
        snprintf(auth, sizeof(auth), "Bearer %s", r->bearer);
    } else {
        req = (struct cm_sigv4_request){r->method, r->path, NULL, hdrs, nh, r->body, r->len};
        sp = (struct cm_sigv4_params){r->cr->akid, r->cr->secret, r->region, r->service,
                                      amz_date,    !r->s3_path,   &sign_key};
        if (cm_sigv4_sign(&sp, &req, &sig)) {
            cm_sigv4_out_free(&sig);
            return NULL;
        }
        cm_strlcpy(auth, sig.authorization.data, sizeof(auth));
        cm_sigv4_out_free(&sig);
    }
    for (i = 0; i < nh; i++)
        l = add(l, wire_name(hdrs[i].name), hdrs[i].value, &ok);
    l = add(l, "Authorization", auth, &ok);
    OPENSSL_cleanse(auth, strlen(auth)); /* what was written: the buffer is 8 KiB */
    l = curl_slist_append(l, "Expect:");
    if (!ok || !l) {
        aw_slist_free_secure(l);
        return NULL;
    }
    return l;
}

struct curl_slist *aw_sign_post(const struct aw_endpoint *ep, const char *path, const char *service,
                                const char *region, const struct aw_credentials *cr,
                                const char *bearer, const char *content_type,
                                const struct cm_sigv4_header *extra, size_t n_extra,
                                const char *body, size_t len, long long now)
{
    struct aw_sign_req r = {"POST",       ep,    path,    service, region, cr,  bearer,
                            content_type, extra, n_extra, body,    len,    now, 0};

    return aw_sign_request(&r);
}

void aw_header_value(const char *p, size_t len, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name), i, k = 0;

    if (len <= nl || strncasecmp(p, name, nl))
        return;
    i = nl;
    while (i < len && (p[i] == ' ' || p[i] == '\t'))
        i++;
    while (i < len && p[i] != '\r' && p[i] != '\n' && k < cap - 1)
        out[k++] = p[i++];
    out[k] = '\0';
}

void aw_slist_free_secure(struct curl_slist *l)
{
    struct curl_slist *p;

    for (p = l; p; p = p->next)
        OPENSSL_cleanse(p->data, strlen(p->data));
    curl_slist_free_all(l);
}

/* "ThrottlingException:http://internal.amazon.com/coral/..." and
 * "com.amazon.coral#ThrottlingException" both name ThrottlingException. */
static void clean_type(const char *raw, char *out, size_t cap)
{
    const char *hash = strchr(raw, '#');
    size_t n;

    if (hash)
        raw = hash + 1;
    n = strcspn(raw, ":");
    if (n >= cap)
        n = cap - 1;
    memcpy(out, raw, n);
    out[n] = '\0';
}

void aw_parse_error(int status, const char *type_header, const char *body, size_t len,
                    struct aw_model_error *out)
{
    json_t *root = body && len ? json_loadb(body, len, 0, NULL) : NULL;
    const char *msg = NULL, *type = NULL;

    memset(out, 0, sizeof(*out));
    out->http_status = status;
    if (json_is_object(root)) {
        cm_json_opt_str(root, "message", &msg, NULL, 0);
        if (!msg)
            cm_json_opt_str(root, "Message", &msg, NULL, 0);
        cm_json_opt_str(root, "__type", &type, NULL, 0);
        if (!type)
            cm_json_opt_str(root, "code", &type, NULL, 0);
    }
    if (type_header && *type_header)
        type = type_header;
    if (type)
        clean_type(type, out->type, sizeof(out->type));
    if (!out->type[0]) /* none, or one like "ns#" that names nothing */
        snprintf(out->type, sizeof(out->type), "HTTP%d", status);
    if (msg && *msg) {
        cm_strlcpy(out->message, msg, sizeof(out->message));
    } else if (body && len && !root) {
        /* Not JSON (a proxy's page?): keep a short, printable excerpt. */
        size_t i, n = len < 200 ? len : 200;

        for (i = 0; i < n; i++)
            out->message[i] = (body[i] >= 0x20 && body[i] < 0x7f) ? body[i] : ' ';
        out->message[n] = '\0';
    } else {
        snprintf(out->message, sizeof(out->message), "HTTP status %d", status);
    }
    json_decref(root);
    aw_redact_credentials(out->message, sizeof(out->message));
}

/* ---- redaction ---- */

#define REDACTED "[redacted]"

static int b64ch(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/' || c == '=' || c == '%';
}

static int upper_alnum(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* Names whose value, up to the next separator, is a credential. */
static const char *const secret_names[] = {
    "x-amz-security-token", "x-amz-signature",       "signature",
    "credential",           "authorization",         "sessiontoken",
    "secretaccesskey",      "aws_secret_access_key", "aws_session_token"};

/* Length of a secret name at |p| followed by ':' or '=' (and spaces or
 * quotes), 0 when none starts there. */
static size_t secret_name_at(const char *p)
{
    size_t i, n;

    for (i = 0; i < sizeof(secret_names) / sizeof(secret_names[0]); i++) {
        n = strlen(secret_names[i]);
        if (!strncasecmp(p, secret_names[i], n)) {
            size_t k = n;

            while (p[k] == '"' || p[k] == '\'' || p[k] == ' ')
                k++;
            if (p[k] == ':' || p[k] == '=')
                return k + 1;
        }
    }
    return 0;
}

/* Copies |src| to |dst| (which may be |src|: the input is copied first),
 * at most |cap| bytes with the NUL. */
static void redact(const char *src, char *dst, size_t cap)
{
    size_t o = 0, i = 0, len = strlen(src);
    char *tmp = malloc(len + 1);
    const char *s;

    if (!tmp) { /* nothing can be shown safely */
        cm_strlcpy(dst, REDACTED, cap);
        return;
    }
    memcpy(tmp, src, len + 1);
    s = tmp;
#define EMIT(str, n)                                                                               \
    do {                                                                                           \
        size_t n_ = (n);                                                                           \
        if (o + n_ >= cap)                                                                         \
            n_ = cap - 1 - o;                                                                      \
        memcpy(dst + o, (str), n_);                                                                \
        o += n_;                                                                                   \
    } while (0)
    while (i < len && o + 1 < cap) {
        size_t n = secret_name_at(s + i), run;
        int at_word = i == 0 || !upper_alnum(s[i - 1]);

        if (n && (i == 0 || !isalnum((unsigned char)s[i - 1]))) {
            int whole_line = !strncasecmp(s + i, "authorization", 13);

            for (run = n; s[i + run] == ' ' || s[i + run] == '"' || s[i + run] == '\''; run++)
                ;
            EMIT(s + i, run);
            i += run;
            /* "Authorization: AWS4-HMAC-SHA256 Credential=..., ..." ends with
             * the line; other values with a separator. */
            if (whole_line)
                while (i < len && s[i] != '\n' && s[i] != '"')
                    i++;
            else
                while (i < len && !strchr(" ,;&\"'\n", s[i]))
                    i++;
            EMIT(REDACTED, sizeof(REDACTED) - 1);
            continue;
        }
        /* Access key ids: AKIA/ASIA + 12 or more upper-case letters or digits. */
        if (at_word && (!strncmp(s + i, "AKIA", 4) || !strncmp(s + i, "ASIA", 4))) {
            for (run = 4; upper_alnum(s[i + run]); run++)
                ;
            if (run >= 16) {
                EMIT(REDACTED, sizeof(REDACTED) - 1);
                i += run;
                continue;
            }
        }
        if (b64ch(s[i]) && (i == 0 || !b64ch(s[i - 1]))) {
            for (run = 0; b64ch(s[i + run]); run++)
                ;
            if (run >= 40) {
                EMIT(REDACTED, sizeof(REDACTED) - 1);
                i += run;
                continue;
            }
        }
        dst[o++] = s[i++];
    }
#undef EMIT
    dst[o] = '\0';
    OPENSSL_cleanse(tmp, len);
    free(tmp);
}

void aw_redact_credentials(char *s, size_t cap)
{
    if (cap)
        redact(s, s, cap);
}

void aw_public_message(const char *in, char *out, size_t cap)
{
    char *t;
    size_t i, o = 0, len;

    if (!cap)
        return;
    len = strlen(in);
    t = malloc(len + sizeof(REDACTED) + 1);
    if (!t) {
        cm_strlcpy(out, "(details in the agent-worker log)", cap);
        return;
    }
    redact(in, t, len + sizeof(REDACTED) + 1);
    len = strlen(t);
    for (i = 0; i < len && o + 1 < cap;) {
        const char *p = t + i;
        size_t run;
        const char *rep = NULL;

        if (!strncmp(p, "arn:", 4) && (i == 0 || !isalnum((unsigned char)p[-1]))) {
            for (run = 4; p[run] && !strchr(" ,;'\"()\n", p[run]); run++)
                ;
            rep = "arn:(hidden)";
        } else if (!strncmp(p, "secret '", 8)) {
            const char *q = strchr(p + 8, '\'');

            run = q ? (size_t)(q - p) + 1 : len - i;
            rep = "secret (named in the agent-worker log)";
        } else if (isdigit((unsigned char)*p) && (i == 0 || !isalnum((unsigned char)p[-1]))) {
            for (run = 0; isdigit((unsigned char)p[run]); run++)
                ;
            if (run == 12 && !isalnum((unsigned char)p[run]))
                rep = "(account)";
        }
        if (rep) {
            size_t n = strlen(rep);

            if (o + n >= cap)
                break;
            memcpy(out + o, rep, n);
            o += n;
            i += run;
            continue;
        }
        out[o++] = t[i++];
    }
    out[o] = '\0';
    OPENSSL_cleanse(t, len);
    free(t);
}
