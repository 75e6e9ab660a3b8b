#include "aw_tools.h"
#include "cm_err.h"
#include "cm_log.h"
#include "cm_rpc.h"
#include "cm_util.h"

#include "agentcore.pb-c.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <stdarg.h>
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
    {"/agentcore.v1.ToolService/Status", &agentcore__v1__status_request__descriptor,
     &agentcore__v1__status_response__descriptor, CM_RPC_UNARY},
};

struct aw_tools {
    struct cm_rpc_client *client;
    int call_timeout_ms, refresh_ms;
    pthread_mutex_t lock; /* guards the fields below */
    json_t *config;       /* {"tools":[{"toolSpec":...}]} or NULL */
    json_t *names;        /* object: tool name -> true, for the unknown-tool check */
    uint64_t listed_at;   /* last listing attempt, monotonic ms; 0 = never */
    int listing, ever_ok;
    /* The status poller. */
    pthread_t poller;
    int poller_started, stopping, status_interval_ms;
    pthread_cond_t cond;
    atomic_int busy;
};

struct aw_tools *aw_tools_new(const char *targets, int call_timeout_ms, int refresh_ms,
                              int max_msg_bytes, char *err, size_t errlen)
{
    struct aw_tools *t = calloc(1, sizeof(*t));

    if (!t)
        return NULL;
    t->client = cm_rpc_client_new(targets, methods, 3, max_msg_bytes, err, errlen);
    if (!t->client) {
        free(t);
        return NULL;
    }
    t->call_timeout_ms = call_timeout_ms;
    t->refresh_ms = refresh_ms;
    t->names = json_object();
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->cond, NULL);
    return t;
}

