/* cm_rpc: the project's only door to gRPC core (libgrpc 1.51, C API).
 *
 * Model (../shared/research/grpc-core-c.md §3): a server has one shared
 * notification queue per pool; N worker threads block on it; each accepted
 * call gets a private pluck queue so its handler runs in plain blocking style.
 * Health checks and unknown methods have a pool of their own, so they never
 * queue behind long agent calls. Clients keep one channel per target (shared by
 * all threads) and one pluck queue per thread.
 *
 * Messages are protobuf-c; callers never see slices or byte buffers. Status
 * codes are gRPC's numbers, renamed so that callers need no grpc header.
 *
 * Process rules: cm_rpc_init() once before any other call, after every fork()
 * that the process will make without exec (gRPC is not fork-safe), with
 * SIGINT/SIGTERM already blocked so gRPC's threads inherit the mask. */
#ifndef CM_RPC_H
#define CM_RPC_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

enum cm_rpc_code {
    CM_RPC_OK = 0,
    CM_RPC_CANCELLED = 1,
    CM_RPC_UNKNOWN = 2,
    CM_RPC_INVALID_ARGUMENT = 3,
    CM_RPC_DEADLINE_EXCEEDED = 4,
    CM_RPC_NOT_FOUND = 5,
    CM_RPC_PERMISSION_DENIED = 7,
    CM_RPC_RESOURCE_EXHAUSTED = 8,
    CM_RPC_FAILED_PRECONDITION = 9,
    CM_RPC_ABORTED = 10,
    CM_RPC_UNIMPLEMENTED = 12,
    CM_RPC_INTERNAL = 13,
    CM_RPC_UNAVAILABLE = 14,
    CM_RPC_UNAUTHENTICATED = 16,
};

/* "OK", "UNAVAILABLE", ...; never NULL. */
const char *cm_rpc_code_name(int code);

enum cm_rpc_kind { CM_RPC_UNARY, CM_RPC_SERVER_STREAM };

/* A method as both sides see it. |path| is "/package.Service/Method". */
struct cm_rpc_method {
    const char *path;
    const ProtobufCMessageDescriptor *in;
    const ProtobufCMessageDescriptor *out;
    enum cm_rpc_kind kind;
};

extern const struct cm_rpc_method cm_rpc_health_check_method;

/* Metadata keys used across the project (lowercase, as gRPC requires). */
#define CM_RPC_MD_REQUEST_ID "x-agentcore-request-id"
#define CM_RPC_MD_SESSION_ID "x-agentcore-session-id"
#define CM_RPC_MD_TRACEPARENT "traceparent"
/* The internal credential (cm_rpc_set_token): sent by every client call,
 * checked by every server, never handed to a handler. */
#define CM_RPC_MD_INTERNAL_TOKEN "x-agentcore-internal-token"
/* Trailer that classifies a failure beyond its code (e.g. "ModelError"). */
#define CM_RPC_MD_ERROR_TYPE "x-agentcore-error-type"

struct cm_rpc_meta {
    const char *key;
    const char *value;
};

struct cm_rpc_status {
    int code;
    char details[512];
    char error_type[64]; /* from the error-type trailer; "" when none */
};

/* ---- internal authentication ----
 *
 * The gRPC services are internal: only the runtime's own processes may call
 * them. Two mechanisms, one per deployment shape:
 * - one host (single container, scripts/run.sh): "unix:/path" addresses. A
 *   server makes its socket 0600 right after binding, so only processes of
 *   its uid (and root) can connect; put the socket in a directory only that
 *   uid can enter to close the moment between bind and chmod.
 * - TCP (compose, scaled tool-workers): a shared token. With a token set,
 *   every call this process makes carries it, and every call its servers
 *   accept must carry the same one (compared in constant time) or is ended
 *   with UNAUTHENTICATED and one WARN line naming the method and peer, never
 *   the value. grpc.health.v1 stays open: it reveals nothing and probes
 *   carry no token.
 * - optionally mutual TLS (cm_rpc_set_tls) on top of either.
 * Set both before creating servers or clients; they are never changed after. */

/* Copies |token| (16 to 1024 printable ASCII bytes). NULL or "" turns the
 * check off. 0, or CM_EINVAL for a token outside those bounds. */
int cm_rpc_set_token(const char *token);

/* Mutual TLS for every server and client of this process: |ca_pem| verifies
 * the peer, |cert_pem| / |key_pem| identify us (PEM text, copied). Servers
 * require and verify a client certificate; clients verify the server's
 * against its target name. NULL |ca_pem| turns TLS off. 0 or CM_ENOMEM. */
int cm_rpc_set_tls(const char *ca_pem, const char *cert_pem, const char *key_pem);

