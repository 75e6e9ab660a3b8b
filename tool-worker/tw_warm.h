/* tw_warm: sandboxes set up before the call that uses them
 * (TOOL_SANDBOX_WARM).
 *
 * Setting up bubblewrap (user, PID, mount and network namespaces, a dozen
 * mounts) is most of what a sandboxed call costs. A warm sandbox has done
 * that already and sleeps in read(2) until its job arrives on stdin
 * (tw_job.h). Each serves exactly one call and is never reused, so nothing
 * of one call (its /tmp, its processes) reaches another.
 *
 * A sandbox is made around one session's workspace and one tool directory
 * (a manifest tool's /tool), so the pool is keyed by both. When a call takes
 * one, or finds none, the runner asks for another like it at once: agents
 * call tools again and again within a session (on AgentCore a session has
 * its microVM to itself), and the next call finds it ready or half-way. A
 * call without a session takes one made around a fresh workspace of its own,
 * and so does a session's first call, once that sandbox is built (its
 * helper says so): the fresh workspace becomes the session's (renamed; the
 * sandbox that has it mounted sees it all the same, but bubblewrap, while
 * building, binds it by name).
 *
 * At most |max| wait at a time (a new one displaces the oldest), each at
 * most |idle_ms| (one timer, armed for the next expiry only: nothing runs
 * while nothing expires). A waiting sandbox holds its workspace, so the
 * workspace set never removes it from under it. Loop thread only. */
#ifndef TW_WARM_H
#define TW_WARM_H

#include "tw_proc.h"
#include "tw_sandbox.h"
#include "tw_workspace.h"

#include <stddef.h>
#include <uv.h>

#define TW_WARM_MAX 64

struct tw_warm_config {
    uv_loop_t *loop;
    const struct tw_sandbox *sandbox;
    struct tw_workspaces *workspaces;
    int max;     /* waiting at most (0..TW_WARM_MAX); 0: every call starts its own */
    int idle_ms; /* how long one waits unused before it is ended */
    /* After this long, one is made around a fresh workspace for whichever
     * session calls first (0: only once calls have come). Off the start-up
     * path: the worker's first moments belong to the first /ping. */
    int prime_ms;
};

struct tw_warm;

/* NULL when out of memory. */
struct tw_warm *tw_warm_new(const struct tw_warm_config *cfg);
/* Ends every waiting sandbox and gives its workspace back now; the processes
 * die on their own (the loop must run until they are gone). NULL is fine. */
void tw_warm_free(struct tw_warm *w);

/* A sandbox waiting for a call of |session| ("" or NULL: none) with
 * |tool_dir| (NULL: none), out of the pool: ready for tw_proc_run() with
 * tw_sandbox_job_message(). Its workspace hold passes to the caller, the
 * path copied into |workspace| (release it with tw_workspace_release()).
 * For a session without a workspace yet, one made around a fresh workspace
 * does, that workspace becoming the session's (tw_workspace_adopt;
 * |*adopted| set: the caller may want another such one made). NULL when
 * none waits (or the one that waited has died: it is dropped). */
struct tw_proc *tw_warm_take(struct tw_warm *w, const char *session, const char *tool_dir,
                             char *workspace, size_t len, int *adopted);

/* Starts one for the next call like this, unless one waits already. Never
 * fails visibly: without it, the next call starts its own. */
void tw_warm_fill(struct tw_warm *w, const char *session, const char *tool_dir);

/* Sandboxes waiting now, and how many of them are built (a new session's
 * first call takes only one of those). */
int tw_warm_waiting(const struct tw_warm *w);
int tw_warm_ready(const struct tw_warm *w);

#endif
