#include "tw_egress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define HEAD_MAX 16384
#define QUEUE_MAX (256 * 1024)
#define CONNECT_TIMEOUT_MS 10000
#define IDLE_TIMEOUT_MS 120000 /* a relayed connection with no byte either way this long ends */

/* ---- parsing ---- */

/* A DNS name or an address: nothing a resolver or a log line could misread. */
static int host_ok(const char *h)
{
    const char *c;

    for (c = h; *c; c++) {
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '-' || *c == '.' || *c == '_' || *c == ':'))
            return 0;
    }
    return c != h;
}

static int split_hostport(const char *s, size_t len, const char *dflt_port,
                          struct tw_egress_target *t)
{
    const char *colon, *end = s + len;
    size_t hl;

    if (len && *s == '[') { /* [v6]:port */
        const char *rb = memchr(s, ']', len);

        if (!rb)
            return -1;
        hl = (size_t)(rb - s - 1);
        if (!hl || hl >= sizeof(t->host))
            return -1;
        memcpy(t->host, s + 1, hl);
        t->host[hl] = '\0';
        colon = rb + 1 < end && rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = memchr(s, ':', len);
        hl = colon ? (size_t)(colon - s) : len;
        if (!hl || hl >= sizeof(t->host))
            return -1;
        memcpy(t->host, s, hl);
        t->host[hl] = '\0';
    }
    if (!host_ok(t->host))
        return -1;
    if (colon) {
        size_t pl = (size_t)(end - colon - 1);

        size_t k;

        if (!pl || pl >= sizeof(t->port))
            return -1;
        for (k = 0; k < pl; k++) {
            if (colon[1 + k] < '0' || colon[1 + k] > '9')
                return -1;
        }
        memcpy(t->port, colon + 1, pl);
        t->port[pl] = '\0';
    } else {
        snprintf(t->port, sizeof(t->port), "%s", dflt_port);
    }
    return atoi(t->port) > 0 && atoi(t->port) < 65536 ? 0 : -1;
}

/* Headers the proxy owns: a hop's connection handling and the client's
 * proxy credentials never go upstream. */
static int hop_header(const char *line, size_t len)
{
    static const char *const names[] = {
        "connection:", "proxy-connection:", "proxy-authorization:", "keep-alive:"};
    size_t i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        size_t n = strlen(names[i]);

        if (len >= n && !strncasecmp(line, names[i], n))
            return 1;
    }
    return 0;
}

