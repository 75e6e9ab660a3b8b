#define _GNU_SOURCE /* POLLRDHUP */
#include "gw_http.h"
#include "cm_buf.h"
#include "cm_log.h"
#include "cm_rpc.h"
#include "cm_util.h"
#include "gw_api.h"

#include "agentcore.pb-c.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#define WAIT_SLICE_MS 100 /* how often a waiting request checks its client */
#define MAX_FORWARDED 24  /* context headers passed on per request */
#define MAX_HEADER_VALUE 4096
#define AGENT_DOWN_CHECKS 3 /* failed health checks in a row before /ping says so */

const struct cm_rpc_method gw_http_agent_methods[GW_HTTP_N_AGENT_METHODS] = {
    {"/agentcore.v1.AgentService/InvokeStream", &agentcore__v1__invoke_request__descriptor,
     &agentcore__v1__invoke_event__descriptor, CM_RPC_SERVER_STREAM},
    {"/agentcore.v1.AgentService/Status", &agentcore__v1__status_request__descriptor,
     &agentcore__v1__status_response__descriptor, CM_RPC_UNARY},
};
static const struct cm_rpc_method *const stream_method = &gw_http_agent_methods[0];
static const struct cm_rpc_method *const status_method = &gw_http_agent_methods[1];

struct sse;

struct gw_http {
    struct MHD_Daemon *daemon;
    struct cm_rpc_client *agent;
    struct gw_http_config cfg;
    int port;
    pthread_mutex_t lock; /* everything below */
    pthread_cond_t cond;  /* in_flight reached 0, or the poller must stop */
    int in_flight;
    int stopping;
    struct sse *streams; /* open InvokeStream calls, cancelled at shutdown */
    /* /ping: the status and when it last changed; the poller keeps them. */
    const char *status;
    long long status_since;
    int health_failures;
    pthread_t poller;
    int poller_started;
};

/* Per-request state, alive from the first callback to MHD's completion notice. */
struct req {
    struct cm_buf body;
    int too_big;
    uint64_t start_ms;
};

/* One invocation's InvokeStream call and, in SSE mode, the bytes on their way. */
struct sse {
    struct gw_http *h;
    struct MHD_Connection *c;
    struct cm_rpc_stream *stream;
    char *pending; /* the formatted event being written */
    size_t plen, poff;
    int done; /* nothing more after |pending| */
    uint64_t start_ms;
    char request_id[256];
    struct sse *prev, *next;
};

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
    r = MHD_create_response_from_buffer(body ? strlen(body) : 0, body, MHD_RESPMEM_MUST_FREE);
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

