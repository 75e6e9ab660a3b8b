#include "th_http.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct sink {
    char *p;
    size_t n;
};

static size_t collect(char *d, size_t sz, size_t n, void *ud)
{
    struct sink *s = ud;
    char *np = realloc(s->p, s->n + sz * n + 1);

    if (!np)
        return 0;
    memcpy(np + s->n, d, sz * n);
    s->n += sz * n;
    np[s->n] = '\0';
    s->p = np;
    return sz * n;
}

int th_http(const char *method, const char *url, const char *const *headers, const char *body,
            size_t len, struct th_resp *out)
{
    CURL *h = curl_easy_init();
    struct curl_slist *list = NULL;
    struct sink b = {NULL, 0}, hd = {NULL, 0};
    CURLcode cc;
    int i;

    memset(out, 0, sizeof(*out));
    if (!h)
        return -1;
    for (i = 0; headers && headers[i]; i++)
        list = curl_slist_append(list, headers[i]);
    list = curl_slist_append(list, "Expect:");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
    if (!strcmp(method, "HEAD"))
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, collect);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &hd);
    cc = curl_easy_perform(h);
    if (cc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
    curl_slist_free_all(list);
    curl_easy_cleanup(h);
    out->body = b.p ? b.p : calloc(1, 1);
    out->len = b.n;
    out->headers = hd.p ? hd.p : calloc(1, 1);
    out->json = json_loadb(out->body, out->len, 0, NULL);
    return cc == CURLE_OK ? 0 : -1;
}

void th_resp_free(struct th_resp *r)
{
    free(r->body);
    free(r->headers);
    json_decref(r->json);
    memset(r, 0, sizeof(*r));
}

int th_resp_header(const struct th_resp *r, const char *name, char *out, size_t cap)
{
    size_t n = strlen(name);
    const char *p = r->headers;

    while (p && *p) {
        const char *eol = strstr(p, "\r\n");

        if (!strncasecmp(p, name, n) && p[n] == ':') {
            const char *v = p + n + 1;
            size_t k;

            while (*v == ' ')
                v++;
            k = eol ? (size_t)(eol - v) : strlen(v);
            if (k >= cap)
                k = cap - 1;
            memcpy(out, v, k);
            out[k] = '\0';
            return 0;
        }
        p = eol ? eol + 2 : NULL;
    }
    return -1;
}

int th_connect_loopback(int port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
        close(fd);
        return -1;
    }
    return fd;
}

int th_raw_post(int port, const char *path, const char *headers, const char *body)
{
    char head[2048];
    int fd = th_connect_loopback(port), n;
    size_t len = strlen(body);

    if (fd < 0)
        return -1;
    n = snprintf(head, sizeof(head),
                 "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %zu\r\n%s\r\n", path, len,
                 headers);
    if (write(fd, head, (size_t)n) != n || write(fd, body, len) != (ssize_t)len) {
        close(fd);
        return -1;
    }
    return fd;
}

int th_raw_read_until(int fd, char *buf, size_t cap, const char *needle, int timeout_ms)
{
    size_t have = strlen(buf);
    struct pollfd p = {fd, POLLIN, 0};

    while (!strstr(buf, needle)) {
        ssize_t r;

        if (have + 1 >= cap || poll(&p, 1, timeout_ms) <= 0)
            return -1;
        r = read(fd, buf + have, cap - 1 - have);
        if (r <= 0)
            return -1;
        have += (size_t)r;
        buf[have] = '\0';
    }
    return 0;
}
