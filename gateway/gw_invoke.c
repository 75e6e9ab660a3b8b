#include "gw_invoke.h"
#include "cm_log.h"
#include "cm_loop.h"
#include "cm_metrics.h"
#include "cm_otel.h"
#include "cm_trace.h"
#include "cm_util.h"
#include "gw_api.h"
#include "gw_hangup.h"

#include "agentcore.pb-c.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define MAX_META 32
#define READY_SLICE_MS 5 /* retry pace while calls wait for an agent-worker */
/* Bytes of SSE a client that does not read may leave queued before the
 * stream is cut: the queue is ours, not the agent-worker's. */
#define QUEUE_CAP (8u * 1024 * 1024)

struct chunk {
    struct chunk *next;
    size_t len, off;
    char data[];
};

struct gw_invoke {
    struct gw_invoke_config cfg;
    struct cm_loop *loop;
    struct cm_rpc_events *ev;
    uv_timer_t ready_timer;  /* while calls wait for an agent-worker */
    struct gw_call *waiting; /* loop only */
    struct gw_call *active;  /* loop only: every call the loop holds */
    int stopping;            /* loop only */
    atomic_int draining;     /* gw_invoke_drain() was called */
    pthread_mutex_t lock;    /* n_loop */
    pthread_cond_t cond;     /* n_loop reached 0 */
    int n_loop;
};

struct gw_call {
    struct cm_task start_task;
    struct gw_invoke *gi;
    struct MHD_Connection *c;
    int fd, stream;
    char *session, *request_id;
    long long max_total_tokens, max_output_tokens;
    int client_request_id;
    char trace_id[33], span_id[17];           /* the gateway's span of this invocation */
    char traceparent[CM_TRACEPARENT_LEN + 1]; /* sent on: its parent is our span */
    struct cm_trace trace;
    uint64_t start_ns;
    const char *prompt_ref; /* the prompt, inside |prompt_owner| */
    void *prompt_owner;     /* held until the request is packed */
    void (*prompt_release)(void *owner);
    struct cm_rpc_meta meta[MAX_META];
    size_t n_meta;
    uint64_t ready_deadline;
    /* loop side */
    uint64_t watch;
    uv_timer_t keepalive;
    int keepalive_init;
    struct gw_call *prev, *next, *wnext;
    atomic_int client_left;
    /* shared, under |lock| */
    pthread_mutex_t lock;
    struct cm_rpc_pending *pending; /* the JSON call while it runs */
    struct cm_rpc_astream *astream; /* the SSE call while it runs */
    struct chunk *q_head, *q_tail;
    size_t queued, sent;
    int suspended, headers, ended, loop_done, mhd_done;
    int status; /* a JSON answer (or an error before the first event) */
    char *body;
};

/* ---- the two owners ---- */

/* Under |call->lock|: stops the gRPC call if it still runs (thread-safe; the
 * loop clears the handles under the same lock before they are freed). */
static void cancel_locked(struct gw_call *call)
{
    if (call->pending)
        cm_rpc_pending_cancel(call->pending);
    if (call->astream)
        cm_rpc_astream_cancel(call->astream);
}

static void cancel_call(struct gw_call *call)
{
    pthread_mutex_lock(&call->lock);
    cancel_locked(call);
    pthread_mutex_unlock(&call->lock);
}

static void prompt_drop(struct gw_call *call);

static void call_free(struct gw_call *call)
{
    size_t i;

    while (call->q_head) {
        struct chunk *k = call->q_head;

        call->q_head = k->next;
        free(k);
    }
    for (i = 0; i < call->n_meta; i++) {
        free((char *)call->meta[i].key);
        free((char *)call->meta[i].value);
    }
    free(call->body);
    prompt_drop(call);
    free(call->session);
    free(call->request_id);
    pthread_mutex_destroy(&call->lock);
    free(call);
}

/* The prompt is packed into the request (or will never be): let it go now,
 * not when the invocation ends. */
static void prompt_drop(struct gw_call *call)
{
    if (call->prompt_release)
        call->prompt_release(call->prompt_owner);
    call->prompt_release = NULL;
    call->prompt_owner = NULL;
    call->prompt_ref = NULL;
}