void aw_tools_free(struct aw_tools *t)
{
    if (!t)
        return;
    if (t->poller_started) {
        pthread_mutex_lock(&t->lock);
        t->stopping = 1;
        pthread_cond_broadcast(&t->cond);
        pthread_mutex_unlock(&t->lock);
        pthread_join(t->poller, NULL);
    }
    pthread_cond_destroy(&t->cond);
    cm_rpc_client_free(t->client);
    json_decref(t->config);
    json_decref(t->names);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

/* Lists the tools; on success returns 0 with the new config and name set. */
static int list_tools(struct aw_tools *t, json_t **config, json_t **names)
{
    Agentcore__V1__ListToolsRequest req = AGENTCORE__V1__LIST_TOOLS_REQUEST__INIT;
    Agentcore__V1__ListToolsResponse *resp;
    struct cm_rpc_call_opts o = {0};
    struct cm_rpc_status st;
    json_t *tools;
    size_t i;

    /* wait_for_ready: a tool-worker that starts after us is waited for, up to
     * the deadline, instead of failing the first invocation. */
    o.timeout_ms = LIST_TIMEOUT_MS;
    o.wait_for_ready = 1;
    if (cm_rpc_call(t->client, &methods[0], &req.base, (ProtobufCMessage **)&resp, &o, &st)) {
        cm_warn("ListTools failed: %s: %s", cm_rpc_code_name(st.code), st.details);
        return -1;
    }
    tools = json_array();
    *names = json_object();
    for (i = 0; i < resp->n_tools && tools && *names; i++) {
        const Agentcore__V1__ToolSpec *s = resp->tools[i];
        json_t *schema = json_loads(s->input_schema_json, 0, NULL);

        if (!json_is_object(schema)) {
            cm_warn("tool '%s' has an invalid input schema; skipped", s->name);
            json_decref(schema);
            continue;
        }
        json_array_append_new(tools,
                              json_pack("{s:{s:s,s:s,s:{s:o}}}", "toolSpec", "name", s->name,
                                        "description", s->description[0] ? s->description : s->name,
                                        "inputSchema", "json", schema));
        json_object_set_new(*names, s->name, json_true());
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    *config = json_array_size(tools) ? json_pack("{s:o}", "tools", tools) : NULL;
    if (!json_array_size(tools))
        json_decref(tools);
    cm_info("tools listed: %zu", json_object_size(*names));
    return 0;
}

json_t *aw_tools_config(struct aw_tools *t)
{
    uint64_t now = cm_now_ms();
    json_t *cfg, *newcfg = NULL, *newnames = NULL;
    int due;

    pthread_mutex_lock(&t->lock);
    due = !t->listing &&
          (t->listed_at == 0 ||
           now - t->listed_at >= (uint64_t)(t->ever_ok ? t->refresh_ms : RETRY_EMPTY_MS));
    if (due) {
        t->listing = 1;
        t->listed_at = now;
    }
    pthread_mutex_unlock(&t->lock);
    if (due) {
        int ok = list_tools(t, &newcfg, &newnames) == 0;

        pthread_mutex_lock(&t->lock);
        if (ok) {
            json_decref(t->config);
            json_decref(t->names);
            t->config = newcfg;
            t->names = newnames;
            t->ever_ok = 1;
        }
        t->listing = 0;
        pthread_mutex_unlock(&t->lock);
    }
    pthread_mutex_lock(&t->lock);
    cfg = json_incref(t->config);
    pthread_mutex_unlock(&t->lock);
    return cfg;
}

/* Asks a tool-worker how many background tasks it runs. With several
 * replicas behind one address each ask reaches one of them (round-robin). */
static void *poll_status(void *p)
{
    struct aw_tools *t = p;
    Agentcore__V1__StatusRequest req = AGENTCORE__V1__STATUS_REQUEST__INIT;
    Agentcore__V1__StatusResponse *resp;
    struct cm_rpc_call_opts o = {500, NULL, NULL, 0, 0};
    struct cm_rpc_status st;
    struct timespec until;

    pthread_mutex_lock(&t->lock);
    while (!t->stopping) {
        pthread_mutex_unlock(&t->lock);
        if (cm_rpc_call(t->client, &methods[2], &req.base, (ProtobufCMessage **)&resp, &o, &st)) {
            atomic_store(&t->busy, 0);
        } else {
            atomic_store(&t->busy, resp->active_background_tasks);
            protobuf_c_message_free_unpacked(&resp->base, NULL);
        }
        pthread_mutex_lock(&t->lock);
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += t->status_interval_ms / 1000;
        until.tv_nsec += (long)(t->status_interval_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!t->stopping && pthread_cond_timedwait(&t->cond, &t->lock, &until) == 0)
            ;
    }
    pthread_mutex_unlock(&t->lock);
    cm_rpc_thread_done();
    return NULL;
}

int aw_tools_start_status(struct aw_tools *t, int interval_ms)
{
    t->status_interval_ms = interval_ms;
    t->poller_started = !pthread_create(&t->poller, NULL, poll_status, t);
    return t->poller_started ? 0 : CM_EIO;
}

int aw_tools_background_tasks(struct aw_tools *t)
{
    return atomic_load(&t->busy);
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

void aw_tools_execute(struct aw_tools *t, const struct aw_tools_call *call, const char *tool_use_id,
                      const char *name, const json_t *input, struct aw_tool_result *out)
{
    Agentcore__V1__ExecuteRequest req = AGENTCORE__V1__EXECUTE_REQUEST__INIT;
    Agentcore__V1__ExecuteResponse *resp;
    struct cm_rpc_meta md[3] = {{CM_RPC_MD_REQUEST_ID, call->request_id},
                                {CM_RPC_MD_SESSION_ID, call->session_id},
                                {CM_RPC_MD_TRACEPARENT, call->traceparent}};
    struct cm_rpc_call_opts o = {0};
    struct cm_rpc_status st;
    char *input_json;

    out->text = NULL;
    out->is_error = 1;
    if (!known(t, name)) {
        result_text(out, 1, "unknown tool '%.64s': no tool-worker offers it", name);
        return;
    }
    input_json = input ? json_dumps(input, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("{}");
    if (!input_json) {
        result_text(out, 1, "tool input could not be serialised");
        return;
    }
    req.tool_use_id = (char *)tool_use_id;
    req.name = (char *)name;
    req.input_json = input_json;
    o.timeout_ms = t->call_timeout_ms;
    o.parent = call->parent;
    o.meta = md;
    o.n_meta = 3;
    if (cm_rpc_call(t->client, &methods[1], &req.base, (ProtobufCMessage **)&resp, &o, &st)) {
        if (st.code == CM_RPC_DEADLINE_EXCEEDED)
            result_text(out, 1, "tool '%s' timed out", name);
        else
            result_text(out, 1, "tool '%s' failed: %s: %s", name, cm_rpc_code_name(st.code),
                        st.details);
    } else {
        out->text = strdup(resp->content);
        out->is_error = resp->status != AGENTCORE__V1__TOOL_STATUS__TOOL_STATUS_SUCCESS;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    free(input_json);
}
