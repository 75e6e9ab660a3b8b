/* cm_otel: OpenTelemetry spans, exported as OTLP/HTTP with protobuf bodies.
 *
 * A finished span is packed once (protobuf-c, proto/otlp_trace.proto) and
 * put on a bounded queue under a short lock: recording never waits for the
 * network, and when the queue is full the span is dropped and counted. One
 * exporter thread per process sleeps on a condition variable; it wakes when a
 * batch is full or the oldest queued span has waited OTEL_BSP_SCHEDULE_DELAY,
 * and POSTs an ExportTraceServiceRequest (the resource and scope written once,
 * the spans' packed bytes appended as they are) to the traces endpoint with
 * OTEL_EXPORTER_OTLP_HEADERS. 429 and 5xx are retried with backoff (3 tries);
 * cm_otel_free() flushes what is queued within its deadline. An idle process
 * never wakes for it.
 *
 * Configuration (the OTEL_* variables of the OpenTelemetry SDKs, as
 * AgentCore injects them): tracing is on when an endpoint is set, unless
 * OTEL_SDK_DISABLED=true or AGENT_OBSERVABILITY_ENABLED=false. Only sampled
 * traces (the traceparent's flag) are recorded: the gateway decides for a
 * trace it starts (OTEL_TRACES_SAMPLER), the others follow their parent.
 *
 * AWS endpoints (X-Ray's OTLP endpoint, https://xray.<region>.amazonaws.com/
 * v1/traces) take only SigV4-signed requests (service "xray"), as ADOT sends
 * them. Only the agent-worker holds credentials, so with signing on
 * (OTEL_EXPORTER_OTLP_SIGV4: auto = an *.amazonaws.com endpoint) the spans of
 * the other processes travel to it: the gateway's by AgentService/ExportSpans
 * (the relay hook), a tool call's in its ExecuteResponse (cm_otel_pack); the
 * agent-worker queues them as they are (cm_otel_forward) and signs every
 * export with its credentials (the sign hook). */
#ifndef CM_OTEL_H
#define CM_OTEL_H

#include "cm_config.h"
#include "cm_trace.h"

#include <stddef.h>
#include <stdint.h>

/* The configuration entries every process has, in this order (see
 * CM_CFG_OTEL below): their values go to cm_otel_new as one array. */
enum {
    CM_OTEL_CFG_ENDPOINT,         /* OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces) */
    CM_OTEL_CFG_TRACES_ENDPOINT,  /* OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (as is) */
    CM_OTEL_CFG_HEADERS,          /* OTEL_EXPORTER_OTLP_HEADERS / _TRACES_HEADERS */
    CM_OTEL_CFG_SERVICE_NAME,     /* OTEL_SERVICE_NAME */
    CM_OTEL_CFG_RESOURCE,         /* OTEL_RESOURCE_ATTRIBUTES */
    CM_OTEL_CFG_SDK_DISABLED,     /* OTEL_SDK_DISABLED */
    CM_OTEL_CFG_OBSERVABILITY,    /* AGENT_OBSERVABILITY_ENABLED */
    CM_OTEL_CFG_SAMPLER,          /* OTEL_TRACES_SAMPLER */
    CM_OTEL_CFG_SAMPLER_ARG,      /* OTEL_TRACES_SAMPLER_ARG */
    CM_OTEL_CFG_DELAY,            /* OTEL_BSP_SCHEDULE_DELAY (ms) */
    CM_OTEL_CFG_QUEUE,            /* OTEL_BSP_MAX_QUEUE_SIZE */
    CM_OTEL_CFG_BATCH,            /* OTEL_BSP_MAX_EXPORT_BATCH_SIZE */
    CM_OTEL_CFG_TIMEOUT,          /* OTEL_EXPORTER_OTLP_TIMEOUT (ms) */
    CM_OTEL_CFG_SIGV4,            /* OTEL_EXPORTER_OTLP_SIGV4: auto, true, false */
    CM_OTEL_CFG_TRACES_EXPORTER,  /* OTEL_TRACES_EXPORTER: otlp, none */
    CM_OTEL_CFG_METRICS_ENDPOINT, /* OTEL_EXPORTER_OTLP_METRICS_ENDPOINT (as is) */
    CM_OTEL_CFG_METRICS_EXPORTER, /* OTEL_METRICS_EXPORTER: otlp, none */
    CM_OTEL_CFG_METRIC_INTERVAL,  /* OTEL_METRIC_EXPORT_INTERVAL (ms) */
    CM_OTEL_CFG_COUNT
};

