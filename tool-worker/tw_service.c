#include "tw_service.h"
#include "cm_err.h"
#include "cm_log.h"
#include "cm_rpc.h"
#include "cm_status.h"
#include "cm_metrics.h"
#include "cm_otel.h"
#include "cm_trace.h"
#include "cm_util.h"
#include "tw_sandbox.h"

#include "agentcore.pb-c.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct cm_rpc_method list_method = {
    "/agentcore.v1.ToolService/ListTools", &agentcore__v1__list_tools_request__descriptor,
    &agentcore__v1__list_tools_response__descriptor, CM_RPC_UNARY};
static const struct cm_rpc_method exec_method = {
    "/agentcore.v1.ToolService/Execute", &agentcore__v1__execute_request__descriptor,
    &agentcore__v1__execute_response__descriptor, CM_RPC_UNARY};
static const struct cm_rpc_method status_method = {
    "/agentcore.v1.ToolService/Status", &agentcore__v1__status_request__descriptor,
    &agentcore__v1__status_response__descriptor, CM_RPC_UNARY};
static const struct cm_rpc_method watch_method = {
    "/agentcore.v1.ToolService/WatchStatus", &agentcore__v1__status_request__descriptor,
    &agentcore__v1__status_response__descriptor, CM_RPC_SERVER_STREAM};

/* Status is answered on a pool thread: it reads this mirror, not the runner. */
static atomic_int background_now;

static const char *isolation(const struct tw_service *svc)
{
    return svc->sandbox ? tw_sandbox_isolation(svc->sandbox) : "unavailable";
}

static const char *isolation_detail(const struct tw_service *svc)
{
    return svc->sandbox ? tw_sandbox_describe(svc->sandbox) : "no sandbox configured";
}

static void list_tools(struct cm_rpc_ctx *ctx, const ProtobufCMessage *req, void *ud)
{
    struct tw_service *svc = ud;
    Agentcore__V1__ListToolsResponse resp = AGENTCORE__V1__LIST_TOOLS_RESPONSE__INIT;
    size_t n = tw_catalog_count(svc->catalog), i;
    Agentcore__V1__ToolSpec *specs = calloc(n ? n : 1, sizeof(*specs));
    Agentcore__V1__ToolSpec **ptrs = calloc(n ? n : 1, sizeof(*ptrs));

    (void)req;
    if (!specs || !ptrs) {
        cm_rpc_ctx_fail(ctx, CM_RPC_RESOURCE_EXHAUSTED, "ToolError", "out of memory");
        goto out;
    }
    for (i = 0; i < n; i++) {
        const struct tw_tool *t = tw_catalog_at(svc->catalog, i);

        agentcore__v1__tool_spec__init(&specs[i]);
        specs[i].name = t->name;
        specs[i].description = t->description;
        specs[i].input_schema_json = t->schema_text;
        specs[i].idempotent = t->idempotent;
        specs[i].background = t->background || t->kind == TW_TEST_BACKGROUND;
        specs[i].sandboxed = t->kind == TW_SANDBOXED;
        ptrs[i] = &specs[i];
    }
    resp.n_tools = n;
    resp.tools = ptrs;
    resp.isolation = (char *)isolation(svc);
    resp.isolation_detail = (char *)isolation_detail(svc);
    cm_rpc_ctx_reply(ctx, &resp.base);
out:
    free(specs);
    free(ptrs);
}

struct exec_call {
    struct cm_rpc_acall *acall;
    struct tw_call *call;
    Agentcore__V1__ExecuteRequest *req;
    uint64_t t0;
    int starting; /* inside tw_runner_start: the answer may come before it returns */
    char request_id[128], session_id[256];
    char trace_id[33], span_id[17]; /* the execute_tool span, child of the agent-worker's */
    struct cm_trace trace;
    uint64_t start_ns;
    struct cm_otel *otel;
    struct tw_service *svc;
};

static void exec_log_ctx(const struct exec_call *e)
{
    cm_log_set_context(e->request_id, e->session_id);
    if (e->trace_id[0])
        cm_log_set_trace(e->trace_id, e->span_id);
}

static void exec_free(struct exec_call *e)
{
    protobuf_c_message_free_unpacked(&e->req->base, NULL);
    free(e);
}

