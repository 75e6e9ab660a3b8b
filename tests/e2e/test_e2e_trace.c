/* End to end: one trace per invocation across the three processes (W3C
 * Trace Context). A caller's traceparent is continued, a missing or broken
 * one starts a new trace; the gateway, the agent-worker and the tool-worker
 * each log the trace id with a span id of their own, the agent-worker's span
 * is sent on to the tool-worker and (as the model call's parent) to Bedrock. */
#include "th_stack.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define KEYS "AWS_ACCESS_KEY_ID=" TH_EMU_AKID, "AWS_SECRET_ACCESS_KEY=" TH_EMU_SECRET
#define TRACE "4bf92f3577b34da6a3ce929d0e0e4736"
#define CALLER_SPAN "00f067aa0ba902b7"

static struct th_proc emu, tool;
static struct th_stack s;

static int setup(void **state)
{
    (void)state;
    return th_emulator_start(&emu, "trace-emulator", NULL) ||
           th_tool_start(&tool, "trace-tool-worker") ||
           th_stack_start(&s, "trace", &emu, &tool, (const char *[]){KEYS, NULL});
}

static int teardown(void **state)
{
    (void)state;
    return th_stack_stop(&s) | th_stop(&tool) | th_stop(&emu) ? -1 : 0;
}

/* The log line of |path| whose message is |message| and whose requestId is
 * |rid|, waited for; a new reference or NULL. */
static json_t *line_of(const char *path, const char *rid, const char *message)
{
    char *text, *line, *save = NULL;
    json_t *found = NULL;

    if (th_wait_log(path, rid, 5000) < 0 || !(text = th_read_file(path, NULL)))
        return NULL;
    for (line = strtok_r(text, "\n", &save); line && !found; line = strtok_r(NULL, "\n", &save)) {
        json_t *o = json_loads(line, 0, NULL);
        const char *r = json_string_value(json_object_get(o, "requestId"));
        const char *m = json_string_value(json_object_get(o, "message"));

        if (r && m && !strcmp(r, rid) && !strcmp(m, message))
            found = json_incref(o);
        json_decref(o);
    }
    free(text);
    return found;
}

static const char *field(json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));

    return v ? v : "";
}

/* Invokes with |traceparent| (or none) and a tool call; the request id. */
static void invoke_traced(const char *traceparent, const char *rid)
{
    char h1[160], h2[200], url[96];
    const char *hdrs[3] = {h1, traceparent ? h2 : NULL, NULL};
    const char *body = "{\"prompt\":\"[[tool:calculator {\\\"expression\\\":\\\"6*7\\\"}]]\"}";
    struct th_resp r;

    snprintf(h1, sizeof(h1), "X-Amzn-Bedrock-AgentCore-Runtime-Request-Id: %s", rid);
    snprintf(h2, sizeof(h2), "traceparent: %s", traceparent ? traceparent : "");
    snprintf(url, sizeof(url), "%s/invocations", s.url);
    assert_int_equal(th_http("POST", url, hdrs, body, strlen(body), &r), 0);
    if (r.status != 200)
        fail_msg("%ld %s", r.status, r.body);
    th_resp_free(&r);
}

/* The three processes' lines for |rid|: one trace id, three span ids. */
static void check_one_trace(const char *rid, const char *want_trace)
{
    json_t *gw = line_of(s.gw.log_path, rid, "request");
    json_t *agent = line_of(s.agent.log_path, rid, "invocation done");
    json_t *tl = line_of(tool.log_path, rid, "tool executed");
    const char *trace;
    char emu_tp[64] = "", url[96];
    struct th_resp r;

    assert_non_null(gw);
    assert_non_null(agent);
    assert_non_null(tl);
    trace = field(agent, "traceId");
    assert_int_equal(strlen(trace), 32);
    if (want_trace)
        assert_string_equal(trace, want_trace);
    assert_string_equal(field(gw, "traceId"), trace);
    assert_string_equal(field(tl, "traceId"), trace);
    assert_int_equal(strlen(field(agent, "spanId")), 16);
    assert_string_not_equal(field(gw, "spanId"), field(agent, "spanId"));
    assert_string_not_equal(field(agent, "spanId"), field(tl, "spanId"));
    assert_string_not_equal(field(gw, "spanId"), CALLER_SPAN);
    /* Bedrock got the trace too, with a span of its own (the model call). */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/_emu/stats", emu.port);
    assert_int_equal(th_http("GET", url, NULL, NULL, 0, &r), 0);
    snprintf(emu_tp, sizeof(emu_tp), "%s", field(r.json, "last_traceparent"));
    th_resp_free(&r);
    assert_int_equal(strlen(emu_tp), 55);
    assert_int_equal(strncmp(emu_tp + 3, trace, 32), 0);
    assert_int_not_equal(strncmp(emu_tp + 36, field(agent, "spanId"), 16), 0);
    json_decref(gw);
    json_decref(agent);
    json_decref(tl);
}

static void test_a_callers_trace_is_continued(void **state)
{
    (void)state;
    invoke_traced("00-" TRACE "-" CALLER_SPAN "-01", "trace-req-continued");
    check_one_trace("trace-req-continued", TRACE);
}

static void test_no_trace_starts_one(void **state)
{
    (void)state;
    invoke_traced(NULL, "trace-req-new");
    check_one_trace("trace-req-new", NULL);
}

static void test_a_broken_traceparent_starts_one(void **state)
{
    json_t *agent;

    (void)state;
    invoke_traced("00-" TRACE "-0000000000000000-01", "trace-req-broken");
    check_one_trace("trace-req-broken", NULL);
    agent = line_of(s.agent.log_path, "trace-req-broken", "invocation done");
    assert_string_not_equal(field(agent, "traceId"), TRACE);
    json_decref(agent);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_callers_trace_is_continued),
        cmocka_unit_test(test_no_trace_starts_one),
        cmocka_unit_test(test_a_broken_traceparent_starts_one),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
