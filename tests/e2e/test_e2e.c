/* End to end, with real processes on ephemeral loopback ports:
 * HTTP -> gateway -> gRPC -> agent-worker -> SigV4 HTTP -> Bedrock emulator,
 * agent-worker -> gRPC -> tool-worker. Three stacks share one tool-worker:
 *   main      a normal runtime (MAX_ITERATIONS=3)
 *   badkey    an agent-worker signing with a wrong secret key
 *   throttle  an emulator that throttles its first two model calls over HTTP and
 *             the next two inside the event stream
 *   converse  an agent-worker calling Converse instead of ConverseStream
 *   adaptive  AWS_RETRY_MODE=adaptive against an emulator that throttles once
 *             over HTTP and once inside the stream */
#include "cm_rpc.h"
#include "th_stack.h"

#include "agentcore.pb-c.h"

#include <jansson.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#define WRONG_SECRET "wrong-secret-key-must-never-be-logged"
#define SESSION_TOKEN "session-token-must-never-be-logged"

static struct th_proc tool, main_emu, throttle_emu, adaptive_emu;
static struct th_stack main_s, badkey_s, throttle_s, converse_s, adaptive_s;
static int teardown_failed; /* cmocka's exit status ignores a failed group teardown */

#define KEYS(secret)                                                                               \
    "AWS_ACCESS_KEY_ID=" TH_EMU_AKID, "AWS_SECRET_ACCESS_KEY=" secret,                             \
        "AWS_SESSION_TOKEN=" SESSION_TOKEN

static int setup(void **state)
{
    (void)state;
    if (th_tool_start(&tool, "tool-worker") ||
        th_emulator_start(&main_emu, "main-emulator", NULL) ||
        th_emulator_start(
            &throttle_emu, "throttle-emulator",
            (const char *[]){"EMU_THROTTLE_FIRST=2", "EMU_STREAM_EXCEPTION_FIRST=2", NULL}) ||
        th_emulator_start(
            &adaptive_emu, "adaptive-emulator",
            (const char *[]){"EMU_THROTTLE_FIRST=1", "EMU_STREAM_EXCEPTION_FIRST=1", NULL}))
        return -1;
    if (th_stack_start(&main_s, "main", &main_emu, &tool,
                       (const char *[]){KEYS(TH_EMU_SECRET), NULL}))
        return -1;
    if (th_stack_start(&badkey_s, "badkey", &main_emu, &tool,
                       (const char *[]){KEYS(WRONG_SECRET), NULL}))
        return -1;
    if (th_stack_start(&converse_s, "converse", &main_emu, &tool,
                       (const char *[]){KEYS(TH_EMU_SECRET), "BEDROCK_STREAMING=false", NULL}))
        return -1;
    if (th_stack_start(&throttle_s, "throttle", &throttle_emu, &tool,
                       (const char *[]){KEYS(TH_EMU_SECRET), "AWS_MAX_ATTEMPTS=5", NULL}))
        return -1;
    if (th_stack_start(&adaptive_s, "adaptive", &adaptive_emu, &tool,
                       (const char *[]){KEYS(TH_EMU_SECRET), "AWS_RETRY_MODE=adaptive",
                                        "AWS_MAX_ATTEMPTS=5", NULL}))
        return -1;
    return 0;
}

/* SIGTERM must end every process with status 0: a clean shutdown, and no
 * sanitizer report (ASan's leak check and UBSan change the exit status). */
static int teardown(void **state)
{
    int bad = 0;

    (void)state;
    bad += th_stack_stop(&main_s) + th_stack_stop(&badkey_s);
    bad += th_stack_stop(&throttle_s) + th_stack_stop(&converse_s);
    bad += th_stack_stop(&adaptive_s);
    bad += th_stop(&main_emu) + th_stop(&throttle_emu) + th_stop(&adaptive_emu) + th_stop(&tool);
    teardown_failed = bad != 0;
    return bad ? -1 : 0;
}

static void invoke(const struct th_stack *s, const char *body, const char *session,
                   struct th_resp *r)
{
    assert_int_equal(th_invoke(s, body, session, r), 0);
}

static const char *jstr(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));

    if (!s)
        fail_msg("field '%s' missing", k);
    return s;
}