static void loop_let_go(struct gw_call *call)
{
    struct gw_invoke *gi = call->gi;
    int both;

    pthread_mutex_lock(&gi->lock);
    if (--gi->n_loop == 0)
        pthread_cond_broadcast(&gi->cond);
    pthread_mutex_unlock(&gi->lock);
    pthread_mutex_lock(&call->lock);
    call->loop_done = 1;
    both = call->mhd_done;
    pthread_mutex_unlock(&call->lock);
    if (both)
        call_free(call);
}

static void keepalive_closed(uv_handle_t *h)
{
    loop_let_go(h->data);
}

/* The loop is done with |call|: off the active list, timer closed, then let go. */
static void loop_release(struct gw_call *call)
{
    struct gw_invoke *gi = call->gi;

    if (call->prev)
        call->prev->next = call->next;
    else if (gi->active == call)
        gi->active = call->next;
    if (call->next)
        call->next->prev = call->prev;
    call->prev = call->next = NULL;
    cm_series_inc(call->stream ? gi->cfg.active_sse : gi->cfg.active_json, -1);
    if (call->keepalive_init) {
        uv_timer_stop(&call->keepalive);
        uv_close((uv_handle_t *)&call->keepalive, keepalive_closed);
        return;
    }
    loop_let_go(call);
}

static void mhd_let_go(struct gw_call *call)
{
    int both;

    pthread_mutex_lock(&call->lock);
    call->mhd_done = 1;
    cancel_locked(call); /* nobody will read what the agent-worker still sends */
    both = call->loop_done;
    pthread_mutex_unlock(&call->lock);
    if (both)
        call_free(call);
}

/* ---- handing things to MHD ---- */

/* Under |call->lock|: 1 when the caller must resume the connection (after
 * unlocking: a suspended connection is never freed by MHD meanwhile). */
static int wake_locked(struct gw_call *call)
{
    if (!call->suspended || call->mhd_done)
        return 0;
    call->suspended = 0;
    return 1;
}

static void wake(struct gw_call *call, int resume)
{
    if (resume)
        MHD_resume_connection(call->c);
}

/* A JSON answer, or an error before the first event. |body| is taken. */
static void answer(struct gw_call *call, int status, char *body)
{
    int resume;

    pthread_mutex_lock(&call->lock);
    free(call->body);
    call->body = body ? body : strdup("{\"error\":\"Internal error\"}");
    call->status = body ? status : 500;
    resume = wake_locked(call);
    pthread_mutex_unlock(&call->lock);
    wake(call, resume);
}

/* Appends SSE bytes |text| (taken); the first one makes the headers go. */
static void push(struct gw_call *call, char *text)
{
    size_t n = text ? strlen(text) : 0;
    struct chunk *k = n ? malloc(sizeof(*k) + n) : NULL;
    int resume, cut = 0;

    if (k) {
        k->next = NULL;
        k->len = n;
        k->off = 0;
        memcpy(k->data, text, n);
    }
    free(text);
    if (!k)
        return;
    pthread_mutex_lock(&call->lock);
    if (call->mhd_done || call->queued + n > QUEUE_CAP) {
        cut = !call->mhd_done;
        free(k);
    } else {
        if (call->q_tail)
            call->q_tail->next = k;
        else
            call->q_head = k;
        call->q_tail = k;
        call->queued += n;
        call->headers = 1;
    }
    resume = wake_locked(call);
    if (cut && call->astream)
        cm_rpc_astream_cancel(call->astream); /* a client that does not read */
    pthread_mutex_unlock(&call->lock);
    wake(call, resume);
}

static void end_stream(struct gw_call *call)
{
    int resume;

    pthread_mutex_lock(&call->lock);
    call->ended = 1;
    resume = wake_locked(call);
    pthread_mutex_unlock(&call->lock);
    wake(call, resume);
}

/* ---- the loop side of a call ---- */

static void log_ctx(const struct gw_call *call)
{
    cm_log_set_context(call->request_id, call->session);
    cm_log_set_trace(call->trace_id, call->span_id);
}

void gw_call_log_trace(const struct gw_call *call)
{
    if (call)
        cm_log_set_trace(call->trace_id, call->span_id);
}

