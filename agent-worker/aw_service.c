#include "aw_service.h"
#include "aw_agent.h"
#include "aw_bedrock.h"
#include "aw_session.h"
#include "aw_tools.h"
#include "cm_err.h"
#include "cm_json.h"
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
static const struct cm_rpc_method stream_method = {
    "/agentcore.v1.AgentService/InvokeStream", &agentcore__v1__invoke_request__descriptor,
    &agentcore__v1__invoke_event__descriptor, CM_RPC_SERVER_STREAM};

/* Everything one invocation's callbacks need. */
struct invocation {
    struct aw_service *svc;
    struct cm_rpc_ctx *ctx;
    struct aw_tools_call call;
    int streaming;   /* InvokeStream: events go out as they happen */
    int text_sent;   /* some answer text went out in this invocation */
    int turn_text;   /* ... in the current model turn */
    int client_gone; /* a send failed: stop producing */
};

static int cancelled(void *ud)
{
    struct invocation *inv = ud;

    return inv->client_gone || cm_rpc_ctx_cancelled(inv->ctx);
}

static void send_event(struct invocation *inv, Agentcore__V1__InvokeEvent *ev)
{
    if (!inv->client_gone && cm_rpc_ctx_send(inv->ctx, &ev->base))
        inv->client_gone = 1;
}

static void send_text(struct invocation *inv, int block, const char *text, size_t len)
{
    Agentcore__V1__InvokeEvent ev = AGENTCORE__V1__INVOKE_EVENT__INIT;
    Agentcore__V1__TextDelta d = AGENTCORE__V1__TEXT_DELTA__INIT;
    char *t = strndup(text, len);

    if (!t)
        return;
    /* A new turn's text follows the earlier turns' after a blank line, the
     * separator aw_agent puts into the final response too. */
    if (inv->text_sent && !inv->turn_text) {
        d.content_block_index = block;
        d.text = "\n\n";
        ev.event_case = AGENTCORE__V1__INVOKE_EVENT__EVENT_TEXT_DELTA;
        ev.text_delta = &d;
        send_event(inv, &ev);
    }
    d.content_block_index = block;
    d.text = t;
    ev.event_case = AGENTCORE__V1__INVOKE_EVENT__EVENT_TEXT_DELTA;
    ev.text_delta = &d;
    send_event(inv, &ev);
    inv->text_sent = inv->turn_text = 1;
    free(t);
}

static void on_text(void *ud, int block, const char *text, size_t len)
{
    send_text(ud, block, text, len);
}

static void send_json_event(struct invocation *inv, int tool_use, const json_t *block)
{
    Agentcore__V1__InvokeEvent ev = AGENTCORE__V1__INVOKE_EVENT__INIT;
    char *js = cm_json_dump(block);

    if (!js)
        return;
    if (tool_use) {
        ev.event_case = AGENTCORE__V1__INVOKE_EVENT__EVENT_TOOL_USE_JSON;
        ev.tool_use_json = js;
    } else {
        ev.event_case = AGENTCORE__V1__INVOKE_EVENT__EVENT_TOOL_RESULT_JSON;
        ev.tool_result_json = js;
    }
    send_event(inv, &ev);
    free(js);
}

static void on_tool_use(void *ud, const json_t *use)
{
    struct invocation *inv = ud;

    if (inv->streaming)
        send_json_event(inv, 1, use);
}

static void on_tool_result(void *ud, const json_t *result)
{
    struct invocation *inv = ud;

    if (inv->streaming)
        send_json_event(inv, 0, result);
}

static int converse(void *ud, const json_t *messages, struct aw_turn *out,
                    struct aw_model_error *err)
{
    struct invocation *inv = ud;
    json_t *tool_config = aw_tools_config(inv->svc->tools);
    struct aw_call call = {cancelled, inv->streaming ? on_text : NULL, inv};
    uint64_t t0 = cm_now_ms();
    char dur[24];
    int rc;

    inv->turn_text = 0;
    rc = aw_bedrock_converse(inv->svc->bedrock, messages, tool_config, &call, out, err);
    json_decref(tool_config);
    if (rc == 0 && inv->streaming && !inv->turn_text) {
        /* Converse (not ConverseStream) delivers a turn whole: stream its text
         * as one delta so a streaming client still sees every answer. */
        json_t *block;
        size_t i;

        json_array_foreach(json_object_get(out->message, "content"), i, block)
        {
            const char *t = json_string_value(json_object_get(block, "text"));

            if (t && *t)
                send_text(inv, (int)i, t, strlen(t));
        }
    }
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

enum mode { MODE_REPLY, MODE_FINAL_EVENT, MODE_EVENTS };

/* Names (never values: Authorization, tokens) of the request context the
 * gateway forwarded. */
static void log_context(struct cm_rpc_ctx *ctx)
{
    char names[1024];
    const char *k, *v, *kv[] = {"headers", names, NULL};
    size_t pos = 0;
    int i;

    names[0] = '\0';
    for (i = 0; cm_rpc_ctx_meta_at(ctx, i, &k, &v); i++) {
        if (!strncmp(k, "x-agentcore-", 12) || !strncmp(k, "grpc-", 5) || !strcmp(k, "user-agent"))
            continue;
        pos += (size_t)snprintf(names + pos, sizeof(names) - pos, "%s%s", pos ? "," : "", k);
        if (pos >= sizeof(names))
            break;
    }
    cm_log_write(CM_LOG_DEBUG, kv, "request context");
}

/* Runs one invocation; answers it (reply, final event or failure status). */
static void run(struct cm_rpc_ctx *ctx, const Agentcore__V1__InvokeRequest *req,
                struct aw_service *svc, enum mode mode)
{
    Agentcore__V1__InvokeResponse resp = AGENTCORE__V1__INVOKE_RESPONSE__INIT;
    Agentcore__V1__Usage usage = AGENTCORE__V1__USAGE__INIT;
    struct invocation inv;
    struct aw_agent_io io = {converse, run_tool, cancelled, on_tool_use, on_tool_result, &inv};
    struct aw_agent_result res;
    struct aw_model_error err;
    struct aw_session *sess;
    uint64_t t0 = cm_now_ms();
    char dur[24], iters[16];
    int rc;

