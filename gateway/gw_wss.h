/* gw_wss: WebSocket sessions on GET /ws.
 *
 * The same invocations as POST /invocations, over a WebSocket: each text (or
 * binary) message is one invocation's JSON body, its events come back as text
 * messages in the SSE events' JSON, one invocation at a time per socket. A
 * socket that closes cancels its invocation. Each session runs on a thread of
 * its own (256 KiB stack), sleeping in poll() on its socket and an eventfd;
 * while an invocation runs, a second thread follows its InvokeStream call.
 *
 * Caps: messages beyond |max_message| close the socket with 1009; the
 * gateway's invocation slots (|slot_take|) count WebSocket invocations too.
 * What is queued for a client that does not read (pongs, events) is capped
 * (32 MiB, 1024 messages; beyond: 1008, the invocation cancelled); a socket
 * that takes nothing for 10 s (1 s once the gateway stops) is dropped
 * without a close, which could never be sent; a socket idle for
 * |idle_timeout_ms| closes with 1001.
 * Errors: a bad handshake gets 400 with a JSON body, an upgrade while the
 * gateway stops 503; an invocation that cannot run gets an error event
 * ({"error":..., "type":...}) and the socket stays open, unless the
 * agent-worker failed (then it closes with 1011). */
#ifndef GW_WSS_H
#define GW_WSS_H

#include <stddef.h>
#include <stdint.h>

#include <microhttpd.h>

#include "cm_rpc.h"

struct gw_wss;

/* After gw_wss_shutdown and gw_wss_cancel, every session ends within this:
 * its close handshake's wait (2 s) plus the linger of its socket. */
#define GW_WSS_STOP_MS 3000

struct gw_wss_config {
    struct cm_rpc_client *agent;               /* outlives the gw_wss */
    const struct cm_rpc_method *stream_method; /* InvokeStream */
    int stream_timeout_ms;
    int agent_ready_wait_ms; /* how long an invocation waits for an unreachable agent-worker */
    size_t max_message;
    int idle_timeout_ms; /* no message and no invocation this long: closed with 1001; 0 never */
    const char *origins; /* GATEWAY_WS_ORIGINS: browser origins allowed on /ws */
    /* The gateway's invocation slots: take returns 1 with a slot, 0 at the
     * cap (or while the gateway stops); give returns one. Thread-safe. */
    int (*slot_take)(void *ud);
    void (*slot_give)(void *ud);
    void *slot_ud;
};

/* NULL when out of memory. */
struct gw_wss *gw_wss_new(const struct gw_wss_config *cfg);

/* Answers a GET /ws request on |c|: 101 and a session, or an error with a
 * JSON body. |*status| gets the status sent, for the access line. */
enum MHD_Result gw_wss_answer(struct gw_wss *s, struct MHD_Connection *c, int *status);

/* Shutdown, in this order: gw_wss_shutdown refuses new sessions and new
 * invocations and wakes the open sessions: an idle one closes with 1001 at
 * once, one running an invocation when it ends (its slot is part of the
 * gateway's grace); gw_wss_cancel cancels the invocations still running
 * (their sockets get an error event, then 1001); gw_wss_wait waits up to |ms|
 * for every session to end (0 if they did); gw_wss_free, after
 * libmicrohttpd stopped, frees (NULL is fine; a session that never ended
 * keeps it, so it is then left to the exiting process). */
void gw_wss_shutdown(struct gw_wss *s);
/* WebSocket sessions open now in this process (a metrics gauge reads it;
 * |ignored| may be anything: the count outlives every gw_wss). */
int64_t gw_wss_sessions(void *ignored);
void gw_wss_cancel(struct gw_wss *s);
int gw_wss_wait(struct gw_wss *s, int ms);
void gw_wss_free(struct gw_wss *s);

#endif