int tw_egress_parse(const char *head, size_t len, struct tw_egress_target *t, char *why,
                    size_t whylen)
{
    const char *eol = memchr(head, '\n', len), *sp1, *sp2, *p, *auth, *path;
    size_t line_len, out = 0, cap;

    memset(t, 0, sizeof(*t));
    if (!eol) {
        snprintf(why, whylen, "no request line");
        return 400;
    }
    line_len = (size_t)(eol - head) - (eol > head && eol[-1] == '\r');
    sp1 = memchr(head, ' ', line_len);
    sp2 = sp1 ? memchr(sp1 + 1, ' ', line_len - (size_t)(sp1 + 1 - head)) : NULL;
    if (!sp1 || !sp2 || (size_t)(head + line_len - sp2) < 8 || strncmp(sp2 + 1, "HTTP/1.", 7)) {
        snprintf(why, whylen, "malformed request line");
        return 400;
    }
    if ((size_t)(sp1 - head) == 7 && !strncmp(head, "CONNECT", 7)) {
        t->tunnel = 1;
        if (split_hostport(sp1 + 1, (size_t)(sp2 - sp1 - 1), "443", t) ||
            !memchr(sp1 + 1, ':', (size_t)(sp2 - sp1 - 1))) {
            snprintf(why, whylen, "CONNECT needs host:port");
            return 400;
        }
        return 0;
    }
    if ((size_t)(sp2 - sp1 - 1) < 8 || strncasecmp(sp1 + 1, "http://", 7)) {
        snprintf(why, whylen, "only absolute http:// URIs and CONNECT are proxied");
        return 400;
    }
    auth = sp1 + 8;
    path = memchr(auth, '/', (size_t)(sp2 - auth));
    if (!path)
        path = sp2;
    if (split_hostport(auth, (size_t)(path - auth), "80", t) ||
        memchr(auth, '@', (size_t)(path - auth))) {
        snprintf(why, whylen, "bad host in the URI");
        return 400;
    }
    /* The request line in origin form, the headers but the hop's own, and
     * one request per connection. */
    /* Each line may end in a bare LF and leave as CRLF: at most twice the size. */
    cap = 2 * len + 64;
    if (!(t->head = malloc(cap)))
        return 500;
    out = (size_t)snprintf(t->head, cap, "%.*s %.*s%s", (int)(sp1 - head), head, (int)(sp2 - path),
                           path, path == sp2 ? "/" : "");
    memcpy(t->head + out, sp2, line_len - (size_t)(sp2 - head));
    out += line_len - (size_t)(sp2 - head);
    memcpy(t->head + out, "\r\n", 2);
    out += 2;
    for (p = eol + 1; p < head + len;) {
        const char *nl = memchr(p, '\n', (size_t)(head + len - p));
        size_t l = nl ? (size_t)(nl - p + 1) : (size_t)(head + len - p);
        size_t content = l - (nl ? 1 : 0) - (l > 1 && p[l - 2] == '\r');

        if (content == 0)
            break; /* the blank line */
        if (!hop_header(p, content)) {
            memcpy(t->head + out, p, content);
            out += content;
            memcpy(t->head + out, "\r\n", 2);
            out += 2;
        }
        p += l;
    }
    out += (size_t)snprintf(t->head + out, cap - out, "Connection: close\r\n\r\n");
    t->head_len = out;
    return 0;
}

/* ---- the proxy ---- */

struct side {
    uv_stream_t *s;
    size_t queued; /* bytes written to this side, not yet sent */
    int eof, reading;
};

struct conn {
    struct tw_egress *e;
    uv_pipe_t client;
    uv_tcp_t upstream;
    uv_connect_t connect;
    uv_getaddrinfo_t gai;
    uv_timer_t timer;
    uv_write_t reply, upstream_write;
    char head[HEAD_MAX + 1];
    size_t head_len;
    const char *extra; /* bytes after the head (a request body begun), sent on after it */
    size_t extra_len;
    char reply_buf[1024];
    struct tw_egress_target t;
    struct side c, u; /* client side, upstream side */
    int handles, upstream_open, closing, relaying, resolving, connecting;
    struct conn *next, *prev;
};

struct tw_egress {
    uv_loop_t *loop;
    uv_pipe_t listener;
    struct tw_netpolicy policy;
    int max_conns, conns, freeing;
    struct conn *list;
    char *path;
};

static void maybe_free_egress(struct tw_egress *e)
{
    if (e->freeing == 2 && !e->conns) {
        tw_netpolicy_cleanup(&e->policy);
        free(e->path);
        free(e);
    }
}

static void conn_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct tw_egress *e = c->e;

    if (--c->handles)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        e->list = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c->t.head);
    free(c);
    e->conns--;
    maybe_free_egress(e);
}

static void close_h(struct conn *c, uv_handle_t *h)
{
    if (!uv_is_closing(h)) {
        h->data = c;
        uv_close(h, conn_handle_closed);
    }
}

static void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (c->resolving)
        uv_cancel((uv_req_t *)&c->gai);
    close_h(c, (uv_handle_t *)&c->client);
    close_h(c, (uv_handle_t *)&c->timer);
    if (c->upstream_open)
        close_h(c, (uv_handle_t *)&c->upstream);
}

struct wreq {
    uv_write_t w;
    struct conn *c;
    struct side *to, *from;
    size_t len;
    char data[];
};