    memset(&inv, 0, sizeof(inv));
    inv.svc = svc;
    inv.ctx = ctx;
    inv.streaming = mode == MODE_EVENTS;
    inv.call.parent = ctx;
    inv.call.request_id = req->request_id;
    inv.call.session_id = req->session_id;
    inv.call.traceparent = cm_rpc_ctx_meta(ctx, CM_RPC_MD_TRACEPARENT);
    cm_log_set_context(req->request_id, req->session_id);
    if (CM_LOG_ENABLED(CM_LOG_DEBUG))
        log_context(ctx);
    if (!req->prompt[0] || !req->session_id[0]) {
        cm_rpc_ctx_fail(ctx, CM_RPC_INVALID_ARGUMENT, NULL, "prompt and session_id are required");
        goto out;
    }
    sess = aw_sessions_acquire(svc->sessions, req->session_id);
    if (!sess) {
        cm_rpc_ctx_fail(ctx, CM_RPC_RESOURCE_EXHAUSTED, "SessionLimit",
                        "session limit reached (every session is busy) or invalid session id");
        goto out;
    }
    rc = aw_agent_run(aw_session_messages(sess), req->prompt, svc->max_iterations, &io, &res, &err);
    aw_sessions_release(svc->sessions, sess);
    snprintf(dur, sizeof(dur), "%llu", (unsigned long long)(cm_now_ms() - t0));
    if (rc == 0 && inv.client_gone)
        rc = CM_ECANCELED; /* finished, but nobody is listening any more */
    switch (rc) {
    case 0: {
        const char *kv[] = {"durationMs", dur,
                            "iterations", iters,
                            "stopReason", res.stop_reason,
                            "streamed",   inv.streaming ? "true" : "false",
                            NULL};

        snprintf(iters, sizeof(iters), "%d", res.iterations);
        CM_LOGF(CM_LOG_INFO, kv, "invocation done");
        resp.invocation_id = req->request_id;
        resp.session_id = req->session_id;
        resp.response = res.response ? res.response : "";
        resp.stop_reason = res.stop_reason;
        usage.input_tokens = res.input_tokens;
        usage.output_tokens = res.output_tokens;
        usage.total_tokens = res.total_tokens;
        resp.usage = &usage;
        resp.iterations = res.iterations;
        if (mode != MODE_REPLY) {
            Agentcore__V1__InvokeEvent ev = AGENTCORE__V1__INVOKE_EVENT__INIT;

            ev.event_case = AGENTCORE__V1__INVOKE_EVENT__EVENT_FINAL;
            ev.final = &resp;
            send_event(&inv, &ev);
        } else {
            cm_rpc_ctx_reply(ctx, &resp.base);
        }
        break;
    }
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
    aw_agent_result_clear(&res);
out:
    cm_log_clear_context();
}

static void invoke(struct cm_rpc_ctx *ctx, const ProtobufCMessage *msg, void *ud)
{
    run(ctx, (const Agentcore__V1__InvokeRequest *)msg, ud, MODE_REPLY);
}

/* Events as they happen when the caller asked for them (|stream|), else only
 * the final one: the gateway uses InvokeStream for JSON answers too, so that
 * an invocation whose client left can be cancelled. */
static void invoke_stream(struct cm_rpc_ctx *ctx, const ProtobufCMessage *msg, void *ud)
{
    const Agentcore__V1__InvokeRequest *req = (const void *)msg;

    run(ctx, req, ud, req->stream ? MODE_EVENTS : MODE_FINAL_EVENT);
}

static const struct cm_rpc_method status_method = {
    "/agentcore.v1.AgentService/Status", &agentcore__v1__status_request__descriptor,
    &agentcore__v1__status_response__descriptor, CM_RPC_UNARY};

/* Background work anywhere behind this agent-worker: its own tasks (none
 * yet) and what the tool-workers last reported. Never blocks. */
static void status(struct cm_rpc_ctx *ctx, const ProtobufCMessage *msg, void *ud)
{
    Agentcore__V1__StatusResponse resp = AGENTCORE__V1__STATUS_RESPONSE__INIT;
    struct aw_service *svc = ud;

    (void)msg;
    resp.active_background_tasks = aw_tools_background_tasks(svc->tools);
    cm_rpc_ctx_reply(ctx, &resp.base);
}

int aw_service_register(struct cm_rpc_server *srv, struct aw_service *svc)
{
    int rc = cm_rpc_server_add(srv, &invoke_method, invoke, svc);

    if (!rc)
        rc = cm_rpc_server_add(srv, &stream_method, invoke_stream, svc);
    return rc ? rc : cm_rpc_server_add_aux(srv, &status_method, status, svc);
}
