/* tw_workspace: one directory per session, where the file tools and shell
 * work (/workspace inside the sandbox).
 *
 * A session's workspace is TOOL_WORKSPACE_DIR/<first 32 hex digits of the
 * SHA-256 of the session id> (no session id ever becomes a path), owned by
 * the tools' uid, mode 0700. It lives as long as the session: AgentCore ends
 * an idle session after 15 minutes, so a workspace unused for
 * TOOL_WORKSPACE_TTL_S is removed (one timer, armed for the next expiry
 * only: nothing runs while nothing expires), as is the least recently used
 * one when TOOL_WORKSPACE_MAX are open. A call without a session id gets a
 * workspace of its own, removed when the call ends. Removal runs on libuv's
 * work pool, never in a workspace a call is using. Loop thread only. */
#ifndef TW_WORKSPACE_H
#define TW_WORKSPACE_H

#include <stddef.h>
#include <sys/types.h>
#include <uv.h>

#define TW_WORKSPACE_PATH_MAX 512

struct tw_workspaces;

struct tw_workspaces *tw_workspaces_new(uv_loop_t *loop, const char *root, uid_t uid, gid_t gid,
                                        int chown_to, int ttl_s, size_t max, char *err,
                                        size_t errlen);
/* Cancels the timer; directories stay (a restarted worker serves the same
 * sessions). Removals already queued finish first. NULL is fine. */
void tw_workspaces_free(struct tw_workspaces *w);

/* The workspace of |session| ("" or NULL: a fresh one for this call),
 * created if needed, in |path|; held until tw_workspace_release(). 0, or -1
 * with a reason in |err|. */
int tw_workspace_acquire(struct tw_workspaces *w, const char *session, char *path, size_t len,
                         char *err, size_t errlen);
void tw_workspace_release(struct tw_workspaces *w, const char *path);

/* 1 when |session| has a workspace (known, or left on disk by an earlier
 * run of the worker). */
int tw_workspace_exists(const struct tw_workspaces *w, const char *session);

/* Makes the fresh workspace at |path| (one acquired without a session and
 * held once, by the caller) the workspace of |session|, which must not have
 * one: the directory is renamed, the hold stays, and |path| (|len| bytes)
 * gets the new name. A sandbox set up around it before the session was known
 * can then serve the session's first call. 0, or -1 (nothing changed). */
int tw_workspace_adopt(struct tw_workspaces *w, const char *session, char *path, size_t len);

/* Workspaces known now (tests, status). */
size_t tw_workspaces_count(const struct tw_workspaces *w);

#endif
