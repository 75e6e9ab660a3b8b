/* gw_hangup: learns that HTTP clients hung up, without polling.
 *
 * A connection thread that waits on the agent-worker cannot also watch its
 * socket. Instead of waking every 100 ms to look (which cost CPU for every
 * second an invocation waits on the model), each waiting connection registers
 * its socket here; one thread sleeps in epoll_wait on all of them (EPOLLRDHUP,
 * one-shot) and runs the connection's callback when its client goes. The
 * callback runs on that thread, under the watcher's lock, so once
 * gw_hangup_unwatch() returns it will never run again.
 *
 * The watcher registers a dup() of the socket, owned here, so a descriptor
 * number reused after the connection closed is never confused with it. */
#ifndef GW_HANGUP_H
#define GW_HANGUP_H

#include <stdint.h>

struct gw_hangup;

/* NULL when epoll, the wake-up descriptor or the thread cannot be had. */
struct gw_hangup *gw_hangup_new(void);
/* Stops the thread and frees; every watch must be gone. NULL is fine. */
void gw_hangup_free(struct gw_hangup *w);

/* Watches |fd| (borrowed). |cb| (quick, thread-safe: e.g. a gRPC cancel)
 * runs when the peer closes its side (|reset| 0: a FIN, which may be a
 * half-close of a client that still reads) or the connection fails (|reset|
 * 1: a reset, or both sides closed). It returns 1 to go on watching for a
 * failure only, 0 to end the watch. Returns an id > 0, or 0 when the socket
 * cannot be watched (the caller then gives up on the hangup check). */
uint64_t gw_hangup_watch(struct gw_hangup *w, int fd, int (*cb)(void *ud, int reset), void *ud);
/* Ends the watch |id| (0 is fine). After return, its callback never runs. */
void gw_hangup_unwatch(struct gw_hangup *w, uint64_t id);

#endif
