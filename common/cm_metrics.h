/* cm_metrics: counters, gauges and histograms, and the Prometheus text
 * endpoint that shows them (METRICS_LISTEN; off by default, never on the
 * public 8080).
 *
 * A series is found once (by its label values, under the family's lock) and
 * then updated with atomics: the hot path takes no lock when the caller
 * keeps the series, and one short lookup when it does not. Label values a
 * peer chooses (a tool name) are capped per family (CM_METRICS_MAX_SERIES);
 * past the cap they count under "other", so a client cannot grow the
 * registry. Histograms use fixed buckets in seconds. */
#ifndef CM_METRICS_H
#define CM_METRICS_H

#include "cm_buf.h"

#include <stddef.h>
#include <stdint.h>

#define CM_METRICS_MAX_SERIES 64

/* The configuration entry every process has. */
#define CM_CFG_METRICS_LISTEN                                                                      \
    {                                                                                              \
        "METRICS_LISTEN", NULL, CM_CFG_STR, NULL, 0, 128,                                          \
            "host:port of the Prometheus /metrics endpoint (unset: none; keep it off the "         \
            "public port)",                                                                        \
            0                                                                                      \
    }
#define CM_METRICS_MAX_LABELS 3

enum cm_metric_type { CM_COUNTER, CM_GAUGE, CM_HISTOGRAM };

struct cm_metrics;
struct cm_series;

struct cm_metrics *cm_metrics_new(void);
/* Stops the endpoint (if any) and frees. NULL is fine. */
void cm_metrics_free(struct cm_metrics *m);

/* Declares a family: |name| (e.g. "agentcore_invocations_total"), |help|,
 * and up to CM_METRICS_MAX_LABELS label names (NULL-terminated list, may be
 * NULL). Returns its index, or -1 (too many families, bad name). */
int cm_metrics_family(struct cm_metrics *m, const char *name, const char *help,
                      enum cm_metric_type type, const char *const *labels);
/* The series of family |f| with these label values (as many as the family
 * has labels, NULL for none); created on first use. NULL only out of memory. */
struct cm_series *cm_metrics_series(struct cm_metrics *m, int f, const char *const *values);

void cm_series_add(struct cm_series *s, uint64_t n);         /* counters */
void cm_series_set(struct cm_series *s, int64_t v);          /* gauges */
void cm_series_inc(struct cm_series *s, int64_t d);          /* gauges: +d / -d */
void cm_series_observe(struct cm_series *s, double seconds); /* histograms */

/* Shorthands: the series lookup and the update in one call. NULL |m| is a
 * no-op, so code paths need no "are metrics on" test. */
void cm_metrics_count(struct cm_metrics *m, int f, const char *const *values, uint64_t n);
void cm_metrics_observe(struct cm_metrics *m, int f, const char *const *values, double seconds);
void cm_metrics_gauge(struct cm_metrics *m, int f, const char *const *values, int64_t d);

/* A gauge whose value is read when shown (a queue length, a count another
 * module keeps). |fn| runs on the endpoint's thread. */
int cm_metrics_gauge_fn(struct cm_metrics *m, const char *name, const char *help,
                        int64_t (*fn)(void *ud), void *ud);

/* The Prometheus text exposition (format 0.0.4) of everything into |out|.
 * 0 or a cm_buf error. */
int cm_metrics_render(struct cm_metrics *m, struct cm_buf *out);

/* Every family with a series, and every gauge function, as OTLP Metric
 * messages (cumulative sums, gauges, explicit-bucket histograms in seconds)
 * appended to |out| as the metrics field (2) of a ScopeMetrics: the caller
 * writes the scope before them. |m| is a struct cm_metrics * (NULL: nothing).
 * 0 or a cm_buf error. */
int cm_metrics_otlp(void *m, uint64_t start_ns, uint64_t now_ns, struct cm_buf *out);

/* Serves GET /metrics on |listen| ("host:port"; port 0 = any) on a thread
 * of its own. Returns the port, or -1 with |err|. */
int cm_metrics_serve(struct cm_metrics *m, const char *listen, char *err, size_t errlen);

#endif