static void on_relay_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void alloc_buf(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct wreq *w = malloc(sizeof(*w) + 65536);

    (void)h;
    (void)hint;
    *buf = w ? uv_buf_init(w->data, 65536) : uv_buf_init(NULL, 0);
}

static struct wreq *wreq_of(const uv_buf_t *buf)
{
    return buf->base ? (struct wreq *)(buf->base - offsetof(struct wreq, data)) : NULL;
}

static void on_written(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct conn *c = w->c;

    w->to->queued -= w->len;
    if (!status && !c->closing && w->to->queued < QUEUE_MAX / 2 && !w->from->reading &&
        !w->from->eof) {
        w->from->reading = 1;
        uv_read_start(w->from->s, alloc_buf, on_relay_read);
    }
    if (status)
        conn_close(c);
    free(w);
}

static void both_done(struct conn *c)
{
    if (c->c.eof && c->u.eof && !c->c.queued && !c->u.queued)
        conn_close(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;

    (void)status;
    free(req);
    both_done(c);
}

static void on_idle(uv_timer_t *t)
{
    conn_close(t->data);
}

static void on_relay_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    struct side *from = s == c->c.s ? &c->c : &c->u, *to = from == &c->c ? &c->u : &c->c;
    struct wreq *w = wreq_of(buf);

    if (n <= 0) {
        free(w);
        if (n == 0)
            return;
        if (n != UV_EOF) {
            conn_close(c);
            return;
        }
        /* One side finished sending: pass the end on, keep the other way open. */
        from->eof = 1;
        from->reading = 0;
        uv_read_stop(s);
        {
            uv_shutdown_t *sh = malloc(sizeof(*sh));

            if (!sh || uv_shutdown(sh, to->s, on_shutdown)) {
                free(sh);
                conn_close(c);
                return;
            }
            sh->data = c;
        }
        return;
    }
    uv_timer_start(&c->timer, on_idle, IDLE_TIMEOUT_MS, 0);
    w->c = c;
    w->to = to;
    w->from = from;
    w->len = (size_t)n;
    to->queued += (size_t)n;
    {
        uv_buf_t b = uv_buf_init(w->data, (unsigned)n);

        if (uv_write(&w->w, to->s, &b, 1, on_written)) {
            to->queued -= (size_t)n;
            free(w);
            conn_close(c);
            return;
        }
    }
    if (to->queued >= QUEUE_MAX) { /* a reader that does not keep up: wait for it */
        from->reading = 0;
        uv_read_stop(s);
    }
}

static void start_relay(struct conn *c)
{
    c->relaying = 1;
    c->c.s = (uv_stream_t *)&c->client;
    c->u.s = (uv_stream_t *)&c->upstream;
    c->client.data = c;
    c->upstream.data = c;
    c->c.reading = c->u.reading = 1;
    uv_timer_start(&c->timer, on_idle, IDLE_TIMEOUT_MS, 0);
    uv_read_start(c->c.s, alloc_buf, on_relay_read);
    uv_read_start(c->u.s, alloc_buf, on_relay_read);
}

static void on_reply_sent(uv_write_t *req, int status)
{
    struct conn *c = req->data;

    (void)status;
    if (c->relaying)
        return;
    conn_close(c); /* an error answer: the connection ends after it */
}

/* An answer of our own (error, or CONNECT's 200); at most one per connection. */
static void reply(struct conn *c, int status, const char *reason, const char *body)
{
    uv_buf_t b;
    int n;

    if (status == 200)
        n = snprintf(c->reply_buf, sizeof(c->reply_buf),
                     "HTTP/1.1 200 Connection established\r\n\r\n");
    else
        n = snprintf(c->reply_buf, sizeof(c->reply_buf),
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                     "Content-Length: %zu\r\n\r\n%.800s\n",
                     status, reason, strlen(body) + 1, body);
    if (n < 0 || (size_t)n >= sizeof(c->reply_buf))
        n = (int)strlen(c->reply_buf);
    b = uv_buf_init(c->reply_buf, (unsigned)n);
    c->reply.data = c;
    if (uv_write(&c->reply, (uv_stream_t *)&c->client, &b, 1, on_reply_sent))
        conn_close(c);
}

