/* End to end: spans exported as OTLP/HTTP protobuf by all three processes,
 * read back by an independent decoder: protoc with the official OTLP
 * definitions (tests/data/otlp-proto). One invocation with a tool call must
 * give one trace: the gateway's invoke_agent (child of the caller's span),
 * the agent-worker's invoke_agent (child of the gateway's), a chat span per
 * model call and the tool-worker's execute_tool (children of the
 * agent-worker's), with the GenAI attributes, token counts and session.id.
 * A collector that is down costs the requests nothing: they all answer and
 * the lost spans are counted in a WARN line.
 *
 * Signed export (the second group): the emulator plays X-Ray's OTLP endpoint
 * and accepts only SigV4-signed requests for service xray. Only the
 * agent-worker holds credentials; the gateway's spans reach it by
 * ExportSpans and the tool-worker's in its answers, and all arrive signed,
 * one trace, each under its own process's resource. */
#include "th_stack.h"

#include <jansson.h>
#include <setjmp.h>
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
#define SESSION "otel-session-000000000000000000000000001"
#define FAIL_SESSION "otel-session-000000000000000000000000002"
#define MAX_SPANS 64

static struct th_proc emu, tool, recv_;
static struct th_stack s;
static char dir[600], endpoint[128];

#define OTEL_ENV                                                                                   \
    endpoint, "OTEL_BSP_SCHEDULE_DELAY=50", "OTEL_RESOURCE_ATTRIBUTES=deployment.environment=e2e", \
        "OTEL_EXPORTER_OTLP_HEADERS=x-test-header=hello%20world",                                  \
        "OTEL_METRIC_EXPORT_INTERVAL=300"

static int setup(void **state)
{
    char dir_env[700];

    (void)state;
    snprintf(dir, sizeof(dir), "%s/otlp-%ld", th_log_dir(), (long)getpid());
    snprintf(dir_env, sizeof(dir_env), "RECEIVER_DIR=%s", dir);
    if (mkdir(dir, 0700) || th_proc_start(&recv_, "otel-receiver", AC_BIN_OTLP_RECEIVER,
                                          (const char *[]){dir_env, NULL}, TH_READY_MS))
        return -1;
    snprintf(endpoint, sizeof(endpoint), "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:%d",
             recv_.port);
    if (th_emulator_start(&emu, "otel-emulator", NULL) ||
        th_proc_start(&tool, "otel-tool-worker", AC_BIN_TOOL,
                      (const char *[]){"TOOL_WORKER_LISTEN=127.0.0.1:0", OTEL_ENV, NULL},
                      TH_READY_MS))
        return -1;
    return th_stack_start_gw(
        &s, "otel", &emu, &tool,
        (const char *[]){KEYS, OTEL_ENV, "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true",
                         NULL},
        (const char *[]){OTEL_ENV, NULL});
}

static int teardown(void **state)
{
    (void)state;
    return th_stack_stop(&s) | th_stop(&tool) | th_stop(&emu) | th_stop(&recv_) ? -1 : 0;
}

/* ---- protoc's text form, read back ---- */

struct span {
    char service[8192], name[128], trace[160], id[64], parent[64];
    char attrs[8192]; /* "key=value;", its events' attributes included */
    char events[512]; /* "name;" per event */
};

/* "  key: \"value\"" -> value (escapes kept as protoc wrote them). */
static void value_of(const char *line, char *out, size_t cap)
{
    const char *p = strchr(line, ':');

    p = p ? p + 1 : line;
    while (*p == ' ' || *p == '"')
        p++;
    snprintf(out, cap, "%s", p);
    if (*out && out[strlen(out) - 1] == '"')
        out[strlen(out) - 1] = '\0';
}

/* protoc reading export request |bin| of |signal| ("trace", "metrics")
 * with the official definitions: its text form, line by line. */
static FILE *decoder(const char *bin, const char *signal)
{
    char cmd[2000];
    FILE *p;

    snprintf(cmd, sizeof(cmd),
             "protoc -I %s/tests/data/otlp-proto --decode "
             "opentelemetry.proto.collector.%s.v1.Export%sServiceRequest "
             "opentelemetry/proto/collector/%s/v1/%s_service.proto < %s",
             AC_SOURCE_DIR, signal, strcmp(signal, "trace") ? "Metrics" : "Trace", signal, signal,
             bin);
    p = popen(cmd, "r");
    assert_non_null(p);
    return p;
}

