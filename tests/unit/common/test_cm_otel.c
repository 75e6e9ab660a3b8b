/* cm_otel without a collector: the "k=v" lists, the configuration rules,
 * the samplers, and the bounded queue (what does not fit is dropped and
 * counted, never waited for). The export itself is tested end to end
 * (test_e2e_otel, decoded with protoc). */
#include "cm_otel.h"
#include "cm_err.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static int collect(void *ud, const char *k, const char *v)
{
    char *out = ud;
    size_t n = strlen(out);

    snprintf(out + n, 512 - n, "[%s=%s]", k, v);
    return 0;
}

static void test_pairs(void **state)
{
    static const struct {
        const char *in, *out;
        int rc;
    } rows[] = {
        {"a=1,b=2", "[a=1][b=2]", 0},
        {" a = 1 , b=hello%20world ", "[a=1][b=hello world]", 0},
        {"x-aws-log-group=/aws/bedrock-agentcore/runtimes/r-1,x=y=z",
         "[x-aws-log-group=/aws/bedrock-agentcore/runtimes/r-1][x=y=z]", 0},
        {"a=1,,b=2", "[a=1][b=2]", 0},
        {"", "", 0},
        {"novalue", "", -2},
        {"=v", "", -2},
    };
    char out[512];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        out[0] = '\0';
        assert_int_equal(cm_otel_parse_pairs(rows[i].in, collect, out), rows[i].rc);
        if (rows[i].rc == 0)
            assert_string_equal(out, rows[i].out);
    }
}

/* A configuration as the table's defaults give it, then |set|. */
static void defaults(struct cm_cfg_value *v)
{
    memset(v, 0, sizeof(*v) * CM_OTEL_CFG_COUNT);
    v[CM_OTEL_CFG_OBSERVABILITY].i = 1;
    v[CM_OTEL_CFG_SAMPLER].s = "parentbased_always_on";
    v[CM_OTEL_CFG_SAMPLER_ARG].d = 1;
    v[CM_OTEL_CFG_DELAY].i = 600000; /* nothing leaves during the test */
    v[CM_OTEL_CFG_QUEUE].i = 2048;
    v[CM_OTEL_CFG_BATCH].i = 512;
    v[CM_OTEL_CFG_TIMEOUT].i = 1000;
    v[CM_OTEL_CFG_ENDPOINT].s = "http://127.0.0.1:9"; /* discard: nothing listens */
    v[CM_OTEL_CFG_SIGV4].s = "auto";
    v[CM_OTEL_CFG_TRACES_EXPORTER].s = "otlp";
    v[CM_OTEL_CFG_METRICS_EXPORTER].s = "none";
    v[CM_OTEL_CFG_METRIC_INTERVAL].i = 60000;
}

static void test_config(void **state)
{
    struct cm_cfg_value v[CM_OTEL_CFG_COUNT];
    char err[256];
    struct cm_otel *o;

    (void)state;
    defaults(v);
    v[CM_OTEL_CFG_ENDPOINT].s = NULL;
    assert_null(cm_otel_new(v, "t", NULL, err, sizeof(err)));
    assert_string_equal(err, ""); /* no endpoint: off, not an error */
    defaults(v);
    v[CM_OTEL_CFG_SDK_DISABLED].i = 1;
    assert_null(cm_otel_new(v, "t", NULL, err, sizeof(err)));
    assert_string_equal(err, "");
    defaults(v);
    v[CM_OTEL_CFG_OBSERVABILITY].i = 0;
    assert_null(cm_otel_new(v, "t", NULL, err, sizeof(err)));
    assert_string_equal(err, "");
    defaults(v);
    v[CM_OTEL_CFG_ENDPOINT].s = "ftp://x";
    assert_null(cm_otel_new(v, "t", NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "not an http(s) URL"));
    defaults(v);
    v[CM_OTEL_CFG_SAMPLER].s = "sometimes";
    assert_null(cm_otel_new(v, "t", NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "OTEL_TRACES_SAMPLER"));
    defaults(v);
    v[CM_OTEL_CFG_HEADERS].s = "broken";
    assert_null(cm_otel_new(v, "t", NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "OTEL_EXPORTER_OTLP_HEADERS"));
    defaults(v);
    v[CM_OTEL_CFG_SIGV4].s = "maybe";
    assert_null(cm_otel_new(v, "t", NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "OTEL_EXPORTER_OTLP_SIGV4"));
    defaults(v);
    v[CM_OTEL_CFG_METRICS_EXPORTER].s = "prometheus";
    assert_null(cm_otel_new(v, "t", NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "OTEL_METRICS_EXPORTER"));
    defaults(v);
    v[CM_OTEL_CFG_TRACES_EXPORTER].s = "zipkin";
    assert_null(cm_otel_new(v, "t", NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "OTEL_TRACES_EXPORTER"));
    defaults(v);
    v[CM_OTEL_CFG_TRACES_EXPORTER].s = "none"; /* and no metrics: nothing to do */
    assert_null(cm_otel_new(v, "t", NULL, err, sizeof(err)));
    assert_string_equal(err, "");
    defaults(v);
    o = cm_otel_new(v, "t", NULL, err, sizeof(err));
    assert_non_null(o);
    assert_int_equal(cm_otel_relaying(o), 0);
    assert_int_equal(cm_otel_metrics_on(o), 0);
    cm_otel_stop(o, 0);
    cm_otel_stop(o, 0); /* idempotent */
    cm_otel_free(o, 0);
    cm_otel_free(NULL, 0);
    cm_otel_stop(NULL, 0);
}

