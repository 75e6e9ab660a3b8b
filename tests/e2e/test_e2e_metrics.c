/* End to end: the /metrics endpoints of the three processes, read by a real
 * Prometheus server (Debian's), which this test starts: after two
 * invocations (one with a tool call), its query API returns the
 * agent-worker's invocation counter, and every endpoint shows its own
 * families in the text format. */
#include "th_stack.h"

#include <jansson.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#define KEYS "AWS_ACCESS_KEY_ID=" TH_EMU_AKID, "AWS_SECRET_ACCESS_KEY=" TH_EMU_SECRET

static struct th_proc emu, tool;
static struct th_stack s;
static int agent_port, gw_port, tool_port;

static int setup(void **state)
{
    char a[64], g[64], t[64];

    (void)state;
    agent_port = th_free_port();
    gw_port = th_free_port();
    tool_port = th_free_port();
    snprintf(a, sizeof(a), "METRICS_LISTEN=127.0.0.1:%d", agent_port);
    snprintf(g, sizeof(g), "METRICS_LISTEN=127.0.0.1:%d", gw_port);
    snprintf(t, sizeof(t), "METRICS_LISTEN=127.0.0.1:%d", tool_port);
    return th_emulator_start(&emu, "met-emulator", NULL) ||
           th_proc_start(&tool, "met-tool-worker", AC_BIN_TOOL,
                         (const char *[]){"TOOL_WORKER_LISTEN=127.0.0.1:0", t, NULL},
                         TH_READY_MS) ||
           th_stack_start_gw(&s, "met", &emu, &tool, (const char *[]){KEYS, a, NULL},
                             (const char *[]){g, NULL});
}

static int teardown(void **state)
{
    (void)state;
    return th_stack_stop(&s) | th_stop(&tool) | th_stop(&emu) ? -1 : 0;
}

