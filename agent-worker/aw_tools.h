/* aw_tools: the agent-worker's view of the tool-workers.
 *
 * TOOL_WORKERS may name several replicas, or a DNS name standing for many;
 * different replicas may offer different tools. Each replica is a channel of
 * its own and is asked for its tools (ListTools); the model sees the union
 * as one Bedrock toolConfig. A round (resolve the names again, list every
 * replica) runs when an invocation asks for the tools and the last round is
 * older than |refresh_ms|, or one second while a replica is missing or down:
 * nothing wakes the process while nobody invokes.
 *
 * Each call goes to a replica that offers the tool, round-robin over those
 * that answered last, as a child of the invocation's gRPC call (a client that
 * goes away cancels the tool too). A busy replica (RESOURCE_EXHAUSTED) or one
 * that cannot be reached sends the call to the next; one that dies during the
 * call does so only for tools the worker declared idempotent. Otherwise the
 * model gets an error result that says what happened: failures never escape
 * as errors. */
#ifndef AW_TOOLS_H
#define AW_TOOLS_H

#include "aw_agent.h"
#include "cm_addr.h"

#include <jansson.h>
#include <uv.h>

struct aw_tools;
struct cm_rpc_acall;
struct cm_rpc_events;
struct cm_rpc_pending;

/* |targets| as cm_rpc_client_new takes them. NULL with |err| on a bad target. */
struct aw_tools *aw_tools_new(const char *targets, int call_timeout_ms, int refresh_ms,
                              int max_msg_bytes, char *err, size_t errlen);
void aw_tools_free(struct aw_tools *t);
/* Spans a tool-worker sends back with its answer (signed export: it cannot
 * sign) are queued on |otel| (NULL: dropped). Before the first call; |t|
 * NULL is fine. */
struct cm_otel;
void aw_tools_set_otel(struct aw_tools *t, struct cm_otel *otel);

/* ---- on the loop thread ---- */

/* Lists the tools at once (wait-for-ready, 2 s deadline) and every
 * |refresh_ms| after, as asynchronous calls on |ev|. */
void aw_tools_bind(struct aw_tools *t, struct cm_rpc_events *ev, uv_loop_t *loop);
/* No more listings; cancels the one in flight (shutdown). */
void aw_tools_stop(struct aw_tools *t);

/* The current toolConfig (a new reference; json_decref it) or NULL when no tool
 * is known. Never waits: starts a listing in the background when one is due. */
json_t *aw_tools_config(struct aw_tools *t);

/* An invocation that arrives before the first listing finished waits for it
 * (a cold start where every process starts at once), holding no thread. */
struct aw_tools_waiter {
    struct aw_tools_waiter *next;
    int queued;
    void (*ready)(struct aw_tools_waiter *w);
};
/* 0: the first listing is done, go on; 1: |w->ready| runs once it is. */
int aw_tools_wait_listed(struct aw_tools *t, struct aw_tools_waiter *w);
void aw_tools_unwait(struct aw_tools *t, struct aw_tools_waiter *w);

struct aw_tools_call {
    struct cm_rpc_acall *aparent; /* the invocation's server call: its cancellation and
                                   * deadline reach the tool */
    const char *request_id, *session_id, *traceparent;
};

/* |res| is borrowed for the duration of the call. */
typedef void (*aw_tools_done)(void *ud, struct aw_tool_result *res);

struct aw_tools_exec;
/* Starts tool |name|. 0: |done| runs once with the result (cancel with
 * aw_tools_exec_cancel(*exec), valid until |done| ran; |done| still runs).
 * Otherwise the result (an error the model can read) is in |out| at once and
 * |done| never runs. */
int aw_tools_execute_async(struct aw_tools *t, const struct aw_tools_call *call,
                           const char *tool_use_id, const char *name, const json_t *input,
                           aw_tools_done done, void *ud, struct aw_tools_exec **exec,
                           struct aw_tool_result *out);
/* NULL is fine. */
void aw_tools_exec_cancel(struct aw_tools_exec *x);

/* ---- routing, no I/O (unit-tested) ---- */
struct aw_tools_candidate {
    int serves; /* offers the tool */
    int up;     /* answered its last listing or call */
    int gone;   /* no longer resolved */
    int tried;  /* this call was already sent there */
};
/* The replica to send a call to: an untried one that serves the tool, those
 * that are up first, round-robin from |*rr| (advanced). -1 when none. */
int aw_tools_pick(const struct aw_tools_candidate *c, int n, unsigned *rr);
enum aw_tools_after {
    AW_TOOLS_DONE,        /* the answer (or the error) is final */
    AW_TOOLS_TRY_ANOTHER, /* never ran, or safe to run again: next replica */
    AW_TOOLS_LOST         /* the worker died mid-call and the tool is not idempotent */
};
/* What a call's status means for routing. */
enum aw_tools_after aw_tools_after(int code, const char *details, int idempotent);

#endif