static void exec_done(void *ud, const struct tw_result *res)
{
    struct exec_call *e = ud;
    Agentcore__V1__ExecuteResponse resp = AGENTCORE__V1__EXECUTE_RESPONSE__INIT;
    uint8_t *spans = NULL;
    size_t spans_len = 0;
    char dur[32];
    const char *kv[] = {"tool",       e->req->name,
                        "toolUseId",  e->req->tool_use_id,
                        "status",     res->is_error ? "error" : "success",
                        "durationMs", dur,
                        NULL};

    exec_log_ctx(e);
    snprintf(dur, sizeof(dur), "%llu", (unsigned long long)(cm_now_ms() - e->t0));
    if (e->svc->metrics) {
        const char *l[] = {e->req->name, res->cancelled  ? "cancelled"
                                         : res->is_error ? "error"
                                                         : "success"};

        cm_metrics_count(e->svc->metrics, e->svc->m_exec, l, 1);
        cm_metrics_observe(e->svc->metrics, e->svc->m_exec_dur, NULL,
                           (double)(cm_now_ms() - e->t0) / 1000.0);
    }
    if (e->trace_id[0]) {
        char name[200];
        struct cm_otel_attr a[] = {
            {"gen_ai.operation.name", "execute_tool", 0},
            {"gen_ai.tool.name", e->req->name, 0},
            {"gen_ai.tool.call.id", e->req->tool_use_id, 0},
            {"session.id", e->session_id, 0},
            {"agentcore.tool.status",
             res->cancelled  ? "cancelled"
             : res->is_error ? "error"
                             : "success",
             0},
        };
        struct cm_otel_span sp = {name,
                                  CM_OTEL_SERVER,
                                  &e->trace,
                                  e->start_ns,
                                  cm_otel_now_ns(),
                                  res->is_error && !res->cancelled,
                                  "the tool failed",
                                  a,
                                  sizeof(a) / sizeof(a[0]),
                                  NULL,
                                  0,
                                  "ToolError"};

        snprintf(name, sizeof(name), "execute_tool %s", e->req->name);
        /* Signed export: the agent-worker holds the credentials, so the
         * span rides back in the answer (a failure only loses the span). */
        if (cm_otel_relaying(e->otel))
            cm_otel_pack(e->otel, &sp, &spans, &spans_len);
        else
            cm_otel_record(e->otel, &sp);
    }
    CM_LOGF(CM_LOG_INFO, kv, res->cancelled ? "tool cancelled by the caller" : "tool executed");
    cm_log_clear_context();
    resp.tool_use_id = e->req->tool_use_id;
    resp.status = res->is_error ? AGENTCORE__V1__TOOL_STATUS__TOOL_STATUS_ERROR
                                : AGENTCORE__V1__TOOL_STATUS__TOOL_STATUS_SUCCESS;
    resp.content = res->text;
    resp.spans.data = spans;
    resp.spans.len = spans_len;
    if (cm_otel_relaying(e->svc->otel) &&
        cm_otel_pack_metrics(e->svc->otel, &resp.metrics.data, &resp.metrics.len))
        resp.metrics.len = 0; /* none due */
    if (res->cancelled)
        cm_rpc_acall_finish(e->acall, CM_RPC_CANCELLED, "ToolCancelled", "the caller went away");
    else
        cm_rpc_acall_reply(e->acall, &resp.base);
    free(spans);
    free(resp.metrics.data);
    e->acall = NULL;
    e->call = NULL;
    if (!e->starting)
        exec_free(e);
}

static void exec_cancelled(void *ud)
{
    struct exec_call *e = ud;

    if (e->call)
        tw_call_cancel(e->call);
}

static void copy_meta(char *dst, size_t len, const char *v)
{
    snprintf(dst, len, "%s", v ? v : "");
}