static void assert_ping_ok(const struct th_stack *s)
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
    assert_string_equal(jstr(r.json, "response"), "Calling calculator\n\nTool result: 80");
    assert_string_equal(jstr(r.json, "stop_reason"), "EndTurn");
    /* The request id reached the tool-worker's log: one id across processes. */
    log = th_read_file(tool.log_path, NULL);
    snprintf(needle, sizeof(needle), "\"requestId\":\"%s\"", jstr(r.json, "invocation_id"));
    assert_non_null(log);
    assert_non_null(strstr(log, needle));
    free(log);
    /* The line that closes it says what it cost: model time, usage, tools. */
    snprintf(needle, sizeof(needle), "\"requestId\":\"%s\"", jstr(r.json, "invocation_id"));
    assert_true(th_wait_log(main_s.agent.log_path, "\"message\":\"invocation done\"", 5000) >= 0);
    log = th_read_file(main_s.agent.log_path, NULL);
    assert_non_null(log);
    {
        const char *line = strstr(log, needle), *end;
        char copy[2048];

        /* the last line of this request is the closing one */
        while (line && strstr(line + 1, needle))
            line = strstr(line + 1, needle);
        assert_non_null(line);
        while (line > log && line[-1] != '\n')
            line--;
        end = strchr(line, '\n');
        snprintf(copy, sizeof(copy), "%.*s", end ? (int)(end - line) : (int)strlen(line), line);
        if (!strstr(copy, "\"invocation done\"") || !strstr(copy, "\"modelMs\":\"") ||
            !strstr(copy, "\"toolCalls\":\"1\"") || !strstr(copy, "\"tools\":\"calculator:1:") ||
            !strstr(copy, "\"totalTokens\":\"") || strstr(copy, "firstTokenMs"))
            fail_msg("closing line: %s", copy);
    }
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

/* A token budget in the body stops a looping agent before the next model
 * call: each emulated tool turn reports 12 output tokens, so 20 allows two. */
static void test_token_budget_in_the_body(void **state)
{
    struct th_resp r;

    (void)state;
    invoke(&main_s,
           "{\"prompt\":\"[[tool-loop:calculator {\\\"expression\\\":\\\"1+1\\\"}]]\","
           "\"max_output_tokens\":20}",
           NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "stop_reason"), "TokenBudgetExceeded");
    assert_int_equal(json_integer_value(json_object_get(r.json, "iterations")), 2);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(r.json, "usage"), "output_tokens")), 24);
    th_resp_free(&r);
    /* A budget that is not a positive integer is refused. */
    invoke(&main_s, "{\"prompt\":\"x\",\"max_total_tokens\":-1}", NULL, &r);
    assert_int_equal(r.status, 400);
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
    assert_int_equal(th_emu_stat(&throttle_emu, "faults"), 4);
    assert_int_equal(th_emu_stat(&throttle_emu, "converse"), 5);
    assert_int_equal(th_emu_stat(&throttle_emu, "streams"), 3);
    before = th_emu_stat(&throttle_emu, "converse");
    invoke(&throttle_s, "{\"prompt\":\"[[fail:400]]\"}", NULL, &r);
    assert_int_equal(r.status, 502);
    assert_non_null(strstr(jstr(r.json, "details"), "ValidationException"));
    th_resp_free(&r);
    assert_int_equal(th_emu_stat(&throttle_emu, "converse"), before + 1); /* no retry */
}

/* Adaptive mode: throttling turns the client-side rate limiter on, and the
 * paced retries still get through (the pacing itself is unit-tested with a
 * driven clock). */
static void test_adaptive_mode_retries_throttling(void **state)
{
    struct th_resp r;

    (void)state;
    invoke(&adaptive_s, "{\"prompt\":\"paced\"}", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "response"), "Echo: paced");
    th_resp_free(&r);
    assert_int_equal(th_emu_stat(&adaptive_emu, "faults"), 2);
    assert_int_equal(th_emu_stat(&adaptive_emu, "converse"), 3);
    invoke(&adaptive_s, "{\"prompt\":\"[[fail:400]]\"}", NULL, &r);
    assert_int_equal(r.status, 502);
    th_resp_free(&r);
    assert_int_equal(th_emu_stat(&adaptive_emu, "converse"), 4); /* still no retry */
}

/* The error catalogue: what is retried (up to AWS_MAX_ATTEMPTS=5 on this
 * stack) and what is not, and each surfaces with its type. */
