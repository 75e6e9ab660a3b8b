/* gw_http: the HTTP/1.1 server (libmicrohttpd) in front of the agent-workers.
 *
 * A couple of libmicrohttpd threads in epoll mode serve every connection.
 * Nothing blocks them: an invocation suspends its connection while its gRPC
 * call runs on gw_invoke's loop, and is resumed when there is something to
 * write. /ping reads what gw_health keeps, so agent work cannot stall it; a
 * WebSocket session (gw_wss) runs on a thread of its own.
 *
 * Routes: GET|HEAD /ping, POST /invocations, GET /ws. Anything else: 404 or
 * 405 (with Allow), always with a JSON body. An invocation's caps are checked
 * as soon as its headers are in, before its body is read: a Content-Length
 * over |max_body| gets 413, and 503 + Retry-After when the invocation slots
 * or the body budget (|max_inflight_body| bytes across all connections) are
 * taken; a chunked body takes budget as it comes. A request must be read in
 * full within |request_timeout_s| (gw_conns). A JSON answer is one unary Invoke, a stream one
 * InvokeStream; a client that hangs up (gw_hangup) cancels the call, and the agent-worker then
 * aborts its model request and its tool calls. A stream with nothing to send for |sse_keepalive_s|
 * sends a comment line. The idle timeout applies only between requests of a keep-alive connection.
 * A call that arrives before the agent-worker is reachable (all processes start at once) waits for
 * it up to |agent_ready_wait_ms|; before the agent-worker was first reached /ping says Healthy
 * (invocations wait for it). */
#ifndef GW_HTTP_H
#define GW_HTTP_H

#include <stddef.h>

struct cm_otel;
struct cm_metrics;

#include "cm_rpc.h"

struct gw_http;

/* The agent-worker methods the gateway calls: create its client with these.
 * The last, ExportSpans, is main's (signed span export goes through the
 * agent-worker). */
extern const struct cm_rpc_method gw_http_agent_methods[];
#define GW_HTTP_N_AGENT_METHODS 4
#define GW_HTTP_EXPORT_SPANS (&gw_http_agent_methods[3])

struct gw_http_config {
    const char *host; /* "0.0.0.0" */
    int port;         /* 0 = any free port */
    size_t max_body;
    size_t max_inflight_body; /* request body bytes held across all connections */
    int request_timeout_s;    /* headers and body of a request must arrive within it */
    int max_connections;      /* beyond: GW_CONNS_RESERVE more, for /ping only */
    int max_invocations;      /* running at once; beyond: 503 + Retry-After at once */
    int invoke_timeout_ms;
    int stream_timeout_ms;
    int idle_timeout_s;
    size_t log_body_bytes;                     /* of a request body logged at DEBUG */
    int health_interval_ms, health_timeout_ms; /* the agent-worker health poller */
    size_t ws_max_message;      /* largest WebSocket message accepted (1009 beyond) */
    int ws_idle_timeout_s;      /* a WebSocket with no message and no invocation: closed */
    const char *ws_origins;     /* browser Origins allowed on /ws ("" none, "*" any) */
    int sse_keepalive_s;        /* ": keep-alive" comment after this long without an event */
    int agent_ready_wait_ms;    /* how long an invocation waits for an unreachable agent-worker */
    int http_threads;           /* libmicrohttpd threads (epoll) serving every connection */
    struct cm_otel *otel;       /* spans (NULL: none); outlives the server */
    struct cm_metrics *metrics; /* counters (NULL: none); outlives the server */
};

/* Starts serving. |agent| must outlive the server. NULL with |err| on failure. */
struct gw_http *gw_http_start(const struct gw_http_config *cfg, struct cm_rpc_client *agent,
                              char *err, size_t errlen);
int gw_http_port(const struct gw_http *h);
/* Stops accepting, waits up to |grace_ms| for in-flight invocations, then
 * closes everything and frees. NULL is fine. */
void gw_http_stop(struct gw_http *h, int grace_ms);

#endif
