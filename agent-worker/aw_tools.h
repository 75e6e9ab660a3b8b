/* aw_tools: the agent-worker's view of the tool-workers.
 *
 * Tools are discovered with ListTools and cached as a ready-made Bedrock
 * toolConfig; the cache is refreshed every |refresh_ms|, and retried at most
 * every second while no listing has succeeded yet. Execute calls carry the
 * invocation's ids as metadata and run as children of the invocation's gRPC
 * call, so a client that goes away cancels the tools too.
 *
 * Failures never escape as errors: an unknown tool, an unreachable worker or a
 * timeout becomes an error toolResult with a clear text for the model. */
#ifndef AW_TOOLS_H
#define AW_TOOLS_H

#include "aw_agent.h"

#include <jansson.h>

struct aw_tools;
struct cm_rpc_ctx;

/* |targets| as cm_rpc_client_new takes them. NULL with |err| on a bad target. */
struct aw_tools *aw_tools_new(const char *targets, int call_timeout_ms, int refresh_ms,
                              int max_msg_bytes, char *err, size_t errlen);
void aw_tools_free(struct aw_tools *t);

/* The current toolConfig (a new reference; json_decref it) or NULL when no tool
 * is known. May list the tools first (bounded by a 2 s deadline). */
json_t *aw_tools_config(struct aw_tools *t);

struct aw_tools_call {
    struct cm_rpc_ctx *parent; /* the invocation's server call, or NULL */
    const char *request_id, *session_id, *traceparent;
};

/* Starts asking the tool-workers for their background tasks every
 * |interval_ms| (a thread of its own; aw_tools_free stops it). */
int aw_tools_start_status(struct aw_tools *t, int interval_ms);
/* The tool-workers' background tasks at the last ask (0 if unknown). */
int aw_tools_background_tasks(struct aw_tools *t);

/* Executes tool |name|; always fills |out|. */
void aw_tools_execute(struct aw_tools *t, const struct aw_tools_call *call, const char *tool_use_id,
                      const char *name, const json_t *input, struct aw_tool_result *out);

#endif
