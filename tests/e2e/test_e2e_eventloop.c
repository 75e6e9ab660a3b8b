/* End to end, what the event-driven core promises: processes started all at
 * once or in reverse order give no 503; a stream that waits is kept alive by
 * comment lines and never cut by the idle timeout; BEDROCK_READ_TIMEOUT_MS is
 * the longest silence, not the longest answer; cancelling one of many
 * invocations resets only its own model stream; a second invocation of a busy
 * session waits, then gets 409; a skewed clock is corrected after one 403.
 * Settings are shortened so each case runs in seconds. */
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define KEYS "AWS_ACCESS_KEY_ID=" TH_EMU_AKID, "AWS_SECRET_ACCESS_KEY=" TH_EMU_SECRET
#define TOOL_PROMPT "[[tool:calculator {\\\"expression\\\":\\\"6*7\\\"}]]"
/* ~12 text deltas, each after 500 ms: a 6 s stream that is never silent for 2 s. */
#define STEADY_PROMPT "[[slow-stream:500]] a long answer that keeps coming in small pieces"

static struct th_proc emu, stall_emu, skew_emu, tool;
static struct th_stack keep_s, read_s, stall_s, busy_s, skew_s, many_s;

static long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static int setup(void **state)
{
    (void)state;
    if (th_emulator_start(&emu, "ev-emulator", NULL) ||
        th_emulator_start(&stall_emu, "ev-stall-emulator",
                          (const char *[]){"EMU_STALL_FIRST=1", "EMU_STALL_MS=3000", NULL}) ||
        th_emulator_start(&skew_emu, "ev-skew-emulator",
                          (const char *[]){"EMU_CLOCK_SKEW_S=900", NULL}) ||
        th_tool_start(&tool, "ev-tool-worker"))
        return -1;
    return th_stack_start_gw(
               &keep_s, "ev-keepalive", &emu, &tool, (const char *[]){KEYS, NULL},
               (const char *[]){"HTTP_IDLE_TIMEOUT_S=2", "SSE_KEEPALIVE_S=1", NULL}) ||
           th_stack_start(&read_s, "ev-read", &emu, &tool,
                          (const char *[]){KEYS, "BEDROCK_READ_TIMEOUT_MS=2000", NULL}) ||
           th_stack_start(&stall_s, "ev-stall", &stall_emu, &tool,
                          (const char *[]){KEYS, "BEDROCK_READ_TIMEOUT_MS=2000", NULL}) ||
           th_stack_start(&busy_s, "ev-busy", &emu, &tool,
                          (const char *[]){KEYS, "SESSION_WAIT_MS=500", NULL}) ||
           th_stack_start(&skew_s, "ev-skew", &skew_emu, &tool, (const char *[]){KEYS, NULL}) ||
           th_stack_start(&many_s, "ev-many", &emu, &tool, (const char *[]){KEYS, NULL});
}

static int teardown(void **state)
{
    int bad = 0;

    (void)state;
    bad |= th_stack_stop(&keep_s) | th_stack_stop(&read_s) | th_stack_stop(&stall_s);
    bad |= th_stack_stop(&busy_s) | th_stack_stop(&skew_s) | th_stack_stop(&many_s);
    bad |= th_stop(&tool) | th_stop(&emu) | th_stop(&stall_emu) | th_stop(&skew_emu);
    return bad ? -1 : 0;
}

static const char *jstr(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));

    return s ? s : "";
}

/* ---- cold start ---- */

struct cold {
    struct th_proc gw, agent, tool;
    char gw_listen[64], agent_listen[64], agent_addr[64], tool_listen[64], tools[64], endpoint[96];
};

static void cold_env(struct cold *c)
{
    int gp = th_free_port(), ap = th_free_port(), tp = th_free_port();

    assert_true(gp > 0 && ap > 0 && tp > 0);
    snprintf(c->gw_listen, sizeof(c->gw_listen), "PORT=%d", gp);
    snprintf(c->agent_listen, sizeof(c->agent_listen), "AGENT_WORKER_LISTEN=127.0.0.1:%d", ap);
    snprintf(c->agent_addr, sizeof(c->agent_addr), "AGENT_WORKER_ADDR=127.0.0.1:%d", ap);
    snprintf(c->tool_listen, sizeof(c->tool_listen), "TOOL_WORKER_LISTEN=127.0.0.1:%d", tp);
    snprintf(c->tools, sizeof(c->tools), "TOOL_WORKERS=127.0.0.1:%d", tp);
    snprintf(c->endpoint, sizeof(c->endpoint),
             "AWS_ENDPOINT_URL_BEDROCK_RUNTIME=http://127.0.0.1:%d", emu.port);
}

