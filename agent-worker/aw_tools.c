#include "aw_tools.h"
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
#include <stdatomic.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIST_TIMEOUT_MS 2000
#define RETRY_EMPTY_MS 1000

static const struct cm_rpc_method methods[] = {
    {"/agentcore.v1.ToolService/ListTools", &agentcore__v1__list_tools_request__descriptor,
     &agentcore__v1__list_tools_response__descriptor, CM_RPC_UNARY},
    {"/agentcore.v1.ToolService/Execute", &agentcore__v1__execute_request__descriptor,
     &agentcore__v1__execute_response__descriptor, CM_RPC_UNARY},
};

struct aw_tools {
    struct cm_rpc_client *client;
    char *targets;
    int max_msg_bytes;
    int call_timeout_ms, refresh_ms;
    pthread_mutex_t lock; /* guards the fields below */
    json_t *config;       /* {"tools":[{"toolSpec":...}]} or NULL */
    json_t *names;        /* object: tool name -> true, for the unknown-tool check */
    uint64_t listed_at;   /* last listing attempt, monotonic ms; 0 = never */
    int listing, ever_ok, ever_done;
    /* Loop side: the event queue calls run on, the listing in flight, and the
     * invocations waiting for the first listing. */
    struct cm_rpc_events *events;
    struct cm_rpc_pending *list_call;
    struct aw_tools_waiter *waiters;
    int stopped;
    uv_timer_t retry; /* while the first listing waits for a tool-worker */
    int retry_live;
};

struct aw_tools *aw_tools_new(const char *targets, int call_timeout_ms, int refresh_ms,
                              int max_msg_bytes, char *err, size_t errlen)
{
    struct aw_tools *t = calloc(1, sizeof(*t));

    if (!t)
        return NULL;
    t->client = cm_rpc_client_new(targets, methods, 2, max_msg_bytes, err, errlen);
    if (!t->client) {
        free(t);
        return NULL;
    }
    t->targets = strdup(targets);
    t->max_msg_bytes = max_msg_bytes;
    t->call_timeout_ms = call_timeout_ms;
    t->refresh_ms = refresh_ms;
    t->names = json_object();
    pthread_mutex_init(&t->lock, NULL);
    return t;
}

