/* aw_service: the AgentService gRPC handlers; wires the agent loop to Bedrock,
 * the tool-workers and the session store, as events on one loop. Owns none
 * of them. Invoke, InvokeStream and WatchStatus run on the loop of |ev|;
 * Status is served by the server's small pool and never waits. */
#ifndef AW_SERVICE_H
#define AW_SERVICE_H

#include <uv.h>

struct cm_rpc_server;
struct cm_rpc_events;
struct aw_bedrock;
struct aw_tools;
struct aw_sessions;
struct cm_status;
struct aw_idem;
struct aw_store;
struct invocation;
struct cm_otel;
struct cm_metrics;

struct aw_service {
    struct aw_bedrock *bedrock;
    struct aw_tools *tools;
    struct aw_sessions *sessions; /* used with the loop API only */
    /* Where sessions persist (NULL: memory only). Each invocation loads its
     * session first (a cached one is revalidated by version), saves when a
     * turn asks for tools, and saves before it answers. */
    struct aw_store *store;
    struct cm_status *status; /* background tasks behind us, pushed to watchers */
    uv_loop_t *loop;
    int max_iterations;
    int max_parallel_tools; /* tool calls of one turn running at once (the rest queue) */
    /* Token budgets of one invocation (0: none); a request may ask for less. */
    long long max_invocation_tokens, max_invocation_output_tokens;
    /* CONVERSATION_MANAGER=summarizing: what the window would drop is
     * summarized by the model (one more call) instead of forgotten. */
    int summarize;
    int session_wait_ms; /* a second invocation of a busy session waits this long, then ABORTED */
    /* Answers of finished invocations by request id (NULL: none kept): a
     * retry gets the first run's answer instead of a second run. */
    struct aw_idem *answers;
    /* Spans of sampled traces (NULL: no tracing): invoke_agent per invocation,
     * chat per model call. */
    struct cm_otel *otel;
    const char *model_id; /* gen_ai.request.model */
    int capture_content;  /* chat spans carry the messages (opt-in) */
    /* Counters and histograms (NULL: none), families declared by
     * aw_service_metrics(). */
    struct cm_metrics *metrics;
    int m_invocations, m_duration, m_model, m_ttft, m_tokens, m_tools, m_tool_dur, m_active;
    /* Invocations not yet freed (loop thread), and what runs once that
     * drops to 0 after on_idle was set (the shutdown's last step: Bedrock
     * and the session store go only when no invocation can use them). */
    int live;
    void (*on_idle)(void *ud);
    void *idle_ud;
    /* Private: running invocations a retry of the same request id may join. */
    struct invocation *joinable;
};

/* Declares the agent-worker's metric families in |m| and keeps it. 0 or
 * CM_ENOMEM. */
int aw_service_metrics(struct aw_service *svc, struct cm_metrics *m);

/* |svc| must outlive the server. 0 or a cm_err code. */
int aw_service_register(struct cm_rpc_server *srv, struct cm_rpc_events *ev,
                        struct aw_service *svc);

#endif