static void spawn_gw(struct cold *c, const char *name)
{
    assert_int_equal(th_proc_spawn(&c->gw, name, AC_BIN_GATEWAY,
                                   (const char *[]){c->gw_listen, "GATEWAY_HOST=127.0.0.1",
                                                    c->agent_addr, NULL}),
                     0);
}

static void spawn_agent(struct cold *c, const char *name)
{
    assert_int_equal(th_proc_spawn(&c->agent, name, AC_BIN_AGENT,
                                   (const char *[]){KEYS, c->agent_listen, c->tools, c->endpoint,
                                                    "AWS_REGION=us-east-1",
                                                    "AWS_EC2_METADATA_DISABLED=true", NULL}),
                     0);
}

static void spawn_tool(struct cold *c, const char *name)
{
    assert_int_equal(
        th_proc_spawn(&c->tool, name, AC_BIN_TOOL, (const char *[]){c->tool_listen, NULL}), 0);
}

/* Invokes (a plain prompt and a tool round trip, alternately) and pings
 * |rounds| times from the moment the gateway is ready; every answer must be
 * 200. Returns the number of answers that were not. */
static int hammer(struct cold *c, int rounds)
{
    char url[96], ping[96];
    int i, bad = 0;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/invocations", c->gw.port);
    snprintf(ping, sizeof(ping), "http://127.0.0.1:%d/ping", c->gw.port);
    for (i = 0; i < rounds; i++) {
        const char *body = i % 2 ? "{\"prompt\":\"" TOOL_PROMPT "\"}" : "{\"prompt\":\"hi\"}";
        struct th_resp r;

        assert_int_equal(th_http("GET", ping, NULL, NULL, 0, &r), 0);
        if (r.status != 200) {
            printf("ping %d: %ld %s\n", i, r.status, r.body ? r.body : "");
            bad++;
        }
        th_resp_free(&r);
        assert_int_equal(th_http("POST", url, NULL, body, strlen(body), &r), 0);
        if (r.status != 200) {
            printf("invocation %d: %ld %s\n", i, r.status, r.body ? r.body : "");
            bad++;
        } else if (i % 2 &&
                   strcmp(jstr(r.json, "response"), "Calling calculator\n\nTool result: 42")) {
            printf("invocation %d: wrong answer %s\n", i, r.body);
            bad++;
        }
        th_resp_free(&r);
    }
    return bad;
}

static void cold_stop(struct cold *c)
{
    assert_int_equal(th_stop(&c->gw), 0);
    assert_int_equal(th_stop(&c->agent), 0);
    assert_int_equal(th_stop(&c->tool), 0);
}

static void test_cold_start_all_at_once(void **state)
{
    struct cold c;

    (void)state;
    cold_env(&c);
    /* The same moment, as s6 starts them: nobody waits for anybody. */
    spawn_gw(&c, "ev-cold-gateway");
    spawn_agent(&c, "ev-cold-agent-worker");
    spawn_tool(&c, "ev-cold-tool-worker");
    assert_int_equal(th_proc_wait_ready(&c.gw, TH_READY_MS), 0);
    assert_int_equal(hammer(&c, 10), 0);
    assert_int_equal(th_proc_wait_ready(&c.agent, TH_READY_MS), 0);
    assert_int_equal(th_proc_wait_ready(&c.tool, TH_READY_MS), 0);
    cold_stop(&c);
}