/* The next line of |p| without its indentation and newline, or NULL. */
static char *next_line(FILE *p, char *line, size_t cap)
{
    char *t = line;

    if (!fgets(line, (int)cap, p))
        return NULL;
    line[strcspn(line, "\n")] = '\0';
    while (*t == ' ')
        t++;
    return t;
}

static int decode_all(const char *from, struct span *spans)
{
    char line[16384], key[256] = "", val[8192], service[8192] = "", *t;
    int n = 0, k, in_resource = 0, depth = 0, event_depth = -1;
    long i;
    FILE *p;

    for (i = 1;; i++) {
        char bin[700];
        struct stat st;

        snprintf(bin, sizeof(bin), "%s/%ld.bin", from, i);
        if (stat(bin, &st))
            break;
        p = decoder(bin, "trace");
        while ((t = next_line(p, line, sizeof(line)))) {
            if (!strcmp(t, "}")) {
                if (--depth == event_depth)
                    event_depth = -1;
                continue;
            }
            if (t[0] && t[strlen(t) - 1] == '{') {
                if (!strcmp(t, "events {"))
                    event_depth = depth;
                depth++;
            }
            if (!strcmp(t, "resource {"))
                in_resource = 1;
            else if (!strcmp(t, "scope_spans {"))
                in_resource = 0;
            if (!strcmp(t, "spans {") && n < MAX_SPANS) {
                memset(&spans[n], 0, sizeof(spans[n]));
                snprintf(spans[n].service, sizeof(spans[n].service), "%s", service);
                n++;
                continue;
            }
            if (!strncmp(t, "key: ", 5)) {
                value_of(t, key, sizeof(key));
            } else if (!strncmp(t, "string_value: ", 14) || !strncmp(t, "int_value: ", 11)) {
                value_of(t, val, sizeof(val));
                if (in_resource && !strcmp(key, "service.name"))
                    snprintf(service, sizeof(service), "%s", val);
                else if (n && !in_resource) {
                    size_t len = strlen(spans[n - 1].attrs);

                    snprintf(spans[n - 1].attrs + len, sizeof(spans[n - 1].attrs) - len, "%s=%s;",
                             key, val);
                }
            } else if (n && !in_resource) {
                struct span *sp = &spans[n - 1];

                if (!strncmp(t, "trace_id: ", 10))
                    value_of(t, sp->trace, sizeof(sp->trace));
                else if (!strncmp(t, "span_id: ", 9))
                    value_of(t, sp->id, sizeof(sp->id));
                else if (!strncmp(t, "parent_span_id: ", 16))
                    value_of(t, sp->parent, sizeof(sp->parent));
                else if (!strncmp(t, "name: ", 6) && event_depth >= 0) {
                    size_t len = strlen(sp->events);

                    value_of(t, val, sizeof(val));
                    snprintf(sp->events + len, sizeof(sp->events) - len, "%s;", val);
                } else if (!strncmp(t, "name: ", 6) && !sp->name[0])
                    value_of(t, sp->name, sizeof(sp->name));
            }
        }
        k = pclose(p);
        if (k != 0)
            fail_msg("protoc could not decode %s (exit %d): not an ExportTraceServiceRequest", bin,
                     k);
    }
    return n;
}

/* ---- metrics, read back the same way ---- */

static int count_lines(const char *log, const char *kind);

/* The largest value (as_int, or a histogram's count) of |metric| exported
 * by |service| in a data point whose attributes hold |attr| ("k=v;", or ""),
 * over the last 30 metrics requests in |from| (the values are cumulative);
 * -1 when there is none. */