/* Metrics without spans: the exporter exists, records no span. */
static void test_metrics_only(void **state)
{
    struct cm_cfg_value v[CM_OTEL_CFG_COUNT];
    struct cm_otel_span sp = {"s", CM_OTEL_INTERNAL, NULL, 1, 2, 0, NULL, NULL, 0, NULL, 0, NULL};
    struct cm_otel_stats st;
    struct cm_trace t;
    struct cm_otel *o;
    uint8_t *req;
    size_t len;
    char err[256];

    (void)state;
    defaults(v);
    v[CM_OTEL_CFG_ENDPOINT].s = NULL;
    v[CM_OTEL_CFG_METRICS_ENDPOINT].s = "http://127.0.0.1:9/v1/metrics";
    v[CM_OTEL_CFG_METRICS_EXPORTER].s = "otlp";
    o = cm_otel_new(v, "t", NULL, err, sizeof(err));
    assert_non_null(o);
    assert_int_equal(cm_otel_metrics_on(o), 1);
    assert_int_equal(cm_trace_new(&t), 0);
    sp.trace = &t;
    assert_int_equal(cm_otel_sampled(o, &t), 0);
    cm_otel_record(o, &sp);
    cm_otel_stats(o, &st);
    assert_int_equal(st.recorded, 0);
    /* nothing collected yet (no collector): nothing to hand back */
    assert_int_equal(cm_otel_pack_metrics(o, &req, &len), 1);
    assert_null(req);
    cm_otel_free(o, 0);
}

static void test_sigv4_for(void **state)
{
    static const struct {
        const char *url, *mode;
        int rc;
        const char *service, *region;
    } rows[] = {
        {"https://xray.us-east-1.amazonaws.com/v1/traces", "auto", 1, "xray", "us-east-1"},
        {"https://xray.eu-west-3.amazonaws.com:443/v1/traces", "auto", 1, "xray", "eu-west-3"},
        {"https://logs.cn-north-1.amazonaws.com.cn/v1/logs", "auto", 1, "logs", "cn-north-1"},
        {"https://xray.us-east-1.amazonaws.com/v1/traces", "false", 0, "xray", "us-east-1"},
        {"http://127.0.0.1:4318/v1/traces", "auto", 0, "xray", ""},
        {"http://127.0.0.1:4318/v1/traces", "true", 1, "xray", ""},
        /* look-alikes are not AWS */
        {"https://xray.us-east-1.amazonaws.com.evil.example/v1/traces", "auto", 0, "xray", ""},
        {"https://amazonaws.com/v1/traces", "auto", 0, "xray", ""},
        {"https://evilamazonaws.com/v1/traces", "auto", 0, "xray", ""},
        {"https://x.amazonaws.com/v1/traces", "auto", 0, "xray", ""},
        {"https://xray.us-east-1.amazonaws.com/v1/traces", "yes", CM_EINVAL, "xray", "us-east-1"},
    };
    char service[32], region[32];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        assert_int_equal(cm_otel_sigv4_for(rows[i].url, rows[i].mode, service, region), rows[i].rc);
        assert_string_equal(service, rows[i].service);
        assert_string_equal(region, rows[i].region);
    }
}

/* The tool-worker's way out with signing on: a span packed into an export
 * request that the agent-worker checks and queues as it is. */
