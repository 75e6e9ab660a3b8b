/* cm_metrics: the Prometheus text a scraper reads (rows of expected lines),
 * label escaping, the series cap, and the /metrics endpoint itself. */
#include "cm_metrics.h"
#include "th_http.h"

#include "otlp_metrics.pb-c.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static int64_t seven(void *ud)
{
    (void)ud;
    return 7;
}

static char *render(struct cm_metrics *m)
{
    struct cm_buf b;

    cm_buf_init(&b, 1u << 20);
    assert_int_equal(cm_metrics_render(m, &b), 0);
    return cm_buf_steal(&b);
}

static void test_text_format(void **state)
{
    static const char *const outcome[] = {"outcome", NULL};
    static const char *const want[] = {
        "# HELP agentcore_invocations_total Invocations by outcome\n",
        "# TYPE agentcore_invocations_total counter\n",
        "agentcore_invocations_total{outcome=\"EndTurn\"} 3\n",
        "agentcore_invocations_total{outcome=\"a \\\"quoted\\\\ value\\n\"} 1\n",
        "# TYPE agentcore_active gauge\n",
        "agentcore_active 1\n",
        "# TYPE agentcore_latency_seconds histogram\n",
        "agentcore_latency_seconds_bucket{le=\"0.005\"} 0\n",
        "agentcore_latency_seconds_bucket{le=\"0.025\"} 1\n",
        "agentcore_latency_seconds_bucket{le=\"2.5\"} 2\n",
        "agentcore_latency_seconds_bucket{le=\"120\"} 2\n",
        "agentcore_latency_seconds_bucket{le=\"+Inf\"} 3\n",
        "agentcore_latency_seconds_sum 1000.520000\n",
        "agentcore_latency_seconds_count 3\n",
        "# TYPE agentcore_lost gauge\nagentcore_lost 7\n",
    };
    struct cm_metrics *m = cm_metrics_new();
    const char *end[] = {"EndTurn"}, *odd[] = {"a \"quoted\\ value\n"};
    int inv, act, lat;
    char *text;
    size_t i;

    (void)state;
    inv = cm_metrics_family(m, "agentcore_invocations_total", "Invocations by outcome", CM_COUNTER,
                            outcome);
    act = cm_metrics_family(m, "agentcore_active", "In flight", CM_GAUGE, NULL);
    lat = cm_metrics_family(m, "agentcore_latency_seconds", "Latency", CM_HISTOGRAM, NULL);
    assert_true(inv >= 0 && act >= 0 && lat >= 0);
    assert_int_equal(cm_metrics_family(m, "bad name", "", CM_COUNTER, NULL), -1);
    cm_metrics_count(m, inv, end, 2);
    cm_metrics_count(m, inv, end, 1);
    cm_metrics_count(m, inv, odd, 1);
    cm_metrics_gauge(m, act, NULL, 2);
    cm_metrics_gauge(m, act, NULL, -1);
    cm_metrics_observe(m, lat, NULL, 0.02);
    cm_metrics_observe(m, lat, NULL, 0.5);
    cm_metrics_observe(m, lat, NULL, 1000); /* past the last bucket: +Inf only */
    assert_int_equal(cm_metrics_gauge_fn(m, "agentcore_lost", "Lost", seven, NULL), 0);
    text = render(m);
    for (i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (!strstr(text, want[i]))
            fail_msg("missing: %s\nin:\n%s", want[i], text);
    free(text);
    cm_metrics_count(NULL, inv, end, 1); /* metrics off: a no-op */
    cm_metrics_free(m);
}

static void test_series_are_capped(void **state)
{
    static const char *const tool[] = {"tool", NULL};
    struct cm_metrics *m = cm_metrics_new();
    char name[32], *text, *p;
    const char *v[] = {name};
    int f = cm_metrics_family(m, "agentcore_calls_total", "Calls", CM_COUNTER, tool), i, lines = 0;

    (void)state;
    for (i = 0; i < 1000; i++) { /* a peer that makes up tool names */
        snprintf(name, sizeof(name), "tool-%d", i);
        cm_metrics_count(m, f, v, 1);
    }
    text = render(m);
    for (p = text; (p = strstr(p, "agentcore_calls_total{")); p++)
        lines++;
    assert_int_equal(lines, CM_METRICS_MAX_SERIES);
    assert_non_null(strstr(text, "agentcore_calls_total{tool=\"other\"} 937\n"));
    free(text);
    cm_metrics_free(m);
}

/* The OTLP form: read back with protoc-c as the ScopeMetrics it is framed
 * for (test_e2e_otel decodes whole requests with protoc and the official
 * definitions). */
static void test_otlp(void **state)
{
    struct cm_metrics *m = cm_metrics_new();
    Agentcore__Otlp__V1__ScopeMetrics *sm;
    const Agentcore__Otlp__V1__Metric *c, *g, *h, *fn;
    const char *const tool[] = {"shell", "error"};
    struct cm_buf b;
    int fc, fg, fh, fe;
    uint64_t total = 0;
    size_t i;

    (void)state;
    fc = cm_metrics_family(m, "calls_total", "calls", CM_COUNTER,
                           (const char *const[]){"tool", "status", NULL});
    fg = cm_metrics_family(m, "active", "now", CM_GAUGE, NULL);
    fh = cm_metrics_family(m, "latency_seconds", "how long", CM_HISTOGRAM, NULL);
    fe = cm_metrics_family(m, "never_used_total", "nothing yet", CM_COUNTER, NULL);
    assert_true(fc >= 0 && fg >= 0 && fh >= 0 && fe >= 0);
    assert_int_equal(cm_metrics_gauge_fn(m, "fn_gauge", "read when shown", seven, NULL), 0);
    cm_metrics_count(m, fc, tool, 3);
    cm_metrics_gauge(m, fg, NULL, 2);
    cm_metrics_observe(m, fh, NULL, 0.003); /* first bucket */
    cm_metrics_observe(m, fh, NULL, 0.2);   /* le 0.25 */
    cm_metrics_observe(m, fh, NULL, 500);   /* past the last bound */
    cm_buf_init(&b, 1u << 20);
    assert_int_equal(cm_metrics_otlp(m, 100, 200, &b), 0);
    sm = agentcore__otlp__v1__scope_metrics__unpack(NULL, b.len, (const uint8_t *)b.data);
    assert_non_null(sm);
    assert_int_equal(sm->n_metrics, 4); /* a family with no series sends nothing */
    c = sm->metrics[0];
    g = sm->metrics[1];
    h = sm->metrics[2];
    fn = sm->metrics[3];
    assert_string_equal(c->name, "calls_total");
    assert_int_equal(c->data_case, AGENTCORE__OTLP__V1__METRIC__DATA_SUM);
    assert_true(c->sum->is_monotonic);
    assert_int_equal(
        c->sum->aggregation_temporality,
        AGENTCORE__OTLP__V1__AGGREGATION_TEMPORALITY__AGGREGATION_TEMPORALITY_CUMULATIVE);
    assert_int_equal(c->sum->n_data_points, 1);
    assert_int_equal(c->sum->data_points[0]->as_int, 3);
    assert_int_equal(c->sum->data_points[0]->start_time_unix_nano, 100);
    assert_int_equal(c->sum->data_points[0]->time_unix_nano, 200);
    assert_int_equal(c->sum->data_points[0]->n_attributes, 2);
    assert_string_equal(c->sum->data_points[0]->attributes[0]->key, "tool");
    assert_string_equal(c->sum->data_points[0]->attributes[0]->value->string_value, "shell");
    assert_string_equal(c->sum->data_points[0]->attributes[1]->value->string_value, "error");
    assert_int_equal(g->data_case, AGENTCORE__OTLP__V1__METRIC__DATA_GAUGE);
    assert_int_equal(g->gauge->data_points[0]->as_int, 2);
    assert_int_equal(h->data_case, AGENTCORE__OTLP__V1__METRIC__DATA_HISTOGRAM);
    assert_string_equal(h->unit, "s");
    assert_int_equal(h->histogram->data_points[0]->count, 3);
    assert_true(h->histogram->data_points[0]->sum > 500.2 &&
                h->histogram->data_points[0]->sum < 500.21);
    assert_int_equal(h->histogram->data_points[0]->n_bucket_counts,
                     h->histogram->data_points[0]->n_explicit_bounds + 1);
    assert_int_equal(h->histogram->data_points[0]->bucket_counts[0], 1);
    for (i = 0; i < h->histogram->data_points[0]->n_bucket_counts; i++)
        total += h->histogram->data_points[0]->bucket_counts[i];
    assert_int_equal(total, 3); /* per bucket, not cumulated, +Inf last */
    assert_int_equal(h->histogram->data_points[0]
                         ->bucket_counts[h->histogram->data_points[0]->n_bucket_counts - 1],
                     1);
    assert_string_equal(fn->name, "fn_gauge");
    assert_int_equal(fn->gauge->data_points[0]->as_int, 7);
    agentcore__otlp__v1__scope_metrics__free_unpacked(sm, NULL);
    cm_buf_free(&b);
    cm_buf_init(&b, 1u << 20);
    assert_int_equal(cm_metrics_otlp(NULL, 1, 2, &b), 0);
    assert_int_equal(b.len, 0);
    cm_buf_free(&b);
    cm_metrics_free(m);
}

static void test_endpoint(void **state)
{
    static const char *const outcome[] = {"outcome", NULL};
    struct cm_metrics *m = cm_metrics_new();
    const char *ok[] = {"EndTurn"};
    char err[200], url[96];
    struct th_resp r;
    int port, f = cm_metrics_family(m, "agentcore_invocations_total", "x", CM_COUNTER, outcome);

    (void)state;
    cm_metrics_count(m, f, ok, 5);
    assert_int_equal(cm_metrics_serve(m, "nonsense", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "host:port"));
    port = cm_metrics_serve(m, "127.0.0.1:0", err, sizeof(err));
    assert_true(port > 0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", port);
    assert_int_equal(th_http("GET", url, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "agentcore_invocations_total{outcome=\"EndTurn\"} 5\n"));
    assert_non_null(strstr(r.headers, "text/plain; version=0.0.4"));
    th_resp_free(&r);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/other", port);
    assert_int_equal(th_http("GET", url, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 404);
    assert_non_null(r.json); /* errors are JSON, as everywhere */
    th_resp_free(&r);
    cm_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_format),
        cmocka_unit_test(test_series_are_capped),
        cmocka_unit_test(test_otlp),
        cmocka_unit_test(test_endpoint),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
