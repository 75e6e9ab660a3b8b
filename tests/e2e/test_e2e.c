/* End to end, with real processes on ephemeral loopback ports:
 * HTTP -> gateway -> gRPC -> agent-worker -> SigV4 HTTP -> Bedrock emulator,
 * agent-worker -> gRPC -> tool-worker. Three stacks share one tool-worker:
 *   main      a normal runtime (MAX_ITERATIONS=3)
 *   badkey    an agent-worker signing with a wrong secret key
 *   throttle  an emulator that throttles its first two model calls over HTTP and
 *             the next two inside the event stream
 *   converse  an agent-worker calling Converse instead of ConverseStream */
#include "th_http.h"
#include "th_proc.h"

#include <jansson.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define READY_MS 30000
#define EMU_AKID "AKIDEMULATOR0000000"
#define EMU_SECRET "emulator-secret-key-e2e"
#define WRONG_SECRET "wrong-secret-key-must-never-be-logged"
#define SESSION_TOKEN "session-token-must-never-be-logged"

struct stack {
    struct th_proc emu, agent, gw;
    char url[64], emu_url[64];
};

static struct th_proc tool;
static struct stack main_s, badkey_s, throttle_s, converse_s;
static int teardown_failed; /* cmocka's exit status ignores a failed group teardown */

static int start_emulator2(struct th_proc *p, const char *name, const char *extra,
                           const char *extra2)
{
    const char *env[] = {"EMU_ACCESS_KEY_ID=" EMU_AKID, "EMU_SECRET_ACCESS_KEY=" EMU_SECRET, extra,
                         extra2, NULL};

    return th_proc_start(p, name, AC_BIN_EMULATOR, env, READY_MS);
}

static int start_emulator(struct th_proc *p, const char *name, const char *extra)
{
    return start_emulator2(p, name, extra, NULL);
}

static int start_stack(struct stack *s, const char *name, const struct th_proc *emu,
                       const char *secret, const char *extra)
{
    char endpoint[128], tools[64], listen[] = "AGENT_WORKER_LISTEN=127.0.0.1:0", agent_addr[64];
    char secret_env[128], n_agent[64], n_gw[64];
    const char *agent_env[] = {listen,
                               tools,
                               endpoint,
                               "AWS_ACCESS_KEY_ID=" EMU_AKID,
                               secret_env,
                               "AWS_SESSION_TOKEN=" SESSION_TOKEN,
                               "AWS_REGION=us-east-1",
                               "MAX_ITERATIONS=3",
                               "BEDROCK_RETRY_BASE_MS=20",
                               extra,
                               NULL};
    const char *gw_env[] = {"PORT=0", "GATEWAY_HOST=127.0.0.1", agent_addr, NULL};

    snprintf(s->emu_url, sizeof(s->emu_url), "http://127.0.0.1:%d", emu->port);
    snprintf(endpoint, sizeof(endpoint), "AWS_ENDPOINT_URL_BEDROCK_RUNTIME=%s", s->emu_url);
    snprintf(tools, sizeof(tools), "TOOL_WORKERS=127.0.0.1:%d", tool.port);
    snprintf(secret_env, sizeof(secret_env), "AWS_SECRET_ACCESS_KEY=%s", secret);
    snprintf(n_agent, sizeof(n_agent), "%s-agent-worker", name);
    snprintf(n_gw, sizeof(n_gw), "%s-gateway", name);
    if (th_proc_start(&s->agent, n_agent, AC_BIN_AGENT, agent_env, READY_MS))
        return -1;
    snprintf(agent_addr, sizeof(agent_addr), "AGENT_WORKER_ADDR=127.0.0.1:%d", s->agent.port);
    if (th_proc_start(&s->gw, n_gw, AC_BIN_GATEWAY, gw_env, READY_MS))
        return -1;
    snprintf(s->url, sizeof(s->url), "http://127.0.0.1:%d", s->gw.port);
    return 0;
}