static void execute(struct cm_rpc_acall *a, ProtobufCMessage *msg, void *ud)
{
    struct tw_service *svc = ud;
    struct exec_call *e = calloc(1, sizeof(*e));
    int rc;

    if (!e) {
        cm_rpc_acall_finish(a, CM_RPC_RESOURCE_EXHAUSTED, "ToolError", "out of memory");
        protobuf_c_message_free_unpacked(msg, NULL);
        return;
    }
    e->acall = a;
    e->svc = svc;
    e->req = (Agentcore__V1__ExecuteRequest *)msg;
    e->t0 = cm_now_ms();
    copy_meta(e->request_id, sizeof(e->request_id), cm_rpc_acall_meta(a, CM_RPC_MD_REQUEST_ID));
    copy_meta(e->session_id, sizeof(e->session_id), cm_rpc_acall_meta(a, CM_RPC_MD_SESSION_ID));
    {
        /* Only a call that carries a trace is traced: a tool is a child span,
         * never a trace of its own. */
        const char *tp = cm_rpc_acall_meta(a, CM_RPC_MD_TRACEPARENT);
        struct cm_trace t;

        if (tp && cm_trace_parse(tp, &t) == 0 && cm_trace_child(&t, &t) == 0) {
            cm_trace_ids(&t, e->trace_id, e->span_id);
            e->trace = t;
            e->otel = svc->otel;
        }
        e->start_ns = cm_otel_now_ns();
    }
    cm_rpc_acall_on_cancel(a, exec_cancelled, e);
    {
        const char *kv[] = {"tool", e->req->name, "toolUseId", e->req->tool_use_id, NULL};

        exec_log_ctx(e);
        CM_LOGF(CM_LOG_INFO, kv, "tool started");
        cm_log_clear_context();
    }
    e->starting = 1;
    rc = tw_runner_start(svc->runner, e->req->name, e->req->input_json, e->session_id, exec_done, e,
                         &e->call);
    e->starting = 0;
    if (rc == CM_EBUSY)
        cm_rpc_acall_finish(a, CM_RPC_RESOURCE_EXHAUSTED, "ToolWorkerBusy",
                            "this tool-worker runs as many tools as it may "
                            "(TOOL_WORKER_MAX_CALLS); try another replica");
    else if (rc)
        cm_rpc_acall_finish(a, CM_RPC_RESOURCE_EXHAUSTED, "ToolError", "out of memory");
    /* Otherwise |e| lives until exec_done: the cancel hook may still name it. */
    if (rc || !e->acall)
        exec_free(e);
}

static void status(struct cm_rpc_ctx *ctx, const ProtobufCMessage *req, void *ud)
{
    struct tw_service *svc = ud;
    Agentcore__V1__StatusResponse resp = AGENTCORE__V1__STATUS_RESPONSE__INIT;

    (void)req;
    resp.active_background_tasks = atomic_load(&background_now);
    resp.isolation = (char *)isolation(svc);
    resp.isolation_detail = (char *)isolation_detail(svc);
    cm_rpc_ctx_reply(ctx, &resp.base);
}

void tw_service_on_background(int count, void *ud)
{
    struct tw_service *svc = ud;

    atomic_store(&background_now, count);
    if (svc->status_hub)
        cm_status_set(svc->status_hub, count);
}

int tw_service_register(struct cm_rpc_server *srv, struct cm_rpc_events *ev, struct tw_service *svc)
{
    int rc = cm_rpc_server_add(srv, &list_method, list_tools, svc);

    if (!rc)
        rc = cm_rpc_server_add_async(srv, ev, &exec_method, execute, svc);
    if (!rc)
        rc = cm_rpc_server_add_aux(srv, &status_method, status, svc);
    if (!rc && svc->status_hub)
        rc = cm_status_serve(svc->status_hub, srv, ev, &watch_method);
    return rc;
}

void tw_service_on_kill(const char *reason, void *ud)
{
    struct tw_service *svc = ud;
    const char *l[] = {reason};

    cm_metrics_count(svc->metrics, svc->m_kills, l, 1);
}

void tw_service_on_start(const char *how, void *ud)
{
    struct tw_service *svc = ud;
    const char *l[] = {how};

    cm_metrics_count(svc->metrics, svc->m_starts, l, 1);
}

static int64_t background_gauge(void *ud)
{
    (void)ud;
    return atomic_load(&background_now);
}

int tw_service_metrics(struct tw_service *svc, struct cm_metrics *m)
{
    static const char *const labels[] = {"tool", "status", NULL};

    svc->metrics = m;
    svc->m_exec = cm_metrics_family(m, "agentcore_tool_executions_total",
                                    "Tool executions by tool and status (timeouts and limits hit "
                                    "are errors)",
                                    CM_COUNTER, labels);
    svc->m_exec_dur =
        cm_metrics_family(m, "agentcore_tool_execution_duration_seconds",
                          "Tool execution latency in the tool-worker", CM_HISTOGRAM, NULL);
    svc->m_kills = cm_metrics_family(m, "agentcore_sandbox_kills_total",
                                     "Tool processes the worker ended, by reason (timeout, "
                                     "output, cpu, signal, cancelled)",
                                     CM_COUNTER, (const char *const[]){"reason", NULL});
    svc->m_starts = cm_metrics_family(m, "agentcore_sandbox_starts_total",
                                      "Tool processes started, by how their sandbox came: warm "
                                      "(set up before the call, TOOL_SANDBOX_WARM) or cold",
                                      CM_COUNTER, (const char *const[]){"how", NULL});
    return svc->m_exec < 0 || svc->m_exec_dur < 0 || svc->m_kills < 0 || svc->m_starts < 0 ||
                   cm_metrics_gauge_fn(m, "agentcore_background_tasks",
                                       "Background tool tasks running in this tool-worker",
                                       background_gauge, NULL) < 0
               ? -1
               : 0;
}
