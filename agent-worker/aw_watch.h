/* aw_watch: the background tasks of every tool-worker replica, as events.
 *
 * /ping says HealthyBusy while any tool-worker runs background work. Instead
 * of asking every replica every second, the agent-worker holds one
 * WatchStatus stream per replica; a replica sends its count when it changes
 * and its stream ends if it dies (its count then drops to 0 and the watch is
 * opened again, waiting for the replica to come back). The sum is reported
 * whenever it changes.
 *
 * Replicas are found as cm_addr_replicas() expands TOOL_WORKERS. Names (dns:,
 * compose --scale) are resolved again every |interval_ms| off the loop, on
 * libuv's work pool; numeric addresses need no timer at all, so an idle
 * agent-worker with watches open does not wake up.
 *
 * Everything runs on the loop thread. */
#ifndef AW_WATCH_H
#define AW_WATCH_H

#include <uv.h>

struct cm_rpc_events;
struct aw_watch;

/* Starts watching. |on_sum| runs on the loop whenever the sum changes. NULL
 * on allocation failure. */
struct aw_watch *aw_watch_start(const char *targets, int interval_ms, int max_msg_bytes,
                                struct cm_rpc_events *ev, uv_loop_t *loop,
                                void (*on_sum)(int sum, void *ud), void *ud);
/* Ends every watch; the watcher frees itself once the last stream and timer
 * are gone (the loop and |ev| must still run until then). NULL is fine. */
void aw_watch_stop(struct aw_watch *w);

#endif
