#define _GNU_SOURCE /* POLLRDHUP */
#include "gw_http.h"
#include "cm_buf.h"
#include "cm_log.h"
#include "cm_rpc.h"
#include "cm_util.h"
#include "gw_api.h"
#include "gw_conns.h"
#include "gw_hangup.h"
#include "cm_metrics.h"
#include "gw_health.h"
#include "gw_invoke.h"
#include "gw_mhd.h"
#include "gw_wss.h"

#include "agentcore.pb-c.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

const struct cm_rpc_method gw_http_agent_methods[GW_HTTP_N_AGENT_METHODS] = {
    {"/agentcore.v1.AgentService/InvokeStream", &agentcore__v1__invoke_request__descriptor,
     &agentcore__v1__invoke_event__descriptor, CM_RPC_SERVER_STREAM},
    {"/agentcore.v1.AgentService/Invoke", &agentcore__v1__invoke_request__descriptor,
     &agentcore__v1__invoke_response__descriptor, CM_RPC_UNARY},
    {"/agentcore.v1.AgentService/WatchStatus", &agentcore__v1__status_request__descriptor,
     &agentcore__v1__status_response__descriptor, CM_RPC_SERVER_STREAM},
    {"/agentcore.v1.AgentService/ExportSpans", &agentcore__v1__export_spans_request__descriptor,
     &agentcore__v1__export_spans_response__descriptor, CM_RPC_UNARY},
};
static const struct cm_rpc_method *const stream_method = &gw_http_agent_methods[0];
static const struct cm_rpc_method *const invoke_method = &gw_http_agent_methods[1];
static const struct cm_rpc_method *const watch_method = &gw_http_agent_methods[2];

/* Why an invocation is refused before its body is used. */
enum { REFUSE_NONE, REFUSE_TOO_BIG, REFUSE_SLOTS, REFUSE_BUDGET };

/* A connection beyond GATEWAY_MAX_CONNECTIONS has this long for its /ping. */
#define GW_HTTP_RESERVE_MS 2000

struct gw_http {
    struct MHD_Daemon *daemon;
    struct cm_rpc_client *agent;
    struct gw_hangup *hangup; /* wakes a waiting connection whose client left */
    struct gw_http_config cfg;
    int port;
    pthread_mutex_t lock; /* everything below */
    pthread_cond_t cond;  /* in_flight reached 0 */
    int in_flight;
    size_t body_bytes; /* request body bytes held across connections */
    int stopping;
    struct gw_health *health; /* what /ping says */
    struct gw_invoke *invoke; /* /invocations, as events */
    struct gw_wss *wss;       /* /ws sessions */
    struct gw_conns *conns;   /* request deadlines, the /ping reserve */
};

/* Per-request state, alive from the first callback to MHD's completion notice. */
struct req {
    struct cm_buf body;
    size_t budget;   /* bytes of MAX_INFLIGHT_BODY_BYTES this request holds */
    int refusal;     /* REFUSE_*: answered once the body was read (and dropped) */
    int timeout_off; /* the idle timeout is off while the invocation runs */
    uint64_t start_ms;
    struct gw_call *call; /* the invocation, once started */
    int call_handed;      /* its SSE response owns it now */
    int in_flight;        /* holds a MAX_CONCURRENT_INVOCATIONS slot */
    char session[GW_SESSION_ID_MAX + 1], request_id[256];
};

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];

    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    cm_warn("http: %s", msg);
}

/* The gateway's counters (one server per process; set by gw_http_start). */
static struct {
    struct cm_metrics *m;
    int requests, duration, active;
} metrics = {NULL, -1, -1, -1};

static void count_request(const char *url, int status, uint64_t start_ms)
{
    char code[8];
    /* Known paths only: a client must not grow the label set. */
    const char *path = !strcmp(url, "/invocations") ? "/invocations"
                       : !strcmp(url, "/ping")      ? "/ping"
                       : !strcmp(url, "/ws")        ? "/ws"
                                                    : "other";
    const char *l[] = {path, code};

    if (!metrics.m)
        return;
    snprintf(code, sizeof(code), "%d", status);
    cm_metrics_count(metrics.m, metrics.requests, l, 1);
    if (path[1] == 'i')
        cm_metrics_observe(metrics.m, metrics.duration, NULL,
                           (double)(cm_now_ms() - start_ms) / 1000.0);
}