static char *scrape(int port)
{
    char url[96], *body;
    struct th_resp r;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", port);
    assert_int_equal(th_http("GET", url, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    body = strdup(r.body);
    th_resp_free(&r);
    return body;
}

static void test_every_process_shows_its_counters(void **state)
{
    struct th_resp r;
    char *m;

    (void)state;
    assert_int_equal(th_invoke(&s, "{\"prompt\":\"hello\"}", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    assert_int_equal(
        th_invoke(&s, "{\"prompt\":\"[[tool:calculator {\\\"expression\\\":\\\"6*7\\\"}]]\"}", NULL,
                  &r),
        0);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);

    m = scrape(agent_port);
    assert_non_null(strstr(m, "agentcore_invocations_total{outcome=\"EndTurn\"} 2\n"));
    assert_non_null(
        strstr(m, "agentcore_tool_calls_total{tool=\"calculator\",status=\"success\"} 1\n"));
    assert_non_null(strstr(m, "agentcore_model_call_duration_seconds_count 3\n"));
    assert_non_null(strstr(m, "agentcore_invocation_duration_seconds_count 2\n"));
    assert_non_null(strstr(m, "agentcore_active_invocations 0\n"));
    assert_non_null(strstr(m, "agentcore_tokens_total{type=\"input\"} "));
    assert_null(strstr(m, "agentcore_tokens_total{type=\"input\"} 0\n"));
    free(m);
    m = scrape(gw_port);
    assert_non_null(
        strstr(m, "agentcore_http_requests_total{path=\"/invocations\",code=\"200\"} 2\n"));
    free(m);
    m = scrape(tool_port);
    assert_non_null(
        strstr(m, "agentcore_tool_executions_total{tool=\"calculator\",status=\"success\"} 1\n"));
    free(m);
}

/* Opens a stream that pauses after its first text delta; returns its
 * socket once that delta arrived (the invocation is then surely in flight). */
static int open_stream(void)
{
    const char *body = "{\"prompt\":\"[[pause:1000]] hold on\",\"stream\":true}";
    char buf[65536] = "";
    int fd = th_raw_post(s.gw.port, "/invocations", "", body);

    assert_true(fd >= 0);
    assert_int_equal(th_raw_read_until(fd, buf, sizeof(buf), "contentBlockDelta", 10000), 0);
    return fd;
}

/* While a stream is open, both ends count it; once it ended, neither does
 * (a second stream counts 1, not 2). */
static void test_a_stream_in_flight_is_counted(void **state)
{
    char buf[65536] = "", *m;
    int fd, round;

    (void)state;
    for (round = 0; round < 2; round++) {
        fd = open_stream();
        m = scrape(gw_port);
        assert_non_null(strstr(m, "agentcore_gateway_active_invocations{mode=\"sse\"} 1\n"));
        assert_non_null(strstr(m, "agentcore_gateway_websocket_sessions 0\n"));
        free(m);
        m = scrape(agent_port);
        assert_non_null(strstr(m, "agentcore_active_invocations 1\n"));
        free(m);
        m = scrape(tool_port);
        assert_non_null(strstr(m, "agentcore_background_tasks 0\n"));
        assert_non_null(strstr(m, "# TYPE agentcore_sandbox_kills_total counter\n"));
        free(m);
        buf[0] = '\0';
        assert_int_equal(th_raw_read_until(fd, buf, sizeof(buf), "\"stop_reason\"", 20000), 0);
        close(fd);
    }
}

static void test_prometheus_scrapes_the_agent_worker(void **state)
{
    char dir[600], conf[700], data[700], wal[800], listen[64], url[256], yaml[512], cfgarg[720],
        dataarg[720];
    int port = th_free_port();
    struct th_proc prom;
    struct th_resp r;
    json_t *result;
    FILE *f;

    (void)state;
    snprintf(dir, sizeof(dir), "%s/prometheus-%ld", th_log_dir(), (long)getpid());
    assert_int_equal(mkdir(dir, 0700), 0);
    snprintf(conf, sizeof(conf), "%s/prometheus.yml", dir);
    snprintf(data, sizeof(data), "%s/data", dir);
    snprintf(yaml, sizeof(yaml),
             "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
             "scrape_configs:\n  - job_name: agentcore\n    static_configs:\n"
             "      - targets: ['127.0.0.1:%d', '127.0.0.1:%d', '127.0.0.1:%d']\n",
             agent_port, gw_port, tool_port);
    f = fopen(conf, "w");
    assert_non_null(f);
    fputs(yaml, f);
    fclose(f);
    snprintf(cfgarg, sizeof(cfgarg), "--config.file=%s", conf);
    snprintf(dataarg, sizeof(dataarg), "--storage.tsdb.path=%s", data);
    snprintf(listen, sizeof(listen), "--web.listen-address=127.0.0.1:%d", port);
    assert_int_equal(th_proc_spawn_args(&prom, "met-prometheus", "/usr/bin/prometheus",
                                        (const char *[]){cfgarg, dataarg, listen, NULL},
                                        (const char *[]){"HOME=/tmp", NULL}),
                     0);
    if (th_wait_log(prom.log_path, "Server is ready to receive web requests", 60000) < 0)
        fail_msg("prometheus did not start (run scripts/setup.sh): see %s", prom.log_path);
    /* Its write-ahead log holds a series once a scrape stored it: an event,
     * not a guess at the scrape interval. */
    snprintf(wal, sizeof(wal), "%s/wal/00000000", data);
    assert_true(th_wait_log(wal, "agentcore_invocations_total", 30000) >= 0);
    snprintf(url, sizeof(url),
             "http://127.0.0.1:%d/api/v1/query?query=agentcore_invocations_total%%7Boutcome%%3D%%22"
             "EndTurn%%22%%7D",
             port);
    assert_int_equal(th_http("GET", url, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    result = json_object_get(json_object_get(r.json, "data"), "result");
    if (json_array_size(result) != 1 ||
        strcmp(json_string_value(
                   json_array_get(json_object_get(json_array_get(result, 0), "value"), 1))
                   ?: "",
               "2"))
        fail_msg("%s", r.body);
    th_resp_free(&r);
    assert_int_equal(th_proc_stop(&prom, SIGTERM), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_process_shows_its_counters),
        cmocka_unit_test(test_prometheus_scrapes_the_agent_worker),
        cmocka_unit_test(test_a_stream_in_flight_is_counted),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
