/* cm_loop: one libuv loop on a thread of its own, and the one safe way in.
 *
 * Everything an event-driven component owns (curl multi handles, timers,
 * invocation state) lives on the loop thread and is touched only there, so
 * none of it needs a lock. Other threads (gRPC's completion-queue thread,
 * libuv's work pool, main) hand work over with cm_loop_post(): an intrusive
 * task, no allocation, one mutex and at most one eventfd write per burst
 * (libuv coalesces uv_async_send, ../shared/research/event-driven.md).
 * With nothing to do the thread sleeps in epoll_wait: no timers of its own,
 * no polling.
 *
 * Lifecycle: cm_loop_new() -> cm_loop_start() -> ... -> cm_loop_stop() ->
 * cm_loop_free(). Handles the owner opened must be closed (on the loop
 * thread) before cm_loop_stop(): cm_loop_stop() runs the loop until it is
 * empty, so a handle left open makes it wait. */
#ifndef CM_LOOP_H
#define CM_LOOP_H

#include <uv.h>

/* A unit of work for the loop thread. Owned by the poster until |run| is
 * called; |run| may free it. |ok| is free for the poster's use (cm_rpc puts
 * the completion's success flag there). */
struct cm_task {
    struct cm_task *next;
    void (*run)(struct cm_task *t);
    int ok;
};

struct cm_loop;

/* NULL on allocation failure. */
struct cm_loop *cm_loop_new(void);
/* Starts the loop thread. 0 or CM_EIO. */
int cm_loop_start(struct cm_loop *l);
/* The libuv loop, for handles opened on the loop thread (or before start). */
uv_loop_t *cm_loop_uv(struct cm_loop *l);
/* 1 when called on the loop thread. */
int cm_loop_is_loop_thread(const struct cm_loop *l);
/* Queues |t| to run on the loop thread, in order. Safe from any thread.
 * Once cm_loop_stop() has begun, |t| is dropped (never run). */
void cm_loop_post(struct cm_loop *l, struct cm_task *t);
/* Runs fn(arg) on the loop thread and waits for it to return. Not from the
 * loop thread itself (that would deadlock): there it calls fn directly. */
void cm_loop_call(struct cm_loop *l, void (*fn)(void *arg), void *arg);
/* Closes the wake-up handle, lets the loop run until no handle is left and
 * joins the thread. Idempotent. */
void cm_loop_stop(struct cm_loop *l);
/* Stops if needed and frees. NULL is fine. */
void cm_loop_free(struct cm_loop *l);

#endif
