/* cm_status: a process's background-task count, pushed to whoever watches.
 *
 * /ping must say HealthyBusy while any worker runs background work. Asking
 * every second (a poll per process per second) kept three idle processes
 * awake; instead each process serves WatchStatus, a server-streaming call
 * that sends the count at once and again only when it changes. A watch costs
 * nothing while nothing changes, and a peer that dies ends its stream at once.
 *
 * The hub lives on a cm_loop; cm_status_set() may be called from any thread
 * (a tool's thread, say) and wakes the loop at most once per burst of changes. */
#ifndef CM_STATUS_H
#define CM_STATUS_H

struct cm_loop;
struct cm_rpc_server;
struct cm_rpc_events;
struct cm_rpc_method;

struct cm_status;

struct cm_status *cm_status_new(struct cm_loop *loop);
/* After cm_status_close() and once the loop has stopped. NULL is fine. */
void cm_status_free(struct cm_status *s);

/* Serves |m| (StatusRequest -> stream StatusResponse) on |srv| through |ev|.
 * Before the server starts. 0 or a cm_err code. */
int cm_status_serve(struct cm_status *s, struct cm_rpc_server *srv, struct cm_rpc_events *ev,
                    const struct cm_rpc_method *m);
/* The count now. Any thread; watchers hear it if it differs from what they
 * last heard. */
void cm_status_set(struct cm_status *s, int active_background_tasks);
int cm_status_get(const struct cm_status *s);
/* Ends every watch and refuses new ones. Watches never end by themselves, so
 * call this before the server's shutdown waits for its calls. Any thread but
 * the loop's (it waits for the loop). */
void cm_status_close(struct cm_status *s);

#endif
