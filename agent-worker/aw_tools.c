#include "aw_tools.h"
#include "cm_otel.h"
#include "cm_err.h"
#include "cm_log.h"
#include "cm_rpc.h"
#include "cm_util.h"

#include "agentcore.pb-c.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define LIST_TIMEOUT_MS 2000
#define RETRY_EMPTY_MS 1000 /* listing again while a replica is missing or down */

static const struct cm_rpc_method methods[] = {
    {"/agentcore.v1.ToolService/ListTools", &agentcore__v1__list_tools_request__descriptor,
     &agentcore__v1__list_tools_response__descriptor, CM_RPC_UNARY},
    {"/agentcore.v1.ToolService/Execute", &agentcore__v1__execute_request__descriptor,
     &agentcore__v1__execute_response__descriptor, CM_RPC_UNARY},
};

struct replica {
    char addr[CM_ADDR_MAX];
    struct cm_rpc_client *client;
    json_t *specs; /* its last listing: name -> {"spec": toolSpec, "idempotent": bool} */
    int up;        /* its last listing or call reached it */
    int gone;      /* not in the last resolution: no new calls */
    int calls;     /* Execute calls in flight (a gone replica is freed at 0) */
    struct cm_rpc_pending *list_call;
    struct aw_tools *t;
};

/* Replicas found by one resolution, handed from the work pool to the loop. */
struct found {
    char addrs[CM_ADDR_MAX_REPLICAS][CM_ADDR_MAX];
    int n;
};

struct aw_tools {
    char *targets;
    int max_msg_bytes;
    int call_timeout_ms, refresh_ms;
    pthread_mutex_t lock; /* guards config and names */
    json_t *config;       /* {"tools":[{"toolSpec":...}]} or NULL */
    json_t *names;        /* name -> idempotent (true/false), for routing checks */
    /* Loop side. */
    struct replica *rep[CM_ADDR_MAX_REPLICAS];
    int nrep;
    unsigned rr;
    uint64_t round_at; /* last round's start, monotonic ms; 0 = never */
    int rounds, listings, resolving, ever_ok, ever_done, stopped, any_down;
    struct cm_rpc_events *events;
    uv_loop_t *loop;
    struct aw_tools_waiter *waiters;
    uv_work_t work;
    struct found found;
    uv_timer_t retry; /* while the first listing waits for a tool-worker */
    int retry_live;
    struct cm_otel *otel;
};

void aw_tools_set_otel(struct aw_tools *t, struct cm_otel *otel)
{
    if (t)
        t->otel = otel;
}

static void round_start(struct aw_tools *t);

struct aw_tools *aw_tools_new(const char *targets, int call_timeout_ms, int refresh_ms,
                              int max_msg_bytes, char *err, size_t errlen)
{
    struct aw_tools *t = calloc(1, sizeof(*t));
    struct cm_rpc_client *probe;

    if (!t)
        return NULL;
    /* The whole list is checked once, as the client would take it. */
    probe = cm_rpc_client_new(targets, methods, 2, max_msg_bytes, err, errlen);
    if (!probe) {
        free(t);
        return NULL;
    }
    cm_rpc_client_free(probe);
    t->targets = strdup(targets);
    t->max_msg_bytes = max_msg_bytes;
    t->call_timeout_ms = call_timeout_ms;
    t->refresh_ms = refresh_ms;
    t->names = json_object();
    pthread_mutex_init(&t->lock, NULL);
    return t;
}

static void replica_free(struct replica *r)
{
    if (!r)
        return;
    cm_rpc_client_free(r->client);
    json_decref(r->specs);
    free(r);
}

