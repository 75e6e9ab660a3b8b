#define _GNU_SOURCE /* POLLRDHUP */
#include "gw_http.h"
#include "cm_buf.h"
#include "cm_log.h"
#include "cm_rpc.h"
#include "cm_util.h"
#include "gw_api.h"
#include "gw_hangup.h"
#include "gw_health.h"
#include "gw_invoke.h"
#include "gw_ws.h"

#include "agentcore.pb-c.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <wslay/wslay.h>

/* How often a waiting request checks its client, when the hangup watcher
 * cannot watch its socket. */
#define WAIT_SLICE_MS 100
#define MAX_FORWARDED 24 /* context headers passed on per request */
#define MAX_HEADER_VALUE 4096
#define WS_CLOSE_WAIT_MS 2000 /* how long a sent close waits for the peer's */

const struct cm_rpc_method gw_http_agent_methods[GW_HTTP_N_AGENT_METHODS] = {
    {"/agentcore.v1.AgentService/InvokeStream", &agentcore__v1__invoke_request__descriptor,
     &agentcore__v1__invoke_event__descriptor, CM_RPC_SERVER_STREAM},
    {"/agentcore.v1.AgentService/Invoke", &agentcore__v1__invoke_request__descriptor,
     &agentcore__v1__invoke_response__descriptor, CM_RPC_UNARY},
    {"/agentcore.v1.AgentService/WatchStatus", &agentcore__v1__status_request__descriptor,
     &agentcore__v1__status_response__descriptor, CM_RPC_SERVER_STREAM},
};
static const struct cm_rpc_method *const stream_method = &gw_http_agent_methods[0];
static const struct cm_rpc_method *const invoke_method = &gw_http_agent_methods[1];
static const struct cm_rpc_method *const watch_method = &gw_http_agent_methods[2];

struct sse;

struct gw_http {
    struct MHD_Daemon *daemon;
    struct cm_rpc_client *agent;
    struct gw_hangup *hangup; /* wakes a waiting connection whose client left */
    struct gw_http_config cfg;
    int port;
    pthread_mutex_t lock; /* everything below */
    pthread_cond_t cond;  /* in_flight reached 0 */
    int in_flight;
    int stopping;
    struct sse *streams;      /* open InvokeStream calls, cancelled at shutdown */
    struct ws *sockets;       /* open WebSockets, woken at shutdown */
    struct gw_health *health; /* what /ping says */
    struct gw_invoke *invoke; /* /invocations, as events */
    int ws_threads;           /* WebSocket sessions running (a thread each) */
};

/* Per-request state, alive from the first callback to MHD's completion notice. */
struct req {
    struct cm_buf body;
    int too_big;
    int timeout_off; /* the idle timeout is off while the invocation runs */
    uint64_t start_ms;
    struct gw_call *call; /* the invocation, once started */
    int call_handed;      /* its SSE response owns it now */
    int in_flight;        /* holds a MAX_CONCURRENT_INVOCATIONS slot */
    char session[GW_SESSION_ID_MAX + 1], request_id[256];
};

/* One WebSocket invocation's InvokeStream call, registered for shutdown. */
struct sse {
    struct gw_http *h;
    struct cm_rpc_stream *stream;
    uint64_t start_ms;
    char request_id[256];
    struct sse *prev, *next;
};

/* Bytes of the last JSON answer this thread queued, for the access line. */
static __thread size_t tl_bytes;

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];

    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    cm_warn("http: %s", msg);
}

static void add_ids(struct MHD_Response *r, const char *session_id, const char *request_id)
{
    if (session_id)
        MHD_add_response_header(r, GW_SESSION_HEADER, session_id);
    if (request_id)
        MHD_add_response_header(r, GW_REQUEST_HEADER, request_id);
}