static void test_pack_and_forward(void **state)
{
    struct cm_cfg_value v[CM_OTEL_CFG_COUNT];
    struct cm_otel_attr a[] = {{"gen_ai.tool.name", "shell", 0}};
    struct cm_otel_span sp = {
        "execute_tool shell", CM_OTEL_SERVER, NULL, 1, 2, 0, NULL, a, 1, NULL, 0, NULL};
    static const uint8_t junk[] = {0x0a, 0x05, 0x01};
    struct cm_otel *tool, *agent;
    struct cm_otel_stats st;
    struct cm_trace t;
    uint8_t *req = NULL;
    size_t len = 0;
    char err[256];
    int i, rc;

    (void)state;
    defaults(v);
    v[CM_OTEL_CFG_SIGV4].s = "true";
    tool = cm_otel_new(v, "tool", NULL, err, sizeof(err));
    assert_non_null(tool);
    assert_int_equal(cm_otel_relaying(tool), 1);
    assert_int_equal(cm_trace_new(&t), 0);
    sp.trace = &t;
    t.flags = 0;
    assert_int_equal(cm_otel_pack(tool, &sp, &req, &len), 1); /* not sampled */
    assert_null(req);
    t.flags = 1;
    assert_int_equal(cm_otel_pack(tool, &sp, &req, &len), 0);
    assert_non_null(req);
    assert_true(len > 40);

    defaults(v);
    v[CM_OTEL_CFG_QUEUE].i = 2;
    agent = cm_otel_new(v, "agent", NULL, err, sizeof(err));
    assert_non_null(agent);
    assert_int_equal(cm_otel_forward(NULL, CM_OTEL_TRACES, req, len), CM_ENOENT);
    assert_true(cm_otel_forward(agent, CM_OTEL_TRACES, junk, sizeof(junk)) < 0);
    assert_true(cm_otel_forward(agent, CM_OTEL_TRACES, req, 0) < 0); /* no span in it */
    for (i = 0; i < 3; i++) {
        rc = cm_otel_forward(agent, CM_OTEL_TRACES, req, len);
        assert_int_equal(rc, i < 2 ? 0 : CM_EBUSY /* two spans queued at most */);
    }
    cm_otel_stats(agent, &st);
    assert_int_equal(st.recorded, 3);
    assert_int_equal(st.dropped, 1);
    free(req);
    cm_otel_free(agent, 0);
    cm_otel_free(tool, 0);
}

static struct cm_otel *with_sampler(const char *sampler, double ratio)
{
    struct cm_cfg_value v[CM_OTEL_CFG_COUNT];
    char err[256];

    defaults(v);
    v[CM_OTEL_CFG_SAMPLER].s = (char *)sampler;
    v[CM_OTEL_CFG_SAMPLER_ARG].d = ratio;
    return cm_otel_new(v, "t", NULL, err, sizeof(err));
}

static void test_samplers(void **state)
{
    static const struct {
        const char *sampler;
        double ratio;
        int root, child_of_sampled, child_of_unsampled;
    } rows[] = {
        {"always_on", 1, 1, 1, 1},
        {"always_off", 1, 0, 0, 0},
        {"parentbased_always_on", 1, 1, 1, 0},
        {"parentbased_always_off", 1, 0, 1, 0},
        {"traceidratio", 0, 0, 0, 0},
        {"traceidratio", 1, 1, 1, 1},
        {"parentbased_traceidratio", 0, 0, 1, 0},
    };
    struct cm_trace root, child;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct cm_otel *o = with_sampler(rows[i].sampler, rows[i].ratio);

        assert_non_null(o);
        assert_int_equal(cm_trace_new(&root), 0);
        cm_otel_sample(o, &root);
        assert_int_equal(root.flags & 1, rows[i].root);
        root.flags = 1;
        assert_int_equal(cm_trace_child(&root, &child), 0);
        cm_otel_sample(o, &child);
        assert_int_equal(child.flags & 1, rows[i].child_of_sampled);
        root.flags = 0;
        assert_int_equal(cm_trace_child(&root, &child), 0);
        cm_otel_sample(o, &child);
        assert_int_equal(child.flags & 1, rows[i].child_of_unsampled);
        assert_int_equal(cm_otel_sampled(o, &child), rows[i].child_of_unsampled);
        cm_otel_free(o, 0);
    }
    cm_otel_sample(NULL, &child); /* no tracing: nothing is sampled */
    assert_int_equal(child.flags & 1, 0);
}

static void test_queue_is_bounded(void **state)
{
    struct cm_cfg_value v[CM_OTEL_CFG_COUNT];
    struct cm_otel_attr a[] = {{"k", "v", 0}, {"n", NULL, 7}};
    struct cm_otel_span sp = {"s", CM_OTEL_INTERNAL, NULL, 1, 2, 0, NULL, a, 2, NULL, 0, NULL};
    struct cm_otel_stats st;
    struct cm_trace t;
    char err[256];
    struct cm_otel *o;
    int i;

    (void)state;
    defaults(v);
    v[CM_OTEL_CFG_QUEUE].i = 3;
    o = cm_otel_new(v, "t", NULL, err, sizeof(err));
    assert_non_null(o);
    assert_int_equal(cm_trace_new(&t), 0);
    sp.trace = &t;
    for (i = 0; i < 10; i++)
        cm_otel_record(o, &sp);
    t.flags = 0; /* an unsampled trace is not even counted */
    cm_otel_record(o, &sp);
    cm_otel_stats(o, &st);
    assert_int_equal(st.recorded, 10);
    assert_int_equal(st.dropped, 7);
    assert_int_equal(st.exported, 0);
    cm_otel_free(o, 0); /* no time to flush: the three queued are dropped too */
    cm_otel_record(NULL, &sp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pairs),       cmocka_unit_test(test_config),
        cmocka_unit_test(test_samplers),    cmocka_unit_test(test_queue_is_bounded),
        cmocka_unit_test(test_sigv4_for),   cmocka_unit_test(test_pack_and_forward),
        cmocka_unit_test(test_metrics_only)};

    return cmocka_run_group_tests(tests, NULL, NULL);
}