static char *dup_or_empty(const char *s);

/* The caller's trace continued (or a new one), our span in it, and the
 * traceparent the agent-worker gets instead of the caller's. */
static void trace_start(struct gw_call *call)
{
    const char *incoming = NULL;
    struct cm_trace t;
    size_t i;

    for (i = 0; i < call->n_meta; i++)
        if (!strcmp(call->meta[i].key, "traceparent"))
            incoming = call->meta[i].value;
    call->start_ns = cm_otel_now_ns();
    if (cm_trace_continue(incoming, &t))
        return;
    /* The edge decides whether this trace is recorded (OTEL_TRACES_SAMPLER);
     * the flag travels with it, so the other processes follow. */
    if (call->gi->cfg.otel)
        cm_otel_sample(call->gi->cfg.otel, &t);
    call->trace = t;
    cm_trace_ids(&t, call->trace_id, call->span_id);
    cm_trace_format(&t, call->traceparent);
    /* The value points at our own copy: the caller's is not sent on. */
    for (i = 0; i < call->n_meta; i++) {
        if (!strcmp(call->meta[i].key, "traceparent")) {
            free((char *)call->meta[i].value);
            call->meta[i].value = dup_or_empty(call->traceparent);
            return;
        }
    }
    if (call->n_meta < MAX_META) {
        char *k = strdup("traceparent"), *v = strdup(call->traceparent);

        if (k && v) {
            call->meta[call->n_meta].key = k;
            call->meta[call->n_meta++].value = v;
        } else {
            free(k);
            free(v);
        }
    }
}

static void fail_status(struct gw_call *call, const struct cm_rpc_status *st)
{
    struct gw_reply rep = {0, NULL};

    log_ctx(call);
    cm_warn("agent call failed: %s: %s", cm_rpc_code_name(st->code), st->details);
    cm_log_clear_context();
    gw_api_agent_error(st->code, st->error_type, st->details, &rep);
    answer(call, rep.status, rep.body);
}

/* What a client hears when the gateway stops under its invocation: waiting
 * calls at once, running ones when SHUTDOWN_GRACE_MS is over (their gRPC call
 * then ends CANCELLED, which alone would read as a failure of the agent). */
static void stopping_status(struct cm_rpc_status *st)
{
    st->code = CM_RPC_UNAVAILABLE;
    cm_strlcpy(st->details, "the runtime is shutting down; retry the invocation",
               sizeof(st->details));
    cm_strlcpy(st->error_type, "ShuttingDown", sizeof(st->error_type));
}

/* Loop side: |st|, or the shutting-down status when the call ended because
 * the runtime stops (the gateway cancelled it, or the agent-worker did). */
static const struct cm_rpc_status *
end_status(const struct gw_call *call, const struct cm_rpc_status *st, struct cm_rpc_status *tmp)
{
    if ((st->code != CM_RPC_CANCELLED && st->code != CM_RPC_UNAVAILABLE) ||
        (!call->gi->stopping && !atomic_load(&call->gi->draining)))
        return st;
    stopping_status(tmp);
    return tmp;
}

/* Runs on gw_hangup's thread: the client closed its socket. */
/* The client's side closed. A FIN alone may be a half-close by a client
 * that still reads its answer; only a stream that has begun can tell: a
 * comment line reaches a client that reads, and draws a reset from one that
 * is gone (reported here again, or MHD's write fails). Before that, and for
 * a JSON answer, nothing can be written yet: a FIN is taken as leaving. */
static int on_hangup(void *ud, int reset)
{
    struct gw_call *call = ud;
    int started;

    if (!reset) {
        pthread_mutex_lock(&call->lock);
        started = call->headers && !call->mhd_done;
        pthread_mutex_unlock(&call->lock);
        if (started) {
            push(call, strdup(": \n\n"));
            return 1;
        }
    }
    atomic_store(&call->client_left, 1);
    cancel_call(call);
    return 0;
}

/* The gateway's invoke_agent span: from the request to the agent-worker's
 * answer. */