/* Refcounted library start/stop. init blocks nothing itself; see the header. */
void cm_rpc_init(void);
void cm_rpc_shutdown(void);
/* Releases the calling thread's cached client queue (threads that made calls). */
void cm_rpc_thread_done(void);

/* ---- server ---- */

struct cm_rpc_server;
struct cm_rpc_ctx;

/* Runs on a pool thread. |req| is owned by the library and freed after return.
 * The handler answers with cm_rpc_ctx_reply() (unary), cm_rpc_ctx_send()
 * (stream) or cm_rpc_ctx_fail(); a stream that returns without failing ends OK. */
typedef void (*cm_rpc_handler)(struct cm_rpc_ctx *ctx, const ProtobufCMessage *req, void *ud);

struct cm_rpc_server_config {
    const char *listen; /* "127.0.0.1:50051", "0.0.0.0:0", "unix:/path" */
    int threads;        /* worker threads = concurrent calls served */
    int max_msg_bytes;  /* receive cap; larger messages get RESOURCE_EXHAUSTED */
};

struct cm_rpc_server *cm_rpc_server_new(const struct cm_rpc_server_config *cfg);
/* At most 16 methods; before start. 0 or CM_EINVAL. */
int cm_rpc_server_add(struct cm_rpc_server *srv, const struct cm_rpc_method *m, cm_rpc_handler h,
                      void *ud);
/* The same for a short, never-blocking method served by the small pool that
 * answers health checks, so it answers even while every worker is busy. */
int cm_rpc_server_add_aux(struct cm_rpc_server *srv, const struct cm_rpc_method *m,
                          cm_rpc_handler h, void *ud);
/* Binds (SO_REUSEPORT off, so a taken port fails) and starts the pools.
 * Returns the bound port (> 0) or CM_EIO / CM_ENOMEM. */
int cm_rpc_server_start(struct cm_rpc_server *srv);
/* What grpc.health.v1.Health/Check answers: SERVING (1) or NOT_SERVING (0). */
void cm_rpc_server_set_serving(struct cm_rpc_server *srv, int serving);
/* Stops accepting, lets in-flight calls finish for up to |grace_ms|, then
 * cancels the rest and joins the pools. Idempotent. */
void cm_rpc_server_shutdown(struct cm_rpc_server *srv, int grace_ms);
/* Shuts down (grace 0) if needed and frees. NULL is fine. */
void cm_rpc_server_free(struct cm_rpc_server *srv);

/* Value of incoming metadata |key|, copied at call start (capped at 4 KiB per
 * value, 32 entries); NULL when absent. Valid until the handler returns. */
const char *cm_rpc_ctx_meta(const struct cm_rpc_ctx *ctx, const char *key);
/* The |i|-th incoming metadata entry (0-based): 1 with |key| and |value|
 * set, 0 past the last one. */