static enum MHD_Result send_json(struct MHD_Connection *c, int status, char *body,
                                 const char *session_id, const char *request_id,
                                 const char *const *extra)
{
    struct MHD_Response *r;
    enum MHD_Result ret;

    if (!body)
        body = strdup("{\"error\":\"Internal error\"}");
    tl_bytes = body ? strlen(body) : 0;
    r = MHD_create_response_from_buffer(tl_bytes, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    add_ids(r, session_id, request_id);
    for (; extra && extra[0]; extra += 2)
        MHD_add_response_header(r, extra[0], extra[1]);
    ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static void access_log_bytes(const char *method, const char *url, int status, size_t bytes,
                             uint64_t start_ms)
{
    char st[8], dur[24], by[24];
    const char *kv[] = {"method", method, "path",       url, "status", st,
                        "bytes",  by,     "durationMs", dur, NULL};

    if (!CM_LOG_ENABLED(CM_LOG_INFO))
        return;
    snprintf(st, sizeof(st), "%d", status);
    snprintf(by, sizeof(by), "%zu", bytes);
    snprintf(dur, sizeof(dur), "%llu", (unsigned long long)(cm_now_ms() - start_ms));
    cm_log_write(CM_LOG_INFO, kv, "request");
}

static void access_log(const char *method, const char *url, int status, uint64_t start_ms)
{
    access_log_bytes(method, url, status, tl_bytes, start_ms);
}

/* ---- request logging (DEBUG): headers masked, body truncated ---- */

struct hdr_log {
    struct cm_buf *b;
};

static enum MHD_Result log_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    struct hdr_log *l = cls;

    (void)kind;
    cm_buf_printf(l->b, "%s%s=%s", l->b->len ? "; " : "", key,
                  gw_api_header_sensitive(key) ? "***"
                  : value                      ? value
                                               : "");
    return MHD_YES;
}

static void log_request(struct gw_http *h, struct MHD_Connection *c, const char *method,
                        const char *url, const struct cm_buf *body)
{
    struct cm_buf hb, bb;
    struct hdr_log l = {&hb};
    const char *kv[] = {"method", method, "uri", url, "headers", NULL, "body", NULL, NULL};

    cm_buf_init(&hb, 16384);
    cm_buf_init(&bb, h->cfg.log_body_bytes + 16);
    MHD_get_connection_values(c, MHD_HEADER_KIND, log_header, &l);
    if (body->len) {
        size_t n = body->len < h->cfg.log_body_bytes ? body->len : h->cfg.log_body_bytes;

        cm_buf_add(&bb, body->data, n);
        if (n < body->len)
            cm_buf_addstr(&bb, "...");
    }
    kv[5] = hb.data ? hb.data : "";
    kv[7] = bb.data ? bb.data : "";
    cm_log_write(CM_LOG_DEBUG, kv, "request received");
    cm_buf_free(&hb);
    cm_buf_free(&bb);
}

/* ---- forwarded request context ---- */

/* The request context to pass on; owns copies (a WebSocket outlives the
 * upgrade request the headers came with). */
struct fwd {
    struct cm_rpc_meta meta[MAX_FORWARDED + 3];
    char keys[MAX_FORWARDED][128];
    char *vals[MAX_FORWARDED];
    size_t n, owned;
};

static void fwd_clear(struct fwd *f)
{
    size_t i;

    for (i = 0; i < f->owned; i++)
        free(f->vals[i]);
    f->n = f->owned = 0;
}

static enum MHD_Result collect_forwarded(void *cls, enum MHD_ValueKind kind, const char *key,
                                         const char *value)
{
    struct fwd *f = cls;
    size_t i, n = strlen(key);

    (void)kind;
    if (!value || f->n >= MAX_FORWARDED || n >= sizeof(f->keys[0]) ||
        strlen(value) > MAX_HEADER_VALUE || !gw_api_header_forwarded(key))
        return MHD_YES;
    f->vals[f->n] = strdup(value);
    if (!f->vals[f->n])
        return MHD_YES;
    for (i = 0; i <= n; i++) /* gRPC metadata keys are lowercase */
        f->keys[f->n][i] = (char)((key[i] >= 'A' && key[i] <= 'Z') ? key[i] + 32 : key[i]);
    f->meta[f->n].key = f->keys[f->n];
    f->meta[f->n].value = f->vals[f->n];
    f->n++;
    f->owned++;
    return MHD_YES;
}

/* ---- in-flight accounting and the shutdown registry ---- */

/* Takes a slot for an invocation; 0 when the cap is reached. */
static int flight_enter(struct gw_http *h)
{
    int ok;

    pthread_mutex_lock(&h->lock);
    ok = !h->stopping && h->in_flight < h->cfg.max_invocations;
    if (ok)
        h->in_flight++;
    pthread_mutex_unlock(&h->lock);
    return ok;
}

static void flight_leave(struct gw_http *h)
{
    pthread_mutex_lock(&h->lock);
    if (--h->in_flight == 0)
        pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
}

static void registry_add(struct sse *x)
{
    struct gw_http *h = x->h;

    pthread_mutex_lock(&h->lock);
    x->next = h->streams;
    if (h->streams)
        h->streams->prev = x;
    h->streams = x;
    pthread_mutex_unlock(&h->lock);
}

static void registry_remove(struct sse *x)
{
    struct gw_http *h = x->h;

    pthread_mutex_lock(&h->lock);
    if (x->prev)
        x->prev->next = x->next;
    else if (h->streams == x)
        h->streams = x->next;
    if (x->next)
        x->next->prev = x->prev;
    x->prev = x->next = NULL;
    pthread_mutex_unlock(&h->lock);
}

/* Closes the call (cancelling it unless it ended) and fills |st|. */
static int stream_finish(struct sse *x, struct cm_rpc_status *st)
{
    int rc;

    if (!x->stream)
        return -1;
    registry_remove(x);
    rc = cm_rpc_stream_close(x->stream, st);
    x->stream = NULL;
    return rc;
}

/* ---- /ping ---- */

static enum MHD_Result handle_ping(struct gw_http *h, struct MHD_Connection *c, int *status)
{
    long long since;
    const char *s = gw_health_status(h->health, &since);

    /* An agent-worker unreachable for several checks is reported, with 503,
     * rather than hidden behind a Healthy that would accept work it cannot do. */
    *status = strcmp(s, "Unhealthy") ? 200 : 503;
    return send_json(c, *status, gw_api_ping_body(s, since), NULL, NULL, NULL);
}

/* ---- /invocations ---- */

/* Opens the InvokeStream call of one invocation, registered for shutdown.
 * |events|: stream every event (else only the final one). NULL with |st|. */
static struct sse *call_open(struct gw_http *h, struct fwd *fwd, const char *prompt,
                             const char *session, const char *request_id, int events,
                             struct cm_rpc_status *st)
{
    Agentcore__V1__InvokeRequest ireq = AGENTCORE__V1__INVOKE_REQUEST__INIT;
    struct cm_rpc_call_opts o = {0};
    struct sse *x = calloc(1, sizeof(*x));
    size_t base = fwd->n;

    if (!x) {
        st->code = CM_RPC_RESOURCE_EXHAUSTED;
        cm_strlcpy(st->details, "out of memory", sizeof(st->details));
        st->error_type[0] = '\0';
        return NULL;
    }
    fwd->meta[fwd->n++] = (struct cm_rpc_meta){CM_RPC_MD_REQUEST_ID, request_id};
    fwd->meta[fwd->n++] = (struct cm_rpc_meta){CM_RPC_MD_SESSION_ID, session};
    ireq.prompt = (char *)prompt;
    ireq.session_id = (char *)session;
    ireq.request_id = (char *)request_id;
    ireq.stream = events; /* without it the agent sends the final event only */
    o.timeout_ms = events ? h->cfg.stream_timeout_ms : h->cfg.invoke_timeout_ms;
    /* Processes start in any order (s6 starts all three at once): a call that
     * arrives before the agent-worker listens waits for it, within
     * AGENT_READY_WAIT_MS, instead of failing. The call itself does not wait
     * for a connection (gRPC's wait-for-ready has no deadline of its own): an
     * agent-worker lost after this check fails it at once, with 503. */
    if (cm_rpc_client_wait_ready(h->agent, h->cfg.agent_ready_wait_ms)) {
        st->code = CM_RPC_UNAVAILABLE;
        snprintf(st->details, sizeof(st->details),
                 "no agent-worker reachable within %d ms (AGENT_READY_WAIT_MS)",
                 h->cfg.agent_ready_wait_ms);
        st->error_type[0] = '\0';
        free(x);
        return NULL;
    }
    o.meta = fwd->meta;
    o.n_meta = fwd->n;
    x->h = h;
    x->start_ms = cm_now_ms();
    cm_strlcpy(x->request_id, request_id, sizeof(x->request_id));
    x->stream = cm_rpc_stream_open(h->agent, stream_method, &ireq.base, &o, st);
    fwd->n = base;
    if (!x->stream) {
        free(x);
        return NULL;
    }
    registry_add(x);
    return x;
}

static void request_id_of(struct MHD_Connection *c, char *out, size_t cap)
{
    const char *hdr = MHD_lookup_connection_value(c, MHD_HEADER_KIND, GW_REQUEST_HEADER);

    if (hdr && *hdr && strlen(hdr) < cap)
        cm_strlcpy(out, hdr, cap);
    else if (cm_uuid4(out))
        cm_strlcpy(out, "unknown", cap);
}

/* The SSE body of one invocation, and what its access line needs. */
struct sse_out {
    struct gw_http *h;
    struct gw_call *call;
    uint64_t start_ms;
    char request_id[256];
};

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    return gw_call_sse_read(((struct sse_out *)cls)->call, pos, buf, max);
}