static void access_log_bytes(const char *method, const char *url, int status, size_t bytes,
                             uint64_t start_ms)
{
    char st[8], dur[24], by[24];
    const char *kv[] = {"method", method, "path",       url, "status", st,
                        "bytes",  by,     "durationMs", dur, NULL};

    count_request(url, status, start_ms);
    if (!CM_LOG_ENABLED(CM_LOG_INFO))
        return;
    snprintf(st, sizeof(st), "%d", status);
    snprintf(by, sizeof(by), "%zu", bytes);
    snprintf(dur, sizeof(dur), "%llu", (unsigned long long)(cm_now_ms() - start_ms));
    cm_log_write(CM_LOG_INFO, kv, "request");
}

static void access_log(const char *method, const char *url, int status, uint64_t start_ms)
{
    access_log_bytes(method, url, status, gw_mhd_sent_bytes(), start_ms);
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

/* Takes |n| bytes of the body budget; 0 when it would pass it. */
static int budget_take(struct gw_http *h, struct req *rq, size_t n)
{
    int ok;

    pthread_mutex_lock(&h->lock);
    ok = h->body_bytes + n <= h->cfg.max_inflight_body;
    if (ok)
        h->body_bytes += n;
    pthread_mutex_unlock(&h->lock);
    if (ok)
        rq->budget += n;
    return ok;
}

/* Frees the body and gives its bytes back to the budget. An invocation
 * keeps its budget until it is answered: until then the gateway still holds
 * its prompt (parsed, then packed for the agent-worker, which a unary call
 * keeps until it ends). */
static void body_release(struct gw_http *h, struct req *rq)
{
    cm_buf_free(&rq->body);
    if (!rq->budget)
        return;
    pthread_mutex_lock(&h->lock);
    h->body_bytes -= rq->budget;
    pthread_mutex_unlock(&h->lock);
    rq->budget = 0;
}

/* The gw_conns entry of |c| (NULL when untracked). */
static struct gw_conn *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    return ci ? ci->socket_context : NULL;
}

/* The WebSocket sessions' view of the same slots. */
static int slot_take(void *h)
{
    return flight_enter(h);
}

static void slot_give(void *h)
{
    flight_leave(h);
}

/* ---- /ping ---- */

static enum MHD_Result handle_ping(struct gw_http *h, struct MHD_Connection *c, int *status)
{
    long long since;
    const char *s = gw_health_status(h->health, &since);
    const char *close_hdr[] = {"Connection", "close", NULL};

    /* An agent-worker unreachable for several checks is reported, with 503,
     * rather than hidden behind a Healthy that would accept work it cannot do. */
    *status = strcmp(s, "Unhealthy") ? 200 : 503;
    return gw_mhd_send_json(c, *status, gw_api_ping_body(s, since), NULL, NULL,
                            gw_conn_is_reserve(conn_of(c)) ? close_hdr : NULL);
}

/* ---- /invocations ---- */

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
    gw_call_log_trace(o->call);
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
    gw_call_log_trace(rq->call);
    switch (a.kind) {
    case GW_ANSWER_WAIT:
        ret = MHD_YES;
        break;
    case GW_ANSWER_GONE:
        body_release(h, rq);
        flight_leave(h);
        rq->in_flight = 0;
        access_log("POST", "/invocations", 499, rq->start_ms);
        ret = MHD_NO; /* nobody to answer */
        break;
    case GW_ANSWER_JSON:
        body_release(h, rq);
        ret = gw_mhd_send_json(c, a.status, a.body, rq->session, rq->request_id, NULL);
        flight_leave(h);
        rq->in_flight = 0;
        access_log("POST", "/invocations", a.status, rq->start_ms);
        break;
    default:
        body_release(h, rq); /* the first event is here: the request reached the agent */
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
        gw_mhd_add_ids(r, rq->session, rq->request_id);
        ret = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        break;
    }
    cm_log_clear_context();
    return ret;
}