static void call_span(struct gw_call *call, const struct cm_rpc_status *st)
{
    struct cm_otel_attr a[] = {
        {"gen_ai.operation.name", "invoke_agent", 0},
        {"session.id", call->session, 0},
        {"agentcore.request.id", call->request_id, 0},
        {"http.request.method", "POST", 0},
        {"url.path", "/invocations", 0},
        {"agentcore.streamed", call->stream ? "true" : "false", 0},
        {"rpc.grpc.status_code", NULL, st ? st->code : 0},
    };
    struct cm_otel_span sp = {"invoke_agent",
                              CM_OTEL_SERVER,
                              &call->trace,
                              call->start_ns,
                              cm_otel_now_ns(),
                              st && st->code != CM_RPC_OK && !atomic_load(&call->client_left),
                              st ? (st->details[0] ? st->details : cm_rpc_code_name(st->code)) : "",
                              a,
                              sizeof(a) / sizeof(a[0]),
                              NULL,
                              0,
                              st && st->error_type[0] ? st->error_type
                              : st                    ? cm_rpc_code_name(st->code)
                                                      : NULL};

    if (call->trace_id[0])
        cm_otel_record(call->gi->cfg.otel, &sp);
}

/* The gRPC call has ended: nobody may cancel it any more. */
static void call_ended(struct gw_call *call)
{
    gw_hangup_unwatch(call->gi->cfg.hangup, call->watch);
    call->watch = 0;
    pthread_mutex_lock(&call->lock);
    call->pending = NULL;
    call->astream = NULL;
    pthread_mutex_unlock(&call->lock);
    if (call->keepalive_init)
        uv_timer_stop(&call->keepalive);
}

static void gone(struct gw_call *call)
{
    log_ctx(call);
    cm_info("client went away: invocation cancelled");
    cm_log_clear_context();
    end_stream(call); /* the answer side sees client_left */
}

static void on_unary_done(void *ud, const struct cm_rpc_status *st, ProtobufCMessage *msg)
{
    struct gw_call *call = ud;
    const Agentcore__V1__InvokeResponse *r = (const void *)msg;
    struct cm_rpc_status tmp;

    call_ended(call);
    call_span(call, st);
    if (atomic_load(&call->client_left)) {
        gone(call);
    } else if (r) {
        answer(call, 200,
               gw_api_response_body(r->invocation_id, r->session_id, r->response, r->stop_reason,
                                    r->usage ? r->usage->input_tokens : 0,
                                    r->usage ? r->usage->output_tokens : 0,
                                    r->usage ? r->usage->total_tokens : 0, r->iterations));
    } else {
        fail_status(call, end_status(call, st, &tmp));
    }
    if (msg)
        protobuf_c_message_free_unpacked(msg, NULL);
    loop_release(call);
}

static void on_keepalive(uv_timer_t *t)
{
    struct gw_call *call = t->data;
    int headers;

    /* A comment line: no event for the client, but bytes on the wire, so
     * neither our timeouts nor a proxy's cut a stream that waits. Only once
     * the stream has begun: until the first event, a failure is still an
     * ordinary HTTP error. */
    pthread_mutex_lock(&call->lock);
    headers = call->headers;
    pthread_mutex_unlock(&call->lock);
    if (headers)
        push(call, strdup(": keep-alive\n\n"));
}

static void on_event(void *ud, ProtobufCMessage *msg)
{
    struct gw_call *call = ud;
    char *json = gw_api_event_json((Agentcore__V1__InvokeEvent *)msg);

    protobuf_c_message_free_unpacked(msg, NULL);
    push(call, json ? gw_api_sse(json) : NULL);
    free(json);
    if (call->keepalive_init)
        uv_timer_start(&call->keepalive, on_keepalive, (uint64_t)call->gi->cfg.keepalive_s * 1000,
                       (uint64_t)call->gi->cfg.keepalive_s * 1000);
}

