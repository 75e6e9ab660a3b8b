/* gw_invoke: the gateway's invocations as events, not threads.
 *
 * libmicrohttpd runs in epoll mode on a couple of threads; an invocation
 * suspends its connection (MHD_suspend_connection) and its gRPC call runs on
 * one libuv loop (cm_loop + asynchronous cm_rpc). When the answer, the first
 * event, or the next event arrives, the loop resumes the connection and MHD
 * writes it. So thousands of waiting invocations cost a small struct each,
 * a burst of new connections costs no thread starts, and nothing wakes while
 * the model thinks. A stream with nothing to send for |keepalive_s| gets a
 * ": keep-alive" comment. A client that hangs up (seen by gw_hangup, since a
 * suspended connection is not watched by MHD) cancels the call.
 *
 * Threads: gw_call_start/answer/done and the SSE reader run on MHD's threads;
 * everything else of a call runs on the loop. A call belongs to both sides
 * and is freed when both have let go. */
#ifndef GW_INVOKE_H
#define GW_INVOKE_H

#include "cm_rpc.h"

#include <microhttpd.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct gw_hangup;
struct cm_otel;
struct gw_invoke;
struct gw_call;

struct gw_invoke_config {
    struct cm_rpc_client *agent;
    const struct cm_rpc_method *invoke, *stream; /* Invoke (JSON), InvokeStream (SSE) */
    struct gw_hangup *hangup;                    /* NULL: hang-ups are not noticed */
    int invoke_timeout_ms, stream_timeout_ms;
    int ready_wait_ms; /* how long a call waits for an agent-worker not reachable yet */
    int keepalive_s;
    struct cm_otel *otel; /* invoke_agent spans (NULL: none) */
    /* Gauges of the calls running, SSE and JSON (NULL: not counted). */
    struct cm_series *active_sse, *active_json;
};

/* Starts the loop. NULL on failure. */
struct gw_invoke *gw_invoke_new(const struct gw_invoke_config *cfg);
/* The gateway is stopping (thread-safe): from now on a call that ends
 * CANCELLED or UNAVAILABLE (the agent-worker, stopping at the same moment
 * under s6, may cancel first) tells its client the runtime is shutting down. */
void gw_invoke_drain(struct gw_invoke *gi);
/* Cancels every running call (thread-safe) and waits at most |wait_ms| until
 * the loop let go of all of them. Returns how many were still running. */
int gw_invoke_cancel_all(struct gw_invoke *gi, int wait_ms);
/* After MHD has stopped. NULL is fine. */
void gw_invoke_free(struct gw_invoke *gi);

struct gw_call_request {
    const char *prompt, *session, *request_id;
    /* The call takes |prompt_owner|, which keeps |prompt| alive (a prompt
     * may be 100 MB: it is not copied), and releases it with
     * |prompt_release| (may be NULL) once the request is packed for the
     * agent-worker. */
    void *prompt_owner;
    void (*prompt_release)(void *owner);
    int stream;                                    /* SSE: every event; else the JSON answer only */
    long long max_total_tokens, max_output_tokens; /* the body's budgets, 0: none */
    int client_request_id;          /* |request_id| came from the client (retries may repeat it) */
    const struct cm_rpc_meta *meta; /* forwarded context, copied */
    size_t n_meta;
};

/* From MHD's access handler: suspends |c| and starts the call on the loop.
 * NULL on allocation failure (|c| is not suspended then). A prompt owner is
 * taken in both cases. */
struct gw_call *gw_call_start(struct gw_invoke *gi, struct MHD_Connection *c,
                              const struct gw_call_request *r);
/* Puts the call's trace and span ids into this thread's log context (after
 * cm_log_set_context). NULL is fine. */
void gw_call_log_trace(const struct gw_call *call);

enum gw_answer_kind {
    GW_ANSWER_WAIT, /* nothing yet: |c| was suspended again */
    GW_ANSWER_JSON, /* |status| and |body| (taken by the caller) */
    GW_ANSWER_SSE,  /* 200 with gw_call_sse_read/gw_call_sse_free as the body */
    GW_ANSWER_GONE, /* the client left: close the connection */
};

struct gw_answer {
    enum gw_answer_kind kind;
    int status;
    char *body;
};

/* From the access handler once MHD calls it again after a resume. */
void gw_call_answer(struct gw_call *call, struct MHD_Connection *c, struct gw_answer *a);
/* The SSE body (MHD content reader and its free callback; |cls| is the call).
 * sse_free lets go of the call (MHD's side). */
ssize_t gw_call_sse_read(void *cls, uint64_t pos, char *buf, size_t max);
void gw_call_sse_free(void *cls);
/* MHD's side lets go of a call answered with JSON or GONE, or whose request
 * ended before an answer. */
void gw_call_done(struct gw_call *call);
/* Bytes of SSE body handed to MHD so far. */
size_t gw_call_sent(const struct gw_call *call);

#endif