static void sse_free(void *cls)
{
    struct sse_out *o = cls;

    flight_leave(o->h); /* before the access line: a reader of the log may rely on it */
    cm_log_set_context(o->request_id, NULL);
    access_log_bytes("POST", "/invocations", 200, gw_call_sent(o->call), o->start_ms);
    cm_log_clear_context();
    gw_call_sse_free(o->call);
    free(o);
}

/* MHD calls the handler again once the loop resumed the connection: the
 * answer, the first event, or word that the client left. */
static enum MHD_Result answer_invocation(struct gw_http *h, struct MHD_Connection *c,
                                         struct req *rq)
{
    struct gw_answer a;
    struct MHD_Response *r;
    struct sse_out *o;
    enum MHD_Result ret;

    gw_call_answer(rq->call, c, &a);
    cm_log_set_context(rq->request_id, rq->session);
    switch (a.kind) {
    case GW_ANSWER_WAIT:
        ret = MHD_YES;
        break;
    case GW_ANSWER_GONE:
        flight_leave(h);
        rq->in_flight = 0;
        access_log("POST", "/invocations", 499, rq->start_ms);
        ret = MHD_NO; /* nobody to answer */
        break;
    case GW_ANSWER_JSON:
        ret = send_json(c, a.status, a.body, rq->session, rq->request_id, NULL);
        flight_leave(h);
        rq->in_flight = 0;
        access_log("POST", "/invocations", a.status, rq->start_ms);
        break;
    default:
        o = calloc(1, sizeof(*o));
        r = o ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_read, o,
                                                  sse_free)
              : NULL;
        if (!r) {
            free(o);
            ret = MHD_NO;
            break;
        }
        o->h = h;
        o->call = rq->call;
        o->start_ms = rq->start_ms;
        cm_strlcpy(o->request_id, rq->request_id, sizeof(o->request_id));
        rq->call_handed = 1; /* sse_free lets go of it and of the flight slot */
        rq->in_flight = 0;
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        MHD_add_response_header(r, "X-Accel-Buffering", "no");
        add_ids(r, rq->session, rq->request_id);
        ret = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        break;
    }
    cm_log_clear_context();
    return ret;
}

static enum MHD_Result handle_invocation(struct gw_http *h, struct MHD_Connection *c,
                                         struct req *rq, int *status_out)
{
    struct gw_invocation inv;
    struct gw_reply rep = {0, NULL};
    struct fwd fwd;
    char session[GW_SESSION_ID_MAX + 1], request_id[256];
    const char *retry[] = {"Retry-After", "1", NULL};
    struct gw_call_request creq;
    int streaming;

