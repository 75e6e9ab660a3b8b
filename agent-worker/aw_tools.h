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
 * |interval_ms| (a thread of its own; aw_tools_free stops it). Every replica
 * is asked, not whichever one round-robin picks: names are resolved on each
 * round (compose --scale adds and removes replicas) and the counts summed. */
int aw_tools_start_status(struct aw_tools *t, int interval_ms);
/* The background tasks of all replicas at the last round (a replica that did
 * not answer counts 0). */
int aw_tools_background_tasks(struct aw_tools *t);

/* ---- replica expansion, no I/O (unit-tested) ---- */

#define AW_TOOLS_MAX_REPLICAS 64
#define AW_TOOLS_ADDR_MAX 128

/* Resolves |host| into up to |cap| numeric addresses ("10.0.0.7", "::1");
 * returns how many. */
typedef int (*aw_tools_resolve_fn)(const char *host, char (*out)[AW_TOOLS_ADDR_MAX], int cap,
                                   void *ud);
/* The replicas behind |targets| (as cm_rpc_client_new takes them), one gRPC
 * target each: numeric addresses and unix sockets as listed, names (plain or
 * dns:) resolved with |resolve|. Duplicates are dropped; at most |cap|.
 * Returns the count. */
int aw_tools_replicas(const char *targets, aw_tools_resolve_fn resolve, void *ud,
                      char (*out)[AW_TOOLS_ADDR_MAX], int cap);

/* Executes tool |name|; always fills |out|. */
void aw_tools_execute(struct aw_tools *t, const struct aw_tools_call *call, const char *tool_use_id,
                      const char *name, const json_t *input, struct aw_tool_result *out);

#endif
