#define _GNU_SOURCE /* O_PATH, close_range, vasprintf */
#include "tw_httpreq.h"
#include "tw_toolio.h"

#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct req {
    const struct tw_netpolicy *policy;
    char refused[256]; /* why the last connection was refused, "" if none */
    char *body;
    size_t len;
    int truncated;
};

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));

static char *fmt(const char *f, ...)
{
    va_list ap;
    char *s = NULL;

    va_start(ap, f);
    if (vasprintf(&s, f, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

/* curl asks here before every connect: the address is final (resolved). */
static curl_socket_t open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct req *r = ud;

    (void)purpose;
    if (!tw_netpolicy_addr(r->policy, &a->addr, r->refused, sizeof(r->refused)))
        return CURL_SOCKET_BAD;
    return socket(a->family, a->socktype, a->protocol);
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct req *r = ud;
    size_t len = size * n, room = TW_HTTP_MAX_RESPONSE - r->len;

    if (len > room) {
        r->truncated = 1;
        len = room;
    }
    if (len) {
        char *grown = realloc(r->body, r->len + len + 1);

        if (!grown)
            return 0;
        r->body = grown;
        memcpy(r->body + r->len, p, len);
        r->len += len;
        r->body[r->len] = '\0';
    }
    return r->truncated ? 0 : size * n; /* 0 ends the transfer once the cap is hit */
}

static int valid_method(const char *m)
{
    static const char *const ok[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", NULL};
    int i;

    for (i = 0; ok[i]; i++) {
        if (!strcmp(m, ok[i]))
            return 1;
    }
    return 0;
}

static int header_ok(const char *name, const char *value)
{
    const char *c;

    if (!*name || strcasecmp(name, "host") == 0 || strcasecmp(name, "content-length") == 0)
        return 0;
    for (c = name; *c; c++) {
        if (*c <= ' ' || *c == ':' || *c > '~')
            return 0;
    }
    for (c = value; *c; c++) {
        if ((unsigned char)*c < ' ' && *c != '\t')
            return 0;
    }
    return 1;
}

/* Builds the header list; NULL with |*err| set on a refused header. */
static struct curl_slist *headers_of(json_t *h, char **err)
{
    struct curl_slist *list = NULL, *next;
    const char *k;
    json_t *v;
    size_t total = 0, n = 0;

    *err = NULL;
    if (!h)
        return NULL;
    if (!json_is_object(h)) {
        *err = fmt("invalid input: 'headers' must be an object of strings");
        return NULL;
    }
    json_object_foreach(h, k, v)
    {
        char *line;

        if (!json_is_string(v) || !header_ok(k, json_string_value(v))) {
            *err = fmt("invalid header '%.64s' (a string value without control characters; "
                       "Host and Content-Length are set by the tool)",
                       k);
            break;
        }
        total += strlen(k) + json_string_length(v) + 2;
        if (++n > TW_HTTP_MAX_HEADERS || total > TW_HTTP_MAX_HEADER_BYTES) {
            *err = fmt("too many request headers (at most %d, %d bytes in all)",
                       TW_HTTP_MAX_HEADERS, TW_HTTP_MAX_HEADER_BYTES);
            break;
        }
        line = fmt("%s: %s", k, json_string_value(v));
        next = line ? curl_slist_append(list, line) : NULL;
        free(line);
        if (!next) {
            *err = fmt("out of memory");
            break;
        }
        list = next;
    }
    if (*err) {
        curl_slist_free_all(list);
        return NULL;
    }
    return list;
}

static char *host_of(const char *url)
{
    CURLU *u = curl_url();
    char *host = NULL, *copy = NULL;

    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK)
        copy = strdup(host);
    curl_free(host);
    curl_url_cleanup(u);
    return copy;
}

static char *describe(long status, const char *ctype, const struct req *r)
{
    if (r->len && !tw_text_ok(r->body, r->len))
        return fmt("HTTP %ld\nContent-Type: %s\n\n[binary body of %zu bytes not shown]", status,
                   ctype ? ctype : "-", r->len);
    return fmt("HTTP %ld\nContent-Type: %s\n\n%s%s", status, ctype ? ctype : "-",
               r->body ? r->body : "", r->truncated ? "\n[response truncated at 1 MiB]" : "");
}

int tw_http_request(const struct tw_netpolicy *policy, json_t *input, long timeout_ms,
                    int *is_error, char **text)
{
    json_t *jm = json_object_get(input, "method"), *ju = json_object_get(input, "url"),
           *jb = json_object_get(input, "body");
    const char *method = json_is_string(jm) ? json_string_value(jm) : "GET";
    struct req r;
    struct curl_slist *hdrs = NULL;
    char *url = NULL, *err = NULL, *host = NULL, *ctype = NULL;
    CURL *c = NULL;
    CURLcode cc;
    long status = 0;
    int hops;

    memset(&r, 0, sizeof(r));
    r.policy = policy;
    *is_error = 1;
    *text = NULL;
    if (!json_is_string(ju)) {
        *text = fmt("invalid input: 'url' must be a string");
        goto out;
    }
    if (!valid_method(method)) {
        *text = fmt("invalid input: method '%.16s' (use GET, POST, PUT, PATCH, DELETE or HEAD)",
                    method);
        goto out;
    }
    if (jb && !json_is_string(jb)) {
        *text = fmt("invalid input: 'body' must be a string");
        goto out;
    }
    if (jb && json_string_length(jb) > TW_HTTP_MAX_BODY) {
        *text = fmt("request body larger than %d bytes", TW_HTTP_MAX_BODY);
        goto out;
    }
    hdrs = headers_of(json_object_get(input, "headers"), &err);
    if (err) {
        *text = err;
        goto out;
    }
    if (!(url = strdup(json_string_value(ju))) || !(c = curl_easy_init()))
        goto out;
    for (hops = 0;; hops++) {
        char *next = NULL;

        free(host);
        host = host_of(url);
        if (strncasecmp(url, "http://", 7) && strncasecmp(url, "https://", 8)) {
            *text = fmt("refused: only http:// and https:// URLs are allowed ('%.200s')", url);
            goto out;
        }
        if (!host) {
            *text = fmt("invalid URL '%.200s'", url);
            goto out;
        }
        if (!tw_netpolicy_host(policy, host)) {
            *text = fmt(
                "refused: host '%.200s' is not in the allowed hosts (TOOL_HTTP_ALLOW_HOSTS)", host);
            goto out;
        }
        curl_easy_reset(c);
        free(r.body);
        r.body = NULL;
        r.len = 0;
        r.truncated = 0;
        r.refused[0] = '\0';
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(c, CURLOPT_PROXY, ""); /* no proxy from the environment */
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms > 0 ? timeout_ms : 30000L);
        curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, open_socket);
        curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, &r);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(c, CURLOPT_USERAGENT, "agentcore-c http_request");
        curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
        if (!strcmp(method, "HEAD"))
            curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
        else if (strcmp(method, "GET"))
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        if (jb && strcmp(method, "GET") && strcmp(method, "HEAD")) {
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)json_string_length(jb));
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, json_string_value(jb));
        }
        cc = curl_easy_perform(c);
        if (r.refused[0]) {
            *text = fmt("refused: %s (connections to it are not allowed; TOOL_HTTP_ALLOW_CIDRS "
                        "can allow a range)",
                        r.refused);
            goto out;
        }
        if (cc != CURLE_OK && !(cc == CURLE_WRITE_ERROR && r.truncated)) {
            *text = fmt("request to %.200s failed: %s", host, curl_easy_strerror(cc));
            goto out;
        }
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 300 && status < 400 && status != 304 &&
            curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &next) == CURLE_OK && next) {
            if (hops == TW_HTTP_MAX_REDIRECTS) {
                *text = fmt("stopped after %d redirects", TW_HTTP_MAX_REDIRECTS);
                goto out;
            }
            free(url);
            if (!(url = strdup(next)))
                goto out;
            /* As browsers do: 303, and 301/302 after a POST, continue as GET. */
            if (status == 303 || ((status == 301 || status == 302) && !strcmp(method, "POST"))) {
                method = "GET";
                jb = NULL;
            }
            continue;
        }
        break;
    }
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ctype);
    *text = describe(status, ctype, &r);
    *is_error = status >= 400;
out:
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    free(r.body);
    free(url);
    free(host);
    return *text ? 0 : -1;
}