static long metric_value(const char *from, const char *service, const char *metric,
                         const char *attr)
{
    char line[4096], key[256] = "", val[256], svc[256] = "", name[256] = "", *t;
    char attrs[2048] = "", log[800];
    long i, last, best = -1, v = -1;
    int in_resource = 0, depth = 0, dp_depth = -1;
    FILE *p;

    snprintf(log, sizeof(log), "%s/requests.log", from);
    last = count_lines(log, "POST /v1/metrics");
    for (i = last > 30 ? last - 29 : 1; i <= last; i++) {
        char bin[700];

        snprintf(bin, sizeof(bin), "%s/m%ld.bin", from, i);
        p = decoder(bin, "metrics");
        while ((t = next_line(p, line, sizeof(line)))) {
            if (!strcmp(t, "}")) {
                /* a data point ends: its value and attributes are known */
                if (--depth == dp_depth) {
                    if (!strcmp(svc, service) && !strcmp(name, metric) && strstr(attrs, attr) &&
                        v > best)
                        best = v;
                    dp_depth = -1;
                }
                continue;
            }
            if (t[0] && t[strlen(t) - 1] == '{') {
                if (!strcmp(t, "data_points {")) {
                    dp_depth = depth;
                    attrs[0] = '\0';
                    v = -1;
                }
                depth++;
            }
            if (!strcmp(t, "resource {"))
                in_resource = 1;
            else if (!strcmp(t, "scope_metrics {"))
                in_resource = 0;
            else if (!strncmp(t, "key: ", 5))
                value_of(t, key, sizeof(key));
            else if (!strncmp(t, "string_value: ", 14)) {
                value_of(t, val, sizeof(val));
                if (in_resource && !strcmp(key, "service.name"))
                    snprintf(svc, sizeof(svc), "%s", val);
                else if (dp_depth >= 0) {
                    size_t len = strlen(attrs);

                    snprintf(attrs + len, sizeof(attrs) - len, "%.200s=%.200s;", key, val);
                }
            } else if (!strncmp(t, "name: ", 6) && !in_resource) {
                value_of(t, name, sizeof(name));
            } else if (dp_depth >= 0 && (!strncmp(t, "as_int: ", 8) || !strncmp(t, "count: ", 7))) {
                v = atol(strchr(t, ':') + 1);
            }
        }
        if (pclose(p) != 0)
            fail_msg("protoc could not decode %s: not an ExportMetricsServiceRequest", bin);
    }
    return best;
}

static const struct span *find(const struct span *spans, int n, const char *service,
                               const char *name)
{
    int i;

    for (i = 0; i < n; i++)
        if (!strcmp(spans[i].service, service) && !strncmp(spans[i].name, name, strlen(name)))
            return &spans[i];
    return NULL;
}