static int setup(void **state)
{
    (void)state;
    if (th_proc_start(&tool, "tool-worker", AC_BIN_TOOL,
                      (const char *[]){"TOOL_WORKER_LISTEN=127.0.0.1:0", NULL}, READY_MS))
        return -1;
    if (start_emulator(&main_s.emu, "main-emulator", NULL) ||
        start_stack(&main_s, "main", &main_s.emu, EMU_SECRET, NULL))
        return -1;
    if (start_stack(&badkey_s, "badkey", &main_s.emu, WRONG_SECRET, NULL))
        return -1;
    if (start_stack(&converse_s, "converse", &main_s.emu, EMU_SECRET, "BEDROCK_STREAMING=false"))
        return -1;
    if (start_emulator2(&throttle_s.emu, "throttle-emulator", "EMU_THROTTLE_FIRST=2",
                        "EMU_STREAM_EXCEPTION_FIRST=2") ||
        start_stack(&throttle_s, "throttle", &throttle_s.emu, EMU_SECRET, "AWS_MAX_ATTEMPTS=5"))
        return -1;
    return 0;
}

/* SIGTERM must end every process with status 0: a clean shutdown, and no
 * sanitizer report (ASan's leak check and UBSan change the exit status). */
static int stop(struct th_proc *p)
{
    int st;

    if (p->pid <= 0)
        return 0; /* already stopped by a test */
    st = th_proc_stop(p, SIGTERM);
    if (st != 0)
        fprintf(stderr, "%s exited with %d on SIGTERM (see %s)\n", p->name, st, p->log_path);
    return st != 0;
}

static int teardown(void **state)
{
    int bad = 0;

    (void)state;
    bad += stop(&main_s.gw) + stop(&main_s.agent);
    bad += stop(&badkey_s.gw) + stop(&badkey_s.agent);
    bad += stop(&throttle_s.gw) + stop(&throttle_s.agent);
    bad += stop(&converse_s.gw) + stop(&converse_s.agent);
    bad += stop(&main_s.emu) + stop(&throttle_s.emu) + stop(&tool);
    teardown_failed = bad != 0;
    return bad ? -1 : 0;
}

/* POSTs |body| to /invocations with an optional session header. */
static void invoke(const struct stack *s, const char *body, const char *session_header,
                   struct th_resp *r)
{
    char url[128], hdr[400];
    const char *headers[] = {hdr, NULL};

    snprintf(url, sizeof(url), "%s/invocations", s->url);
    snprintf(hdr, sizeof(hdr), "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id: %s",
             session_header ? session_header : "");
    assert_int_equal(
        th_http("POST", url, session_header ? headers : NULL, body, body ? strlen(body) : 0, r), 0);
}

static const char *jstr(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));

    if (!s)
        fail_msg("field '%s' missing", k);
    return s;
}

static void assert_ping_ok(const struct stack *s)
{
    char url[128];
    struct th_resp r;

    snprintf(url, sizeof(url), "%s/ping", s->url);
    assert_int_equal(th_http("GET", url, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "status"), "Healthy");
    th_resp_free(&r);
}

static void test_ping(void **state)
{
    char url[128], ct[64];
    struct th_resp a, b;
    json_t *t;

    (void)state;
    snprintf(url, sizeof(url), "%s/ping", main_s.url);
    assert_int_equal(th_http("GET", url, NULL, NULL, 0, &a), 0);
    assert_int_equal(a.status, 200);
    assert_int_equal(th_resp_header(&a, "Content-Type", ct, sizeof(ct)), 0);
    assert_string_equal(ct, "application/json");
    assert_string_equal(jstr(a.json, "status"), "Healthy");
    t = json_object_get(a.json, "time_of_last_update");
    assert_true(json_is_integer(t)); /* an integer of seconds, never a string or float */
    assert_int_equal(json_object_size(a.json), 2);
    /* No status change between two pings: the same timestamp. */
    assert_int_equal(th_http("GET", url, NULL, NULL, 0, &b), 0);
    assert_true(json_equal(a.json, b.json));
    th_resp_free(&a);
    th_resp_free(&b);
    assert_int_equal(th_http("HEAD", url, NULL, NULL, 0, &a), 0);
    assert_int_equal(a.status, 200);
    th_resp_free(&a);
}