void aw_tools_free(struct aw_tools *t)
{
    int i;

    if (!t)
        return;
    for (i = 0; i < t->nrep; i++)
        replica_free(t->rep[i]);
    free(t->targets);
    json_decref(t->config);
    json_decref(t->names);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

/* The union of the replicas' tools (the first replica to list a name
 * describes it), for the model and for routing. */
static void rebuild(struct aw_tools *t)
{
    json_t *tools = json_array(), *names = json_object(), *config, *v;
    const char *name;
    int i;

    for (i = 0; i < t->nrep; i++) {
        if (t->rep[i]->gone || !t->rep[i]->specs)
            continue;
        json_object_foreach(t->rep[i]->specs, name, v)
        {
            if (json_object_get(names, name))
                continue;
            json_array_append(tools, json_object_get(v, "spec"));
            json_object_set(names, name, json_object_get(v, "idempotent"));
        }
    }
    config = json_array_size(tools) ? json_pack("{s:o}", "tools", tools) : NULL;
    if (!config)
        json_decref(tools);
    pthread_mutex_lock(&t->lock);
    json_decref(t->config);
    json_decref(t->names);
    t->config = config;
    t->names = names;
    pthread_mutex_unlock(&t->lock);
}

static json_t *specs_of(const Agentcore__V1__ListToolsResponse *resp)
{
    json_t *specs = json_object();
    size_t i;

    for (i = 0; i < resp->n_tools && specs; i++) {
        const Agentcore__V1__ToolSpec *sp = resp->tools[i];
        json_t *schema = json_loads(sp->input_schema_json, 0, NULL);

        if (!json_is_object(schema)) {
            cm_warn("tool '%s' has an invalid input schema; skipped", sp->name);
            json_decref(schema);
            continue;
        }
        json_object_set_new(specs, sp->name,
                            json_pack("{s:{s:{s:s,s:s,s:{s:o}}},s:b}", "spec", "toolSpec", "name",
                                      sp->name, "description",
                                      sp->description[0] ? sp->description : sp->name,
                                      "inputSchema", "json", schema, "idempotent", sp->idempotent));
    }
    return specs;
}

static void round_end(struct aw_tools *t)
{
    struct aw_tools_waiter *w;
    int i, tools = 0;

    t->any_down = 0;
    for (i = 0; i < t->nrep; i++)
        t->any_down |= !t->rep[i]->gone && !t->rep[i]->up;
    rebuild(t);
    pthread_mutex_lock(&t->lock);
    tools = (int)json_object_size(t->names);
    pthread_mutex_unlock(&t->lock);
    if (t->rounds++ == 0 || tools != (int)t->ever_ok)
        cm_info("tools listed: %d from %d tool-worker%s", tools, t->nrep, t->nrep == 1 ? "" : "s");
    t->ever_ok = tools;
    t->ever_done = 1;
    if (t->retry_live)
        uv_timer_stop(&t->retry);
    /* Whatever the outcome, nobody waits longer: without tools the model
     * simply gets none (and unknown-tool results say why). */
    while ((w = t->waiters)) {
        t->waiters = w->next;
        w->next = NULL;
        w->queued = 0;
        w->ready(w);
    }
}

static void on_listed(void *ud, const struct cm_rpc_status *st, ProtobufCMessage *resp)
{
    struct replica *r = ud;
    struct aw_tools *t = r->t;

    r->list_call = NULL;
    if (resp) {
        json_decref(r->specs);
        r->specs = specs_of((const Agentcore__V1__ListToolsResponse *)resp);
        r->up = 1;
        protobuf_c_message_free_unpacked(resp, NULL);
    } else {
        r->up = 0;
        if (!t->stopped)
            cm_warn("ListTools on %s failed: %s: %s", r->addr, cm_rpc_code_name(st->code),
                    st->details);
    }
    if (--t->listings == 0)
        round_end(t);
}

/* While the first listing waits (wait-for-ready) for a tool-worker that is
 * still starting, retry the connection every few milliseconds rather than
 * after gRPC's 100 ms minimum backoff; it stops with the listing. */
static void retry_connect(uv_timer_t *h)
{
    struct aw_tools *t = h->data;
    int i;

    for (i = 0; i < t->nrep; i++) {
        if (t->rep[i]->list_call && !cm_rpc_client_connected(t->rep[i]->client))
            cm_rpc_client_reset_backoff(t->rep[i]->client);
    }
}

static void list_replica(struct aw_tools *t, struct replica *r)
{
    Agentcore__V1__ListToolsRequest req = AGENTCORE__V1__LIST_TOOLS_REQUEST__INIT;
    struct cm_rpc_call_opts o = {0};
    struct cm_rpc_status st;

    o.timeout_ms = LIST_TIMEOUT_MS;
    o.wait_for_ready = !t->ever_done; /* at a cold start the workers are waited for */
    t->listings++;
    r->list_call =
        cm_rpc_call_async(r->client, t->events, &methods[0], &req.base, &o, on_listed, r, &st);
    if (!r->list_call)
        on_listed(r, &st, NULL);
}

/* Makes the replica set match a resolution: new addresses get a client,
 * vanished ones stop taking calls (and go once their calls are done). */
static void apply(struct aw_tools *t, const struct found *f)
{
    char err[256];
    int i, k;

    for (i = 0; i < t->nrep; i++) {
        for (k = 0; k < f->n && strcmp(t->rep[i]->addr, f->addrs[k]); k++)
            ;
        t->rep[i]->gone = k == f->n;
    }
    for (i = 0; i < t->nrep;) {
        if (t->rep[i]->gone && !t->rep[i]->calls && !t->rep[i]->list_call) {
            replica_free(t->rep[i]);
            t->rep[i] = t->rep[--t->nrep];
        } else {
            i++;
        }
    }
    for (k = 0; k < f->n; k++) {
        struct replica *r;

        for (i = 0; i < t->nrep && strcmp(t->rep[i]->addr, f->addrs[k]); i++)
            ;
        if (i < t->nrep || t->nrep == CM_ADDR_MAX_REPLICAS)
            continue;
        if (!(r = calloc(1, sizeof(*r))))
            continue;
        cm_strlcpy(r->addr, f->addrs[k], sizeof(r->addr));
        r->t = t;
        r->client = cm_rpc_client_new(r->addr, methods, 2, t->max_msg_bytes, err, sizeof(err));
        if (!r->client) {
            cm_warn("tool-worker %s: %s", r->addr, err);
            free(r);
            continue;
        }
        t->rep[t->nrep++] = r;
    }
}

/* On libuv's work pool: getaddrinfo blocks. */
static void resolve_work(uv_work_t *req)
{
    struct aw_tools *t = req->data;

    t->found.n = cm_addr_replicas(t->targets, cm_addr_resolve_host, NULL, t->found.addrs,
                                  CM_ADDR_MAX_REPLICAS);
}

static void resolve_done(uv_work_t *req, int status)
{
    struct aw_tools *t = req->data;
    int i;

    t->resolving = 0;
    if (status || t->stopped) {
        round_end(t);
        return;
    }
    apply(t, &t->found);
    t->listings++; /* held while the listings start, so none ends the round early */
    for (i = 0; i < t->nrep; i++) {
        if (!t->rep[i]->gone && !t->rep[i]->list_call)
            list_replica(t, t->rep[i]);
    }
    if (!t->ever_done && t->retry_live)
        uv_timer_start(&t->retry, retry_connect, 5, 5);
    if (--t->listings == 0)
        round_end(t);
}

/* A round: resolve TOOL_WORKERS again (names may now stand for other
 * replicas), then list every replica. Started when due, by an invocation
 * asking for the tool list: nothing wakes the process while nobody asks. */
static void round_start(struct aw_tools *t)
{
    if (!t->events || t->stopped || t->resolving || t->listings)
        return;
    t->round_at = cm_now_ms();
    t->work.data = t;
    if (uv_queue_work(t->loop, &t->work, resolve_work, resolve_done) == 0)
        t->resolving = 1;
}

static void round_if_due(struct aw_tools *t)
{
    uint64_t now = cm_now_ms(), every;

    every = (uint64_t)(!t->ever_ok || t->any_down ? RETRY_EMPTY_MS : t->refresh_ms);
    if (!t->round_at || now - t->round_at >= every)
        round_start(t);
}

void aw_tools_bind(struct aw_tools *t, struct cm_rpc_events *ev, uv_loop_t *loop)
{
    t->events = ev;
    t->loop = loop;
    t->retry_live = !uv_timer_init(loop, &t->retry);
    t->retry.data = t;
    round_start(t);
}

void aw_tools_stop(struct aw_tools *t)
{
    int i;

    if (!t)
        return;
    t->stopped = 1;
    for (i = 0; i < t->nrep; i++)
        cm_rpc_pending_cancel(t->rep[i]->list_call);
    if (t->retry_live) {
        uv_timer_stop(&t->retry);
        uv_close((uv_handle_t *)&t->retry, NULL); /* |t| outlives the loop */
        t->retry_live = 0;
    }
}

int aw_tools_wait_listed(struct aw_tools *t, struct aw_tools_waiter *w)
{
    if (t->ever_done || !t->events)
        return 0;
    round_start(t);
    w->next = t->waiters;
    w->queued = 1;
    t->waiters = w;
    return 1;
}

void aw_tools_unwait(struct aw_tools *t, struct aw_tools_waiter *w)
{
    struct aw_tools_waiter **p;

    if (!w->queued)
        return;
    for (p = &t->waiters; *p; p = &(*p)->next) {
        if (*p == w) {
            *p = w->next;
            break;
        }
    }
    w->queued = 0;
}

json_t *aw_tools_config(struct aw_tools *t)
{
    json_t *cfg;

    round_if_due(t);
    pthread_mutex_lock(&t->lock);
    cfg = json_incref(t->config);
    pthread_mutex_unlock(&t->lock);
    return cfg;
}

/* ---- routing, no I/O (unit-tested) ---- */

int aw_tools_pick(const struct aw_tools_candidate *c, int n, unsigned *rr)
{
    int pass, k;

    /* First the replicas that answered last time, then (a replica may have
     * come back) the others; round-robin within each. */
    for (pass = 0; pass < 2; pass++) {
        for (k = 0; k < n; k++) {
            int i = (int)((*rr + (unsigned)k) % (unsigned)n);

            if (c[i].serves && !c[i].gone && !c[i].tried && c[i].up == !pass) {
                *rr = (unsigned)i + 1;
                return i;
            }
        }
    }
    return -1;
}

enum aw_tools_after aw_tools_after(int code, const char *details, int idempotent)
{
    if (code == CM_RPC_OK)
        return AW_TOOLS_DONE;
    if (code == CM_RPC_RESOURCE_EXHAUSTED)
        return AW_TOOLS_TRY_ANOTHER; /* refused before it ran: busy */
    if (code == CM_RPC_UNAVAILABLE) {
        /* Never reached the worker: safe to send anywhere. */
        if (details &&
            (strstr(details, "onnection refused") || strstr(details, "failed to connect") ||
             strstr(details, "ailed to connect")))
            return AW_TOOLS_TRY_ANOTHER;
        /* The worker went away during the call: the tool may have run. */
        return idempotent ? AW_TOOLS_TRY_ANOTHER : AW_TOOLS_LOST;
    }
    return AW_TOOLS_DONE;
}

/* ---- execution ---- */

struct aw_tools_exec {
    struct aw_tools *t;
    struct replica *rep;
    struct cm_rpc_pending *pending;
    struct cm_rpc_acall *aparent;
    char *name, *tool_use_id, *input_json, *request_id, *session_id, *traceparent;
    char tried[CM_ADDR_MAX_REPLICAS];
    int idempotent, attempts, cancelled;
    aw_tools_done done;
    void *ud;
};

static void exec_free(struct aw_tools_exec *x)
{
    free(x->name);
    free(x->tool_use_id);
    free(x->input_json);
    free(x->request_id);
    free(x->session_id);
    free(x->traceparent);
    free(x);
}

static void result_text(struct aw_tool_result *out, int is_error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void result_text(struct aw_tool_result *out, int is_error, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    out->text = strdup(buf);
    out->is_error = is_error;
}

static int idempotent_of(struct aw_tools *t, const char *name, int *known)
{
    json_t *v;

    pthread_mutex_lock(&t->lock);
    v = json_object_get(t->names, name);
    *known = v != NULL;
    pthread_mutex_unlock(&t->lock);
    return json_is_true(v);
}

static void finish(struct aw_tools_exec *x, struct aw_tool_result *out)
{
    x->done(x->ud, out);
    free(out->text);
    exec_free(x);
}

static void on_executed(void *ud, const struct cm_rpc_status *st, ProtobufCMessage *msg);

/* Sends the call to the next replica that serves the tool; 0, or -1 when
 * none is left (|out| then says why). */
static int attempt(struct aw_tools_exec *x, struct aw_tool_result *out, const char *why)
{
    struct aw_tools *t = x->t;
    struct aw_tools_candidate c[CM_ADDR_MAX_REPLICAS];
    Agentcore__V1__ExecuteRequest req = AGENTCORE__V1__EXECUTE_REQUEST__INIT;
    struct cm_rpc_meta md[3] = {{CM_RPC_MD_REQUEST_ID, x->request_id},
                                {CM_RPC_MD_SESSION_ID, x->session_id},
                                {CM_RPC_MD_TRACEPARENT, x->traceparent}};
    struct cm_rpc_call_opts o = {0};
    struct cm_rpc_status st;
    int i, serving = 0;

    for (i = 0; i < t->nrep; i++) {
        struct replica *r = t->rep[i];

        c[i].serves = r->specs && json_object_get(r->specs, x->name) != NULL;
        c[i].up = r->up;
        c[i].gone = r->gone;
        c[i].tried = x->tried[i];
        serving += c[i].serves && !c[i].gone;
    }
    while ((i = aw_tools_pick(c, t->nrep, &t->rr)) >= 0) {
        struct replica *r = t->rep[i];

        x->tried[i] = c[i].tried = 1;
        req.tool_use_id = x->tool_use_id;
        req.name = x->name;
        req.input_json = x->input_json;
        o.timeout_ms = t->call_timeout_ms;
        o.aparent = x->aparent;
        o.meta = md;
        o.n_meta = 3;
        /* One replica (the single-container case): one restarting under s6
         * is waited for, within the deadline. Several: a dead one fails fast
         * and the next is tried. */
        o.wait_for_ready = serving == 1;
        x->pending = cm_rpc_call_async(r->client, t->events, &methods[1], &req.base, &o,
                                       on_executed, x, &st);
        if (x->pending) {
            x->rep = r;
            r->calls++;
            x->attempts++;
            return 0;
        }
        why = st.details;
    }
    if (!serving)
        result_text(out, 1, "tool '%s' failed: no tool-worker offers it now", x->name);
    else
        result_text(out, 1, "tool '%s' failed: %s", x->name,
                    why ? why : "no tool-worker could take the call");
    return -1;
}

/* The telemetry a tool-worker sent with its answer (it holds no
 * credentials), exported from here; a request that is not one is dropped. */
static void forward(struct cm_otel *otel, int signal, const ProtobufCBinaryData *b,
                    const char *tool)
{
    if (b->len && cm_otel_forward(otel, signal, b->data, b->len) == CM_EINVAL)
        cm_warn("tool '%s': the tool-worker's %s are not an OTLP export request; dropped", tool,
                signal == CM_OTEL_METRICS ? "metrics" : "spans");
}

static void on_executed(void *ud, const struct cm_rpc_status *st, ProtobufCMessage *msg)
{
    struct aw_tools_exec *x = ud;
    struct replica *r = x->rep;
    struct aw_tool_result out = {NULL, 1};
    char why[700];

    x->pending = NULL;
    r->calls--;
    if (msg) {
        const Agentcore__V1__ExecuteResponse *resp = (const void *)msg;

        r->up = 1;
        forward(x->t->otel, CM_OTEL_TRACES, &resp->spans, x->name);
        forward(x->t->otel, CM_OTEL_METRICS, &resp->metrics, x->name);
        out.text = strdup(resp->content);
        out.is_error = resp->status != AGENTCORE__V1__TOOL_STATUS__TOOL_STATUS_SUCCESS;
        protobuf_c_message_free_unpacked(msg, NULL);
        finish(x, &out);
        return;
    }
    if (st->code == CM_RPC_UNAVAILABLE) {
        r->up = 0;
        x->t->any_down = 1; /* the next invocation lists again, soon */
    }
    switch (x->cancelled ? AW_TOOLS_DONE : aw_tools_after(st->code, st->details, x->idempotent)) {
    case AW_TOOLS_TRY_ANOTHER:
        snprintf(why, sizeof(why), "%s on %s: %s", cm_rpc_code_name(st->code), r->addr,
                 st->details);
        cm_warn("tool '%s': %s; trying another tool-worker", x->name, why);
        if (attempt(x, &out, why) == 0)
            return;
        if (st->code == CM_RPC_RESOURCE_EXHAUSTED) {
            free(out.text);
            result_text(&out, 1,
                        "tool '%s' failed: every tool-worker that offers it is busy; try again "
                        "later",
                        x->name);
        }
        break;
    case AW_TOOLS_LOST:
        result_text(&out, 1,
                    "tool '%s' failed: the tool-worker running it (%s) went away during the call "
                    "(%s). It was not retried because the tool is not idempotent, so it may or "
                    "may not have taken effect.",
                    x->name, r->addr, st->details);
        break;
    default:
        if (st->code == CM_RPC_DEADLINE_EXCEEDED)
            result_text(&out, 1, "tool '%s' timed out", x->name);
        else
            result_text(&out, 1, "tool '%s' failed: %s: %s", x->name, cm_rpc_code_name(st->code),
                        st->details);
    }
    finish(x, &out);
}

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

int aw_tools_execute_async(struct aw_tools *t, const struct aw_tools_call *call,
                           const char *tool_use_id, const char *name, const json_t *input,
                           aw_tools_done done, void *ud, struct aw_tools_exec **exec,
                           struct aw_tool_result *out)
{
    struct aw_tools_exec *x;
    int known;

    out->text = NULL;
    out->is_error = 1;
    *exec = NULL;
    x = calloc(1, sizeof(*x));
    if (!x) {
        result_text(out, 1, "out of memory");
        return -1;
    }
    x->idempotent = idempotent_of(t, name, &known);
    if (!known) {
        free(x);
        result_text(out, 1, "unknown tool '%.64s': no tool-worker offers it", name);
        return -1;
    }
    x->t = t;
    x->done = done;
    x->ud = ud;
    x->aparent = call->aparent;
    x->name = strdup(name);
    x->tool_use_id = dup_or_empty(tool_use_id);
    x->input_json = input ? json_dumps(input, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("{}");
    x->request_id = dup_or_empty(call->request_id);
    x->session_id = dup_or_empty(call->session_id);
    x->traceparent = call->traceparent ? strdup(call->traceparent) : NULL;
    if (!x->name || !x->tool_use_id || !x->input_json || !x->request_id || !x->session_id ||
        (call->traceparent && !x->traceparent)) {
        exec_free(x);
        result_text(out, 1, "tool input could not be serialised");
        return -1;
    }
    if (attempt(x, out, NULL)) {
        exec_free(x);
        return -1;
    }
    *exec = x;
    return 0;
}

void aw_tools_exec_cancel(struct aw_tools_exec *x)
{
    if (!x)
        return;
    x->cancelled = 1;
    cm_rpc_pending_cancel(x->pending);
}