int cm_rpc_ctx_meta_at(const struct cm_rpc_ctx *ctx, int i, const char **key, const char **value);
/* 1 once the client cancelled, went away or the deadline passed. Non-blocking. */
int cm_rpc_ctx_cancelled(struct cm_rpc_ctx *ctx);
/* Milliseconds left before the caller's deadline (LLONG_MAX when none). */
long long cm_rpc_ctx_remaining_ms(const struct cm_rpc_ctx *ctx);
/* Unary answer: message and OK status in one batch. 0, or -1 if the peer is gone. */
int cm_rpc_ctx_reply(struct cm_rpc_ctx *ctx, const ProtobufCMessage *msg);
/* One stream message. 0, or -1 once the peer is gone (stop producing). */
int cm_rpc_ctx_send(struct cm_rpc_ctx *ctx, const ProtobufCMessage *msg);
/* Ends the call with |code| (not OK), details and an optional error type trailer. */
void cm_rpc_ctx_fail(struct cm_rpc_ctx *ctx, int code, const char *error_type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- client ---- */

struct cm_rpc_client;

struct cm_rpc_acall;

struct cm_rpc_call_opts {
    int timeout_ms;            /* <= 0: no deadline of its own */
    struct cm_rpc_ctx *parent; /* server call to inherit deadline and cancellation from */
    const struct cm_rpc_meta *meta;
    size_t n_meta;
    int wait_for_ready;           /* queue while the channel connects instead of failing fast */
    struct cm_rpc_acall *aparent; /* as |parent|, for an asynchronous server call */
    /* With several addresses: calls with the same key go to the same one
     * (rendezvous hashing over the addresses), unless it is unreachable
     * (then the next in that key's order, with a WARN line). NULL: round-robin. */
    const char *affinity;
};

/* |targets|: "host:port", a comma-separated list, "dns:///name:port",
 * "unix:/path". Several addresses (one channel each) are balanced
 * round-robin, or by |affinity| (cm_rpc_call_opts); a DNS name that resolves
 * to several is balanced round-robin by gRPC.
 * |methods| lists every method the client will call (copied and registered
 * once; the |path| strings must stay valid for the client's lifetime).
 * Returns NULL with a reason in |err| on a bad target. */
struct cm_rpc_client *cm_rpc_client_new(const char *targets, const struct cm_rpc_method *methods,
                                        size_t n_methods, int max_msg_bytes, char *err,
                                        size_t errlen);
void cm_rpc_client_free(struct cm_rpc_client *c);

/* Unary call. On OK returns 0 and |*resp| (free with protobuf_c_message_free_unpacked);
 * otherwise -1 with |st| filled and |*resp| NULL. */
int cm_rpc_call(struct cm_rpc_client *c, const struct cm_rpc_method *m, const ProtobufCMessage *req,
                ProtobufCMessage **resp, const struct cm_rpc_call_opts *opts,
                struct cm_rpc_status *st);

/* Server-streaming call. Open it, read with cm_rpc_stream_next() until it
 * returns 0 (end) or -1 (failure), then cm_rpc_stream_close() for the status.
 * Everything but cm_rpc_stream_cancel() must run on the thread that opened it
 * (it uses that thread's queue). */
struct cm_rpc_stream;

/* NULL (with |st|) when the call cannot even start. */
struct cm_rpc_stream *cm_rpc_stream_open(struct cm_rpc_client *c, const struct cm_rpc_method *m,
                                         const ProtobufCMessage *req,
                                         const struct cm_rpc_call_opts *opts,
                                         struct cm_rpc_status *st);
/* 1 with |*msg| (free with protobuf_c_message_free_unpacked), 0 at the end of
 * the stream, -1 on a malformed message or a failed call (see close). */
int cm_rpc_stream_next(struct cm_rpc_stream *s, ProtobufCMessage **msg);
/* The same, waiting at most |timeout_ms| (< 0: no limit): returns 2 when
 * nothing arrived in time (call again to keep waiting for the same message). */
int cm_rpc_stream_next_timed(struct cm_rpc_stream *s, ProtobufCMessage **msg, int timeout_ms);
/* Cancels the call; safe from any thread, e.g. when the HTTP client left. */
void cm_rpc_stream_cancel(struct cm_rpc_stream *s);
/* Collects the status into |st| and frees everything. Returns 0 when the
 * status is OK. NULL is fine (returns -1). */
int cm_rpc_stream_close(struct cm_rpc_stream *s, struct cm_rpc_status *st);

/* Waits until a channel of |c| is connected (asking it to connect), at most
 * |timeout_ms|. 0 when connected, -1 at the deadline. Costs one check when
 * already connected; while waiting it retries the connection every 5 ms
 * (gRPC's own backoff never goes below 100 ms), so a peer that starts a few
 * milliseconds after us is reached a few milliseconds after it listens. */
int cm_rpc_client_wait_ready(struct cm_rpc_client *c, int timeout_ms);
/* 1 when a channel of |c| is connected (asks it to connect otherwise). */
int cm_rpc_client_connected(struct cm_rpc_client *c);
/* Looks the DNS names of |c| up now, in the background (non-blocking), for a
 * client that will make session calls (cm_rpc_call_opts.affinity): its first
 * one then finds the addresses known. Otherwise the first session call looks
 * them up, waiting 200 ms at most. */
void cm_rpc_client_resolve(struct cm_rpc_client *c);
/* Makes the next connection attempt happen now instead of after gRPC's
 * backoff. Non-blocking; safe from any thread. */
void cm_rpc_client_reset_backoff(struct cm_rpc_client *c);

/* Session affinity: the rendezvous score of sending |key| (a session id) to
 * |target| ("10.0.3.5:50051"); a call goes to the reachable target with the
 * highest score, so a session keeps its worker while that one lives and only
 * its sessions move when it goes. Pure; exposed for tests. */
uint64_t cm_rpc_rendezvous(const char *key, const char *target);

/* grpc.health.v1 Check of |service| ("" = the server). Returns 1 SERVING,
 * 0 not serving, -1 on a call failure (|st| says why). */
int cm_rpc_health(struct cm_rpc_client *c, const char *service, int timeout_ms,
                  struct cm_rpc_status *st);

/* ---- asynchronous calls, on a cm_loop ----
 *
 * For processes where calls wait long (the agent-worker waits seconds on the
 * model): no thread per call. A cm_rpc_events is one completion queue plus
 * one thread that blocks on it and posts every completion to |loop|; every
 * callback below runs on the loop thread, and every cm_rpc_acall_* and
 * cm_rpc_call_async() call must be made there too. */

struct cm_loop;
struct cm_rpc_events;

struct cm_rpc_events *cm_rpc_events_new(struct cm_loop *loop);
/* Shuts the queue down; events still pending are posted to the loop (which
 * must keep running until this returns), then the thread is joined. Call once
 * every server using it was shut down and every client call completed. */
void cm_rpc_events_free(struct cm_rpc_events *ev);

/* The handler owns |req| (free with protobuf_c_message_free_unpacked) and
 * the call until it ends it with cm_rpc_acall_reply() or _finish(), possibly
 * much later from another event. */
typedef void (*cm_rpc_async_handler)(struct cm_rpc_acall *call, ProtobufCMessage *req, void *ud);

/* Serves |m| on |ev|'s loop. Before start. 0 or CM_EINVAL. */
int cm_rpc_server_add_async(struct cm_rpc_server *srv, struct cm_rpc_events *ev,
                            const struct cm_rpc_method *m, cm_rpc_async_handler h, void *ud);

const char *cm_rpc_acall_meta(const struct cm_rpc_acall *a, const char *key);
int cm_rpc_acall_meta_at(const struct cm_rpc_acall *a, int i, const char **key, const char **value);
/* |cb| runs once, on the loop, when the client cancels, goes away or the
 * deadline passes before the call was ended. It must still end the call. */
void cm_rpc_acall_on_cancel(struct cm_rpc_acall *a, void (*cb)(void *ud), void *ud);
/* Queues one stream message; messages leave one at a time, in order. With
 * |cap| > 0, a queue that would pass |cap| bytes (a reader that does not keep
 * up) cancels the call with RESOURCE_EXHAUSTED. 0, CM_ECANCELED (the client
 * is gone: stop producing), CM_ENOMEM or CM_ETOOBIG. */
int cm_rpc_acall_send(struct cm_rpc_acall *a, const ProtobufCMessage *msg, size_t cap);
/* 1 while a message of |a| is on its way or queued: what is sent now waits.
 * A producer may then merge what it would send (as text deltas are) and send
 * it from the idle callback below. */
int cm_rpc_acall_busy(const struct cm_rpc_acall *a);
/* |cb| runs on the loop each time the last queued message has left and the
 * call is neither ended nor cancelled. It may send or end the call. */
void cm_rpc_acall_on_idle(struct cm_rpc_acall *a, void (*cb)(void *ud), void *ud);
/* Ends a stream with a last message |last| and OK, sent together when the
 * queue allows. |a| is invalid afterwards. */
void cm_rpc_acall_end_with(struct cm_rpc_acall *a, const ProtobufCMessage *last);
/* Ends a unary call with |msg| and OK (one batch). |a| is invalid afterwards. */
void cm_rpc_acall_reply(struct cm_rpc_acall *a, const ProtobufCMessage *msg);
/* Ends the call after the queued messages with |code| (CM_RPC_OK ends a
 * stream normally). |a| is invalid afterwards. */
void cm_rpc_acall_finish(struct cm_rpc_acall *a, int code, const char *error_type, const char *fmt,
                         ...) __attribute__((format(printf, 4, 5)));

/* Unary client call; |done| runs once on the loop with the status and, on OK,
 * the response (owned by |done|: free with protobuf_c_message_free_unpacked).
 * Returns NULL with |st| when the call cannot start (|done| never runs). */
struct cm_rpc_pending;
typedef void (*cm_rpc_async_done)(void *ud, const struct cm_rpc_status *st, ProtobufCMessage *resp);
struct cm_rpc_pending *cm_rpc_call_async(struct cm_rpc_client *c, struct cm_rpc_events *ev,
                                         const struct cm_rpc_method *m, const ProtobufCMessage *req,
                                         const struct cm_rpc_call_opts *opts,
                                         cm_rpc_async_done done, void *ud,
                                         struct cm_rpc_status *st);
/* Cancels; |done| still runs (CANCELLED). Valid until |done| has run. */
void cm_rpc_pending_cancel(struct cm_rpc_pending *p);

/* Server-streaming client call on the loop: |on_msg| runs for each message
 * (it owns it), then |on_end| exactly once with the call's status. NULL with
 * |st| when the call cannot start (no callback runs). */
struct cm_rpc_astream;
typedef void (*cm_rpc_astream_msg)(void *ud, ProtobufCMessage *msg);
typedef void (*cm_rpc_astream_end)(void *ud, const struct cm_rpc_status *st);
struct cm_rpc_astream *cm_rpc_astream_open(struct cm_rpc_client *c, struct cm_rpc_events *ev,
                                           const struct cm_rpc_method *m,
                                           const ProtobufCMessage *req,
                                           const struct cm_rpc_call_opts *opts,
                                           cm_rpc_astream_msg on_msg, cm_rpc_astream_end on_end,
                                           void *ud, struct cm_rpc_status *st);
/* Cancels; |on_end| still runs. Valid until |on_end| has run. */
void cm_rpc_astream_cancel(struct cm_rpc_astream *s);

#endif