static void test_one_trace_across_the_three_processes(void **state)
{
    static struct span spans[MAX_SPANS];
    char url[96], log[800], *requests;
    const char *hdrs[] = {"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                          "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id: " SESSION, NULL};
    const char *body = "{\"prompt\":\"[[tool:calculator {\\\"expression\\\":\\\"6*7\\\"}]]\"}";
    const struct span *gw, *agent, *chat, *tl;
    struct th_resp r;
    int n, i, k, chats = 0;

    (void)state;
    snprintf(url, sizeof(url), "%s/invocations", s.url);
    assert_int_equal(th_http("POST", url, hdrs, body, strlen(body), &r), 0);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    /* The three processes export on their own: wait for the gateway's span
     * (the last to end) to have arrived, then read them all. */
    snprintf(log, sizeof(log), "%s/requests.log", dir);
    assert_true(th_wait_log_count(log, "POST /v1/traces", 3, 10000) >= 0);
    for (i = 0; i < 5; i++) {
        n = decode_all(dir, spans);
        if (find(spans, n, "agentcore-gateway", "invoke_agent"))
            break;
        th_wait_log_count(log, "POST /v1/traces", 4 + i, 2000); /* the next export */
    }
    gw = find(spans, n, "agentcore-gateway", "invoke_agent");
    agent = find(spans, n, "agentcore-agent-worker", "invoke_agent");
    tl = find(spans, n, "agentcore-tool-worker", "execute_tool calculator");
    assert_non_null(gw);
    assert_non_null(agent);
    assert_non_null(tl);
    for (i = 0; i < n; i++) {
        /* one trace: the caller's */
        assert_string_equal(spans[i].trace, gw->trace);
        if (!strncmp(spans[i].name, "chat ", 5)) {
            chats++;
            chat = &spans[i];
            assert_string_equal(chat->parent, agent->id);
            assert_non_null(strstr(chat->attrs, "gen_ai.operation.name=chat;"));
            assert_non_null(strstr(chat->attrs, "gen_ai.provider.name=aws.bedrock;"));
            assert_non_null(strstr(chat->attrs, "gen_ai.request.model="));
            assert_null(strstr(chat->attrs, "gen_ai.usage.input_tokens=0;"));
            /* content capture is on: what was sent and received, as the
             * conventions shape it */
            assert_string_equal(chat->events, "gen_ai.client.inference.operation.details;");
            assert_non_null(strstr(chat->attrs, "gen_ai.input.messages="));
            assert_non_null(strstr(chat->attrs, "gen_ai.output.messages="));
            assert_non_null(strstr(chat->attrs, "\\\"finish_reason\\\":\\\""));
        }
    }
    assert_int_equal(chats, 2); /* the toolUse turn and the answer */
    /* the first answer asked for the tool, the second saw its result */
    for (i = 0, k = 0; i < n; i++)
        k += strstr(spans[i].attrs, "tool_call_response") != NULL;
    assert_int_equal(k, 1);
    assert_string_equal(tl->events, "");
    /* the links: caller -> gateway -> agent-worker -> tool-worker */
    assert_string_not_equal(gw->parent, "");
    assert_string_equal(agent->parent, gw->id);
    assert_string_equal(tl->parent, agent->id);
    assert_non_null(strstr(agent->attrs, "gen_ai.operation.name=invoke_agent;"));
    assert_non_null(strstr(agent->attrs, "session.id=" SESSION ";"));
    assert_non_null(strstr(agent->attrs, "agentcore.stop_reason=EndTurn;"));
    assert_null(strstr(agent->attrs, "gen_ai.usage.output_tokens=0;"));
    assert_non_null(strstr(gw->attrs, "session.id=" SESSION ";"));
    assert_non_null(strstr(tl->attrs, "gen_ai.tool.name=calculator;"));
    assert_non_null(strstr(tl->attrs, "gen_ai.tool.call.id=tooluse_emu_"));
    assert_non_null(strstr(tl->attrs, "session.id=" SESSION ";"));
    /* what every export carried */
    requests = th_read_file(log, NULL);
    assert_non_null(requests);
    assert_non_null(strstr(requests, "content-type=application/x-protobuf"));
    assert_non_null(strstr(requests, "x-test-header=hello world"));
    free(requests);
}

/* Lines of |kind| in a requests.log: the exports taken so far. */
static int count_lines(const char *log, const char *kind)
{
    char *text = th_read_file(log, NULL), *p;
    int n = 0;

    for (p = text; p && (p = strstr(p, kind)); p++)
        n++;
    free(text);
    return n;
}

/* The three processes send their metrics every OTEL_METRIC_EXPORT_INTERVAL:
 * what the invocations of the tests before counted reaches the collector,
 * decoded with the official definitions. */
static void test_metrics_reach_the_collector(void **state)
{
    char log[800];
    long inv = -1, http = -1, tools = -1, dur = -1;
    int round;

    (void)state;
    snprintf(log, sizeof(log), "%s/requests.log", dir);
    for (round = 0; round < 20; round++) {
        inv = metric_value(dir, "agentcore-agent-worker", "agentcore_invocations_total",
                           "outcome=EndTurn;");
        dur = metric_value(dir, "agentcore-agent-worker", "agentcore_invocation_duration_seconds",
                           "");
        http = metric_value(dir, "agentcore-gateway", "agentcore_http_requests_total",
                            "path=/invocations;code=200;");
        tools = metric_value(dir, "agentcore-tool-worker", "agentcore_tool_executions_total",
                             "tool=calculator;status=success;");
        if (inv >= 1 && dur >= 1 && http >= 1 && tools >= 1)
            break;
        /* the next export */
        th_wait_log_count(log, "POST /v1/metrics", count_lines(log, "POST /v1/metrics") + 1, 5000);
    }
    assert_true(inv >= 1);
    assert_true(dur >= inv); /* every invocation is in the histogram */
    assert_true(http >= 1);
    assert_true(tools >= 1);
}

/* A model call that fails: its chat span and the invocation's are ERROR,
 * each with the "exception" event the conventions name. */
static void test_a_failure_is_an_exception_event(void **state)
{
    static struct span spans[MAX_SPANS];
    const char *hdrs[] = {"X-Amzn-Bedrock-AgentCore-Runtime-Session-Id: " FAIL_SESSION, NULL};
    const char *body = "{\"prompt\":\"[[fail:400]]\"}";
    const struct span *agent = NULL, *chat = NULL;
    char url[96], log[800];
    struct th_resp r;
    int n = 0, i, round;

    (void)state;
    snprintf(url, sizeof(url), "%s/invocations", s.url);
    assert_int_equal(th_http("POST", url, hdrs, body, strlen(body), &r), 0);
    assert_int_equal(r.status, 502); /* Model invocation failed */
    th_resp_free(&r);
    snprintf(log, sizeof(log), "%s/requests.log", dir);
    /* wait for the agent-worker's spans of this invocation (a later export) */
    for (round = 0; round < 10 && !chat; round++) {
        n = decode_all(dir, spans);
        for (i = 0; i < n; i++)
            if (!strcmp(spans[i].name, "invoke_agent") &&
                !strcmp(spans[i].service, "agentcore-agent-worker") &&
                strstr(spans[i].attrs, "session.id=" FAIL_SESSION ";"))
                agent = &spans[i];
        for (i = 0; agent && i < n; i++)
            if (!strncmp(spans[i].name, "chat ", 5) && !strcmp(spans[i].parent, agent->id))
                chat = &spans[i];
        if (!chat) /* the next export */
            th_wait_log_count(log, "POST /v1/traces", count_lines(log, "POST /v1/traces") + 1,
                              5000);
    }
    assert_non_null(agent);
    assert_non_null(chat);
    assert_non_null(strstr(chat->events, "exception;"));
    assert_non_null(strstr(chat->attrs, "exception.type=ValidationException;"));
    assert_non_null(strstr(chat->attrs, "exception.message=injected: the request is invalid;"));
    assert_non_null(strstr(chat->attrs, "error.type=ValidationException;"));
    assert_string_equal(agent->events, "exception;");
    assert_non_null(strstr(agent->attrs, "exception.type=ValidationException;"));
}

/* The collector is down: invocations answer as before; the exporter's WARN
 * line says what was lost. */
static void test_a_collector_that_is_down_slows_nothing(void **state)
{
    struct th_stack down;
    struct th_resp r;
    char dead[96];
    int i;

    (void)state;
    snprintf(dead, sizeof(dead), "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:%d", th_free_port());
    assert_int_equal(
        th_stack_start_gw(&down, "otel-down", &emu, &tool,
                          (const char *[]){KEYS, dead, "OTEL_BSP_SCHEDULE_DELAY=10", NULL},
                          (const char *[]){dead, NULL}),
        0);
    for (i = 0; i < 5; i++) {
        assert_int_equal(th_invoke(&down, "{\"prompt\":\"hello\"}", NULL, &r), 0);
        assert_int_equal(r.status, 200);
        th_resp_free(&r);
    }
    assert_true(th_wait_log(down.agent.log_path, "span export failed", 15000) >= 0);
    assert_int_equal(th_stack_stop(&down), 0);
}

/* ---- signed export, to the emulator's X-Ray endpoint ---- */

static struct th_proc xemu, xtool;
static struct th_stack xs;
static char xdir[600], xendpoint[160], xmetrics[160];

#define XRAY_ENV                                                                                   \
    xendpoint, xmetrics, "OTEL_EXPORTER_OTLP_SIGV4=true", "OTEL_BSP_SCHEDULE_DELAY=50",            \
        "OTEL_METRIC_EXPORT_INTERVAL=200"

static int setup_signed(void **state)
{
    char dir_env[700];

    (void)state;
    snprintf(xdir, sizeof(xdir), "%s/xray-%ld", th_log_dir(), (long)getpid());
    snprintf(dir_env, sizeof(dir_env), "EMU_OTLP_DIR=%s", xdir);
    if (mkdir(xdir, 0700) ||
        th_emulator_start(&xemu, "xray-emulator", (const char *[]){dir_env, NULL}))
        return -1;
    snprintf(xendpoint, sizeof(xendpoint),
             "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:%d/v1/traces", xemu.port);
    snprintf(xmetrics, sizeof(xmetrics),
             "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=http://127.0.0.1:%d/v1/metrics", xemu.port);
    if (th_proc_start(&xtool, "xray-tool-worker", AC_BIN_TOOL,
                      (const char *[]){"TOOL_WORKER_LISTEN=127.0.0.1:0", XRAY_ENV, NULL},
                      TH_READY_MS))
        return -1;
    /* Credentials for the agent-worker only, as in production. */
    return th_stack_start_gw(&xs, "xray", &xemu, &xtool, (const char *[]){KEYS, XRAY_ENV, NULL},
                             (const char *[]){XRAY_ENV, NULL});
}

static int teardown_signed(void **state)
{
    (void)state;
    return th_stack_stop(&xs) | th_stop(&xtool) | th_stop(&xemu) ? -1 : 0;
}

/* 1 when process |pid| has libcurl mapped. */
static int maps_libcurl(pid_t pid)
{
    char path[64], line[1024];
    int found = 0, lines = 0;
    FILE *f;

    /* Read line by line: procfs files have no size to read up to. */
    snprintf(path, sizeof(path), "/proc/%ld/maps", (long)pid);
    f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        lines++;
        found |= strstr(line, "/libcurl") != NULL;
    }
    fclose(f);
    assert_true(lines > 10); /* the map was really read */
    return found;
}

