/* tw_service: agentcore.v1.ToolService on the tool-worker.
 *
 * Execute is served on the loop (no thread per call): the request goes to
 * tw_runner and the answer leaves when the tool ends; a caller that goes
 * away cancels the tool (its process tree is killed). At capacity the answer
 * is RESOURCE_EXHAUSTED, so the agent-worker tries another replica. ListTools
 * and Status answer from the immutable catalogue and two atomics. */
#ifndef TW_SERVICE_H
#define TW_SERVICE_H

#include "tw_runner.h"

struct cm_rpc_server;
struct cm_rpc_events;
struct cm_status;
struct tw_sandbox;
struct cm_otel;
struct cm_metrics;

struct tw_service {
    const struct tw_catalog *catalog;
    struct tw_runner *runner;         /* loop thread only */
    const struct tw_sandbox *sandbox; /* may be NULL */
    struct cm_status *status_hub;     /* WatchStatus; may be NULL */
    struct cm_otel *otel;             /* execute_tool spans; may be NULL */
    struct cm_metrics *metrics;       /* may be NULL (tw_service_metrics sets it) */
    int m_exec, m_exec_dur, m_kills, m_starts;
};

/* Declares the tool-worker's metric families in |m| and keeps it. 0 or -1. */
int tw_service_metrics(struct tw_service *svc, struct cm_metrics *m);

/* Registers the methods. |svc| must outlive the server. 0 or an error code. */
int tw_service_register(struct cm_rpc_server *srv, struct cm_rpc_events *ev,
                        struct tw_service *svc);

/* Hook for tw_runner's on_background: keeps Status and WatchStatus current. */
void tw_service_on_background(int count, void *svc);
/* Hook for tw_runner's on_kill: counts sandbox kills by reason. */
void tw_service_on_kill(const char *reason, void *svc);
/* Hook for tw_runner's on_start: counts tool processes by how their sandbox
 * came (warm or cold). */
void tw_service_on_start(const char *how, void *svc);

#endif
