/* gw_health: what /ping says, kept off the /ping path.
 *
 * One thread holds the agent-worker's WatchStatus stream: the count of
 * background tasks arrives at once and then only when it changes, so the
 * thread sleeps while nothing happens, and /ping only reads two fields under a
 * lock. A stream that ends, or an agent-worker not reachable within
 * |timeout_ms|, is a failed check; after GW_HEALTH_DOWN_CHECKS in a row the
 * status is Unhealthy, and checks go on |interval_ms| apart. Before the
 * agent-worker is first reached the status is Healthy: invocations wait for
 * it (see gw_http). time_of_last_update moves only when the status changes. */
#ifndef GW_HEALTH_H
#define GW_HEALTH_H

#define GW_HEALTH_DOWN_CHECKS 3

struct cm_rpc_client;
struct cm_rpc_method;
struct gw_health;

/* |watch| is the agent-worker's WatchStatus method; |agent| must outlive the
 * watcher. NULL when the thread cannot start. */
struct gw_health *gw_health_start(struct cm_rpc_client *agent, const struct cm_rpc_method *watch,
                                  int interval_ms, int timeout_ms);
/* "Healthy", "HealthyBusy" or "Unhealthy" (static strings) and when it
 * became so (unix seconds). Never blocks on the agent-worker. */
const char *gw_health_status(struct gw_health *h, long long *since);
/* Stops the thread (cancelling the watch) and frees. NULL is fine. */
void gw_health_stop(struct gw_health *h);

#endif