static char *budget_body(const struct gw_http *h)
{
    char why[200];

    snprintf(why, sizeof(why),
             "the gateway holds MAX_INFLIGHT_BODY_BYTES (%zu) of request bodies already; retry "
             "shortly",
             h->cfg.max_inflight_body);
    return gw_api_error_body("Too many request bytes in flight", why);
}

/* Answers refusal |why| (413 or 503 + Retry-After). |closing|: the body was
 * not read, so the connection is closed after the answer. */
static enum MHD_Result send_refusal(struct gw_http *h, struct MHD_Connection *c, int why,
                                    const char *request_id, int closing, int *status)
{
    const char *extra[] = {"Retry-After", "1", "Connection", "close", NULL};
    char text[96];

    if (!closing)
        extra[2] = NULL;
    if (why == REFUSE_TOO_BIG) {
        snprintf(text, sizeof(text), "request body larger than %zu bytes", h->cfg.max_body);
        *status = 413;
        return gw_mhd_send_json(c, 413, gw_api_error_body("Payload Too Large", text), NULL,
                                request_id, closing ? extra + 2 : NULL);
    }
    *status = 503;
    return gw_mhd_send_json(c, 503,
                            why == REFUSE_BUDGET
                                ? budget_body(h)
                                : gw_api_error_body("Too many concurrent invocations",
                                                    "the gateway's MAX_CONCURRENT_INVOCATIONS is "
                                                    "reached; retry shortly"),
                            NULL, request_id, extra);
}

/* Checks an invocation's caps as soon as its headers are in, before any
 * body byte is read: the body size (Content-Length), the invocation slots
 * and the body budget. A client that asked "Expect: 100-continue" is
 * answered at once (it has sent no body yet) and the connection closed;
 * returns 1. Any other client is answered once its body was read and
 * dropped, never buffered (it would not read an answer while it writes);
 * returns 0 with |rq->refusal| set. 0 and no refusal: the request goes on,
 * holding its slot and budget. */
static int refuse_early(struct gw_http *h, struct MHD_Connection *c, struct req *rq,
                        enum MHD_Result *ret)
{
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    const char *expect = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Expect");
    unsigned long long len = 0;
    char *end;
    int status;

    if (cl) {
        errno = 0;
        len = strtoull(cl, &end, 10);
        if (errno || end == cl || *end)
            len = ULLONG_MAX; /* MHD refuses a malformed length itself */
    }
    if (cl && len > h->cfg.max_body) {
        rq->refusal = REFUSE_TOO_BIG;
    } else if (!flight_enter(h)) {
        rq->refusal = REFUSE_SLOTS;
    } else if (cl && !budget_take(h, rq, (size_t)len)) {
        flight_leave(h);
        rq->refusal = REFUSE_BUDGET;
    } else {
        rq->in_flight = 1;
        /* The whole body at once when its size is known: no doubling. */
        if (len && cm_buf_reserve(&rq->body, (size_t)len))
            rq->refusal = REFUSE_BUDGET; /* out of memory: as busy */
        return 0;
    }
    if (!expect || strcasecmp(expect, "100-continue"))
        return 0;
    *ret = send_refusal(h, c, rq->refusal, NULL, 1, &status);
    access_log("POST", "/invocations", status, rq->start_ms);
    return 1;
}

static void json_release(void *root)
{
    json_decref(root);
}

static enum MHD_Result handle_invocation(struct gw_http *h, struct MHD_Connection *c,
                                         struct req *rq, int *status_out)
{
    struct gw_invocation inv;
    struct gw_reply rep = {0, NULL};
    struct gw_mhd_fwd fwd;
    char session[GW_SESSION_ID_MAX + 1], request_id[256];
    struct gw_call_request creq;
    char refused[256];
    int streaming, client_id;