static void on_upstream_written(uv_write_t *req, int status)
{
    struct conn *c = req->data;

    if (status)
        conn_close(c);
}

static void on_upstream(uv_connect_t *req, int status)
{
    struct conn *c = req->data;

    c->connecting = 0;
    uv_timer_stop(&c->timer);
    if (c->closing)
        return;
    if (status) {
        char why[300];

        snprintf(why, sizeof(why), "cannot connect to %s:%s: %s", c->t.host, c->t.port,
                 uv_strerror(status));
        reply(c, 502, "Bad Gateway", why);
        return;
    }
    start_relay(c);
    if (c->t.tunnel) {
        reply(c, 200, "OK", "");
        if (!c->extra_len)
            return;
    }
    {
        /* forward: the rewritten head, then what came after it; tunnel: what
         * the client sent before our 200 */
        uv_buf_t b[2];
        int n = 0;

        if (!c->t.tunnel)
            b[n++] = uv_buf_init(c->t.head, (unsigned)c->t.head_len);
        if (c->extra_len)
            b[n++] = uv_buf_init((char *)c->extra, (unsigned)c->extra_len);
        c->upstream_write.data = c;
        if (uv_write(&c->upstream_write, (uv_stream_t *)&c->upstream, b, (unsigned)n,
                     on_upstream_written))
            conn_close(c);
    }
}

static void on_connect_timeout(uv_timer_t *t)
{
    struct conn *c = t->data;
    char why[300];

    snprintf(why, sizeof(why), "%s:%s did not answer within %d ms", c->t.host, c->t.port,
             CONNECT_TIMEOUT_MS);
    if (c->upstream_open)
        close_h(c, (uv_handle_t *)&c->upstream);
    c->upstream_open = 0;
    reply(c, 504, "Gateway Timeout", why);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct conn *c = req->data;
    struct addrinfo *ai;
    char why[300] = "", first[300] = "";

    c->resolving = 0;
    if (c->closing || status) {
        if (!c->closing) {
            snprintf(why, sizeof(why), "cannot resolve %s: %s", c->t.host, uv_strerror(status));
            reply(c, 502, "Bad Gateway", why);
        }
        uv_freeaddrinfo(res);
        return;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        if (tw_netpolicy_addr(&c->e->policy, ai->ai_addr, why, sizeof(why)))
            break;
        if (!first[0])
            snprintf(first, sizeof(first), "%s", why);
    }
    if (!ai) {
        char msg[400];

        snprintf(msg, sizeof(msg),
                 "refused by the agentcore egress proxy: %s (TOOL_HTTP_ALLOW_CIDRS can allow a "
                 "range)",
                 first[0] ? first : "no address");
        reply(c, 403, "Forbidden", msg);
        uv_freeaddrinfo(res);
        return;
    }
    uv_tcp_init(c->e->loop, &c->upstream);
    c->upstream.data = c;
    c->upstream_open = 1;
    c->handles++;
    c->connect.data = c;
    c->connecting = 1;
    if (uv_tcp_connect(&c->connect, &c->upstream, ai->ai_addr, on_upstream)) {
        c->connecting = 0;
        reply(c, 502, "Bad Gateway", "cannot start the connection");
    } else {
        uv_timer_start(&c->timer, on_connect_timeout, CONNECT_TIMEOUT_MS, 0);
    }
    uv_freeaddrinfo(res);
}