static void on_stream_end(void *ud, const struct cm_rpc_status *st)
{
    struct gw_call *call = ud;
    struct cm_rpc_status tmp;
    int headers;

    call_ended(call);
    st = end_status(call, st, &tmp);
    call_span(call, st);
    pthread_mutex_lock(&call->lock);
    headers = call->headers;
    pthread_mutex_unlock(&call->lock);
    if (atomic_load(&call->client_left)) {
        gone(call);
    } else if (st->code == CM_RPC_OK) {
        end_stream(call);
    } else if (!headers) {
        fail_status(call, st); /* before the first event: an ordinary HTTP error */
    } else {
        /* After it: the Python SDK's error event, then the end. */
        char *json =
            gw_api_error_event(st->details[0] ? st->details : cm_rpc_code_name(st->code),
                               st->error_type[0] ? st->error_type : cm_rpc_code_name(st->code));

        log_ctx(call);
        cm_warn("stream failed after the first event: %s: %s", cm_rpc_code_name(st->code),
                st->details);
        cm_log_clear_context();
        push(call, json ? gw_api_sse(json) : NULL);
        free(json);
        end_stream(call);
    }
    loop_release(call);
}

static void begin(struct gw_call *call)
{
    Agentcore__V1__InvokeRequest req = AGENTCORE__V1__INVOKE_REQUEST__INIT;
    struct gw_invoke *gi = call->gi;
    struct cm_rpc_call_opts o = {0};
    struct cm_rpc_status st;
    int ok;

    req.prompt = (char *)call->prompt_ref;
    req.session_id = call->session;
    req.request_id = call->request_id;
    req.stream = call->stream; /* without it the agent sends the final event only */
    req.max_total_tokens = call->max_total_tokens;
    req.max_output_tokens = call->max_output_tokens;
    req.client_request_id = call->client_request_id;
    o.timeout_ms = call->stream ? gi->cfg.stream_timeout_ms : gi->cfg.invoke_timeout_ms;
    o.meta = call->meta;
    o.affinity = call->session; /* a session stays on its agent-worker (its history is there) */
    o.n_meta = call->n_meta;
    pthread_mutex_lock(&call->lock);
    if (call->stream)
        call->astream = cm_rpc_astream_open(gi->cfg.agent, gi->ev, gi->cfg.stream, &req.base, &o,
                                            on_event, on_stream_end, call, &st);
    else
        call->pending = cm_rpc_call_async(gi->cfg.agent, gi->ev, gi->cfg.invoke, &req.base, &o,
                                          on_unary_done, call, &st);
    ok = call->astream || call->pending;
    pthread_mutex_unlock(&call->lock);
    prompt_drop(call); /* packed into the request (or refused): not needed any more */
    if (!ok) {
        fail_status(call, &st);
        loop_release(call);
        return;
    }
    if (gi->cfg.hangup && call->fd >= 0)
        call->watch = gw_hangup_watch(gi->cfg.hangup, call->fd, on_hangup, call);
    if (call->stream && uv_timer_init(cm_loop_uv(gi->loop), &call->keepalive) == 0) {
        call->keepalive.data = call;
        call->keepalive_init = 1;
        uv_timer_start(&call->keepalive, on_keepalive, (uint64_t)gi->cfg.keepalive_s * 1000,
                       (uint64_t)gi->cfg.keepalive_s * 1000);
    }
}

static void unavailable(struct gw_call *call, const char *why)
{
    struct cm_rpc_status st;

    st.code = CM_RPC_UNAVAILABLE;
    cm_strlcpy(st.details, why, sizeof(st.details));
    st.error_type[0] = '\0';
    fail_status(call, &st);
    loop_release(call);
}

static void shutting_down(struct gw_call *call)
{
    struct cm_rpc_status st;

    stopping_status(&st);
    fail_status(call, &st);
    loop_release(call);
}

/* Processes start in any order (s6 starts all three at once): a call that
 * arrives before the agent-worker listens waits for it, AGENT_READY_WAIT_MS
 * at most, and the connection is retried every few milliseconds meanwhile
 * (gRPC alone would wait at least 100 ms between attempts). */