    if (gw_mhd_request_id(c, request_id, sizeof(request_id))) {
        cm_log_set_context(request_id, NULL);
        gw_api_error(&rep, 400, "Invalid request",
                     "header " GW_REQUEST_HEADER ": must be 1-255 printable ASCII bytes "
                     "(0x20-0x7E)");
        goto reply;
    }
    cm_log_set_context(request_id, NULL);
    if (gw_mhd_headers_refused(c, refused, sizeof(refused))) {
        char why[400];

        snprintf(why, sizeof(why),
                 "header %s: the value must be printable ASCII (0x20-0x7E) to reach the agent",
                 refused);
        cm_warn("refused: %s", why); /* the names only, never the values */
        gw_api_error(&rep, 400, "Invalid request", why);
        goto reply;
    }
    if (rq->refusal)
        return send_refusal(h, c, rq->refusal, request_id, 0, status_out);
    if (gw_api_parse_invocation(rq->body.data ? rq->body.data : "", rq->body.len, &inv, &rep))
        goto reply;
    cm_buf_free(&rq->body); /* parsed: the prompt lives in |inv| now (one copy, not two) */
    if (gw_api_session_id(MHD_lookup_connection_value(c, MHD_HEADER_KIND, GW_SESSION_HEADER),
                          inv.session_id, session, &rep)) {
        gw_invocation_clear(&inv);
        goto reply;
    }
    client_id = MHD_lookup_connection_value(c, MHD_HEADER_KIND, GW_REQUEST_HEADER) != NULL;
    if (inv.idempotency_key && !client_id) {
        cm_strlcpy(request_id, inv.idempotency_key, sizeof(request_id)); /* a retry's own id */
        client_id = 1;
    }
    cm_log_set_context(request_id, session);
    streaming =
        gw_api_wants_stream(&inv, MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Accept"));
    /* HTTP_IDLE_TIMEOUT_S is for idle keep-alive connections: an invocation
     * that waits on the model, or a stream between events, is not idle. */
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    rq->timeout_off = 1;
    cm_strlcpy(rq->session, session, sizeof(rq->session));
    cm_strlcpy(rq->request_id, request_id, sizeof(rq->request_id));
    memset(&fwd, 0, sizeof(fwd));
    gw_mhd_fwd_collect(&fwd, c);
    fwd.meta[fwd.n++] = (struct cm_rpc_meta){CM_RPC_MD_REQUEST_ID, request_id};
    fwd.meta[fwd.n++] = (struct cm_rpc_meta){CM_RPC_MD_SESSION_ID, session};
    creq.prompt = inv.prompt;
    creq.prompt_owner = json_incref(inv.root); /* no copy of the prompt: the call holds the tree */
    creq.prompt_release = json_release;
    creq.session = session;
    creq.request_id = request_id;
    creq.stream = streaming;
    creq.max_total_tokens = inv.max_total_tokens;
    creq.max_output_tokens = inv.max_output_tokens;
    creq.client_request_id = client_id;
    creq.meta = fwd.meta;
    creq.n_meta = fwd.n;
    /* The connection is suspended until the agent-worker answers: no thread
     * waits for it (gw_invoke). */
    rq->call = gw_call_start(h->invoke, c, &creq);
    gw_mhd_fwd_clear(&fwd);
    gw_invocation_clear(&inv);
    if (!rq->call) {
        flight_leave(h);
        rq->in_flight = 0;
        *status_out = 500;
        return gw_mhd_send_json(c, 500, gw_api_error_body("Agent failed", "out of memory"), session,
                                request_id, NULL);
    }
    *status_out = 0; /* logged when it is answered */
    return MHD_YES;
reply:
    *status_out = rep.status;
    return gw_mhd_send_json(c, rep.status, rep.body, NULL, request_id, NULL);
}

/* 404, or 405 with its Allow header, answered and logged. */
static enum MHD_Result refuse(struct MHD_Connection *c, const char *method, const char *url,
                              int status, const char *const *allow, uint64_t start_ms)
{
    enum MHD_Result ret = gw_mhd_send_json(
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
        const char *allow_ping[] = {"Allow", "GET, HEAD", NULL};
        const char *allow_inv[] = {"Allow", "POST", NULL};
        const char *allow_ws[] = {"Allow", "GET", NULL};

        rq = calloc(1, sizeof(*rq));
        if (!rq)
            return MHD_NO;
        rq->start_ms = cm_now_ms();
        cm_buf_init(&rq->body, h->cfg.max_body);
        *con_cls = rq;
        /* Beyond the connection cap only /ping is answered (gw_conns). */
        if (gw_conn_is_reserve(conn_of(c)) && !is_ping) {
            const char *close_hdr[] = {"Retry-After", "1", "Connection", "close", NULL};

            access_log(method, url, 503, rq->start_ms);
            return gw_mhd_send_json(
                c, 503,
                gw_api_error_body(
                    "Too many connections",
                    "the gateway's GATEWAY_MAX_CONNECTIONS is reached; retry shortly"),
                NULL, NULL, close_hdr);
        }
        /* Answer what needs no body at once. */
        if (is_ws && strcmp(method, "GET"))
            return refuse(c, method, url, 405, allow_ws, rq->start_ms);
        if (!is_ping && !is_inv && !is_ws)
            return refuse(c, method, url, 404, NULL, rq->start_ms);
        if (is_ping && strcmp(method, "GET") && strcmp(method, "HEAD"))
            return refuse(c, method, url, 405, allow_ping, rq->start_ms);
        if (is_inv && strcmp(method, "POST"))
            return refuse(c, method, url, 405, allow_inv, rq->start_ms);
        /* An invocation's caps are checked before its body is read. */
        if (is_inv && refuse_early(h, c, rq, &ret))
            return ret;
        /* Answering on a later call keeps the connection alive. */
        return MHD_YES;
    }
    if (rq->call)
        return answer_invocation(h, c, rq);
    if (is_inv && *upload_data_size) {
        size_t n = *upload_data_size;

        /* A chunked body (no Content-Length) takes its budget as it comes;
         * past the budget or the cap, the rest is read and dropped (memory
         * stays bounded) and the answer says why. */
        if (!rq->refusal && rq->budget < rq->body.len + n &&
            !budget_take(h, rq, rq->body.len + n - rq->budget))
            rq->refusal = REFUSE_BUDGET;
        if (!rq->refusal && cm_buf_add(&rq->body, upload_data, n))
            rq->refusal = REFUSE_TOO_BIG;
        if (rq->refusal)
            body_release(h, rq);
        *upload_data_size = 0;
        return MHD_YES;
    }
    /* The request is read in full: its deadline is over (gw_conns). */
    gw_conns_request_read(h->conns, conn_of(c));
    if (is_ws) {
        ret = gw_wss_answer(h->wss, c, &status);
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
    if (!rq->call)
        body_release(h, rq); /* answered at once: nothing of it is held any more */
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
    /* The next request on this connection has its own deadline. */
    gw_conns_request_done(h->conns, conn_of(c));
    body_release(h, rq);
    free(rq);
    *con_cls = NULL;
}

/* Connections come and go in gw_conns, which cuts slow requests and keeps
 * a reserve for /ping beyond the cap. */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    struct gw_http *h = cls;

    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);

