/* tw_runner: executes tool calls on the tool-worker's libuv loop.
 *
 * In-process tools answer at once; sandboxed tools become a process (tw_proc)
 * in the session's workspace; the test tools are timers. No thread per call
 * and nothing polled: a call that waits on its process costs nothing.
 * TOOL_WORKER_MAX_CALLS processes run at once; beyond that a call is refused
 * with CM_EBUSY (RESOURCE_EXHAUSTED on the wire), so the agent-worker can try
 * another replica instead of queueing here. A tool declared "background"
 * answers at once and goes on running; it counts as a background task (what
 * makes /ping say HealthyBusy) until it ends, and its outcome is logged.
 * Every function runs on the loop thread. */
#ifndef TW_RUNNER_H
#define TW_RUNNER_H

#include "tw_sandbox.h"
#include "tw_tools.h"
#include "tw_workspace.h"

#include <uv.h>

struct tw_runner_config {
    uv_loop_t *loop;
    const struct tw_catalog *catalog;
    struct tw_sandbox *sandbox;                 /* NULL: sandboxed tools are refused */
    struct tw_workspaces *workspaces;           /* needed with a sandbox */
    int max_calls;                              /* processes at once */
    void (*on_background)(int count, void *ud); /* every change of the count */
    void *background_ud;
    /* A tool process the worker ended: |reason| is "timeout" (wall clock),
     * "output" (the output cap), "cpu" (its CPU seconds, SIGXCPU), "signal"
     * (any other signal: a crash, the kernel) or "cancelled" (the caller
     * left, or the worker stops). NULL: not reported. */
    void (*on_kill)(const char *reason, void *ud);
    void *kill_ud;
    /* Sandboxes set up ahead of the calls that use them (tw_warm): at most
     * |warm_max| wait, each at most |warm_idle_ms|; 0: none. |warm_prime_ms|
     * after start, one for the first session's first call (0: none). */
    int warm_max, warm_idle_ms, warm_prime_ms;
    /* A tool process started: |how| is "warm" (its sandbox was waiting) or
     * "cold" (set up for this call). NULL: not reported. */
    void (*on_start)(const char *how, void *ud);
    void *start_ud;
};

struct tw_runner;
struct tw_call;

/* |res| is valid during the callback only. */
typedef void (*tw_call_done)(void *ud, const struct tw_result *res);

struct tw_runner *tw_runner_new(const struct tw_runner_config *cfg);
/* Kills what still runs (background tasks included) and frees once the
 * processes are gone; the loop must keep running until they are. From this
 * call on the runner no longer touches the workspace set, so it may be freed
 * right after. NULL is fine. */
void tw_runner_free(struct tw_runner *r);

/* Starts tool |name|. Returns 0 and |done| runs exactly once, possibly
 * before this returns (in-process tools, input errors, unknown tools); or
 * CM_EBUSY (at capacity) / CM_ENOMEM, and |done| never runs. |*call| (may be
 * NULL) is the handle for tw_call_cancel() until |done| runs. */
int tw_runner_start(struct tw_runner *r, const char *name, const char *input_json,
                    const char *session_id, tw_call_done done, void *ud, struct tw_call **call);
/* The caller went away: the process tree is killed, |done| runs with
 * |cancelled| set. */
void tw_call_cancel(struct tw_call *c);

int tw_runner_background(const struct tw_runner *r);
int tw_runner_active(const struct tw_runner *r);
/* Sandboxes waiting for a call now, and how many of them are built. */
int tw_runner_warm(const struct tw_runner *r);
int tw_runner_warm_ready(const struct tw_runner *r);

#endif