    request_id_of(c, request_id, sizeof(request_id));
    cm_log_set_context(request_id, NULL);
    if (rq->too_big) {
        char why[96];

        snprintf(why, sizeof(why), "request body larger than %zu bytes", h->cfg.max_body);
        gw_api_error(&rep, 413, "Payload Too Large", why);
        goto reply;
    }
    if (gw_api_parse_invocation(rq->body.data ? rq->body.data : "", rq->body.len, &inv, &rep))
        goto reply;
    if (gw_api_session_id(MHD_lookup_connection_value(c, MHD_HEADER_KIND, GW_SESSION_HEADER),
                          inv.session_id, session, &rep)) {
        gw_invocation_clear(&inv);
        goto reply;
    }
    cm_log_set_context(request_id, session);
    streaming =
        gw_api_wants_stream(&inv, MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Accept"));
    if (!flight_enter(h)) {
        gw_invocation_clear(&inv);
        *status_out = 503;
        return send_json(c, 503,
                         gw_api_error_body("Too many concurrent invocations",
                                           "the gateway's MAX_CONCURRENT_INVOCATIONS is reached; "
                                           "retry shortly"),
                         session, request_id, retry);
    }
    rq->in_flight = 1;
    /* HTTP_IDLE_TIMEOUT_S is for idle keep-alive connections: an invocation
     * that waits on the model, or a stream between events, is not idle. */
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    rq->timeout_off = 1;
    cm_strlcpy(rq->session, session, sizeof(rq->session));
    cm_strlcpy(rq->request_id, request_id, sizeof(rq->request_id));
    memset(&fwd, 0, sizeof(fwd));
    MHD_get_connection_values(c, MHD_HEADER_KIND, collect_forwarded, &fwd);
    fwd.meta[fwd.n++] = (struct cm_rpc_meta){CM_RPC_MD_REQUEST_ID, request_id};
    fwd.meta[fwd.n++] = (struct cm_rpc_meta){CM_RPC_MD_SESSION_ID, session};
    creq.prompt = inv.prompt;
    creq.session = session;
    creq.request_id = request_id;
    creq.stream = streaming;
    creq.meta = fwd.meta;
    creq.n_meta = fwd.n;
    /* The connection is suspended until the agent-worker answers: no thread
     * waits for it (gw_invoke). */
    rq->call = gw_call_start(h->invoke, c, &creq);
    fwd_clear(&fwd);
    gw_invocation_clear(&inv);
    if (!rq->call) {
        flight_leave(h);
        rq->in_flight = 0;
        *status_out = 500;
        return send_json(c, 500, gw_api_error_body("Agent failed", "out of memory"), session,
                         request_id, NULL);
    }
    *status_out = 0; /* logged when it is answered */
    return MHD_YES;
reply:
    *status_out = rep.status;
    return send_json(c, rep.status, rep.body, NULL, request_id, NULL);
}

/* ---- /ws: the same invocations over a WebSocket ---- */

/* One WebSocket: one invocation at a time, its events sent as text messages
 * in the SSE events' JSON; a socket that closes cancels the invocation. */
struct ws {
    struct gw_http *h;
    MHD_socket sock;
    struct MHD_UpgradeResponseHandle *urh;
    const char *extra; /* bytes MHD read past the handshake (our copy) */
    size_t extra_len;
    char *extra_copy;
    wslay_event_context_ptr ctx;
    struct sse *call;
    struct fwd fwd;
    char session[GW_SESSION_ID_MAX + 1]; /* from the upgrade request, or "" */
    char request_id[256];
    /* A close to send once the messages queued before it are out: wslay puts
     * control frames ahead of data, so it must not be queued earlier. */
    uint16_t close_code;
    /* While an invocation runs, a pump thread sleeps on its stream and hands
     * each event over through |q| and the |wake| eventfd, so the socket's
     * thread sleeps in poll() on the socket and |wake|, never on a timer. */
    int wake;
    pthread_t pump;
    int pump_live;
    pthread_mutex_t qlock; /* q_head/q_tail, pump_done */
    struct wsq *q_head, *q_tail;
    int pump_done;
    struct ws *prev, *next; /* the gateway's open sockets, woken at shutdown */
};

struct wsq {
    struct wsq *next;
    char *text;
};

static void ws_text(struct ws *w, char *text);

static void ws_wake(struct ws *w)
{
    uint64_t one = 1;

    if (write(w->wake, &one, sizeof(one)) < 0) {
        /* an eventfd only refuses at 2^64-1 pending wake-ups */
    }
}

static void *ws_pump_main(void *p)
{
    struct ws *w = p;
    ProtobufCMessage *m;

    /* The stream was opened on the socket's thread; reading it from here is
     * fine (one reader at a time, and cancel is thread-safe). */
    while (cm_rpc_stream_next(w->call->stream, &m) == 1) {
        struct wsq *e = calloc(1, sizeof(*e));

        if (e)
            e->text = gw_api_event_json((Agentcore__V1__InvokeEvent *)m);
        protobuf_c_message_free_unpacked(m, NULL);
        if (!e)
            continue;
        pthread_mutex_lock(&w->qlock);
        if (w->q_tail)
            w->q_tail->next = e;
        else
            w->q_head = e;
        w->q_tail = e;
        pthread_mutex_unlock(&w->qlock);
        ws_wake(w);
    }
    pthread_mutex_lock(&w->qlock);
    w->pump_done = 1;
    pthread_mutex_unlock(&w->qlock);
    ws_wake(w);
    return NULL;
}

/* Takes what the pump queued; with |send| 0 it is dropped. Returns 1 when
 * the pump has finished (and has been joined). */
static int ws_take(struct ws *w, int send)
{
    struct wsq *e, *next;
    int done;

    pthread_mutex_lock(&w->qlock);
    e = w->q_head;
    w->q_head = w->q_tail = NULL;
    done = w->pump_done;
    pthread_mutex_unlock(&w->qlock);
    for (; e; e = next) {
        next = e->next;
        if (send)
            ws_text(w, e->text);
        else
            free(e->text);
        free(e);
    }
    if (done && w->pump_live) {
        pthread_join(w->pump, NULL);
        w->pump_live = 0;
    }
    return done;
}

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud)
{
    struct ws *w = ud;
    ssize_t r;

    (void)flags;
    if (w->extra_len) {
        size_t n = w->extra_len < len ? w->extra_len : len;

        memcpy(buf, w->extra, n);
        w->extra += n;
        w->extra_len -= n;
        return (ssize_t)n;
    }
    r = recv(w->sock, buf, len, 0);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (r <= 0) { /* the client went away */
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return r;
}

static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *ud)
{
    struct ws *w = ud;
    ssize_t r = send(w->sock, data, len, MSG_NOSIGNAL);

    (void)flags;
    if (r < 0) {
        wslay_event_set_error(ctx, errno == EAGAIN || errno == EWOULDBLOCK
                                       ? WSLAY_ERR_WOULDBLOCK
                                       : WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return r;
}

/* Queues |text| (taken) as a text message. */
static void ws_text(struct ws *w, char *text)
{
    struct wslay_event_msg m;

    if (!text)
        return;
    if (*text) {
        m.opcode = WSLAY_TEXT_FRAME;
        m.msg = (const uint8_t *)text;
        m.msg_length = strlen(text);
        wslay_event_queue_msg(w->ctx, &m); /* copies the message */
    }
    free(text);
}

static void ws_close_call(struct ws *w)
{
    struct cm_rpc_status st;

    if (!w->call)
        return;
    if (w->pump_live) {
        cm_rpc_stream_cancel(w->call->stream); /* the pump wakes and ends */
        pthread_join(w->pump, NULL);
        w->pump_live = 0;
        ws_take(w, 0);
    }
    stream_finish(w->call, &st);
    free(w->call);
    w->call = NULL;
    flight_leave(w->h);
}

static void ws_invocation(struct ws *w, const char *payload, size_t len)
{
    struct gw_invocation inv;
    struct gw_reply rep = {0, NULL};
    struct cm_rpc_status st;
    char session[GW_SESSION_ID_MAX + 1];

    if (w->call) {
        ws_text(w,
                gw_api_error_event("an invocation is already running on this connection", "Busy"));
        return;
    }
    if (gw_api_parse_invocation(payload, len, &inv, &rep)) {
        ws_text(w, rep.body); /* the same body an HTTP 400 carries */
        return;
    }
    if (gw_api_session_id(w->session[0] ? w->session : NULL, inv.session_id, session, &rep)) {
        gw_invocation_clear(&inv);
        ws_text(w, rep.body);
        return;
    }
    if (cm_uuid4(w->request_id))
        cm_strlcpy(w->request_id, "unknown", sizeof(w->request_id));
    cm_log_set_context(w->request_id, session);
    if (!flight_enter(w->h)) {
        gw_invocation_clear(&inv);
        ws_text(w, gw_api_error_event("too many concurrent invocations", "Busy"));
        return;
    }
    w->call = call_open(w->h, &w->fwd, inv.prompt, session, w->request_id, 1, &st);
    gw_invocation_clear(&inv);
    if (!w->call) {
        flight_leave(w->h);
        ws_text(w, gw_api_error_event(st.details, cm_rpc_code_name(st.code)));
        w->close_code = WSLAY_CODE_INTERNAL_SERVER_ERROR;
        return;
    }
    w->pump_done = 0;
    w->pump_live = !pthread_create(&w->pump, NULL, ws_pump_main, w);
    if (!w->pump_live) {
        ws_close_call(w);
        ws_text(w, gw_api_error_event("cannot follow the invocation", "AgentError"));
    }
}

static void ws_on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *ud)
{
    struct ws *w = ud;

    (void)ctx;
    if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME)
        ws_invocation(w, (const char *)arg->msg, arg->msg_length);
    else if (arg->opcode == WSLAY_CONNECTION_CLOSE)
        ws_close_call(w); /* wslay answers the close itself */
}