        *socket_context = ci ? gw_conns_open(h->conns, ci->connect_fd) : NULL;
    } else {
        gw_conns_close(h->conns, *socket_context);
        *socket_context = NULL;
    }
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
    if (cfg->metrics) {
        static const char *const labels[] = {"path", "code", NULL};

        metrics.m = cfg->metrics;
        metrics.requests =
            cm_metrics_family(cfg->metrics, "agentcore_http_requests_total",
                              "HTTP requests by path and status", CM_COUNTER, labels);
        metrics.duration = cm_metrics_family(
            cfg->metrics, "agentcore_gateway_invocation_duration_seconds",
            "POST /invocations, request to the last byte of the answer", CM_HISTOGRAM, NULL);
        metrics.active =
            cm_metrics_family(cfg->metrics, "agentcore_gateway_active_invocations",
                              "Invocations running now, by answer mode (sse: a stream)", CM_GAUGE,
                              (const char *const[]){"mode", NULL});
    }
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
                                      cfg->sse_keepalive_s,
                                      cfg->otel,
                                      NULL,
                                      NULL};

        if (metrics.m) {
            ic.active_sse =
                cm_metrics_series(metrics.m, metrics.active, (const char *const[]){"sse"});
            ic.active_json =
                cm_metrics_series(metrics.m, metrics.active, (const char *const[]){"json"});
        }

        h->invoke = gw_invoke_new(&ic);
        if (!h->invoke) {
            snprintf(err, errlen, "cannot start the invocation loop");
            goto fail;
        }
    }
    {
        struct gw_wss_config wc = {agent,
                                   stream_method,
                                   cfg->stream_timeout_ms,
                                   cfg->agent_ready_wait_ms,
                                   cfg->ws_max_message,
                                   cfg->ws_idle_timeout_s * 1000,
                                   cfg->ws_origins,
                                   slot_take,
                                   slot_give,
                                   h};

        h->wss = gw_wss_new(&wc);
        if (!h->wss) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        if (metrics.m)
            cm_metrics_gauge_fn(metrics.m, "agentcore_gateway_websocket_sessions",
                                "WebSocket sessions open now (/ws)", gw_wss_sessions, NULL);
    }
    {
        struct gw_conns_config cc = {cfg->max_connections, cfg->request_timeout_s * 1000,
                                     cfg->idle_timeout_s * 1000, GW_HTTP_RESERVE_MS};

        h->conns = gw_conns_new(&cc);
        if (!h->conns) {
            snprintf(err, errlen, "cannot start the connection watcher");
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
        MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)(cfg->max_connections + GW_CONNS_RESERVE), MHD_OPTION_NOTIFY_CONNECTION,
        on_connection, h, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)cfg->idle_timeout_s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned int)(cfg->http_threads > 0 ? cfg->http_threads : 2), MHD_OPTION_END);
    if (!h->daemon) {
        snprintf(err, errlen, "cannot listen on %s:%d (address in use?)", cfg->host, cfg->port);
        goto fail;
    }
    info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : cfg->port;
    return h;