static void access_log(const char *method, const char *url, int status, uint64_t start_ms)
{
    char st[8], dur[24];
    const char *kv[] = {"method", method, "path", url, "status", st, "durationMs", dur, NULL};

    if (!CM_LOG_ENABLED(CM_LOG_INFO))
        return;
    snprintf(st, sizeof(st), "%d", status);
    snprintf(dur, sizeof(dur), "%llu", (unsigned long long)(cm_now_ms() - start_ms));
    cm_log_write(CM_LOG_INFO, kv, "request");
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

struct fwd {
    struct cm_rpc_meta meta[MAX_FORWARDED + 3];
    char keys[MAX_FORWARDED][128];
    size_t n;
};

static enum MHD_Result collect_forwarded(void *cls, enum MHD_ValueKind kind, const char *key,
                                         const char *value)
{
    struct fwd *f = cls;
    size_t i, n = strlen(key);

    (void)kind;
    if (!value || f->n >= MAX_FORWARDED || n >= sizeof(f->keys[0]) ||
        strlen(value) > MAX_HEADER_VALUE || !gw_api_header_forwarded(key))
        return MHD_YES;
    for (i = 0; i <= n; i++) /* gRPC metadata keys are lowercase */
        f->keys[f->n][i] = (char)((key[i] >= 'A' && key[i] <= 'Z') ? key[i] + 32 : key[i]);
    f->meta[f->n].key = f->keys[f->n];
    f->meta[f->n].value = value;
    f->n++;
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

/* 1 when the HTTP client has closed its side or the socket failed. */
static int client_gone(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct pollfd p;
    char byte;

    if (!ci)
        return 0;
    p.fd = ci->connect_fd;
    p.events = POLLIN | POLLRDHUP;
    p.revents = 0;
    if (poll(&p, 1, 0) <= 0)
        return 0;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))
        return 1;
    /* Readable: either a pipelined request (alive) or EOF (gone). */
    return recv(ci->connect_fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

enum { EV_OK = 1, EV_END = 0, EV_FAILED = -1, EV_CLIENT_GONE = -2 };

/* Waits for the next event in short slices, checking the client between
 * them: a client that leaves cancels the call (and with it the agent's
 * model request and tools) within WAIT_SLICE_MS. */
static int next_event(struct sse *x, Agentcore__V1__InvokeEvent **ev)
{
    ProtobufCMessage *m;
    int rc;

    for (;;) {
        rc = cm_rpc_stream_next_timed(x->stream, &m, WAIT_SLICE_MS);
        if (rc == 2) {
            if (client_gone(x->c)) {
                cm_rpc_stream_cancel(x->stream);
                return EV_CLIENT_GONE;
            }
            continue;
        }
        *ev = (Agentcore__V1__InvokeEvent *)m;
        return rc;
    }
}

static char *final_json(const Agentcore__V1__InvokeResponse *f)
{
    return gw_api_response_body(f->invocation_id, f->session_id, f->response, f->stop_reason,
                                f->usage ? f->usage->input_tokens : 0,
                                f->usage ? f->usage->output_tokens : 0,
                                f->usage ? f->usage->total_tokens : 0, f->iterations);
}

static char *event_sse(const Agentcore__V1__InvokeEvent *ev)
{
    char *json, *out;

    switch (ev->event_case) {
    case AGENTCORE__V1__INVOKE_EVENT__EVENT_TEXT_DELTA:
        return gw_api_sse_text(ev->text_delta->content_block_index, ev->text_delta->text);
    case AGENTCORE__V1__INVOKE_EVENT__EVENT_TOOL_USE_JSON:
        return gw_api_sse_tool_use(ev->tool_use_json);
    case AGENTCORE__V1__INVOKE_EVENT__EVENT_TOOL_RESULT_JSON:
        return gw_api_sse_tool_result(ev->tool_result_json);
    case AGENTCORE__V1__INVOKE_EVENT__EVENT_FINAL:
        json = final_json(ev->final);
        out = json ? gw_api_sse_data(json) : NULL;
        free(json);
        return out;
    default:
        return strdup(""); /* an event kind this gateway does not know: skip it */
    }
}

/* Formats the stream's failure (or end) as the last event. */
static void finish_with_status(struct sse *x)
{
    struct cm_rpc_status st;

    x->done = 1;
    if (stream_finish(x, &st) == 0)
        return;
    cm_warn("stream failed after the first event: %s: %s", cm_rpc_code_name(st.code), st.details);
    x->pending = gw_api_sse_error(st.details[0] ? st.details : cm_rpc_code_name(st.code),
                                  st.error_type[0] ? st.error_type : cm_rpc_code_name(st.code));
    x->plen = x->pending ? strlen(x->pending) : 0;
    x->poff = 0;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct sse *x = cls;
    size_t n;

    (void)pos;
    while (!x->pending || x->poff == x->plen) {
        Agentcore__V1__InvokeEvent *ev;
        int rc;

        free(x->pending);
        x->pending = NULL;
        if (x->done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        rc = next_event(x, &ev);
        if (rc == EV_CLIENT_GONE) {
            cm_info("client went away mid-stream: invocation cancelled");
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (rc != EV_OK) {
            finish_with_status(x);
            continue;
        }
        x->pending = event_sse(ev);
        protobuf_c_message_free_unpacked(&ev->base, NULL);
        x->plen = x->pending ? strlen(x->pending) : 0;
        x->poff = 0;
    }
    n = x->plen - x->poff < max ? x->plen - x->poff : max;
    memcpy(buf, x->pending + x->poff, n);
    x->poff += n;
    return (ssize_t)n;
}

static void sse_free(void *cls)
{
    struct sse *x = cls;
    struct cm_rpc_status st;

    if (x->stream)
        stream_finish(x, &st); /* the client left: cancel what is still running */
    cm_log_set_context(x->request_id, NULL);
    access_log("POST", "/invocations", 200, x->start_ms);
    cm_log_clear_context();
    flight_leave(x->h);
    free(x->pending);
    free(x);
}

/* ---- /ping ---- */

static void set_status(struct gw_http *h, const char *status)
{
    if (strcmp(h->status, status)) {
        /* time_of_last_update moves only when the status changes: a value that
         * moved on every ping would keep idle sessions alive for hours. */
        h->status = status;
        h->status_since = (long long)time(NULL);
        cm_info("ping status is now %s", status);
    }
}

/* Asks the agent-worker for its status every interval, off the /ping path: a
 * stuck or dead agent-worker can slow this thread, never a /ping. Status is
 * served by the agent-worker's small auxiliary pool, so it answers even while
 * every worker thread runs an invocation. */
static void *poll_health(void *p)
{
    Agentcore__V1__StatusRequest req = AGENTCORE__V1__STATUS_REQUEST__INIT;
    Agentcore__V1__StatusResponse *resp;
    struct gw_http *h = p;
    struct cm_rpc_call_opts o = {0};
    struct cm_rpc_status st;
    struct timespec until;

    o.timeout_ms = h->cfg.health_timeout_ms;
    pthread_mutex_lock(&h->lock);
    while (!h->stopping) {
        int busy = -1;

        pthread_mutex_unlock(&h->lock);
        if (!cm_rpc_call(h->agent, status_method, &req.base, (ProtobufCMessage **)&resp, &o, &st)) {
            busy = resp->active_background_tasks > 0;
            protobuf_c_message_free_unpacked(&resp->base, NULL);
        }
        pthread_mutex_lock(&h->lock);
        h->health_failures = busy >= 0 ? 0 : h->health_failures + 1;
        if (busy >= 0)
            set_status(h, busy ? "HealthyBusy" : "Healthy");
        else if (h->health_failures >= AGENT_DOWN_CHECKS)
            set_status(h, "Unhealthy");
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += h->cfg.health_interval_ms / 1000;
        until.tv_nsec += (long)(h->cfg.health_interval_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!h->stopping && pthread_cond_timedwait(&h->cond, &h->lock, &until) == 0)
            ;
    }
    pthread_mutex_unlock(&h->lock);
    cm_rpc_thread_done();
    return NULL;
}

static enum MHD_Result handle_ping(struct gw_http *h, struct MHD_Connection *c, int *status)
{
    const char *s;
    long long since;

    pthread_mutex_lock(&h->lock);
    s = h->status;
    since = h->status_since;
    pthread_mutex_unlock(&h->lock);
    /* An agent-worker unreachable for several checks is reported, with 503,
     * rather than hidden behind a Healthy that would accept work it cannot do. */
    *status = strcmp(s, "Unhealthy") ? 200 : 503;
    return send_json(c, *status, gw_api_ping_body(s, since), NULL, NULL, NULL);
}

/* ---- /invocations ---- */

static enum MHD_Result handle_invocation(struct gw_http *h, struct MHD_Connection *c,
                                         struct req *rq, int *status_out)
{
    Agentcore__V1__InvokeRequest ireq = AGENTCORE__V1__INVOKE_REQUEST__INIT;
    struct gw_invocation inv;
    struct gw_reply rep = {0, NULL};
    struct cm_rpc_status st;
    struct cm_rpc_call_opts o = {0};
    struct fwd fwd;
    char session[GW_SESSION_ID_MAX + 1], request_id[256];
    const char *hdr, *retry[] = {"Retry-After", "1", NULL};
    Agentcore__V1__InvokeEvent *ev = NULL;
    struct sse *x;
    struct MHD_Response *r;
    enum MHD_Result ret;
    int streaming, rc;

    hdr = MHD_lookup_connection_value(c, MHD_HEADER_KIND, GW_REQUEST_HEADER);
    if (hdr && *hdr && strlen(hdr) < sizeof(request_id))
        cm_strlcpy(request_id, hdr, sizeof(request_id));
    else if (cm_uuid4(request_id))
        cm_strlcpy(request_id, "unknown", sizeof(request_id));
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

    memset(&fwd, 0, sizeof(fwd));
    MHD_get_connection_values(c, MHD_HEADER_KIND, collect_forwarded, &fwd);
    fwd.meta[fwd.n++] = (struct cm_rpc_meta){CM_RPC_MD_REQUEST_ID, request_id};
    fwd.meta[fwd.n++] = (struct cm_rpc_meta){CM_RPC_MD_SESSION_ID, session};
    ireq.prompt = (char *)inv.prompt;
    ireq.session_id = session;
    ireq.request_id = request_id;
    ireq.stream = streaming; /* without it the agent sends the final event only */
    o.timeout_ms = streaming ? h->cfg.stream_timeout_ms : h->cfg.invoke_timeout_ms;
    o.meta = fwd.meta;
    o.n_meta = fwd.n;

    x = calloc(1, sizeof(*x));
    if (!x) {
        flight_leave(h);
        gw_invocation_clear(&inv);
        gw_api_error(&rep, 500, "Internal error", "out of memory");
        goto reply;
    }
    x->h = h;
    x->c = c;
    x->start_ms = rq->start_ms;
    cm_strlcpy(x->request_id, request_id, sizeof(x->request_id));
    x->stream = cm_rpc_stream_open(h->agent, stream_method, &ireq.base, &o, &st);
    gw_invocation_clear(&inv);
    if (x->stream)
        registry_add(x);
    /* The first event decides the status line: until one arrives, a failure is
     * still an ordinary HTTP error (503 agent unreachable, 502 model, ...). */
    rc = x->stream ? next_event(x, &ev) : EV_FAILED;
    while (rc == EV_OK && !streaming &&
           ev->event_case != AGENTCORE__V1__INVOKE_EVENT__EVENT_FINAL) {
        protobuf_c_message_free_unpacked(&ev->base, NULL);
        rc = next_event(x, &ev);
    }
    if (rc == EV_CLIENT_GONE) {
        cm_info("client went away: invocation cancelled");
        stream_finish(x, &st);
        flight_leave(h);
        free(x);
        *status_out = 499;
        return MHD_NO; /* nobody to answer */
    }
    if (rc != EV_OK) {
        if (x->stream)
            stream_finish(x, &st);
        cm_warn("agent call failed: %s: %s", cm_rpc_code_name(st.code), st.details);
        gw_api_agent_error(st.code, st.error_type, st.details, &rep);
        flight_leave(h);
        free(x);
        *status_out = rep.status;
        return send_json(c, rep.status, rep.body, session, request_id, NULL);
    }
    if (!streaming) {
        char *body = final_json(ev->final);

        protobuf_c_message_free_unpacked(&ev->base, NULL);
        stream_finish(x, &st);
        flight_leave(h);
        free(x);
        *status_out = body ? 200 : 500;
        return send_json(c, *status_out, body, session, request_id, NULL);
    }
    x->pending = event_sse(ev);
    x->plen = x->pending ? strlen(x->pending) : 0;
    protobuf_c_message_free_unpacked(&ev->base, NULL);
    r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_read, x, sse_free);
    if (!r) {
        sse_free(x);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    add_ids(r, session, request_id);
    *status_out = 0; /* logged by sse_free when the stream ends */
    ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
reply:
    *status_out = rep.status;
    return send_json(c, rep.status, rep.body, NULL, request_id, NULL);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct gw_http *h = cls;
    struct req *rq = *con_cls;
    int is_ping = !strcmp(url, "/ping"), is_inv = !strcmp(url, "/invocations");
    int status = 0;
    enum MHD_Result ret;

    (void)version;
    if (!rq) {
        const char *cl;
        const char *allow_ping[] = {"Allow", "GET, HEAD", NULL};
        const char *allow_inv[] = {"Allow", "POST", NULL};

        rq = calloc(1, sizeof(*rq));
        if (!rq)
            return MHD_NO;
        rq->start_ms = cm_now_ms();
        cm_buf_init(&rq->body, h->cfg.max_body);
        *con_cls = rq;
        /* Answer what needs no body at once. */
        if (!is_ping && !is_inv) {
            access_log(method, url, 404, rq->start_ms);
            return send_json(c, 404, gw_api_error_body("Not Found", NULL), NULL, NULL, NULL);
        }
        if (is_ping && strcmp(method, "GET") && strcmp(method, "HEAD")) {
            access_log(method, url, 405, rq->start_ms);
            return send_json(c, 405, gw_api_error_body("Method Not Allowed", NULL), NULL, NULL,
                             allow_ping);
        }
        if (is_inv && strcmp(method, "POST")) {
            access_log(method, url, 405, rq->start_ms);
            return send_json(c, 405, gw_api_error_body("Method Not Allowed", NULL), NULL, NULL,
                             allow_inv);
        }
        cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > h->cfg.max_body)
            rq->too_big = 1;
        /* Answering on a later call keeps the connection alive: MHD closes
         * connections answered before it finished reading the request. */
        return MHD_YES;
    }
    if (is_inv && *upload_data_size) {
        if (!rq->too_big && cm_buf_add(&rq->body, upload_data, *upload_data_size))
            rq->too_big = 1; /* keep reading (and discarding) so the 413 reaches the client */
        if (rq->too_big)
            cm_buf_free(&rq->body);
        *upload_data_size = 0;
        return MHD_YES;
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
    struct req *rq = *con_cls;

    (void)cls, (void)c, (void)toe;
    if (!rq)
        return;
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
    h->status = "Healthy";
    h->status_since = (long long)time(NULL);
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->cond, NULL);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)cfg->port);
    if (inet_pton(AF_INET, cfg->host, &sa.sin_addr) != 1) {
        snprintf(err, errlen, "'%s' is not an IPv4 address", cfg->host);
        goto fail;
    }
    h->daemon =
        MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                             MHD_USE_ERROR_LOG | MHD_USE_ITC | MHD_USE_POLL,
                         (uint16_t)cfg->port, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER,
                         on_mhd_log, h, MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_CONNECTION_LIMIT,
                         (unsigned int)cfg->max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
                         (unsigned int)cfg->idle_timeout_s, MHD_OPTION_NOTIFY_COMPLETED,
                         on_completed, h, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u, MHD_OPTION_END);
    if (!h->daemon) {
        snprintf(err, errlen, "cannot listen on %s:%d (address in use?)", cfg->host, cfg->port);
        goto fail;
    }
    info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : cfg->port;
    h->poller_started = !pthread_create(&h->poller, NULL, poll_health, h);
    return h;
fail:
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
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += grace_ms / 1000;
    until.tv_nsec += (long)(grace_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&h->lock);
    h->stopping = 1; /* refuse new invocations on open connections too */
    pthread_cond_broadcast(&h->cond);
    while (h->in_flight > 0 && pthread_cond_timedwait(&h->cond, &h->lock, &until) == 0)
        ;
    left = h->in_flight;
    /* The grace is over: cancel what still runs, so every connection thread
     * finishes and MHD_stop_daemon returns. */
    for (x = h->streams; x; x = x->next)
        cm_rpc_stream_cancel(x->stream);
    pthread_mutex_unlock(&h->lock);
    if (left)
        cm_warn("%d invocation(s) still running after the grace period: cancelled", left);
    if (h->poller_started)
        pthread_join(h->poller, NULL);
    MHD_stop_daemon(h->daemon);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->cond);
    free(h);
}