/* Sends what the running invocation produced; at its end, its failure (if
 * any) and the call's cleanup. */
static void ws_pump(struct ws *w)
{
    struct cm_rpc_status st;

    if (!ws_take(w, 1))
        return;
    if (stream_finish(w->call, &st)) {
        ws_text(w,
                gw_api_error_event(st.details[0] ? st.details : cm_rpc_code_name(st.code),
                                   st.error_type[0] ? st.error_type : cm_rpc_code_name(st.code)));
        /* The agent-worker itself failed or is gone: close with 1011. */
        if (!st.error_type[0] && st.code != CM_RPC_INVALID_ARGUMENT)
            w->close_code = WSLAY_CODE_INTERNAL_SERVER_ERROR;
    }
    free(w->call);
    w->call = NULL;
    flight_leave(w->h);
}

static void ws_register(struct ws *w, int add)
{
    struct gw_http *h = w->h;

    pthread_mutex_lock(&h->lock);
    if (add) {
        w->next = h->sockets;
        if (h->sockets)
            h->sockets->prev = w;
        h->sockets = w;
    } else {
        if (w->prev)
            w->prev->next = w->next;
        else if (h->sockets == w)
            h->sockets = w->next;
        if (w->next)
            w->next->prev = w->prev;
    }
    pthread_mutex_unlock(&h->lock);
}