static void on_head_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    char why[300];
    const char *end;
    int status;

    (void)buf;
    if (n < 0) {
        conn_close(c);
        return;
    }
    c->head_len += (size_t)n;
    c->head[c->head_len] = '\0';
    end = strstr(c->head, "\r\n\r\n");
    if (!end) {
        if (c->head_len == HEAD_MAX) {
            uv_read_stop(s);
            reply(c, 431, "Request Header Fields Too Large", "request head over 16 KiB");
        }
        return;
    }
    uv_read_stop(s);
    c->extra = end + 4;
    c->extra_len = (size_t)(c->head + c->head_len - c->extra);
    status = tw_egress_parse(c->head, (size_t)(c->extra - c->head), &c->t, why, sizeof(why));
    if (status) {
        reply(c, status, "Bad Request", why);
        return;
    }
    if (!tw_netpolicy_host(&c->e->policy, c->t.host)) {
        snprintf(why, sizeof(why),
                 "refused by the agentcore egress proxy: host '%.200s' is not in "
                 "TOOL_HTTP_ALLOW_HOSTS",
                 c->t.host);
        reply(c, 403, "Forbidden", why);
        return;
    }
    c->gai.data = c;
    c->resolving = 1;
    {
        struct addrinfo hints;

        memset(&hints, 0, sizeof(hints));
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        if (uv_getaddrinfo(c->e->loop, &c->gai, on_resolved, c->t.host, c->t.port, &hints)) {
            c->resolving = 0;
            reply(c, 502, "Bad Gateway", "cannot resolve");
        }
    }
}

static void head_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct conn *c = h->data;

    (void)hint;
    *buf = uv_buf_init(c->head + c->head_len, (unsigned)(HEAD_MAX - c->head_len));
}

static void on_client(uv_stream_t *server, int status)
{
    struct tw_egress *e = server->data;
    struct conn *c;

    if (status < 0 || !(c = calloc(1, sizeof(*c))))
        return;
    c->e = e;
    uv_pipe_init(e->loop, &c->client, 0);
    uv_timer_init(e->loop, &c->timer);
    c->client.data = c;
    c->timer.data = c;
    c->handles = 2;
    c->next = e->list;
    if (e->list)
        e->list->prev = c;
    e->list = c;
    e->conns++;
    if (uv_accept(server, (uv_stream_t *)&c->client)) {
        conn_close(c);
        return;
    }
    if (e->conns > e->max_conns) {
        reply(c, 503, "Service Unavailable", "too many connections through the egress proxy");
        return;
    }
    uv_read_start((uv_stream_t *)&c->client, head_alloc, on_head_read);
}

static void listener_closed(uv_handle_t *h)
{
    struct tw_egress *e = h->data;

    e->freeing = 2;
    maybe_free_egress(e);
}

struct tw_egress *tw_egress_new(uv_loop_t *loop, const char *path,
                                const struct tw_netpolicy *policy, int max_conns, char *err,
                                size_t errlen)
{
    struct tw_egress *e = calloc(1, sizeof(*e));
    int i, rc;

    if (!e || !(e->path = strdup(path))) {
        free(e);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    e->loop = loop;
    e->max_conns = max_conns;
    for (i = 0; i < policy->n_allow; i++)
        e->policy.allow[e->policy.n_allow++] = policy->allow[i];
    for (i = 0; i < policy->n_hosts; i++)
        tw_netpolicy_allow_host(&e->policy, policy->hosts[i]);
    unlink(path);
    uv_pipe_init(loop, &e->listener, 0);
    e->listener.data = e;
    if ((rc = uv_pipe_bind(&e->listener, path)) ||
        (rc = uv_listen((uv_stream_t *)&e->listener, 128, on_client))) {
        snprintf(err, errlen, "egress proxy on %s: %s", path, uv_strerror(rc));
        /* the handle holds |e| until it is closed: free it then */
        e->freeing = 1;
        uv_close((uv_handle_t *)&e->listener, listener_closed);
        return NULL;
    }
    chmod(path, 0666);
    return e;
}

void tw_egress_free(struct tw_egress *e)
{
    struct conn *c;

    if (!e)
        return;
    unlink(e->path);
    for (c = e->list; c; c = c->next)
        conn_close(c);
    e->freeing = 1;
    uv_close((uv_handle_t *)&e->listener, listener_closed);
}

int tw_egress_connections(const struct tw_egress *e)
{
    return e->conns;
}
