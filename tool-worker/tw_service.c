#include "tw_service.h"
#include "cm_err.h"
#include "cm_log.h"
#include "cm_rpc.h"
#include "cm_status.h"
#include "cm_util.h"
#include "tw_tools.h"

#include "agentcore.pb-c.h"

#include <stdio.h>
#include <stdlib.h>

static const struct cm_rpc_method list_method = {
    "/agentcore.v1.ToolService/ListTools", &agentcore__v1__list_tools_request__descriptor,
    &agentcore__v1__list_tools_response__descriptor, CM_RPC_UNARY};
static const struct cm_rpc_method exec_method = {
    "/agentcore.v1.ToolService/Execute", &agentcore__v1__execute_request__descriptor,
    &agentcore__v1__execute_response__descriptor, CM_RPC_UNARY};

static void list_tools(struct cm_rpc_ctx *ctx, const ProtobufCMessage *req, void *ud)
{
    Agentcore__V1__ListToolsResponse resp = AGENTCORE__V1__LIST_TOOLS_RESPONSE__INIT;
    Agentcore__V1__ToolSpec specs[16];
    Agentcore__V1__ToolSpec *ptrs[16];
    const struct tw_tool *tools;
    size_t n, i;

    (void)req;
    (void)ud;
    tools = tw_tools_list(&n);
    for (i = 0; i < n && i < 16; i++) {
        agentcore__v1__tool_spec__init(&specs[i]);
        specs[i].name = (char *)tools[i].name;
        specs[i].description = (char *)tools[i].description;
        specs[i].input_schema_json = (char *)tools[i].input_schema_json;
        ptrs[i] = &specs[i];
    }
    resp.n_tools = i;
    resp.tools = ptrs;
    cm_rpc_ctx_reply(ctx, &resp.base);
}

static int ctx_cancelled(void *ud)
{
    return cm_rpc_ctx_cancelled(ud);
}

static void execute(struct cm_rpc_ctx *ctx, const ProtobufCMessage *req, void *ud)
{
    const Agentcore__V1__ExecuteRequest *r = (const void *)req;
    Agentcore__V1__ExecuteResponse resp = AGENTCORE__V1__EXECUTE_RESPONSE__INIT;
    struct tw_result res;
    struct tw_cancel cancel = {ctx_cancelled, ctx};
    uint64_t t0 = cm_now_ms();
    char dur[32];
    int rc;

    (void)ud;
    cm_log_set_context(cm_rpc_ctx_meta(ctx, CM_RPC_MD_REQUEST_ID),
                       cm_rpc_ctx_meta(ctx, CM_RPC_MD_SESSION_ID));
    rc = tw_execute(r->name, r->input_json, &cancel, &res);
    if (rc == CM_ENOENT || rc == 0) {
        const char *kv[] = {"tool",         r->name,  "toolUseId",
                            r->tool_use_id, "status", res.is_error ? "error" : "success",
                            "durationMs",   dur,      NULL};

        snprintf(dur, sizeof(dur), "%llu", (unsigned long long)(cm_now_ms() - t0));
        CM_LOGF(CM_LOG_INFO, kv, res.cancelled ? "tool cancelled by the caller" : "tool executed");
        resp.tool_use_id = r->tool_use_id;
        resp.status = res.is_error ? AGENTCORE__V1__TOOL_STATUS__TOOL_STATUS_ERROR
                                   : AGENTCORE__V1__TOOL_STATUS__TOOL_STATUS_SUCCESS;
        resp.content = res.text;
        cm_rpc_ctx_reply(ctx, &resp.base);
    } else {
        cm_rpc_ctx_fail(ctx, CM_RPC_INTERNAL, "ToolError", "tool '%s' failed: out of memory",
                        r->name);
    }
    tw_result_free(&res);
    cm_log_clear_context();
}

static const struct cm_rpc_method status_method = {
    "/agentcore.v1.ToolService/Status", &agentcore__v1__status_request__descriptor,
    &agentcore__v1__status_response__descriptor, CM_RPC_UNARY};

static void status(struct cm_rpc_ctx *ctx, const ProtobufCMessage *req, void *ud)
{
    Agentcore__V1__StatusResponse resp = AGENTCORE__V1__STATUS_RESPONSE__INIT;

    (void)req;
    (void)ud;
    resp.active_background_tasks = tw_tools_background_tasks();
    cm_rpc_ctx_reply(ctx, &resp.base);
}

static const struct cm_rpc_method watch_method = {
    "/agentcore.v1.ToolService/WatchStatus", &agentcore__v1__status_request__descriptor,
    &agentcore__v1__status_response__descriptor, CM_RPC_SERVER_STREAM};

static void on_background(int count, void *ud)
{
    cm_status_set(ud, count);
}

int tw_service_register(struct cm_rpc_server *srv, struct cm_status *status_hub,
                        struct cm_rpc_events *ev)
{
    int rc = cm_rpc_server_add(srv, &list_method, list_tools, NULL);

    if (!rc)
        rc = cm_rpc_server_add(srv, &exec_method, execute, NULL);
    if (!rc)
        rc = cm_rpc_server_add_aux(srv, &status_method, status, NULL);
    if (!rc && status_hub) {
        tw_tools_on_background(on_background, status_hub);
        rc = cm_status_serve(status_hub, srv, ev, &watch_method);
    }
    return rc;
}