/* Closing a socket with unread input makes the kernel send a RST, which can
 * destroy the close frame still on its way (e.g. after refusing an oversized
 * message). So: send FIN, read away what the peer still sends, briefly. */
static void ws_linger(MHD_socket sock)
{
    uint64_t until = cm_now_ms() + 500;
    char junk[4096];

    shutdown(sock, SHUT_WR);
    while (cm_now_ms() < until) {
        struct pollfd p = {sock, POLLIN, 0};
        ssize_t r;

        if (poll(&p, 1, 100) <= 0)
            continue;
        r = recv(sock, junk, sizeof(junk), 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            break; /* the peer closed too */
    }
}

/* The part of a WebSocket session that needs the connection, on MHD's
 * thread: copies what the session thread will need, then hands over. */
static void *ws_main(void *p);

static void ws_upgraded(void *cls, struct MHD_Connection *c, void *con_cls, const char *extra_in,
                        size_t extra_in_size, MHD_socket sock,
                        struct MHD_UpgradeResponseHandle *urh)
{
    struct gw_http *h = cls;
    const char *session = MHD_lookup_connection_value(c, MHD_HEADER_KIND, GW_SESSION_HEADER);
    struct ws *w = calloc(1, sizeof(*w));
    pthread_attr_t attr;
    pthread_t t;
    int started = 0;

    (void)con_cls;
    if (w) {
        w->h = h;
        w->sock = sock;
        w->urh = urh;
        w->extra_copy = extra_in_size ? malloc(extra_in_size) : NULL;
        if (w->extra_copy)
            memcpy(w->extra_copy, extra_in, extra_in_size);
        w->extra = w->extra_copy;
        w->extra_len = w->extra_copy ? extra_in_size : 0;
        if (session && strlen(session) <= GW_SESSION_ID_MAX)
            cm_strlcpy(w->session, session, sizeof(w->session));
        MHD_get_connection_values(c, MHD_HEADER_KIND, collect_forwarded, &w->fwd);
        pthread_mutex_lock(&h->lock);
        h->ws_threads++;
        pthread_mutex_unlock(&h->lock);
        /* MHD's threads serve every connection: a session that waits on its
         * client lives on a thread of its own. */
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        started = !pthread_create(&t, &attr, ws_main, w);
        pthread_attr_destroy(&attr);
    }
    if (!started) {
        if (w) {
            pthread_mutex_lock(&h->lock);
            h->ws_threads--;
            pthread_mutex_unlock(&h->lock);
            fwd_clear(&w->fwd);
            free(w->extra_copy);
            free(w);
        }
        MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
    }
}

/* Frees a session and tells the gateway it is over. */
static void ws_end(struct ws *w)
{
    struct gw_http *h = w->h;

    fwd_clear(&w->fwd);
    free(w->extra_copy);
    free(w);
    pthread_mutex_lock(&h->lock);
    if (--h->ws_threads == 0)
        pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
}

static void *ws_main(void *p)
{
    struct ws *w = p;
    struct gw_http *h = w->h;
    MHD_socket sock = w->sock;
    struct MHD_UpgradeResponseHandle *urh = w->urh;
    struct wslay_event_callbacks cb = {ws_recv, ws_send, NULL, NULL, NULL, NULL, ws_on_msg};
    int flags = fcntl(sock, F_GETFL);
    uint64_t closed_at = 0;

    fcntl(sock, F_SETFL, flags | O_NONBLOCK);
    w->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_mutex_init(&w->qlock, NULL);
    if (w->wake < 0 || wslay_event_context_server_init(&w->ctx, &cb, w)) {
        if (w->wake >= 0)
            close(w->wake);
        pthread_mutex_destroy(&w->qlock);
        MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
        ws_end(w);
        return NULL;
    }
    ws_register(w, 1);
    wslay_event_config_set_max_recv_msg_length(w->ctx, h->cfg.ws_max_message);
    while (wslay_event_want_read(w->ctx) || wslay_event_want_write(w->ctx)) {
        struct pollfd pf[2] = {{sock, 0, 0}, {w->wake, POLLIN, 0}};
        int stopping, timeout = -1;

        pthread_mutex_lock(&h->lock);
        stopping = h->stopping;
        pthread_mutex_unlock(&h->lock);
        if (stopping && !wslay_event_get_close_sent(w->ctx)) {
            ws_close_call(w);
            wslay_event_queue_close(w->ctx, WSLAY_CODE_GOING_AWAY, NULL, 0);
        }
        /* Our close is out: wait a little for the peer's, never forever (a
         * client that does not answer must not hold a thread, or shutdown). */
        if (wslay_event_get_close_sent(w->ctx) && !wslay_event_want_write(w->ctx)) {
            if (!closed_at)
                closed_at = cm_now_ms();
            else if (stopping || cm_now_ms() - closed_at > WS_CLOSE_WAIT_MS)
                break;
            timeout = (int)(WS_CLOSE_WAIT_MS + 1 - (cm_now_ms() - closed_at));
        }
        if (wslay_event_want_read(w->ctx))
            pf[0].events |= POLLIN;
        if (wslay_event_want_write(w->ctx))
            pf[0].events |= POLLOUT;
        /* Sleeps until the client sends, the socket drains, the invocation
         * has an event, or the gateway stops: no timer while nothing happens. */
        if (w->extra_len)
            pf[0].revents = POLLIN;
        else if (poll(pf, 2, timeout) < 0 && errno != EINTR)
            break;
        if (pf[1].revents & POLLIN) {
            uint64_t n;

            if (read(w->wake, &n, sizeof(n)) < 0) {
                /* EAGAIN: another wake-up already took it */
            }
        }
        if ((pf[0].revents & (POLLIN | POLLHUP | POLLERR)) && wslay_event_recv(w->ctx)) {
            /* The client went away or broke the protocol (an oversized
             * message, say): send the close wslay queued, if it can go. */
            wslay_event_send(w->ctx);
            break;
        }
        if (w->call)
            ws_pump(w);
        if (wslay_event_want_write(w->ctx) && wslay_event_send(w->ctx))
            break;
        if (w->close_code && !wslay_event_want_write(w->ctx)) {
            wslay_event_queue_close(w->ctx, w->close_code, NULL, 0);
            w->close_code = 0;
        }
    }
    if (w->call)
        cm_info("WebSocket closed mid-invocation: invocation cancelled");
    ws_close_call(w);
    ws_register(w, 0);
    close(w->wake);
    pthread_mutex_destroy(&w->qlock);
    wslay_event_context_free(w->ctx);
    cm_log_clear_context();
    ws_linger(sock);
    MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
    ws_end(w);
    return NULL;
}

static enum MHD_Result handle_ws(struct gw_http *h, struct MHD_Connection *c, int *status)
{
    char why[128], accept[GW_WS_ACCEPT_LEN + 1];
    const char *key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Sec-WebSocket-Key");
    struct MHD_Response *r;
    enum MHD_Result ret;

    why[0] = '\0';
    if (gw_ws_check(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Upgrade"),
                    MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Connection"),
                    MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Sec-WebSocket-Version"), key,
                    why, sizeof(why)) ||
        gw_ws_accept_key(key, accept)) {
        *status = 400;
        return send_json(c, 400, gw_api_error_body("Invalid WebSocket handshake", why), NULL, NULL,
                         NULL);
    }
    r = MHD_create_response_for_upgrade(ws_upgraded, h);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Upgrade", "websocket");
    MHD_add_response_header(r, "Connection", "Upgrade");
    MHD_add_response_header(r, "Sec-WebSocket-Accept", accept);
    *status = 101;
    ret = MHD_queue_response(c, MHD_HTTP_SWITCHING_PROTOCOLS, r);
    MHD_destroy_response(r);
    return ret;
}

/* 404, or 405 with its Allow header, answered and logged. */
static enum MHD_Result refuse(struct MHD_Connection *c, const char *method, const char *url,
                              int status, const char *const *allow, uint64_t start_ms)
{
    enum MHD_Result ret = send_json(
        c, status, gw_api_error_body(status == 404 ? "Not Found" : "Method Not Allowed", NULL),
        NULL, NULL, allow);

    access_log(method, url, status, start_ms);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct gw_http *h = cls;
    struct req *rq = *con_cls;
    int is_ping = !strcmp(url, "/ping"), is_inv = !strcmp(url, "/invocations");
    int is_ws = !strcmp(url, "/ws");
    int status = 0;
    enum MHD_Result ret;

    (void)version;
    if (!rq) {
        const char *cl;
        const char *allow_ping[] = {"Allow", "GET, HEAD", NULL};
        const char *allow_inv[] = {"Allow", "POST", NULL};
        const char *allow_ws[] = {"Allow", "GET", NULL};

        rq = calloc(1, sizeof(*rq));
        if (!rq)
            return MHD_NO;
        rq->start_ms = cm_now_ms();
        cm_buf_init(&rq->body, h->cfg.max_body);
        *con_cls = rq;
        /* Answer what needs no body at once. */
        if (is_ws && strcmp(method, "GET"))
            return refuse(c, method, url, 405, allow_ws, rq->start_ms);
        if (!is_ping && !is_inv && !is_ws)
            return refuse(c, method, url, 404, NULL, rq->start_ms);
        if (is_ping && strcmp(method, "GET") && strcmp(method, "HEAD"))
            return refuse(c, method, url, 405, allow_ping, rq->start_ms);
        if (is_inv && strcmp(method, "POST"))
            return refuse(c, method, url, 405, allow_inv, rq->start_ms);
        cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > h->cfg.max_body)
            rq->too_big = 1;
        /* Answering on a later call keeps the connection alive: MHD closes
         * connections answered before it finished reading the request. */
        return MHD_YES;
    }
    if (rq->call)
        return answer_invocation(h, c, rq);
    if (is_inv && *upload_data_size) {
        if (!rq->too_big && cm_buf_add(&rq->body, upload_data, *upload_data_size))
            rq->too_big = 1; /* keep reading (and discarding) so the 413 reaches the client */
        if (rq->too_big)
            cm_buf_free(&rq->body);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (is_ws) {
        ret = handle_ws(h, c, &status);
        access_log(method, url, status, rq->start_ms);
        return ret;
    }
    if (is_ping) {
        ret = handle_ping(h, c, &status);
        if (CM_LOG_ENABLED(CM_LOG_DEBUG))
            access_log(method, url, status, rq->start_ms); /* polled every 2 s: debug only */
        return ret;
    }
    if (CM_LOG_ENABLED(CM_LOG_DEBUG))
        log_request(h, c, method, url, &rq->body);
    ret = handle_invocation(h, c, rq, &status);
    if (status)
        access_log(method, url, status, rq->start_ms);
    cm_log_clear_context();
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct gw_http *h = cls;
    struct req *rq = *con_cls;

    (void)toe;
    if (!rq)
        return;
    /* Ended before its answer (the client left, or the gateway stops). */
    if (rq->call && !rq->call_handed)
        gw_call_done(rq->call);
    if (rq->in_flight)
        flight_leave(h);
    /* Back to an idle keep-alive connection: the idle timeout applies again. */
    if (rq->timeout_off)
        MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT,
                                  (unsigned int)h->cfg.idle_timeout_s);
    cm_buf_free(&rq->body);
    free(rq);
    *con_cls = NULL;
}