static void test_signed_export_goes_through_the_agent_worker(void **state)
{
    static struct span spans[MAX_SPANS];
    char url[96], log[800], stats_url[96];
    const char *body = "{\"prompt\":\"[[tool:calculator {\\\"expression\\\":\\\"2+3\\\"}]]\"}";
    const char *hdrs[] = {"X-Amzn-Bedrock-AgentCore-Runtime-Session-Id: " SESSION, NULL};
    const char *unsigned_hdrs[] = {"Content-Type: application/x-protobuf", NULL};
    const struct span *gw, *agent, *tl;
    struct th_resp r;
    json_t *stats;
    int n = 0, i;

    (void)state;
    snprintf(url, sizeof(url), "%s/invocations", xs.url);
    assert_int_equal(th_http("POST", url, hdrs, body, strlen(body), &r), 0);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    snprintf(log, sizeof(log), "%s/requests.log", xdir);
    /* The gateway's span ends last and travels furthest: wait for it. */
    for (i = 0; i < 6; i++) {
        if (th_wait_log_count(log, "POST /v1/traces", 1 + i, 10000) < 0)
            break;
        n = decode_all(xdir, spans);
        if (find(spans, n, "agentcore-gateway", "invoke_agent") &&
            find(spans, n, "agentcore-tool-worker", "execute_tool"))
            break;
    }
    gw = find(spans, n, "agentcore-gateway", "invoke_agent");
    agent = find(spans, n, "agentcore-agent-worker", "invoke_agent");
    tl = find(spans, n, "agentcore-tool-worker", "execute_tool calculator");
    assert_non_null(gw);
    assert_non_null(agent);
    assert_non_null(tl);
    assert_string_equal(agent->trace, gw->trace);
    assert_string_equal(tl->trace, gw->trace);
    assert_string_equal(agent->parent, gw->id);
    assert_string_equal(tl->parent, agent->id);
    assert_non_null(strstr(tl->attrs, "gen_ai.tool.name=calculator;"));
    assert_non_null(strstr(gw->attrs, "session.id=" SESSION ";"));
    /* The emulator refuses what is not signed for xray, and refused nothing
     * of ours. */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/traces", xemu.port);
    assert_int_equal(th_http("POST", url, unsigned_hdrs, "x", 1, &r), 0);
    assert_int_equal(r.status, 403);
    th_resp_free(&r);
    snprintf(stats_url, sizeof(stats_url), "http://127.0.0.1:%d/_emu/stats", xemu.port);
    assert_int_equal(th_http("GET", stats_url, NULL, NULL, 0, &r), 0);
    stats = json_loads(r.body, 0, NULL);
    th_resp_free(&r);
    assert_non_null(stats);
    assert_int_equal(json_integer_value(json_object_get(stats, "otlp_rejected")), 1);
    assert_true(json_integer_value(json_object_get(stats, "otlp_exports")) >= 1);
    json_decref(stats);
    /* Only the agent-worker sends: the others never even load an HTTP client. */
    assert_false(maps_libcurl(xs.gw.pid));
    assert_false(maps_libcurl(xtool.pid));
    assert_true(maps_libcurl(xs.agent.pid));
    /* Metrics take the same ways (the gateway's by ExportSpans, the
     * tool-worker's with its answer), signed for CloudWatch's "monitoring". */
    for (i = 0; i < 20; i++) {
        if (metric_value(xdir, "agentcore-agent-worker", "agentcore_invocations_total",
                         "outcome=EndTurn;") >= 1 &&
            metric_value(xdir, "agentcore-gateway", "agentcore_http_requests_total",
                         "path=/invocations;code=200;") >= 1 &&
            metric_value(xdir, "agentcore-tool-worker", "agentcore_tool_executions_total",
                         "tool=calculator;") >= 1)
            break;
        th_wait_log_count(log, "POST /v1/metrics", count_lines(log, "POST /v1/metrics") + 1, 5000);
    }
    assert_true(i < 20);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_trace_across_the_three_processes),
        cmocka_unit_test(test_a_failure_is_an_exception_event),
        cmocka_unit_test(test_metrics_reach_the_collector),
        cmocka_unit_test(test_a_collector_that_is_down_slows_nothing),
    };
    const struct CMUnitTest signed_tests[] = {
        cmocka_unit_test(test_signed_export_goes_through_the_agent_worker),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);

    return rc | cmocka_run_group_tests(signed_tests, setup_signed, teardown_signed);
}