static void test_error_catalogue(void **state)
{
    static const struct {
        const char *directive, *type;
        long long calls;
    } rows[] = {
        {"[[fail:503]]", "ServiceUnavailableException", 5},
        {"[[fail:500]]", "InternalServerException", 5},
        {"[[fail:model-not-ready]]", "ModelNotReadyException", 5},
        {"[[fail:408]]", "ModelTimeoutException", 1},
        {"[[fail:424]]", "ModelErrorException", 1},
        {"[[fail:403]]", "AccessDeniedException", 1},
        {"[[fail:404]]", "ResourceNotFoundException", 1},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char body[128];
        struct th_resp r;
        long long before = th_emu_stat(&throttle_emu, "converse");

        snprintf(body, sizeof(body), "{\"prompt\":\"%s\"}", rows[i].directive);
        invoke(&throttle_s, body, NULL, &r);
        assert_int_equal(r.status, 502);
        if (!strstr(jstr(r.json, "details"), rows[i].type))
            fail_msg("%s: %s", rows[i].directive, r.body);
        th_resp_free(&r);
        if (th_emu_stat(&throttle_emu, "converse") != before + rows[i].calls)
            fail_msg("%s: %lld calls, want %lld", rows[i].directive,
                     th_emu_stat(&throttle_emu, "converse") - before, rows[i].calls);
    }
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
    long long streams_before = th_emu_stat(&main_emu, "streams");

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
        /* The emulator counts input tokens as request bytes / 4, and the two
         * histories differ by the digits of its global tool-use counter. */
        json_object_del(json_object_get(a.json, "usage"), "input_tokens");
        json_object_del(json_object_get(b.json, "usage"), "input_tokens");
        json_object_del(json_object_get(a.json, "usage"), "total_tokens");
        json_object_del(json_object_get(b.json, "usage"), "total_tokens");
        if (strstr(prompts[i], "current_time")) { /* the clock may tick between the two */
            assert_string_equal(jstr(a.json, "stop_reason"), jstr(b.json, "stop_reason"));
        } else if (!json_equal(a.json, b.json)) {
            fail_msg("prompt %zu: streamed %s\nconverse %s", i, a.body, b.body);
        }
        th_resp_free(&a);
        th_resp_free(&b);
    }
    /* The main stack really streamed: one ConverseStream per model call. */
    assert_true(th_emu_stat(&main_emu, "streams") >= streams_before + 7);
}

/* The agent-worker's unary Invoke, called directly over gRPC (the gateway
 * uses InvokeStream): the same answer shape, and its ids from the request. */
static void test_agent_worker_unary_invoke(void **state)
{
    static const struct cm_rpc_method invoke = {
        "/agentcore.v1.AgentService/Invoke", &agentcore__v1__invoke_request__descriptor,
        &agentcore__v1__invoke_response__descriptor, CM_RPC_UNARY};
    Agentcore__V1__InvokeRequest req = AGENTCORE__V1__INVOKE_REQUEST__INIT;
    Agentcore__V1__InvokeResponse *resp;
    struct cm_rpc_call_opts o = {10000, NULL, NULL, 0, 1, NULL, NULL};
    struct cm_rpc_status st;
    struct cm_rpc_client *c;
    char target[64], err[128];

    (void)state;
    cm_rpc_init(); /* after every child was exec'd: gRPC is not fork-safe */
    snprintf(target, sizeof(target), "127.0.0.1:%d", main_s.agent.port);
    c = cm_rpc_client_new(target, &invoke, 1, 1 << 20, err, sizeof(err));
    assert_non_null(c);
    req.prompt = "direct";
    req.session_id = "direct-grpc-session-0000000000000001";
    req.request_id = "direct-grpc-request-1";
    /* Without the internal token the call is refused, and logged. */
    assert_int_equal(cm_rpc_call(c, &invoke, &req.base, (ProtobufCMessage **)&resp, &o, &st), -1);
    assert_int_equal(st.code, CM_RPC_UNAUTHENTICATED);
    assert_true(th_wait_log(main_s.agent.log_path, "internal call refused", 5000) >= 0);
    assert_int_equal(th_use_token(), 0);
    assert_int_equal(cm_rpc_call(c, &invoke, &req.base, (ProtobufCMessage **)&resp, &o, &st), 0);
    assert_string_equal(resp->response, "Echo: direct");
    assert_string_equal(resp->invocation_id, "direct-grpc-request-1");
    assert_string_equal(resp->session_id, "direct-grpc-session-0000000000000001");
    assert_string_equal(resp->stop_reason, "EndTurn");
    assert_int_equal(resp->iterations, 1);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    /* Missing fields are refused with INVALID_ARGUMENT, not a crash. */
    req.prompt = "";
    assert_int_equal(cm_rpc_call(c, &invoke, &req.base, (ProtobufCMessage **)&resp, &o, &st), -1);
    assert_int_equal(st.code, CM_RPC_INVALID_ARGUMENT);
    cm_rpc_client_free(c);
    cm_rpc_set_token(NULL);
    cm_rpc_thread_done();
    cm_rpc_shutdown();
}