struct gw_http *gw_http_start(const struct gw_http_config *cfg, struct cm_rpc_client *agent,
                              char *err, size_t errlen)
{
    struct gw_http *h = calloc(1, sizeof(*h));
    struct sockaddr_in sa;
    const union MHD_DaemonInfo *info;

    if (!h) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->agent = agent;
    h->cfg = *cfg;
    h->hangup = gw_hangup_new(); /* NULL: waiting connections check their client themselves */
    if (!h->hangup)
        cm_warn("hangup watcher unavailable: waiting connections poll their clients");
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->cond, NULL);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)cfg->port);
    if (inet_pton(AF_INET, cfg->host, &sa.sin_addr) != 1) {
        snprintf(err, errlen, "'%s' is not an IPv4 address", cfg->host);
        goto fail;
    }
    {
        struct gw_invoke_config ic = {agent,
                                      invoke_method,
                                      stream_method,
                                      h->hangup,
                                      cfg->invoke_timeout_ms,
                                      cfg->stream_timeout_ms,
                                      cfg->agent_ready_wait_ms,
                                      cfg->sse_keepalive_s};

        h->invoke = gw_invoke_new(&ic);
        if (!h->invoke) {
            snprintf(err, errlen, "cannot start the invocation loop");
            goto fail;
        }
    }
    /* Before the daemon: /ping reads it from the first request on. */
    h->health =
        gw_health_start(agent, watch_method, cfg->health_interval_ms, cfg->health_timeout_ms);
    if (!h->health) {
        snprintf(err, errlen, "cannot start the health watcher");
        goto fail;
    }
    /* A few threads in epoll mode serve every connection; an invocation
     * suspends its connection while it waits (gw_invoke), so no thread is
     * parked per request and a burst of connections starts no threads. */
    h->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
            MHD_USE_ERROR_LOG | MHD_ALLOW_UPGRADE,
        (uint16_t)cfg->port, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h,
        MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_CONNECTION_LIMIT, (unsigned int)cfg->max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)cfg->idle_timeout_s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)(cfg->http_threads > 0 ? cfg->http_threads : 2),
        MHD_OPTION_END);
    if (!h->daemon) {
        snprintf(err, errlen, "cannot listen on %s:%d (address in use?)", cfg->host, cfg->port);
        goto fail;
    }
    info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : cfg->port;
    return h;
