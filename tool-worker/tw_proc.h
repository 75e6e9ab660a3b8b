/* tw_proc: one tool process on the tool-worker's libuv loop.
 *
 * No thread per call: the child's stdout and stderr are libuv pipes, its exit
 * a libuv process handle, its wall-clock limit a libuv timer. The input is
 * written to its stdin, then stdin is closed. Output beyond the cap, the
 * wall-clock limit or tw_proc_kill() kill the whole tree: the direct child is
 * bubblewrap (or the helper), and with it die its PID namespace and every
 * process in it. All functions run on the loop thread.
 *
 * The done callback runs exactly once, after the process exited and both
 * pipes reached their end, with everything the tool-worker needs to explain
 * the outcome to the model. The proc frees itself after it returns. */
#ifndef TW_PROC_H
#define TW_PROC_H

#include "tw_sandbox.h"

#include <stddef.h>
#include <uv.h>

struct tw_proc_result {
    int exit_status;   /* when the process exited */
    int term_signal;   /* when a signal ended it (0 otherwise) */
    int timed_out;     /* the wall-clock limit killed it */
    int killed;        /* tw_proc_kill() ended it */
    int out_truncated; /* stdout or stderr passed the cap: killed */
    char *out, *err;   /* NUL-terminated, owned by the proc: copy what you keep */
    size_t out_len, err_len;
    long long elapsed_us;
};

struct tw_proc;
typedef void (*tw_proc_done)(void *ud, const struct tw_proc_result *r);

/* Starts |cmd| (tw_sandbox_build's output; its descriptors are duplicated
 * into the child, the caller still cleans |cmd| up). Returns NULL with a
 * libuv error in |*err| when the process cannot start (|done| never runs). */
struct tw_proc *tw_proc_start(uv_loop_t *loop, const struct tw_sandbox_cmd *cmd, const char *input,
                              size_t input_len, int timeout_ms, size_t output_cap,
                              tw_proc_done done, void *ud, int *err);

/* The same in two steps, for a sandbox that waits for its job
 * (TOOL_SANDBOX_WARM): tw_proc_spawn() starts |cmd| and leaves it alone
 * (nothing written, its output not read, no timer); tw_proc_run() gives it
 * |prefix| then |input| on stdin, starts the wall-clock limit and the output
 * cap, and from then on it is a proc like tw_proc_start()'s. tw_proc_run()
 * returns 0, or a libuv error (out of memory; the proc is still unused:
 * discard it). A spawned proc that exited while it waited still runs: its
 * result is what it left in its pipes. */
struct tw_proc *tw_proc_spawn(uv_loop_t *loop, const struct tw_sandbox_cmd *cmd, int *err);
int tw_proc_run(struct tw_proc *p, const char *prefix, size_t prefix_len, const char *input,
                size_t input_len, int timeout_ms, size_t output_cap, tw_proc_done done, void *ud);
/* 1 once the process is known to have exited. */
int tw_proc_exited(const struct tw_proc *p);
/* 1 once a waiting sandbox's helper said it runs (cmd->ready_fd): bubblewrap
 * has built the sandbox and no longer needs the paths it was given. */
int tw_proc_ready(const struct tw_proc *p);
/* Ends a spawned proc that never ran: its tree is killed and it frees itself
 * once gone, without a callback. NULL is fine. */
void tw_proc_discard(struct tw_proc *p);

/* Kills the tree now (cancellation); |done| still runs, with |killed| set. */
void tw_proc_kill(struct tw_proc *p);

#endif
