/* th_http: one blocking HTTP request for tests (libcurl). */
#ifndef TH_HTTP_H
#define TH_HTTP_H

#include <jansson.h>
#include <stddef.h>

struct th_resp {
    long status; /* 0 when the request failed at the transport level */
    char *body;
    size_t len;
    char *headers; /* raw header block */
    json_t *json;  /* parsed body, or NULL */
};

/* |headers| is a NULL-terminated list of "Name: value" or NULL; |body| may be
 * NULL (no body) with |method| "GET", "POST", ... Returns 0 or -1. */
int th_http(const char *method, const char *url, const char *const *headers, const char *body,
            size_t len, struct th_resp *out);
void th_resp_free(struct th_resp *r);

/* A TCP connection to 127.0.0.1:|port|, or -1. */
int th_connect_loopback(int port);

/* A hand-driven HTTP/1.1 POST on loopback, for tests that must hang up
 * mid-response: returns the connected socket with the request sent, or -1.
 * |headers| is "" or lines each ending in "\r\n". */
int th_raw_post(int port, const char *path, const char *headers, const char *body);
/* Reads from |fd| into |buf| (NUL-terminated, |cap| bytes) until it holds
 * |needle|: 0 when found, -1 on timeout, EOF or a full buffer. */
int th_raw_read_until(int fd, char *buf, size_t cap, const char *needle, int timeout_ms);
/* Value of response header |name| (case-insensitive) into |out|; 0 if found. */
int th_resp_header(const struct th_resp *r, const char *name, char *out, size_t cap);

#endif