/* The gateway binary answers a container HEALTHCHECK itself. */
static void test_gateway_healthcheck_mode(void **state)
{
    char cmd[1024];

    (void)state;
    snprintf(cmd, sizeof(cmd), "PORT=%d GATEWAY_HOST=127.0.0.1 %s --healthcheck >/dev/null",
             main_s.gw.port, AC_BIN_GATEWAY);
    assert_int_equal(system(cmd), 0);
    /* Nothing listens on port 1: unhealthy, exit 1. */
    snprintf(cmd, sizeof(cmd), "PORT=1 %s --healthcheck >/dev/null", AC_BIN_GATEWAY);
    assert_int_equal(WEXITSTATUS(system(cmd)), 1);
}

/* So do the workers (grpc.health.v1 on their own listen address; a server
 * bound to every address is asked on loopback), for compose's health-gated
 * depends_on. */
static void test_worker_healthcheck_mode(void **state)
{
    char cmd[1024];

    (void)state;
    snprintf(cmd, sizeof(cmd), "AGENT_WORKER_LISTEN=0.0.0.0:%d %s --healthcheck >/dev/null",
             main_s.agent.port, AC_BIN_AGENT);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof(cmd), "TOOL_WORKER_LISTEN=127.0.0.1:%d %s --healthcheck >/dev/null",
             tool.port, AC_BIN_TOOL);
    assert_int_equal(system(cmd), 0);
    /* Nothing listens on port 1 or on that socket: unhealthy, exit 1. */
    snprintf(cmd, sizeof(cmd), "TOOL_WORKER_LISTEN=127.0.0.1:1 %s --healthcheck >/dev/null",
             AC_BIN_TOOL);
    assert_int_equal(WEXITSTATUS(system(cmd)), 1);
    snprintf(cmd, sizeof(cmd),
             "AGENT_WORKER_LISTEN=unix:/nonexistent/agent.sock %s --healthcheck "
             ">/dev/null",
             AC_BIN_AGENT);
    assert_int_equal(WEXITSTATUS(system(cmd)), 1);
}

/* Runs last: every log line of every process, so far, is free of credentials. */
static void test_no_secret_in_any_log(void **state)
{
    const struct th_proc *all[] = {
        &tool,           &main_emu,     &throttle_emu,     &main_s.agent,  &main_s.gw,
        &badkey_s.agent, &badkey_s.gw,  &throttle_s.agent, &throttle_s.gw, &converse_s.agent,
        &converse_s.gw,  &adaptive_emu, &adaptive_s.agent, &adaptive_s.gw};
    size_t i, total = 0;

    (void)state;
    for (i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        size_t len = 0;
        char *log = th_read_file(all[i]->log_path, &len);

        assert_non_null(log);
        total += len;
        if (strstr(log, TH_EMU_SECRET) || strstr(log, WRONG_SECRET) || strstr(log, SESSION_TOKEN) ||
            strstr(log, "AWS4-HMAC-SHA256") || strstr(log, TH_EMU_AKID))
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
        cmocka_unit_test(test_token_budget_in_the_body),
        cmocka_unit_test(test_max_tokens),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_wrong_secret_key_surfaces_clearly),
        cmocka_unit_test(test_agent_worker_killed_gives_503),
        cmocka_unit_test(test_throttling_is_retried_and_400_is_not),
        cmocka_unit_test(test_adaptive_mode_retries_throttling),
        cmocka_unit_test(test_error_catalogue),
        cmocka_unit_test(test_streamed_and_converse_give_the_same_answers),
        cmocka_unit_test(test_gateway_healthcheck_mode),
        cmocka_unit_test(test_worker_healthcheck_mode),
        cmocka_unit_test(test_agent_worker_unary_invoke),
        cmocka_unit_test(test_no_secret_in_any_log),
    };
    int rc = cmocka_run_group_tests_name("e2e", tests, setup, teardown);

    return rc ? rc : teardown_failed;
}