void aw_tools_free(struct aw_tools *t)
{
    if (!t)
        return;
    free(t->targets);
    cm_rpc_client_free(t->client);
    json_decref(t->config);
    json_decref(t->names);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

/* The config and name set from a ListTools answer. */
static void take_listing(struct aw_tools *t, const Agentcore__V1__ListToolsResponse *resp)
{
    json_t *tools = json_array(), *names = json_object(), *config;
    size_t i;

    for (i = 0; i < resp->n_tools && tools && names; i++) {
        const Agentcore__V1__ToolSpec *sp = resp->tools[i];
        json_t *schema = json_loads(sp->input_schema_json, 0, NULL);

        if (!json_is_object(schema)) {
            cm_warn("tool '%s' has an invalid input schema; skipped", sp->name);
            json_decref(schema);
            continue;
        }
        json_array_append_new(tools, json_pack("{s:{s:s,s:s,s:{s:o}}}", "toolSpec", "name",
                                               sp->name, "description",
                                               sp->description[0] ? sp->description : sp->name,
                                               "inputSchema", "json", schema));
        json_object_set_new(names, sp->name, json_true());
    }
    config = json_array_size(tools) ? json_pack("{s:o}", "tools", tools) : NULL;
    if (!config)
        json_decref(tools);
    cm_info("tools listed: %zu", json_object_size(names));
    pthread_mutex_lock(&t->lock);
    json_decref(t->config);
    json_decref(t->names);
    t->config = config;
    t->names = names;
    t->ever_ok = 1;
    pthread_mutex_unlock(&t->lock);
}

static void on_listed(void *ud, const struct cm_rpc_status *st, ProtobufCMessage *resp)
{
    struct aw_tools *t = ud;
    struct aw_tools_waiter *w;

    t->list_call = NULL;
    if (t->retry_live)
        uv_timer_stop(&t->retry);
    if (resp) {
        take_listing(t, (const Agentcore__V1__ListToolsResponse *)resp);
        protobuf_c_message_free_unpacked(resp, NULL);
    } else if (!t->stopped) {
        cm_warn("ListTools failed: %s: %s", cm_rpc_code_name(st->code), st->details);
    }
    pthread_mutex_lock(&t->lock);
    t->listing = 0;
    pthread_mutex_unlock(&t->lock);
    t->ever_done = 1;
    /* Whatever the outcome, nobody waits longer: without tools the model
     * simply gets none (and unknown-tool results say why). */
    while ((w = t->waiters)) {
        t->waiters = w->next;
        w->next = NULL;
        w->queued = 0;
        w->ready(w);
    }
}

/* While the first listing waits (wait-for-ready) for a tool-worker that is
 * still starting, retry the connection every few milliseconds rather than
 * after gRPC's 100 ms minimum backoff; it stops with the listing. */
static void retry_connect(uv_timer_t *h)
{
    struct aw_tools *t = h->data;

    if (!t->list_call || cm_rpc_client_connected(t->client)) {
        uv_timer_stop(h);
        return;
    }
    cm_rpc_client_reset_backoff(t->client);
}

/* Starts a listing on the loop when one is due. wait_for_ready: a
 * tool-worker that starts after us is waited for, up to the deadline, instead
 * of failing the first invocation. */
static void list_if_due(struct aw_tools *t)
{
    Agentcore__V1__ListToolsRequest req = AGENTCORE__V1__LIST_TOOLS_REQUEST__INIT;
    struct cm_rpc_call_opts o = {0};
    struct cm_rpc_status st;
    uint64_t now = cm_now_ms();
    int due;

    if (!t->events || t->stopped)
        return;
    pthread_mutex_lock(&t->lock);
    due = !t->listing &&
          (t->listed_at == 0 ||
           now - t->listed_at >= (uint64_t)(t->ever_ok ? t->refresh_ms : RETRY_EMPTY_MS));
    if (due) {
        t->listing = 1;
        t->listed_at = now;
    }
    pthread_mutex_unlock(&t->lock);
    if (!due)
        return;
    o.timeout_ms = LIST_TIMEOUT_MS;
    o.wait_for_ready = 1;
    t->list_call =
        cm_rpc_call_async(t->client, t->events, &methods[0], &req.base, &o, on_listed, t, &st);
    if (!t->list_call) {
        on_listed(t, &st, NULL);
        return;
    }
    if (t->retry_live && !t->ever_ok)
        uv_timer_start(&t->retry, retry_connect, 5, 5);
}

void aw_tools_bind(struct aw_tools *t, struct cm_rpc_events *ev, uv_loop_t *loop)
{
    t->events = ev;
    t->retry_live = !uv_timer_init(loop, &t->retry);
    t->retry.data = t;
    list_if_due(t);
}

void aw_tools_stop(struct aw_tools *t)
{
    if (!t)
        return;
    t->stopped = 1;
    cm_rpc_pending_cancel(t->list_call);
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
    list_if_due(t);
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

    list_if_due(t);
    pthread_mutex_lock(&t->lock);
    cfg = json_incref(t->config);
    pthread_mutex_unlock(&t->lock);
    return cfg;
}

/* ---- replicas ---- */

static int add_replica(char (*out)[AW_TOOLS_ADDR_MAX], int n, int cap, const char *addr)
{
    size_t len;
    int i;

    for (i = 0; i < n; i++) {
        if (!strcmp(out[i], addr))
            return n;
    }
    len = strlen(addr);
    if (n < cap && len < AW_TOOLS_ADDR_MAX) /* a longer one would not be the same address */
        memcpy(out[n++], addr, len + 1);
    return n;
}

/* "host:port" or "[v6]:port" -> host and port; 0 or -1. */
static int split_hostport(const char *s, char *host, size_t hcap, const char **port)
{
    const char *end, *colon;
    size_t len;

    if (*s == '[') {
        end = strchr(s, ']');
        if (!end || end[1] != ':')
            return -1;
        s++;
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return -1;
        end = colon;
    }
    len = (size_t)(end - s);
    if (!len || len >= hcap || !colon[1])
        return -1;
    memcpy(host, s, len);
    host[len] = '\0';
    *port = colon + 1;
    return 0;
}

/* A numeric address and port as a gRPC target; -1 when it does not fit. */
static int numeric_target(char *buf, size_t cap, const char *ip, const char *port)
{
    int w = strchr(ip, ':') ? snprintf(buf, cap, "ipv6:[%s]:%s", ip, port)
                            : snprintf(buf, cap, "%s:%s", ip, port);

    return w < 0 || (size_t)w >= cap ? -1 : 0;
}

int aw_tools_replicas(const char *targets, aw_tools_resolve_fn resolve, void *ud,
                      char (*out)[AW_TOOLS_ADDR_MAX], int cap)
{
    const char *p = targets;
    int n = 0;

    while (p && *p && n < cap) {
        char item[512], host[256], addr[AW_TOOLS_ADDR_MAX];
        char ips[AW_TOOLS_MAX_REPLICAS][AW_TOOLS_ADDR_MAX];
        const char *end = strchr(p, ','), *it, *port;
        unsigned char bin[16];
        size_t len = end ? (size_t)(end - p) : strlen(p);
        int k, nips;

        while (len && *p == ' ')
            p++, len--;
        if (!len || len >= sizeof(item)) {
            p = end ? end + 1 : NULL;
            continue;
        }
        memcpy(item, p, len);
        item[len] = '\0';
        p = end ? end + 1 : NULL;
        it = item;
        if (!strncmp(it, "unix:", 5) || !strncmp(it, "unix-abstract:", 14)) {
            n = add_replica(out, n, cap, it);
            continue;
        }
        if (!strncmp(it, "dns:///", 7))
            it += 7;
        else if (!strncmp(it, "dns:", 4))
            it += 4;
        else if (!strncmp(it, "ipv4:", 5) || !strncmp(it, "ipv6:", 5))
            it += 5;
        if (split_hostport(it, host, sizeof(host), &port))
            continue;
        if (inet_pton(AF_INET, host, bin) == 1 || inet_pton(AF_INET6, host, bin) == 1) {
            if (!numeric_target(addr, sizeof(addr), host, port))
                n = add_replica(out, n, cap, addr);
            continue;
        }
        nips = resolve ? resolve(host, ips, AW_TOOLS_MAX_REPLICAS, ud) : 0;
        for (k = 0; k < nips && n < cap; k++) {
            if (!numeric_target(addr, sizeof(addr), ips[k], port))
                n = add_replica(out, n, cap, addr);
        }
    }
    return n;
}

static int known(struct aw_tools *t, const char *name)
{
    int k;

    pthread_mutex_lock(&t->lock);
    k = json_object_get(t->names, name) != NULL;
    pthread_mutex_unlock(&t->lock);
    return k;
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

struct exec {
    aw_tools_done done;
    void *ud;
    char name[80];
};

static void on_executed(void *ud, const struct cm_rpc_status *st, ProtobufCMessage *msg)
{
    struct exec *x = ud;
    struct aw_tool_result out = {NULL, 1};

    if (!msg) {
        if (st->code == CM_RPC_DEADLINE_EXCEEDED)
            result_text(&out, 1, "tool '%s' timed out", x->name);
        else
            result_text(&out, 1, "tool '%s' failed: %s: %s", x->name, cm_rpc_code_name(st->code),
                        st->details);
    } else {
        const Agentcore__V1__ExecuteResponse *resp = (const void *)msg;

        out.text = strdup(resp->content);
        out.is_error = resp->status != AGENTCORE__V1__TOOL_STATUS__TOOL_STATUS_SUCCESS;
        protobuf_c_message_free_unpacked(msg, NULL);
    }
    x->done(x->ud, &out);
    free(out.text);
    free(x);
}

int aw_tools_execute_async(struct aw_tools *t, const struct aw_tools_call *call,
                           const char *tool_use_id, const char *name, const json_t *input,
                           aw_tools_done done, void *ud, struct cm_rpc_pending **pending,
                           struct aw_tool_result *out)
{
    Agentcore__V1__ExecuteRequest req = AGENTCORE__V1__EXECUTE_REQUEST__INIT;
    struct cm_rpc_meta md[3] = {{CM_RPC_MD_REQUEST_ID, call->request_id},
                                {CM_RPC_MD_SESSION_ID, call->session_id},
                                {CM_RPC_MD_TRACEPARENT, call->traceparent}};
    struct cm_rpc_call_opts o = {0};
    struct cm_rpc_status st;
    struct exec *x;
    char *input_json;

    out->text = NULL;
    out->is_error = 1;
    *pending = NULL;
    if (!known(t, name)) {
        result_text(out, 1, "unknown tool '%.64s': no tool-worker offers it", name);
        return -1;
    }
    x = calloc(1, sizeof(*x));
    input_json = input ? json_dumps(input, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("{}");
    if (!x || !input_json) {
        free(x);
        free(input_json);
        result_text(out, 1, "tool input could not be serialised");
        return -1;
    }
    x->done = done;
    x->ud = ud;
    cm_strlcpy(x->name, name, sizeof(x->name));
    req.tool_use_id = (char *)tool_use_id;
    req.name = (char *)name;
    req.input_json = input_json;
    o.timeout_ms = t->call_timeout_ms;
    o.aparent = call->aparent;
    o.meta = md;
    o.n_meta = 3;
    o.wait_for_ready = 1; /* a replica restarting under s6 is waited for, within the deadline */
    *pending =
        cm_rpc_call_async(t->client, t->events, &methods[1], &req.base, &o, on_executed, x, &st);
    free(input_json);
    if (!*pending) {
        result_text(out, 1, "tool '%s' failed: %s: %s", name, cm_rpc_code_name(st.code),
                    st.details);
        free(x);
        return -1;
    }
    return 0;
}