static void on_ready_tick(uv_timer_t *t)
{
    struct gw_invoke *gi = t->data;
    struct gw_call *call, *next, *keep = NULL;
    int up = cm_rpc_client_connected(gi->cfg.agent);
    uint64_t now = cm_now_ms();

    if (!up)
        cm_rpc_client_reset_backoff(gi->cfg.agent);
    for (call = gi->waiting, gi->waiting = NULL; call; call = next) {
        next = call->wnext;
        call->wnext = NULL;
        if (up) {
            begin(call);
        } else if (now >= call->ready_deadline) {
            char why[128];

            snprintf(why, sizeof(why),
                     "no agent-worker reachable within %d ms (AGENT_READY_WAIT_MS)",
                     gi->cfg.ready_wait_ms);
            unavailable(call, why);
        } else {
            call->wnext = keep;
            keep = call;
        }
    }
    gi->waiting = keep;
    if (!keep)
        uv_timer_stop(t);
}

static void on_start(struct cm_task *t)
{
    struct gw_call *call = (struct gw_call *)t;
    struct gw_invoke *gi = call->gi;

    call->next = gi->active;
    if (gi->active)
        gi->active->prev = call;
    gi->active = call;
    cm_series_inc(call->stream ? gi->cfg.active_sse : gi->cfg.active_json, 1);
    if (gi->stopping) {
        shutting_down(call);
        return;
    }
    if (cm_rpc_client_connected(gi->cfg.agent)) {
        begin(call);
        return;
    }
    call->ready_deadline = cm_now_ms() + (uint64_t)gi->cfg.ready_wait_ms;
    call->wnext = gi->waiting;
    gi->waiting = call;
    if (!uv_is_active((uv_handle_t *)&gi->ready_timer))
        uv_timer_start(&gi->ready_timer, on_ready_tick, READY_SLICE_MS, READY_SLICE_MS);
}

/* ---- MHD's side ---- */

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

struct gw_call *gw_call_start(struct gw_invoke *gi, struct MHD_Connection *c,
                              const struct gw_call_request *r)
{
    struct gw_call *call = calloc(1, sizeof(*call));
    const union MHD_ConnectionInfo *ci;
    size_t i;

    if (!call) {
        if (r->prompt_release)
            r->prompt_release(r->prompt_owner);
        return NULL;
    }
    call->gi = gi;
    call->c = c;
    call->stream = r->stream;
    call->max_total_tokens = r->max_total_tokens;
    call->max_output_tokens = r->max_output_tokens;
    call->client_request_id = r->client_request_id;
    call->start_task.run = on_start;
    pthread_mutex_init(&call->lock, NULL);
    call->prompt_owner = r->prompt_owner;
    call->prompt_release = r->prompt_release;
    call->prompt_ref = r->prompt ? r->prompt : "";
    call->session = dup_or_empty(r->session);
    call->request_id = dup_or_empty(r->request_id);
    for (i = 0; i < r->n_meta && call->n_meta < MAX_META; i++) {
        char *k = strdup(r->meta[i].key), *v = dup_or_empty(r->meta[i].value);

        if (!k || !v) {
            free(k);
            free(v);
            continue;
        }
        call->meta[call->n_meta].key = k;
        call->meta[call->n_meta++].value = v;
    }
    if (!call->session || !call->request_id) {
        call_free(call);
        return NULL;
    }
    trace_start(call);
    ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    call->fd = ci ? ci->connect_fd : -1;
    pthread_mutex_lock(&gi->lock);
    gi->n_loop++;
    pthread_mutex_unlock(&gi->lock);
    /* Suspended before the loop hears of it, so no resume can come first. */
    call->suspended = 1;
    MHD_suspend_connection(c);
    cm_loop_post(gi->loop, &call->start_task);
    return call;
}

void gw_call_answer(struct gw_call *call, struct MHD_Connection *c, struct gw_answer *a)
{
    memset(a, 0, sizeof(*a));
    pthread_mutex_lock(&call->lock);
    if (atomic_load(&call->client_left) && !call->headers) {
        a->kind = GW_ANSWER_GONE;
    } else if (call->body) {
        a->kind = GW_ANSWER_JSON;
        a->status = call->status;
        a->body = call->body;
        call->body = NULL;
    } else if (call->headers) {
        a->kind = GW_ANSWER_SSE;
    } else {
        /* Woken with nothing to say (cannot happen today): wait again. */
        a->kind = GW_ANSWER_WAIT;
        call->suspended = 1;
        MHD_suspend_connection(c);
    }
    pthread_mutex_unlock(&call->lock);
}