fail:
    gw_health_stop(h->health);
    gw_invoke_free(h->invoke);
    gw_hangup_free(h->hangup);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->cond);
    free(h);
    return NULL;
}

int gw_http_port(const struct gw_http *h)
{
    return h->port;
}

void gw_http_stop(struct gw_http *h, int grace_ms)
{
    struct timespec until;
    struct sse *x;
    int left;

    if (!h)
        return;
    MHD_quiesce_daemon(h->daemon); /* no new connections from here on */
    until = cm_deadline_ms(grace_ms);
    pthread_mutex_lock(&h->lock);
    h->stopping = 1; /* refuse new invocations on open connections too */
    pthread_cond_broadcast(&h->cond);
    for (struct ws *w = h->sockets; w; w = w->next)
        ws_wake(w); /* they close with 1001 */
    while (h->in_flight > 0 && pthread_cond_timedwait(&h->cond, &h->lock, &until) == 0)
        ;
    left = h->in_flight;
    /* The grace is over: cancel what still runs (the WebSockets' calls here,
     * the others on the invocation loop), then wait, briefly, until every
     * call and session has let go, so MHD can stop. */
    for (x = h->streams; x; x = x->next)
        cm_rpc_stream_cancel(x->stream);
    pthread_mutex_unlock(&h->lock);
    if (left)
        cm_warn("%d invocation(s) still running after the grace period: cancelled", left);
    gw_invoke_cancel_all(h->invoke, 5000);
    until = cm_deadline_ms(WS_CLOSE_WAIT_MS + 1000);
    pthread_mutex_lock(&h->lock);
    while (h->ws_threads > 0 && pthread_cond_timedwait(&h->cond, &h->lock, &until) == 0)
        ;
    pthread_mutex_unlock(&h->lock);
    gw_health_stop(h->health);
    MHD_stop_daemon(h->daemon);
    gw_invoke_free(h->invoke);
    gw_hangup_free(h->hangup);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->cond);
    free(h);
}