static void test_cold_start_in_reverse_order(void **state)
{
    struct cold c;
    struct th_resp r;
    char url[96];
    int fd;
    char buf[4096] = "";

    (void)state;
    cold_env(&c);
    /* The gateway alone, taking an invocation before anything behind it runs. */
    spawn_gw(&c, "ev-rev-gateway");
    assert_int_equal(th_proc_wait_ready(&c.gw, TH_READY_MS), 0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/ping", c.gw.port);
    assert_int_equal(th_http("GET", url, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200); /* before the agent-worker was ever reached */
    th_resp_free(&r);
    fd = th_raw_post(c.gw.port, "/invocations", "", "{\"prompt\":\"" TOOL_PROMPT "\"}");
    assert_true(fd >= 0);
    assert_true(th_wait_log(c.gw.log_path, "\"message\":\"request\"", 10000) >= 0);
    /* Then the agent-worker, then the tool-worker it needs. */
    spawn_agent(&c, "ev-rev-agent-worker");
    spawn_tool(&c, "ev-rev-tool-worker");
    assert_int_equal(th_raw_read_until(fd, buf, sizeof(buf), "Tool result: 42", 15000), 0);
    assert_non_null(strstr(buf, "HTTP/1.1 200"));
    close(fd);
    assert_int_equal(th_proc_wait_ready(&c.agent, TH_READY_MS), 0);
    assert_int_equal(th_proc_wait_ready(&c.tool, TH_READY_MS), 0);
    assert_int_equal(hammer(&c, 4), 0);
    cold_stop(&c);
}

/* ---- streams that wait ---- */

static void test_keepalive_holds_a_pausing_stream(void **state)
{
    const char *body = "{\"prompt\":\"[[pause:5000]] think first\",\"stream\":true}";
    char url[96];
    struct th_resp r;
    long t0 = now_ms();

    (void)state;
    snprintf(url, sizeof(url), "%s/invocations", keep_s.url);
    assert_int_equal(th_http("POST", url, NULL, body, strlen(body), &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(now_ms() - t0 >= 5000); /* the pause really happened */
    assert_non_null(strstr(r.body, ": keep-alive\n\n"));
    /* Complete: the final answer object is the last event. */
    assert_non_null(strstr(r.body, "\"response\":\"Echo: [[pause:5000]] think first\""));
    assert_non_null(strstr(r.body, "\"stop_reason\":\"EndTurn\""));
    th_resp_free(&r);
}

static void test_read_timeout_is_silence_not_length(void **state)
{
    const char *steady = "{\"prompt\":\"" STEADY_PROMPT "\"}";
    const char *silent = "{\"prompt\":\"[[pause:3000]] and then nothing\",\"stream\":true}";
    long long before = th_emu_stat(&emu, "converse");
    struct th_resp r;
    long t0 = now_ms();

    (void)state;
    /* 6 s in all, but never 2 s without a byte: succeeds. */
    assert_int_equal(th_invoke(&read_s, steady, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(now_ms() - t0 >= 5000);
    assert_string_equal(jstr(r.json, "response"), "Echo: " STEADY_PROMPT);
    th_resp_free(&r);
    /* Silent for 3 s after text went out: fails, and is not retried. */
    assert_int_equal(th_invoke(&read_s, silent, NULL, &r), 0);
    assert_int_equal(r.status, 200); /* streaming: the status line was sent */
    assert_non_null(strstr(r.body, "\"error_type\":\"ModelError\""));
    assert_non_null(strstr(r.body, "BEDROCK_READ_TIMEOUT_MS"));
    th_resp_free(&r);
    assert_int_equal(th_emu_stat(&emu, "converse") - before, 2);
}

static void test_silence_before_any_byte_is_retried(void **state)
{
    struct th_resp r;

    (void)state;
    /* The emulator stalls the first call for 3 s: after 2 s of silence the
     * agent-worker drops it and the retry answers. */
    assert_int_equal(th_invoke(&stall_s, "{\"prompt\":\"are you stuck?\"}", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "response"), "Echo: are you stuck?");
    th_resp_free(&r);
    assert_int_equal(th_emu_stat(&stall_emu, "converse"), 2);
    assert_true(th_wait_log(stall_s.agent.log_path, "no data from the model for 2000 ms", 1000) >=
                0);
}

/* ---- cancellation among many ---- */

#define N_MANY 12

static char many_buf[N_MANY][65536];

static void test_cancel_one_of_many(void **state)
{
    int fds[N_MANY], i;
    long long aborted = th_emu_stat(&emu, "streams_aborted");
    char body[512];

    (void)state;
    snprintf(body, sizeof(body), "{\"prompt\":\"%s\",\"stream\":true}",
             "[[slow-stream:100]] one of many streams that run side by side for a while");
    for (i = 0; i < N_MANY; i++) {
        fds[i] = th_raw_post(many_s.gw.port, "/invocations", "", body);
        assert_true(fds[i] >= 0);
    }
    /* Each stream's bytes stay in its own buffer: a quick one may already
     * hold its whole answer after this first read. */
    for (i = 0; i < N_MANY; i++) {
        many_buf[i][0] = '\0';
        assert_int_equal(
            th_raw_read_until(fds[i], many_buf[i], sizeof(many_buf[i]), "contentBlockDelta", 10000),
            0);
    }
    close(fds[0]); /* one client leaves */
    assert_true(th_wait_log(many_s.agent.log_path, "invocation cancelled by the caller", 5000) >=
                0);
    for (i = 1; i < N_MANY; i++) {
        if (th_raw_read_until(fds[i], many_buf[i], sizeof(many_buf[i]),
                              "\"stop_reason\":\"EndTurn\"", 15000))
            fail_msg("stream %d did not finish: %.200s", i, many_buf[i]);
        close(fds[i]);
    }
    /* Exactly one model stream was reset; the others ran to their end. */
    assert_int_equal(th_emu_stat(&emu, "streams_aborted") - aborted, 1);
}

/* ---- a busy session ---- */

static void test_busy_session_gets_409(void **state)
{
    const char *sid = "busy-session-000000000000000000000001";
    char hdr[160], buf[8192] = "";
    struct th_resp r;
    long t0;
    int fd;

    (void)state;
    snprintf(hdr, sizeof(hdr), "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id: %s\r\n", sid);
    fd = th_raw_post(busy_s.gw.port, "/invocations", hdr, "{\"prompt\":\"[[sleep:2500]] slow\"}");
    assert_true(fd >= 0);
    /* The first invocation holds the session once the agent-worker logged it. */
    assert_true(th_wait_log(busy_s.agent.log_path, "\"message\":\"request context\"", 10000) >= 0);
    t0 = now_ms();
    assert_int_equal(th_invoke(&busy_s, "{\"prompt\":\"me too\"}", sid, &r), 0);
    assert_int_equal(r.status, 409);
    assert_string_equal(jstr(r.json, "error"), "Session busy");
    assert_true(now_ms() - t0 >= 450); /* it waited SESSION_WAIT_MS, not failed at once */
    th_resp_free(&r);
    assert_int_equal(th_raw_read_until(fd, buf, sizeof(buf), "Echo: [[sleep:2500]] slow", 10000),
                     0);
    close(fd);
    /* The session is free again and its history holds the first turn only. */
    assert_int_equal(th_invoke(&busy_s, "{\"prompt\":\"[[recall]]\"}", sid, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(jstr(r.json, "response"), "slow"));
    assert_null(strstr(jstr(r.json, "response"), "me too"));
    th_resp_free(&r);
}

/* ---- clock skew ---- */

static void test_skewed_clock_is_corrected_once(void **state)
{
    struct th_resp r;

    (void)state;
    assert_int_equal(th_invoke(&skew_s, "{\"prompt\":\"what time is it\"}", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(r.json, "response"), "Echo: what time is it");
    th_resp_free(&r);
    assert_int_equal(th_emu_stat(&skew_emu, "auth_rejected"), 1);
    assert_true(th_wait_log(skew_s.agent.log_path, "clock skew corrected", 1000) >= 0);
    /* The offset is kept: the next call is signed right the first time. */
    assert_int_equal(th_invoke(&skew_s, "{\"prompt\":\"and now\"}", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    assert_int_equal(th_emu_stat(&skew_emu, "auth_rejected"), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cold_start_all_at_once),
        cmocka_unit_test(test_cold_start_in_reverse_order),
        cmocka_unit_test(test_keepalive_holds_a_pausing_stream),
        cmocka_unit_test(test_read_timeout_is_silence_not_length),
        cmocka_unit_test(test_silence_before_any_byte_is_retried),
        cmocka_unit_test(test_cancel_one_of_many),
        cmocka_unit_test(test_busy_session_gets_409),
        cmocka_unit_test(test_skewed_clock_is_corrected_once),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