/* Designated initialisers for a config table whose entries from |base| on
 * are the CM_OTEL_CFG_* ones. */
#define CM_CFG_OTEL(base)                                                                          \
    [(base) +                                                                                      \
        CM_OTEL_CFG_ENDPOINT] = {"OTEL_EXPORTER_OTLP_ENDPOINT",                                    \
                                 NULL,                                                             \
                                 CM_CFG_STR,                                                       \
                                 NULL,                                                             \
                                 0,                                                                \
                                 1000,                                                             \
                                 "OTLP/HTTP base URL (traces go to <url>/v1/traces); "             \
                                 "unset: no export",                                               \
                                 0},                                                               \
        [(base) +                                                                                  \
            CM_OTEL_CFG_TRACES_ENDPOINT] = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",                  \
                                            NULL,                                                  \
                                            CM_CFG_STR,                                            \
                                            NULL,                                                  \
                                            0,                                                     \
                                            1000,                                                  \
                                            "the traces URL itself (wins over the base URL)",      \
                                            0},                                                    \
        [(base) + CM_OTEL_CFG_HEADERS] = {"OTEL_EXPORTER_OTLP_TRACES_HEADERS",                     \
                                          "OTEL_EXPORTER_OTLP_HEADERS",                            \
                                          CM_CFG_STR,                                              \
                                          NULL,                                                    \
                                          0,                                                       \
                                          8192,                                                    \
                                          "headers of each export, k1=v1,k2=v2 (percent-encoded)", \
                                          1},                                                      \
        [(base) +                                                                                  \
            CM_OTEL_CFG_SERVICE_NAME] = {"OTEL_SERVICE_NAME",                                      \
                                         NULL,                                                     \
                                         CM_CFG_STR,                                               \
                                         NULL,                                                     \
                                         0,                                                        \
                                         256,                                                      \
                                         "service.name (unset: from OTEL_RESOURCE_ATTRIBUTES, "    \
                                         "else the process's name)",                               \
                                         0},                                                       \
        [(base) + CM_OTEL_CFG_RESOURCE] =                                                          \
            {"OTEL_RESOURCE_ATTRIBUTES",         NULL, CM_CFG_STR, NULL, 0, 8192,                  \
             "resource attributes, k1=v1,k2=v2", 0},                                               \
        [(base) + CM_OTEL_CFG_SDK_DISABLED] = {"OTEL_SDK_DISABLED",                                \
                                               NULL,                                               \
                                               CM_CFG_BOOL,                                        \
                                               "false",                                            \
                                               0,                                                  \
                                               1,                                                  \
                                               "true: no telemetry at all",                        \
                                               0},                                                 \
        [(base) + CM_OTEL_CFG_OBSERVABILITY] = {"AGENT_OBSERVABILITY_ENABLED",                     \
                                                NULL,                                              \
                                                CM_CFG_BOOL,                                       \
                                                "true",                                            \
                                                0,                                                 \
                                                1,                                                 \
                                                "AgentCore's switch: false turns tracing off",     \
                                                0},                                                \
        [(base) +                                                                                  \
            CM_OTEL_CFG_SAMPLER] = {"OTEL_TRACES_SAMPLER",                                         \
                                    NULL,                                                          \
                                    CM_CFG_STR,                                                    \
                                    "parentbased_always_on",                                       \
                                    0,                                                             \
                                    64,                                                            \
                                    "always_on, always_off, traceidratio, parentbased_always_on, " \
                                    "parentbased_always_off, parentbased_traceidratio",            \
                                    0},                                                            \
        [(base) + CM_OTEL_CFG_SAMPLER_ARG] = {"OTEL_TRACES_SAMPLER_ARG",                           \
                                              NULL,                                                \
                                              CM_CFG_FLOAT,                                        \
                                              "1",                                                 \
                                              0,                                                   \
                                              1,                                                   \
                                              "the ratio of the traceidratio samplers",            \
                                              0},                                                  \
        [(base) + CM_OTEL_CFG_DELAY] = {"OTEL_BSP_SCHEDULE_DELAY",                                 \
                                        NULL,                                                      \
                                        CM_CFG_INT,                                                \
                                        "5000",                                                    \
                                        1,                                                         \
                                        3600000,                                                   \
                                        "ms a span may wait before its batch is sent",             \
                                        0},                                                        \
        [(base) + CM_OTEL_CFG_QUEUE] = {"OTEL_BSP_MAX_QUEUE_SIZE",                                 \
                                        NULL,                                                      \
                                        CM_CFG_INT,                                                \
                                        "2048",                                                    \
                                        1,                                                         \
                                        1000000,                                                   \
                                        "spans queued at most (past it: dropped, counted)",        \
                                        0},                                                        \
        [(base) + CM_OTEL_CFG_BATCH] =                                                             \
            {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE", NULL, CM_CFG_INT, "512", 1, 100000,                 \
             "spans per export at most",       0},                                                 \
        [(base) + CM_OTEL_CFG_TIMEOUT] =                                                           \
            {"OTEL_EXPORTER_OTLP_TIMEOUT", NULL, CM_CFG_INT, "10000", 1, 600000,                   \
             "ms one export may take",     0},                                                     \
        [(base) + CM_OTEL_CFG_SIGV4] = {"OTEL_EXPORTER_OTLP_SIGV4",                                \
                                        NULL,                                                      \
                                        CM_CFG_STR,                                                \
                                        "auto",                                                    \
                                        0,                                                         \
                                        8,                                                         \
                                        "SigV4-sign exports with the agent-worker's credentials: " \
                                        "auto (an *.amazonaws.com endpoint), true or false",       \
                                        0},                                                        \
        [(base) + CM_OTEL_CFG_TRACES_EXPORTER] = {"OTEL_TRACES_EXPORTER",                          \
                                                  NULL,                                            \
                                                  CM_CFG_STR,                                      \
                                                  "otlp",                                          \
                                                  0,                                               \
                                                  16,                                              \
                                                  "otlp, or none: no spans",                       \
                                                  0},                                              \
        [(base) +                                                                                  \
            CM_OTEL_CFG_METRICS_ENDPOINT] = {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",                \
                                             NULL,                                                 \
                                             CM_CFG_STR,                                           \
                                             NULL,                                                 \
                                             0,                                                    \
                                             1000,                                                 \
                                             "the metrics URL itself (else <base>/v1/metrics)",    \
                                             0},                                                   \
        [(base) + CM_OTEL_CFG_METRICS_EXPORTER] =                                                  \
            {"OTEL_METRICS_EXPORTER",          NULL, CM_CFG_STR, "otlp", 0, 16,                    \
             "otlp, or none: no OTLP metrics", 0},                                                 \
        [(base) + CM_OTEL_CFG_METRIC_INTERVAL] = {                                                 \
            "OTEL_METRIC_EXPORT_INTERVAL",         NULL, CM_CFG_INT, "60000", 100, 86400000,       \
            "ms between two OTLP metrics exports", 0}

enum cm_otel_kind { CM_OTEL_INTERNAL = 1, CM_OTEL_SERVER = 2, CM_OTEL_CLIENT = 3 };

struct cm_otel_attr {
    const char *key;
    const char *s; /* a string value, or NULL for the integer */
    long long i;
};

/* A span event (at most CM_OTEL_MAX_EVENTS per span, 16 attributes each). */
struct cm_otel_event {
    const char *name;
    uint64_t time_ns;
    const struct cm_otel_attr *attrs;
    size_t n_attrs;
};
#define CM_OTEL_MAX_EVENTS 8

struct cm_otel_span {
    const char *name;
    enum cm_otel_kind kind;
    const struct cm_trace *trace; /* trace, span and parent ids; flags (sampled) */
    uint64_t start_ns, end_ns;    /* unix time in ns */
    int error;                    /* 1: status ERROR with |message| */
    const char *message;
    const struct cm_otel_attr *attrs; /* at most 32 */
    size_t n_attrs;
    const struct cm_otel_event *events;
    size_t n_events;
    /* With |error|: the "exception" event the conventions name is added at
     * |end_ns|, exception.type = |error_type| (NULL: |message|) and
     * exception.message = |message|. */
    const char *error_type;
};

struct cm_otel;
struct curl_slist;
struct cm_buf;

/* What an export request carries, and so where it goes. */
enum cm_otel_signal { CM_OTEL_TRACES = 0, CM_OTEL_METRICS = 1 };

/* What a process adds to the exporter when exports are signed. Both hooks run
 * on the exporter thread and may block. */
struct cm_otel_hooks {
    /* The agent-worker: the headers of a SigV4-signed POST of |body| to
     * |url| (Content-Type, Host, X-Amz-Date, X-Amz-Security-Token,
     * Authorization), as a curl list freed with |sign_free|, or NULL when
     * there is nothing to sign with (the batch fails and is counted).
     * |service| and |region| come from an AWS host name ("xray",
     * "us-east-1"); |region| is NULL for any other host. */
    struct curl_slist *(*sign)(void *ud, const char *url, const char *service, const char *region,
                               const uint8_t *body, size_t len);
    void (*sign_free)(struct curl_slist *l);
    /* The gateway: hands one export request (of |signal|) to the
     * agent-worker. 0 when it took it, 1 to try again later, -1 when it
     * never will. */
    int (*relay)(void *ud, int signal, const uint8_t *body, size_t len);
    /* Called by the exporter thread as it ends (e.g. cm_rpc_thread_done). */
    void (*thread_done)(void);
    void *ud;
};

/* |values| are the CM_OTEL_CFG_COUNT configuration values from the table;
 * |process| names the process (service.name by default, e.g.
 * "agentcore-gateway"); |hooks| (copied; NULL: none) say how a signed export
 * leaves this process. Returns NULL with |err| empty when tracing is off,
 * NULL with |err| set on a bad configuration; otherwise the exporter, its
 * thread started. */
struct cm_otel *cm_otel_new(const struct cm_cfg_value *values, const char *process,
                            const struct cm_otel_hooks *hooks, char *err, size_t errlen);

/* 1 when exports are signed but this process can neither sign nor relay
 * (the tool-worker): its spans go back to the agent-worker in the answer
 * of the call they belong to (cm_otel_pack). */
int cm_otel_relaying(const struct cm_otel *o);
/* One span as a packed ExportTraceServiceRequest with this process's
 * resource, into |*out| (malloc'd, the caller frees) and |*len|. 0, 1 when
 * the span is not sampled (nothing made), CM_ENOMEM. */
int cm_otel_pack(const struct cm_otel *o, const struct cm_otel_span *s, uint8_t **out, size_t *len);
/* Queues an export request of |signal| another process packed
 * (ExportTraceServiceRequest, ExportMetricsServiceRequest), sent as it is
 * (within the queue's span and byte caps). 0; CM_EINVAL when it is not one
 * (or holds nothing); CM_EBUSY when the queue is full (dropped, counted);
 * CM_ENOENT when |o| is NULL or exports nothing of |signal| here. */
int cm_otel_forward(struct cm_otel *o, int signal, const uint8_t *req, size_t len);

/* ---- OTLP metrics ----
 * With a metrics endpoint (OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, or the base
 * URL + /v1/metrics) and OTEL_METRICS_EXPORTER not "none", the exporter
 * thread calls |collect| every OTEL_METRIC_EXPORT_INTERVAL and once more as
 * it stops, and sends what it appended (OTLP Metric messages, as
 * cm_metrics_otlp writes them) under this process's resource: the only
 * time an idle process wakes for telemetry. */
void cm_otel_set_metrics(struct cm_otel *o,
                         int (*collect)(void *ud, uint64_t start_ns, uint64_t now_ns,
                                        struct cm_buf *out),
                         void *ud);
/* 1 when metrics are exported here (the registry must exist). */
int cm_otel_metrics_on(const struct cm_otel *o);
/* A relaying process (cm_otel_relaying) sends its metrics with an answer:
 * when an interval has passed since the last, 0 with a packed
 * ExportMetricsServiceRequest in |*out| (malloc'd) and the clock reset;
 * 1 when none is due (or nothing was measured yet); CM_ENOMEM. */
int cm_otel_pack_metrics(struct cm_otel *o, uint8_t **out, size_t *len);

/* Sends the last metrics, exports what is queued (at most |flush_ms|) and
 * stops the thread; afterwards nothing is collected or recorded. Call it
 * before freeing what |collect| reads. Idempotent; NULL is fine. */
void cm_otel_stop(struct cm_otel *o, int flush_ms);
/* cm_otel_stop (when not done yet), then frees. NULL is fine. */
void cm_otel_free(struct cm_otel *o, int flush_ms);

/* 1 when spans of |t| are recorded (|o| is on and the trace is sampled). */
int cm_otel_sampled(const struct cm_otel *o, const struct cm_trace *t);
/* The sampling decision at the edge (the gateway), on |t| from
 * cm_trace_continue: the parentbased samplers keep a caller's decision
 * (|t| has a parent), the others and every new trace decide by
 * OTEL_TRACES_SAMPLER. Sets |t|'s sampled flag (cleared when |o| is NULL). */
void cm_otel_sample(const struct cm_otel *o, struct cm_trace *t);
/* Queues a finished span. Never blocks on I/O; thread-safe; NULL |o| is a
 * no-op. */
void cm_otel_record(struct cm_otel *o, const struct cm_otel_span *s);

struct cm_otel_stats {
    uint64_t recorded, exported, dropped, failed; /* spans */
    uint64_t exports;                             /* requests that succeeded */
    uint64_t metric_exports, metric_failures;     /* metrics requests */
};
void cm_otel_stats(struct cm_otel *o, struct cm_otel_stats *out);
/* Spans lost so far (dropped or refused), as a metrics gauge reads it: |o|
 * is a struct cm_otel * (NULL: 0). */
int64_t cm_otel_lost(void *o);

/* Unix time now in ns (for span times). */
uint64_t cm_otel_now_ns(void);

/* ---- no I/O (unit-tested) ---- */

/* Whether exports to |url| are signed, by the OTEL_EXPORTER_OTLP_SIGV4 value
 * |mode| ("auto", "true", "false"); with an AWS host ("<service>.<region>.
 * amazonaws.com[.cn]") its service and region into |service| / |region|
 * (else "xray" and ""). 1 signed, 0 not, CM_EINVAL for a bad |mode|. */
int cm_otel_sigv4_for(const char *url, const char *mode, char service[32], char region[32]);

/* Parses "k1=v1,k2=v2" (values percent-decoded, blanks around keys and
 * values trimmed) calling |fn| for each pair. 0, or CM_EINVAL for a pair
 * without '='. */
int cm_otel_parse_pairs(const char *s, int (*fn)(void *ud, const char *k, const char *v), void *ud);

#endif
