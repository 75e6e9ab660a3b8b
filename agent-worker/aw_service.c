#include "aw_service.h"
#include "aw_agent.h"
#include "aw_bedrock.h"
#include "aw_session.h"
#include "aw_tools.h"
#include "cm_err.h"
#include "cm_log.h"
#include "cm_rpc.h"
#include "cm_util.h"

#include "agentcore.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct cm_rpc_method invoke_method = {
    "/agentcore.v1.AgentService/Invoke", &agentcore__v1__invoke_request__descriptor,
    &agentcore__v1__invoke_response__descriptor, CM_RPC_UNARY};

/* Everything one invocation's callbacks need. */
struct invocation {
    struct aw_service *svc;
    struct cm_rpc_ctx *ctx;
    struct aw_tools_call call;
};

static int cancelled(void *ud)
{
    return cm_rpc_ctx_cancelled(((struct invocation *)ud)->ctx);
}

static int converse(void *ud, const json_t *messages, struct aw_turn *out,
                    struct aw_model_error *err)
{
    struct invocation *inv = ud;
    json_t *tool_config = aw_tools_config(inv->svc->tools);
    uint64_t t0 = cm_now_ms();
    char dur[24];
    int rc;

    struct aw_call call = {cancelled, NULL, inv};

    rc = aw_bedrock_converse(inv->svc->bedrock, messages, tool_config, &call, out, err);
    json_decref(tool_config);
    if (rc == 0 && CM_LOG_ENABLED(CM_LOG_DEBUG)) {
        const char *kv[] = {"durationMs", dur, "stopReason", out->stop_reason, NULL};

        snprintf(dur, sizeof(dur), "%llu", (unsigned long long)(cm_now_ms() - t0));
        cm_log_write(CM_LOG_DEBUG, kv, "model call done");
    }
    return rc; /* failures are logged once, by the invocation */
}

static void run_tool(void *ud, const char *tool_use_id, const char *name, const json_t *input,
                     struct aw_tool_result *out)
{
    struct invocation *inv = ud;

    aw_tools_execute(inv->svc->tools, &inv->call, tool_use_id, name, input, out);
}

static void invoke(struct cm_rpc_ctx *ctx, const ProtobufCMessage *msg, void *ud)
{
    const Agentcore__V1__InvokeRequest *req = (const void *)msg;
    Agentcore__V1__InvokeResponse resp = AGENTCORE__V1__INVOKE_RESPONSE__INIT;
    Agentcore__V1__Usage usage = AGENTCORE__V1__USAGE__INIT;
    struct invocation inv;
    struct aw_agent_io io = {converse, run_tool, cancelled, &inv};
    struct aw_agent_result res;
    struct aw_model_error err;
    struct aw_session *sess;
    uint64_t t0 = cm_now_ms();
    char dur[24], iters[16];
    int rc;

    inv.svc = ud;
    inv.ctx = ctx;
    inv.call.parent = ctx;
    inv.call.request_id = req->request_id;
    inv.call.session_id = req->session_id;
    inv.call.traceparent = cm_rpc_ctx_meta(ctx, CM_RPC_MD_TRACEPARENT);
    cm_log_set_context(req->request_id, req->session_id);
    if (!req->prompt[0] || !req->session_id[0]) {
        cm_rpc_ctx_fail(ctx, CM_RPC_INVALID_ARGUMENT, NULL, "prompt and session_id are required");
        goto out;
    }
    sess = aw_sessions_acquire(inv.svc->sessions, req->session_id);
    if (!sess) {
        cm_rpc_ctx_fail(ctx, CM_RPC_RESOURCE_EXHAUSTED, "SessionLimit",
                        "session limit reached (every session is busy) or invalid session id");
        goto out;
    }
    rc = aw_agent_run(aw_session_messages(sess), req->prompt, inv.svc->max_iterations, &io, &res,
                      &err);
    aw_sessions_release(inv.svc->sessions, sess);
    snprintf(dur, sizeof(dur), "%llu", (unsigned long long)(cm_now_ms() - t0));
    switch (rc) {
    case 0:
        snprintf(iters, sizeof(iters), "%d", res.iterations);
        {
            const char *kv[] = {"durationMs",    dur, "iterations", iters, "stopReason",
                                res.stop_reason, NULL};
            CM_LOGF(CM_LOG_INFO, kv, "invocation done");
        }
        resp.invocation_id = req->request_id;
        resp.session_id = req->session_id;
        resp.response = res.response ? res.response : "";
        resp.stop_reason = res.stop_reason;
        usage.input_tokens = res.input_tokens;
        usage.output_tokens = res.output_tokens;
        usage.total_tokens = res.total_tokens;
        resp.usage = &usage;
        resp.iterations = res.iterations;
        cm_rpc_ctx_reply(ctx, &resp.base);
        aw_agent_result_clear(&res);
        break;
    case CM_EUPSTREAM: {
        const char *kv[] = {"durationMs", dur, "errorType", err.type, NULL};

        CM_LOGF(CM_LOG_ERROR, kv, "model call failed: %s", err.message);
        if (err.http_status)
            cm_rpc_ctx_fail(ctx, CM_RPC_FAILED_PRECONDITION, "ModelError", "%s (HTTP %d): %s",
                            err.type, err.http_status, err.message);
        else
            cm_rpc_ctx_fail(ctx, CM_RPC_FAILED_PRECONDITION, "ModelError", "%s: %s", err.type,
                            err.message);
        break;
    }
    case CM_ECANCELED:
        cm_info("invocation cancelled by the caller after %s ms", dur);
        cm_rpc_ctx_fail(ctx, CM_RPC_CANCELLED, NULL, "invocation cancelled");
        break;
    default:
        cm_error("invocation failed: %s", cm_strerror(rc));
        cm_rpc_ctx_fail(ctx, CM_RPC_INTERNAL, "AgentError", "agent failed: %s", cm_strerror(rc));
        break;
    }
out:
    cm_log_clear_context();
}

int aw_service_register(struct cm_rpc_server *srv, struct aw_service *svc)
{
    return cm_rpc_server_add(srv, &invoke_method, invoke, svc);
}