static void test_plain_invocation(void **state)
{
    struct th_resp r;
    json_t *u;
    char hdr[128];

    (void)state;
    invoke(&main_s, "{\"prompt\":\"hello h\xc3\xa9llo\"}", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(r.json);
    assert_int_equal(json_object_size(r.json), 6);
    assert_string_equal(jstr(r.json, "response"), "Echo: hello h\xc3\xa9llo");
    assert_string_equal(jstr(r.json, "stop_reason"), "EndTurn");
    assert_int_equal(json_integer_value(json_object_get(r.json, "iterations")), 1);
    assert_int_equal(strlen(jstr(r.json, "session_id")), 36); /* generated UUID */
    assert_int_equal(strlen(jstr(r.json, "invocation_id")), 36);
    u = json_object_get(r.json, "usage");
    assert_true(json_integer_value(json_object_get(u, "input_tokens")) > 0);
    assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")),
                     json_integer_value(json_object_get(u, "input_tokens")) +
                         json_integer_value(json_object_get(u, "output_tokens")));
    assert_int_equal(
        th_resp_header(&r, "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id", hdr, sizeof(hdr)), 0);
    assert_string_equal(hdr, jstr(r.json, "session_id"));
    th_resp_free(&r);
}

static void test_tool_round_trip(void **state)
{
    struct th_resp r;
    char *log, needle[128];

    (void)state;
    invoke(&main_s,
           "{\"prompt\":\"compute [[tool:calculator {\\\"expression\\\":\\\"(2+3)*4^2\\\"}]]\"}",
           NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "iterations")), 2);
    assert_string_equal(jstr(r.json, "response"), "Tool result: 80");
    assert_string_equal(jstr(r.json, "stop_reason"), "EndTurn");
    /* The request id reached the tool-worker's log: one id across processes. */
    log = th_read_file(tool.log_path, NULL);
    snprintf(needle, sizeof(needle), "\"requestId\":\"%s\"", jstr(r.json, "invocation_id"));
    assert_non_null(log);
    assert_non_null(strstr(log, needle));
    free(log);
    th_resp_free(&r);
}

static void test_tool_error_result(void **state)
{
    struct th_resp r;

    (void)state;
    invoke(&main_s, "{\"prompt\":\"[[tool:calculator {\\\"expression\\\":\\\"1/0\\\"}]]\"}", NULL,
           &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(jstr(r.json, "response"), "division by zero"));
    th_resp_free(&r);
    invoke(&main_s, "{\"prompt\":\"[[tool:no_such_tool {}]]\"}", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(jstr(r.json, "response"), "unknown tool 'no_such_tool'"));
    th_resp_free(&r);
}

static void session_memory(const char *first_body, const char *header, const char *second_body)
{
    struct th_resp r;

    invoke(&main_s, first_body, header, &r);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    invoke(&main_s, second_body, header, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "response"), "You said: remember the blue whale");
    th_resp_free(&r);
}

static void test_session_memory_via_header(void **state)
{
    (void)state;
    session_memory("{\"prompt\":\"remember the blue whale\"}",
                   "e2e-header-session-0000000000000000001", "{\"prompt\":\"[[recall]]\"}");
}

static void test_session_memory_via_body(void **state)
{
    (void)state;
    session_memory(
        "{\"prompt\":\"remember the blue whale\",\"session_id\":\"e2e-body-session-00000000002\"}",
        NULL, "{\"prompt\":\"[[recall]]\",\"session_id\":\"e2e-body-session-00000000002\"}");
}

static void test_header_session_wins(void **state)
{
    struct th_resp r;

    (void)state;
    invoke(&main_s, "{\"prompt\":\"x\",\"session_id\":\"from-body-0000000000000000000000003\"}",
           "from-header-00000000000000000000003", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "session_id"), "from-header-00000000000000000000003");
    th_resp_free(&r);
}

static void test_max_iterations(void **state)
{
    struct th_resp r;

    (void)state;
    invoke(&main_s, "{\"prompt\":\"[[tool-loop:calculator {\\\"expression\\\":\\\"1+1\\\"}]]\"}",
           NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "stop_reason"), "MaxIterations");
    assert_int_equal(json_integer_value(json_object_get(r.json, "iterations")), 3);
    th_resp_free(&r);
}