fail:
    gw_health_stop(h->health);
    gw_conns_free(h->conns);
    gw_wss_free(h->wss);
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
    int left;

    if (!h)
        return;
    MHD_quiesce_daemon(h->daemon); /* no new connections from here on */
    gw_wss_shutdown(h->wss);       /* WebSockets close with 1001 once idle */
    gw_invoke_drain(h->invoke);
    until = cm_deadline_ms(grace_ms);
    pthread_mutex_lock(&h->lock);
    h->stopping = 1; /* refuse new invocations on open connections too */
    while (h->in_flight > 0 && pthread_cond_timedwait(&h->cond, &h->lock, &until) == 0)
        ;
    left = h->in_flight;
    pthread_mutex_unlock(&h->lock);
    /* The grace is over: cancel what still runs (the WebSockets' calls, the
     * others on the invocation loop), then wait, briefly, until every call
     * and session has let go, so MHD can stop. */
    if (left)
        cm_warn("%d invocation(s) still running after the grace period: cancelled", left);
    gw_wss_cancel(h->wss);
    gw_invoke_cancel_all(h->invoke, 5000);
    if (gw_wss_wait(h->wss, GW_WSS_STOP_MS))
        cm_warn("a WebSocket session did not end within %d ms", GW_WSS_STOP_MS);
    gw_health_stop(h->health);
    MHD_stop_daemon(h->daemon);
    gw_conns_free(h->conns);
    gw_wss_free(h->wss);
    gw_invoke_free(h->invoke);
    gw_hangup_free(h->hangup);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->cond);
    free(h);
}