ssize_t gw_call_sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct gw_call *call = cls;
    size_t got = 0;
    ssize_t n;

    (void)pos;
    pthread_mutex_lock(&call->lock);
    /* Every event queued, as far as |max| allows: one chunk, one send(2),
     * where one per event cost a system call each (events are
     * self-delimiting; HTTP chunk boundaries mean nothing to SSE). */
    while (call->q_head && got < max) {
        struct chunk *k = call->q_head;
        size_t take = k->len - k->off < max - got ? k->len - k->off : max - got;

        memcpy(buf + got, k->data + k->off, take);
        got += take;
        k->off += take;
        if (k->off == k->len) {
            call->q_head = k->next;
            if (!call->q_head)
                call->q_tail = NULL;
            call->queued -= k->len;
            free(k);
        }
    }
    if (got) {
        call->sent += got;
        n = (ssize_t)got;
    } else if (call->ended) {
        n = atomic_load(&call->client_left) ? MHD_CONTENT_READER_END_WITH_ERROR
                                            : MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        /* Nothing to send: park the connection until the loop has more
         * (libmicrohttpd's way for "no data yet"; returning 0 alone would
         * spin). Done under the lock, so a push cannot slip in between. */
        call->suspended = 1;
        MHD_suspend_connection(call->c);
        n = 0;
    }
    pthread_mutex_unlock(&call->lock);
    return n;
}

void gw_call_sse_free(void *cls)
{
    mhd_let_go(cls);
}

void gw_call_done(struct gw_call *call)
{
    if (call)
        mhd_let_go(call);
}

size_t gw_call_sent(const struct gw_call *call)
{
    return call->sent;
}

/* ---- the engine ---- */

struct gw_invoke *gw_invoke_new(const struct gw_invoke_config *cfg)
{
    struct gw_invoke *gi = calloc(1, sizeof(*gi));

    if (!gi)
        return NULL;
    gi->cfg = *cfg;
    pthread_mutex_init(&gi->lock, NULL);
    pthread_cond_init(&gi->cond, NULL);
    gi->loop = cm_loop_new();
    gi->ev = gi->loop ? cm_rpc_events_new(gi->loop) : NULL;
    if (!gi->ev) {
        cm_loop_free(gi->loop);
        free(gi);
        return NULL;
    }
    uv_timer_init(cm_loop_uv(gi->loop), &gi->ready_timer);
    gi->ready_timer.data = gi;
    if (cm_loop_start(gi->loop)) {
        gw_invoke_free(gi);
        return NULL;
    }
    return gi;
}

static void cancel_all(void *p)
{
    struct gw_invoke *gi = p;
    struct gw_call *call, *next;

    gi->stopping = 1;
    for (call = gi->waiting, gi->waiting = NULL; call; call = next) {
        next = call->wnext;
        shutting_down(call);
    }
    for (call = gi->active; call; call = call->next)
        cancel_call(call);
}

void gw_invoke_drain(struct gw_invoke *gi)
{
    atomic_store(&gi->draining, 1);
}

int gw_invoke_cancel_all(struct gw_invoke *gi, int wait_ms)
{
    struct timespec until = cm_deadline_ms(wait_ms);
    int left;

    cm_loop_call(gi->loop, cancel_all, gi);
    pthread_mutex_lock(&gi->lock);
    while (gi->n_loop > 0 && pthread_cond_timedwait(&gi->cond, &gi->lock, &until) == 0)
        ;
    left = gi->n_loop;
    pthread_mutex_unlock(&gi->lock);
    return left;
}

static void close_timer(void *p)
{
    struct gw_invoke *gi = p;

    uv_close((uv_handle_t *)&gi->ready_timer, NULL);
}

void gw_invoke_free(struct gw_invoke *gi)
{
    if (!gi)
        return;
    cm_loop_call(gi->loop, close_timer, gi);
    cm_rpc_events_free(gi->ev); /* what is still on its way reaches the loop */
    cm_loop_free(gi->loop);
    pthread_mutex_destroy(&gi->lock);
    pthread_cond_destroy(&gi->cond);
    free(gi);
}