static void test_max_tokens(void **state)
{
    struct th_resp r;

    (void)state;
    invoke(&main_s, "{\"prompt\":\"long [[max_tokens]]\"}", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "stop_reason"), "MaxTokens");
    th_resp_free(&r);
}

/* Bad input: status, JSON error body, and the gateway keeps serving. */
static void test_bad_requests(void **state)
{
    static const struct {
        const char *method, *path, *body;
        int status;
        const char *error;
    } rows[] = {
        {"POST", "/invocations", "{bad", 400, "Invalid JSON"},
        {"POST", "/invocations", "", 400, "Invalid JSON"},
        {"POST", "/invocations", "{\"session_id\":\"s\"}", 400, "Invalid request"},
        {"POST", "/invocations", "{\"prompt\":42}", 400, "Invalid request"},
        {"POST", "/invocations", "\xff\xfe{}", 400, "Invalid encoding"},
        {"GET", "/invocations", NULL, 405, "Method Not Allowed"},
        {"POST", "/ping", "{}", 405, "Method Not Allowed"},
        {"GET", "/nowhere", NULL, 404, "Not Found"},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char url[160];
        struct th_resp r;

        snprintf(url, sizeof(url), "%s%s", main_s.url, rows[i].path);
        assert_int_equal(th_http(rows[i].method, url, NULL, rows[i].body,
                                 rows[i].body ? strlen(rows[i].body) : 0, &r),
                         0);
        if (r.status != rows[i].status || !r.json ||
            strcmp(json_string_value(json_object_get(r.json, "error")), rows[i].error))
            fail_msg("%s %s '%s' -> %ld %s", rows[i].method, rows[i].path,
                     rows[i].body ? rows[i].body : "", r.status, r.body);
        th_resp_free(&r);
        assert_ping_ok(&main_s);
    }
}

static void test_wrong_secret_key_surfaces_clearly(void **state)
{
    struct th_resp r;
    const char *details;

    (void)state;
    invoke(&badkey_s, "{\"prompt\":\"hi\"}", NULL, &r);
    assert_int_equal(r.status, 502);
    assert_string_equal(jstr(r.json, "error"), "Model invocation failed");
    details = jstr(r.json, "details");
    assert_non_null(strstr(details, "InvalidSignatureException"));
    assert_non_null(strstr(details, "HTTP 403"));
    assert_non_null(strstr(details, "signature we calculated does not match"));
    assert_null(strstr(r.body, WRONG_SECRET));
    assert_null(strstr(r.headers, WRONG_SECRET));
    th_resp_free(&r);
    assert_ping_ok(&badkey_s);
}

static void test_agent_worker_killed_gives_503(void **state)
{
    struct th_resp r;

    (void)state;
    th_proc_stop(&badkey_s.agent, SIGKILL);
    invoke(&badkey_s, "{\"prompt\":\"anyone there?\"}", NULL, &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(jstr(r.json, "error"), "Agent worker unavailable");
    th_resp_free(&r);
    assert_ping_ok(&badkey_s); /* the gateway stays up */
    invoke(&badkey_s, "{\"prompt\":\"still?\"}", NULL, &r);
    assert_int_equal(r.status, 503);
    th_resp_free(&r);
}

static long long emu_stat(const struct stack *s, const char *key)
{
    char url[128];
    struct th_resp r;
    long long v;

    snprintf(url, sizeof(url), "%s/_emu/stats", s->emu_url);
    assert_int_equal(th_http("GET", url, NULL, NULL, 0, &r), 0);
    v = json_integer_value(json_object_get(r.json, key));
    th_resp_free(&r);
    return v;
}

static void test_throttling_is_retried_and_400_is_not(void **state)
{
    struct th_resp r;
    long long before;

    (void)state;
    invoke(&throttle_s, "{\"prompt\":\"patience\"}", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "response"), "Echo: patience");
    th_resp_free(&r);
    /* 2 throttled over HTTP, 2 throttled inside the stream before any content,
     * then answered: 5 attempts. */
    assert_int_equal(emu_stat(&throttle_s, "faults"), 4);
    assert_int_equal(emu_stat(&throttle_s, "converse"), 5);
    assert_int_equal(emu_stat(&throttle_s, "streams"), 3);
    before = emu_stat(&throttle_s, "converse");
    invoke(&throttle_s, "{\"prompt\":\"[[fail:400]]\"}", NULL, &r);
    assert_int_equal(r.status, 502);
    assert_non_null(strstr(jstr(r.json, "details"), "ValidationException"));
    th_resp_free(&r);
    assert_int_equal(emu_stat(&throttle_s, "converse"), before + 1); /* no retry */
}

/* The same conversation through ConverseStream (main) and Converse (converse)
 * gives the same answers, usage included: the two paths build identical turns. */
static void test_streamed_and_converse_give_the_same_answers(void **state)
{
    static const char *const prompts[] = {
        "{\"prompt\":\"h\u00e9llo, stream me a longer sentence please\"}",
        "{\"prompt\":\"[[tool:calculator {\\\"expression\\\":\\\"(2+3)*4^2\\\"}]]\"}",
        "{\"prompt\":\"[[tool:current_time {\\\"timezone\\\":\\\"UTC\\\"}]] now\"}",
        "{\"prompt\":\"[[recall]]\"}",
        "{\"prompt\":\"[[max_tokens]] cut\"}",
    };
    size_t i;
    long long streams_before = emu_stat(&main_s, "streams");

    (void)state;
    for (i = 0; i < sizeof(prompts) / sizeof(prompts[0]); i++) {
        struct th_resp a, b;

        invoke(&main_s, prompts[i], "same-answers-streamed-000000000000001", &a);
        invoke(&converse_s, prompts[i], "same-answers-converse-000000000000001", &b);
        assert_int_equal(a.status, 200);
        assert_int_equal(b.status, 200);
        json_object_del(a.json, "invocation_id");
        json_object_del(b.json, "invocation_id");
        json_object_del(a.json, "session_id");
        json_object_del(b.json, "session_id");
        if (strstr(prompts[i], "current_time")) { /* the clock may tick between the two */
            assert_string_equal(jstr(a.json, "stop_reason"), jstr(b.json, "stop_reason"));
        } else if (!json_equal(a.json, b.json)) {
            fail_msg("prompt %zu: streamed %s\nconverse %s", i, a.body, b.body);
        }
        th_resp_free(&a);
        th_resp_free(&b);
    }
    /* The main stack really streamed: one ConverseStream per model call. */
    assert_true(emu_stat(&main_s, "streams") >= streams_before + 7);
}

/* Runs last: every log line of every process, so far, is free of credentials. */
static void test_no_secret_in_any_log(void **state)
{
    const struct th_proc *all[] = {&tool,           &main_s.emu,       &main_s.agent,
                                   &main_s.gw,      &badkey_s.agent,   &badkey_s.gw,
                                   &throttle_s.emu, &throttle_s.agent, &throttle_s.gw};
    size_t i, total = 0;

    (void)state;
    for (i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        size_t len = 0;
        char *log = th_read_file(all[i]->log_path, &len);

        assert_non_null(log);
        total += len;
        if (strstr(log, EMU_SECRET) || strstr(log, WRONG_SECRET) || strstr(log, SESSION_TOKEN) ||
            strstr(log, "AWS4-HMAC-SHA256") || strstr(log, EMU_AKID))
            fail_msg("a credential appears in %s", all[i]->log_path);
        free(log);
    }
    assert_true(total > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ping),
        cmocka_unit_test(test_plain_invocation),
        cmocka_unit_test(test_tool_round_trip),
        cmocka_unit_test(test_tool_error_result),
        cmocka_unit_test(test_session_memory_via_header),
        cmocka_unit_test(test_session_memory_via_body),
        cmocka_unit_test(test_header_session_wins),
        cmocka_unit_test(test_max_iterations),
        cmocka_unit_test(test_max_tokens),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_wrong_secret_key_surfaces_clearly),
        cmocka_unit_test(test_agent_worker_killed_gives_503),
        cmocka_unit_test(test_throttling_is_retried_and_400_is_not),
        cmocka_unit_test(test_streamed_and_converse_give_the_same_answers),
        cmocka_unit_test(test_no_secret_in_any_log),
    };
    int rc = cmocka_run_group_tests_name("e2e", tests, setup, teardown);

    return rc ? rc : teardown_failed;
}
