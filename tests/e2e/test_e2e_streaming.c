/* End to end, the AgentCore HTTP contract around streaming: SSE shape and
 * content, errors mid-stream, cancellation when the client leaves (seen from
 * the emulator's and the tool-worker's side), /ping under load and with the
 * agent-worker down, the concurrency cap, forwarded context, body limits and
 * SIGTERM with a stream and WebSockets in flight. */
#include "th_stack.h"
#include "th_ws.h"

#include <jansson.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define N_STREAMS 100
#define WS_TEXT 0x1 /* WebSocket opcodes */
#define WS_CLOSE 0x8
#define WS_PING 0x9
#define WS_PONG 0xA
#define AUTH_VALUE "Bearer very-secret-jwt-must-never-be-logged"
#define KEYS "AWS_ACCESS_KEY_ID=" TH_EMU_AKID, "AWS_SECRET_ACCESS_KEY=" TH_EMU_SECRET
/* About 40 frames of text at 100 ms each: a stream that lasts ~4 s. */
#define SLOW_PROMPT                                                                                \
    "[[slow-stream:100]] this answer trickles out one small piece at a time, slowly, on purpose, " \
    "so that the test can hang up while it is still running"

static struct th_proc tool, tool2, tool3, emu;
static struct th_stack main_s, capped_s, down_s, term_s, busy_s, replicas_s;
static int teardown_failed;

static int setup(void **state)
{
    const char *tool_env[] = {"TOOL_WORKER_LISTEN=127.0.0.1:0", "TOOL_WORKER_TEST_TOOLS=true",
                              "TOOL_WORKER_THREADS=16", NULL};
    char replicas[128];

    (void)state;
    if (th_proc_start(&tool, "stream-tool-worker", AC_BIN_TOOL, tool_env, TH_READY_MS) ||
        th_proc_start(&tool2, "stream-tool-worker-2", AC_BIN_TOOL, tool_env, TH_READY_MS) ||
        /* the busy stack's own: its background task must not show on the replicas' /ping */
        th_proc_start(&tool3, "stream-tool-worker-3", AC_BIN_TOOL, tool_env, TH_READY_MS) ||
        th_emulator_start(&emu, "stream-emulator", NULL))
        return -1;
    /* Two replicas, one by name ("localhost" also resolves to ::1, where no
     * one listens: a replica that does not answer). */
    snprintf(replicas, sizeof(replicas), "TOOL_WORKERS=localhost:%d,127.0.0.1:%d", tool.port,
             tool2.port);
    return th_stack_start_gw(
               &main_s, "stream-main", &emu, &tool, (const char *[]){KEYS, NULL},
               (const char *[]){"MAX_BODY_BYTES=65536", "WS_MAX_MESSAGE_BYTES=8192", NULL}) ||
           th_stack_start_gw(&capped_s, "stream-capped", &emu, &tool,
                             (const char *[]){KEYS, "SHUTDOWN_GRACE_MS=300", NULL},
                             (const char *[]){"MAX_CONCURRENT_INVOCATIONS=1", NULL}) ||
           th_stack_start_gw(&down_s, "stream-down", &emu, &tool, (const char *[]){KEYS, NULL},
                             (const char *[]){"HEALTH_INTERVAL_MS=100", NULL}) ||
           th_stack_start_gw(&term_s, "stream-term", &emu, &tool, (const char *[]){KEYS, NULL},
                             (const char *[]){"SHUTDOWN_GRACE_MS=300", NULL}) ||
           th_stack_start_gw(&busy_s, "stream-busy", &emu, &tool3,
                             (const char *[]){KEYS, "TOOLS_STATUS_INTERVAL_MS=100", NULL},
                             (const char *[]){"HEALTH_INTERVAL_MS=100", NULL}) ||
           th_stack_start_gw(&replicas_s, "stream-replicas", &emu, &tool,
                             (const char *[]){KEYS, replicas, "TOOLS_STATUS_INTERVAL_MS=100", NULL},
                             (const char *[]){"HEALTH_INTERVAL_MS=100", NULL});
}

static int teardown(void **state)
{
    int bad;

    (void)state;
    bad = th_stack_stop(&main_s) + th_stack_stop(&capped_s) + th_stack_stop(&down_s) +
          th_stack_stop(&term_s) + th_stack_stop(&busy_s) + th_stack_stop(&replicas_s) +
          th_stop(&emu) + th_stop(&tool) + th_stop(&tool2) + th_stop(&tool3);
    teardown_failed = bad != 0;
    return bad ? -1 : 0;
}

static long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Starts a slow SSE stream on |s| by hand and returns its socket once the
 * first text delta arrived (the invocation is then surely in flight). */
static int open_slow_stream(const struct th_stack *s)
{
    char body[512], buf[65536] = "";
    int fd;

    snprintf(body, sizeof(body), "{\"prompt\":\"%s\",\"stream\":true}", SLOW_PROMPT);
    fd = th_raw_post(s->gw.port, "/invocations", "", body);
    assert_true(fd >= 0);
    assert_int_equal(th_raw_read_until(fd, buf, sizeof(buf), "contentBlockDelta", 10000), 0);
    return fd;
}

/* SIGTERM must end |p| with status 0 within 2 s (grace 300 ms + cancel). */
static void sigterm_quickly(struct th_proc *p)
{
    long t0 = now_ms();

    assert_int_equal(th_proc_stop(p, SIGTERM), 0);
    if (now_ms() - t0 > 2000)
        fail_msg("%s took %ld ms to stop", p->name, now_ms() - t0);
}

/* The events of an SSE body: every chunk must be exactly "data: <json>\n\n". */
static json_t *events_of(const char *body)
{
    json_t *arr = json_array();
    const char *p = body;

    while (*p) {
        const char *end = strstr(p, "\n\n");
        json_t *ev;

        if (strncmp(p, "data: ", 6) || !end)
            fail_msg("not an SSE event at: %.80s", p);
        ev = json_loadb(p + 6, (size_t)(end - p - 6), 0, NULL);
        if (!json_is_object(ev))
            fail_msg("event is not a JSON object: %.80s", p);
        json_array_append_new(arr, ev);
        p = end + 2;
    }
    return arr;
}

static void post(const struct th_stack *s, const char *const *headers, const char *body,
                 struct th_resp *r)
{
    char url[128];

    snprintf(url, sizeof(url), "%s/invocations", s->url);
    assert_int_equal(th_http("POST", url, headers, body, strlen(body), r), 0);
}

static size_t last_deltas; /* the text deltas of the last stream_and_check() */

/* Streams |prompt| and checks the contract: deltas in Strands' raw-chunk shape
 * that add up to the final answer, no "error" key, the final event last. */
static json_t *stream_and_check(const char *prompt_json, int *n_tool_events)
{
    struct th_resp r;
    char ct[64], cc[64];
    json_t *events, *ev, *final;
    size_t i, n;
    char text[4096] = "";

    post(&main_s, NULL, prompt_json, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(th_resp_header(&r, "Content-Type", ct, sizeof(ct)), 0);
    assert_string_equal(ct, "text/event-stream");
    assert_int_equal(th_resp_header(&r, "Cache-Control", cc, sizeof(cc)), 0);
    assert_string_equal(cc, "no-cache");
    events = events_of(r.body);
    n = json_array_size(events);
    assert_true(n >= 2);
    *n_tool_events = 0;
    last_deltas = 0;
    json_array_foreach(events, i, ev)
    {
        json_t *delta = json_object_get(json_object_get(ev, "event"), "contentBlockDelta");

        assert_null(json_object_get(ev, "error"));
        if (delta) {
            last_deltas++;
            assert_true(json_is_integer(json_object_get(delta, "contentBlockIndex")));
            strncat(text,
                    json_string_value(json_object_get(json_object_get(delta, "delta"), "text")),
                    sizeof(text) - strlen(text) - 1);
        } else if (json_object_get(ev, "tool_use") || json_object_get(ev, "tool_result")) {
            (*n_tool_events)++;
        } else if (i + 1 != n) {
            fail_msg("unexpected event %zu: %s", i, r.body);
        }
    }
    final = json_incref(json_array_get(events, n - 1));
    assert_int_equal(json_object_size(final), 6);
    assert_string_equal(text, json_string_value(json_object_get(final, "response")));
    json_decref(events);
    th_resp_free(&r);
    return final;
}

static void test_sse_deltas_add_up_to_the_answer(void **state)
{
    int tools;
    json_t *f;

    (void)state;
    f = stream_and_check(
        "{\"prompt\":\"h\xc3\xa9llo, a longer sentence to stream\",\"stream\":true}", &tools);
    assert_string_equal(json_string_value(json_object_get(f, "response")),
                        "Echo: h\xc3\xa9llo, a longer sentence to stream");
    assert_int_equal(tools, 0);
    json_decref(f);
    f = stream_and_check(
        "{\"prompt\":\"[[tool:calculator {\\\"expression\\\":\\\"6*7\\\"}]]\",\"stream\":true}",
        &tools);
    assert_string_equal(json_string_value(json_object_get(f, "response")),
                        "Calling calculator\n\nTool result: 42");
    assert_int_equal(json_integer_value(json_object_get(f, "iterations")), 2);
    assert_int_equal(tools, 2); /* the tool_use and the tool_result */
    json_decref(f);
    /* A streamed invocation's closing line has its time to first token. */
    assert_true(th_wait_log(main_s.agent.log_path, "\"firstTokenMs\":\"", 5000) >= 0);
}

/* The emulator sends an answer in deltas of 7 bytes. Sent all at once, they
 * reach the client merged (each delta that comes while the one before is
 * still on its way to the gateway waits for the next); sent 60 ms apart, each
 * arrives on its own. Either way they add up to the answer. */
static void test_deltas_merge_only_while_the_stream_is_behind(void **state)
{
    static const char words[] = "every delta of this answer comes in the same burst from the model "
                                "and the agent-worker sends them on as fast as the gateway takes "
                                "them, which is less often than the model sends them";
    char body[512];
    size_t answer;
    int tools;
    json_t *f;

    (void)state;
    snprintf(body, sizeof(body), "{\"prompt\":\"%s\",\"stream\":true}", words);
    f = stream_and_check(body, &tools);
    answer = strlen(json_string_value(json_object_get(f, "response")));
    assert_int_equal(answer, strlen("Echo: ") + strlen(words));
    assert_true(last_deltas >= 1);
    assert_true(last_deltas < (answer + 6) / 7);
    json_decref(f);
    snprintf(body, sizeof(body),
             "{\"prompt\":\"[[slow-stream:60]] one piece at a time\","
             "\"stream\":true}");
    f = stream_and_check(body, &tools);
    answer = strlen(json_string_value(json_object_get(f, "response")));
    assert_int_equal(last_deltas, (answer + 6) / 7);
    json_decref(f);
}

static void test_accept_header_and_explicit_false(void **state)
{
    const char *sse[] = {"Accept: text/event-stream", NULL};
    const char *both[] = {"Accept: application/json, text/event-stream", NULL};
    struct th_resp r;
    char ct[64];

    (void)state;
    post(&main_s, sse, "{\"prompt\":\"hi\"}", &r);
    th_resp_header(&r, "Content-Type", ct, sizeof(ct));
    assert_string_equal(ct, "text/event-stream");
    th_resp_free(&r);
    post(&main_s, sse, "{\"prompt\":\"hi\",\"stream\":false}", &r);
    th_resp_header(&r, "Content-Type", ct, sizeof(ct));
    assert_string_equal(ct, "application/json");
    assert_string_equal(json_string_value(json_object_get(r.json, "response")), "Echo: hi");
    th_resp_free(&r);
    post(&main_s, both, "{\"prompt\":\"hi\"}", &r);
    th_resp_header(&r, "Content-Type", ct, sizeof(ct));
    assert_string_equal(ct, "application/json");
    th_resp_free(&r);
}

static void test_error_after_first_event(void **state)
{
    struct th_resp r;
    json_t *events, *last;
    long long before = th_emu_stat(&emu, "converse");

    (void)state;
    post(&main_s, NULL, "{\"prompt\":\"[[stream-fail-after-text]] some text\",\"stream\":true}",
         &r);
    assert_int_equal(r.status, 200); /* the status line was already sent */
    events = events_of(r.body);
    assert_true(json_array_size(events) >= 2);
    assert_non_null(json_object_get(json_array_get(events, 0), "event"));
    last = json_array_get(events, json_array_size(events) - 1);
    assert_non_null(
        strstr(json_string_value(json_object_get(last, "error")), "ModelStreamErrorException"));
    assert_string_equal(json_string_value(json_object_get(last, "error_type")), "ModelError");
    assert_string_equal(json_string_value(json_object_get(last, "message")),
                        "An error occurred during streaming");
    json_decref(events);
    th_resp_free(&r);
    /* Text had gone out: the model call was not retried. */
    assert_int_equal(th_emu_stat(&emu, "converse"), before + 1);
}

/* Opens a stream by hand, waits for |until| in it, and hangs up. */
static long hang_up_after(const struct th_stack *s, const char *prompt, const char *until)
{
    char body[512], buf[65536] = "";
    int fd;

    snprintf(body, sizeof(body), "{\"prompt\":\"%s\",\"stream\":true}", prompt);
    fd = th_raw_post(s->gw.port, "/invocations", "", body);
    assert_true(fd >= 0);
    assert_int_equal(th_raw_read_until(fd, buf, sizeof(buf), until, 10000), 0);
    close(fd);
    return now_ms();
}

static void test_client_leaving_cancels_the_model_request(void **state)
{
    char log_emu[600];
    long t0, waited;

    (void)state;
    snprintf(log_emu, sizeof(log_emu), "%s", emu.log_path);
    t0 = hang_up_after(&main_s, SLOW_PROMPT, "contentBlockDelta");
    /* The emulator sees the agent-worker drop its ConverseStream request. */
    waited = th_wait_log(log_emu, "stream aborted by the client", 5000);
    assert_true(waited >= 0);
    if (now_ms() - t0 > 1000)
        fail_msg("model request cancelled %ld ms after the client left", now_ms() - t0);
    assert_true(th_wait_log(main_s.agent.log_path, "invocation cancelled by the caller", 5000) >=
                0);
    /* Its closing line says so, with what the model call had cost. */
    assert_true(th_wait_log(main_s.agent.log_path, "\"stopReason\":\"Cancelled\"", 5000) >= 0);
}

/* A client that half-closes (shuts its sending side) once the stream has
 * begun still reads: it gets the whole stream, and the model request is not
 * cancelled. */
static void test_half_closed_client_gets_its_stream(void **state)
{
    static char buf[262144];
    char body[512];
    long long aborted = th_emu_stat(&emu, "streams_aborted");
    int fd;

    (void)state;
    snprintf(body, sizeof(body), "{\"prompt\":\"%s\",\"stream\":true}", SLOW_PROMPT);
    fd = th_raw_post(main_s.gw.port, "/invocations", "", body);
    assert_true(fd >= 0);
    assert_int_equal(th_raw_read_until(fd, buf, sizeof(buf), "contentBlockDelta", 10000), 0);
    assert_int_equal(shutdown(fd, SHUT_WR), 0);
    assert_int_equal(th_raw_read_until(fd, buf, sizeof(buf), "\"stop_reason\"", 20000), 0);
    assert_non_null(strstr(buf, "on purpose"));
    close(fd);
    assert_int_equal(th_emu_stat(&emu, "streams_aborted"), aborted);
}

static void test_client_leaving_cancels_a_slow_tool(void **state)
{
    long t0, waited;

    (void)state;
    t0 = hang_up_after(&main_s, "[[tool:slow {\\\"ms\\\":20000}]]", "\"tool_use\"");
    waited = th_wait_log(tool.log_path, "tool cancelled by the caller", 5000);
    assert_true(waited >= 0);
    if (now_ms() - t0 > 1000)
        fail_msg("the tool was cancelled %ld ms after the client left", now_ms() - t0);
}

static void test_ping_answers_during_100_streams(void **state)
{
    int fds[N_STREAMS], i;
    char url[128], buf[8192];
    long worst = 0;

    (void)state;
    for (i = 0; i < N_STREAMS; i++) {
        char body[512];

        snprintf(body, sizeof(body), "{\"prompt\":\"%s\",\"stream\":true}", SLOW_PROMPT);
        fds[i] = th_raw_post(main_s.gw.port, "/invocations", "", body);
        assert_true(fds[i] >= 0);
    }
    /* Every stream has produced its first event: all 100 are in flight. */
    for (i = 0; i < N_STREAMS; i++) {
        buf[0] = '\0';
        if (th_raw_read_until(fds[i], buf, sizeof(buf), "contentBlockDelta", 20000))
            fail_msg("stream %d did not start", i);
    }
    snprintf(url, sizeof(url), "%s/ping", main_s.url);
    for (i = 0; i < 10; i++) {
        struct th_resp r;
        long t0 = now_ms(), took;

        assert_int_equal(th_http("GET", url, NULL, NULL, 0, &r), 0);
        took = now_ms() - t0;
        assert_int_equal(r.status, 200);
        th_resp_free(&r);
        if (took > worst)
            worst = took;
    }
    printf("ping with %d streams in flight: worst of 10 took %ld ms\n", N_STREAMS, worst);
    assert_true(worst < 1000);
    for (i = 0; i < N_STREAMS; i++)
        close(fds[i]);
}

static void test_concurrency_cap(void **state)
{
    char retry[16];
    struct th_resp r;
    int fd = open_slow_stream(&capped_s);

    (void)state;
    post(&capped_s, NULL, "{\"prompt\":\"one more\"}", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(json_string_value(json_object_get(r.json, "error")),
                        "Too many concurrent invocations");
    assert_int_equal(th_resp_header(&r, "Retry-After", retry, sizeof(retry)), 0);
    assert_string_equal(retry, "1");
    th_resp_free(&r);
    close(fd);
    /* The stream's slot is free again once its access line is written. */
    assert_true(th_wait_log(capped_s.gw.log_path, "\"path\":\"/invocations\",\"status\":\"200\"",
                            5000) >= 0);
}

/* The agent-worker, too, lets in-flight work finish for its grace period,
 * then cancels it and exits 0; the client's stream ends with an error event. */
static void test_agent_worker_sigterm_mid_invocation(void **state)
{
    char buf[65536] = "";
    int fd = open_slow_stream(&capped_s);

    (void)state;
    sigterm_quickly(&capped_s.agent);
    assert_int_equal(th_raw_read_until(fd, buf, sizeof(buf), "\"error\"", 10000), 0);
    close(fd);
}

static void test_ping_reports_a_dead_agent_worker(void **state)
{
    char url[128];
    struct th_resp before, after;

    (void)state;
    snprintf(url, sizeof(url), "%s/ping", down_s.url);
    assert_int_equal(th_http("GET", url, NULL, NULL, 0, &before), 0);
    assert_int_equal(before.status, 200);
    /* A stuck agent-worker (stopped, its sockets open) never slows /ping. */
    kill(down_s.agent.pid, SIGSTOP);
    for (int i = 0; i < 5; i++) {
        struct th_resp r;
        long t0 = now_ms();

        assert_int_equal(th_http("GET", url, NULL, NULL, 0, &r), 0);
        assert_true(r.status == 200 || r.status == 503);
        th_resp_free(&r);
        if (now_ms() - t0 >= 1000)
            fail_msg("/ping took %ld ms with the agent-worker stuck", now_ms() - t0);
    }
    kill(down_s.agent.pid, SIGCONT);
    th_proc_stop(&down_s.agent, SIGKILL);
    assert_true(th_wait_log(down_s.gw.log_path, "ping status is now Unhealthy", 5000) >= 0);
    assert_int_equal(th_http("GET", url, NULL, NULL, 0, &after), 0);
    assert_int_equal(after.status, 503);
    assert_string_equal(json_string_value(json_object_get(after.json, "status")), "Unhealthy");
    assert_true(json_is_integer(json_object_get(after.json, "time_of_last_update")));
    assert_true(json_integer_value(json_object_get(after.json, "time_of_last_update")) >=
                json_integer_value(json_object_get(before.json, "time_of_last_update")));
    th_resp_free(&before);
    th_resp_free(&after);
}

static json_t *ping(const struct th_stack *s, long *status)
{
    char url[128];
    struct th_resp r;
    json_t *o;

    snprintf(url, sizeof(url), "%s/ping", s->url);
    assert_int_equal(th_http("GET", url, NULL, NULL, 0, &r), 0);
    *status = r.status;
    o = json_incref(r.json);
    th_resp_free(&r);
    return o;
}

/* A background task in a tool-worker makes /ping say HealthyBusy, and Healthy
 * again when it ends; time_of_last_update moves only with the status. */
static void test_background_work_makes_ping_busy(void **state)
{
    json_t *a, *b, *c;
    struct th_resp r;
    long st;

    (void)state;
    a = ping(&busy_s, &st);
    assert_string_equal(json_string_value(json_object_get(a, "status")), "Healthy");
    assert_int_equal(
        th_invoke(&busy_s, "{\"prompt\":\"[[tool:background {\\\"ms\\\":1500}]]\"}", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(
        strstr(json_string_value(json_object_get(r.json, "response")), "background task started"));
    th_resp_free(&r);
    assert_true(th_wait_log(busy_s.gw.log_path, "ping status is now HealthyBusy", 5000) >= 0);
    b = ping(&busy_s, &st);
    assert_int_equal(st, 200);
    assert_string_equal(json_string_value(json_object_get(b, "status")), "HealthyBusy");
    assert_true(json_integer_value(json_object_get(b, "time_of_last_update")) >=
                json_integer_value(json_object_get(a, "time_of_last_update")));
    /* No change, no new timestamp. */
    c = ping(&busy_s, &st);
    assert_true(json_equal(b, c));
    json_decref(c);
    assert_true(th_wait_log(busy_s.gw.log_path, "ping status is now Healthy\"", 5000) >= 0);
    c = ping(&busy_s, &st);
    assert_string_equal(json_string_value(json_object_get(c, "status")), "Healthy");
    assert_true(json_integer_value(json_object_get(c, "time_of_last_update")) >=
                json_integer_value(json_object_get(b, "time_of_last_update")));
    json_decref(a);
    json_decref(b);
    json_decref(c);
}

/* With two tool-worker replicas, one running a background task, /ping stays
 * HealthyBusy for the whole task: every replica is watched, so the status
 * does not flip with whichever replica round-robin would reach. */
static void test_busy_replica_keeps_ping_busy(void **state)
{
    const char *log = replicas_s.gw.log_path;
    struct th_resp r;
    char *text, *at;
    int flips = 0;

    (void)state;
    assert_int_equal(
        th_invoke(&replicas_s, "{\"prompt\":\"[[tool:background {\\\"ms\\\":1500}]]\"}", NULL, &r),
        0);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    assert_true(th_wait_log(log, "ping status is now HealthyBusy", 5000) >= 0);
    assert_true(th_wait_log(log, "ping status is now Healthy\"", 5000) >= 0);
    text = th_read_file(log, NULL);
    assert_non_null(text);
    for (at = text; (at = strstr(at, "ping status is now HealthyBusy")); at++)
        flips++;
    free(text);
    assert_int_equal(flips, 1);
}

/* Header bytes gRPC metadata cannot carry are a 400 at the edge: the value
 * never reaches gRPC (which would refuse the call and could print it). */
static void test_unsendable_header_bytes_are_refused(void **state)
{
    const char *custom[] = {"X-Amzn-Bedrock-AgentCore-Runtime-Custom-Note: secret\x01value", NULL};
    const char *rid[] = {"X-Amzn-Bedrock-AgentCore-Runtime-Request-Id: rid\xc3\xa9", NULL};
    struct th_resp r;
    char *log, *line, *save = NULL;

    (void)state;
    post(&main_s, custom, "{\"prompt\":\"hi\"}", &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(json_string_value(json_object_get(r.json, "error")), "Invalid request");
    assert_non_null(strstr(json_string_value(json_object_get(r.json, "details")),
                           "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Note: the value must be "
                           "printable ASCII"));
    th_resp_free(&r);
    post(&main_s, rid, "{\"prompt\":\"hi\"}", &r);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(json_string_value(json_object_get(r.json, "details")),
                           "Request-Id: must be 1-255 printable ASCII"));
    th_resp_free(&r);
    /* The agent-worker never saw the value, and the only gateway line with it
     * is our own JSON DEBUG line of the request (escaped), not a gRPC dump. */
    log = th_read_file(main_s.agent.log_path, NULL);
    assert_null(strstr(log, "secret"));
    free(log);
    log = th_read_file(main_s.gw.log_path, NULL);
    for (line = strtok_r(log, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strstr(line, "secret") &&
            (line[0] != '{' || !strstr(line, "\"message\":\"request received\"")))
            fail_msg("the value reached a log line: %s", line);
    }
    free(log);
}

/* A browser page must not drive a local agent: /ws refuses a foreign Origin
 * (GATEWAY_WS_ORIGINS lists the allowed ones; none here). */
static void test_ws_foreign_origin_is_refused(void **state)
{
    const char *req = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Origin: https://evil.example\r\n\r\n";
    char buf[2048] = "";
    int fd = th_connect_loopback(main_s.gw.port);

    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    assert_int_equal(th_raw_read_until(fd, buf, sizeof(buf), "}", 5000), 0);
    close(fd);
    assert_non_null(strstr(buf, "HTTP/1.1 403"));
    assert_non_null(strstr(buf, "\"error\":\"Forbidden\""));
    /* without an Origin (not a browser) the same upgrade works */
    fd = th_ws_connect(main_s.gw.port, "/ws", "");
    assert_true(fd >= 0);
    close(fd);
}

static void test_request_context_is_forwarded_and_masked(void **state)
{
    const char *h[] = {"Authorization: " AUTH_VALUE,
                       "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Tenant: acme",
                       "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                       "baggage: session.id=abc",
                       "X-Amzn-Bedrock-AgentCore-Runtime-Request-Id: "
                       "ctx-request-0000000000000000000001",
                       NULL};
    const char *names[] = {"authorization", "x-amzn-bedrock-agentcore-runtime-custom-tenant",
                           "traceparent", "baggage"};
    const struct th_proc *procs[] = {&main_s.gw, &main_s.agent, &tool};
    struct th_resp r;
    char rid[128], *log, *line;
    size_t i;

    (void)state;
    post(&main_s, h, "{\"prompt\":\"context\"}", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(
        th_resp_header(&r, "X-Amzn-Bedrock-AgentCore-Runtime-Request-Id", rid, sizeof(rid)), 0);
    assert_string_equal(rid, "ctx-request-0000000000000000000001");
    th_resp_free(&r);
    log = th_read_file(main_s.agent.log_path, NULL);
    line = strstr(log, "\"message\":\"request context\",\"logger\":\"agentcore.agent_worker\","
                       "\"requestId\":\"ctx-request-0000000000000000000001\"");
    assert_non_null(line);
    *strchr(line, '\n') = '\0';
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (!strstr(line, names[i]))
            fail_msg("'%s' did not reach the agent-worker: %s", names[i], line);
    }
    free(log);
    for (i = 0; i < sizeof(procs) / sizeof(procs[0]); i++) {
        log = th_read_file(procs[i]->log_path, NULL);
        if (strstr(log, "very-secret-jwt"))
            fail_msg("the Authorization value appears in %s", procs[i]->log_path);
        free(log);
    }
    /* The gateway's request log shows the header, masked. */
    log = th_read_file(main_s.gw.log_path, NULL);
    assert_non_null(strstr(log, "Authorization=***"));
    free(log);
}

static void test_body_limits_and_content_type(void **state)
{
    const char *plain[] = {"Content-Type: text/plain", NULL};
    char *big = malloc(70000);
    struct th_resp r;

    (void)state;
    memset(big, ' ', 69999);
    memcpy(big, "{\"prompt\":\"x\"}", 14);
    big[69999] = '\0';
    post(&main_s, NULL, big, &r);
    assert_int_equal(r.status, 413);
    assert_string_equal(json_string_value(json_object_get(r.json, "error")), "Payload Too Large");
    th_resp_free(&r);
    free(big);
    /* JSON is JSON whatever the Content-Type says (Python SDK parity). */
    post(&main_s, plain, "{\"prompt\":\"plain\"}", &r);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
}

static void test_sigterm_with_a_stream_in_flight(void **state)
{
    int fd = open_slow_stream(&term_s), ws_busy, ws_idle;
    char buf[65536], payload[512];
    uint8_t op;
    long n;

    (void)state;
    /* Two WebSockets as well: one idle, one running a slow invocation. */
    ws_idle = th_ws_connect(term_s.gw.port, "/ws", "");
    ws_busy = th_ws_connect(term_s.gw.port, "/ws", "");
    assert_true(ws_idle >= 0 && ws_busy >= 0);
    snprintf(payload, sizeof(payload), "{\"prompt\":\"%s\"}", SLOW_PROMPT);
    assert_int_equal(th_ws_send(ws_busy, WS_TEXT, payload, strlen(payload)), 0);
    assert_true(th_ws_recv(ws_busy, &op, buf, sizeof(buf), 10000) >= 0);
    assert_non_null(strstr(buf, "contentBlockDelta"));
    /* Grace 300 ms, then the stream is cancelled and the gateway exits 0,
     * long before the ~4 s stream would have ended. */
    sigterm_quickly(&term_s.gw);
    assert_true(th_wait_log(term_s.agent.log_path, "invocation cancelled by the caller", 5000) >=
                0);
    /* The SSE client was told why its stream ends (not a bare CANCELLED). */
    buf[0] = '\0';
    assert_int_equal(th_raw_read_until(fd, buf, sizeof(buf), "ShuttingDown", 5000), 0);
    assert_non_null(strstr(buf, "the runtime is shutting down"));
    close(fd);
    /* The idle socket was told the gateway goes away... */
    n = th_ws_recv(ws_idle, &op, buf, sizeof(buf), 5000);
    assert_true(n >= 2);
    assert_int_equal(op, WS_CLOSE);
    assert_int_equal(((uint8_t)buf[0] << 8) | (uint8_t)buf[1], 1001);
    close(ws_idle);
    /* ...the busy one got its deltas, then an error event for the cancelled
     * invocation, then the same close. */
    while ((n = th_ws_recv(ws_busy, &op, buf, sizeof(buf), 5000)) >= 0 && op == WS_TEXT &&
           strstr(buf, "contentBlockDelta"))
        ;
    assert_true(n >= 0);
    assert_int_equal(op, WS_TEXT);
    assert_non_null(strstr(buf, "\"error\""));
    n = th_ws_recv(ws_busy, &op, buf, sizeof(buf), 5000);
    assert_true(n >= 2);
    assert_int_equal(op, WS_CLOSE);
    assert_int_equal(((uint8_t)buf[0] << 8) | (uint8_t)buf[1], 1001);
    close(ws_busy);
}

/* Under s6 both stop at once; when the agent-worker's grace ends first, its
 * cancel reaches the gateway before the gateway's own: the client still hears
 * that the runtime is shutting down, not an agent failure. */
static void test_sigterm_agent_worker_first(void **state)
{
    struct th_stack s;
    char buf[65536] = "";
    int fd;

    (void)state;
    assert_int_equal(th_stack_start_gw(&s, "stream-term-both", &emu, &tool,
                                       (const char *[]){KEYS, "SHUTDOWN_GRACE_MS=200", NULL},
                                       (const char *[]){"SHUTDOWN_GRACE_MS=5000", NULL}),
                     0);
    fd = open_slow_stream(&s);
    assert_int_equal(kill(s.gw.pid, SIGTERM), 0); /* drains for up to 5 s */
    assert_int_equal(th_proc_stop(&s.agent, SIGTERM), 0);
    assert_int_equal(th_raw_read_until(fd, buf, sizeof(buf), "ShuttingDown", 5000), 0);
    assert_non_null(strstr(buf, "the runtime is shutting down"));
    close(fd);
    assert_int_equal(th_stack_stop(&s), 0);
}

/* ---- WebSocket ---- */

/* Sends one invocation and reads its events up to the final answer; returns
 * the final object and checks the deltas add up to its response. */
static json_t *ws_invoke(int fd, const char *payload)
{
    static char buf[1 << 20];
    char text[4096] = "";
    uint8_t op;

    assert_int_equal(th_ws_send(fd, WS_TEXT, payload, strlen(payload)), 0);
    for (;;) {
        json_t *ev, *delta;

        assert_true(th_ws_recv(fd, &op, buf, sizeof(buf), 10000) >= 0);
        assert_int_equal(op, WS_TEXT);
        ev = json_loads(buf, 0, NULL);
        assert_non_null(ev);
        if (json_object_get(ev, "response") || json_object_get(ev, "error")) {
            if (json_object_get(ev, "response"))
                assert_string_equal(text, json_string_value(json_object_get(ev, "response")));
            return ev;
        }
        delta = json_object_get(json_object_get(ev, "event"), "contentBlockDelta");
        if (delta)
            strncat(text,
                    json_string_value(json_object_get(json_object_get(delta, "delta"), "text")),
                    sizeof(text) - strlen(text) - 1);
        json_decref(ev);
    }
}

static void test_websocket_invocations_ping_and_close(void **state)
{
    char buf[4096];
    uint8_t op;
    json_t *f;
    int fd;

    (void)state;
    fd = th_ws_connect(main_s.gw.port, "/ws",
                       "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id: "
                       "ws-session-0000000000000000000000001\r\n");
    assert_true(fd >= 0);
    f = ws_invoke(fd, "{\"prompt\":\"hello over a websocket\"}");
    assert_string_equal(json_string_value(json_object_get(f, "response")),
                        "Echo: hello over a websocket");
    assert_string_equal(json_string_value(json_object_get(f, "session_id")),
                        "ws-session-0000000000000000000000001");
    json_decref(f);
    /* Ping is answered with the same payload. */
    assert_int_equal(th_ws_send(fd, WS_PING, "are you there", 13), 0);
    assert_int_equal(th_ws_recv(fd, &op, buf, sizeof(buf), 5000), 13);
    assert_int_equal(op, WS_PONG);
    assert_string_equal(buf, "are you there");
    /* Bad input gets the HTTP 400 body as a message; the socket stays open. */
    f = ws_invoke(fd, "{bad");
    assert_string_equal(json_string_value(json_object_get(f, "error")), "Invalid JSON");
    json_decref(f);
    f = ws_invoke(fd, "{\"prompt\":\"[[tool:calculator {\\\"expression\\\":\\\"2^10\\\"}]]\"}");
    assert_string_equal(json_string_value(json_object_get(f, "response")),
                        "Calling calculator\n\nTool result: 1024");
    json_decref(f);
    /* A clean close is answered with a close. */
    assert_int_equal(th_ws_send(fd, WS_CLOSE, "\x03\xe8", 2), 0);
    assert_true(th_ws_recv(fd, &op, buf, sizeof(buf), 5000) >= 0);
    assert_int_equal(op, WS_CLOSE);
    close(fd);
}

static void test_websocket_message_cap(void **state)
{
    char *big = malloc(9000), buf[256];
    uint8_t op;
    long n;
    int fd;

    (void)state;
    memset(big, 'x', 9000);
    fd = th_ws_connect(main_s.gw.port, "/ws", "");
    assert_true(fd >= 0);
    assert_int_equal(th_ws_send(fd, WS_TEXT, big, 9000), 0);
    n = th_ws_recv(fd, &op, buf, sizeof(buf), 5000);
    assert_true(n >= 2);
    assert_int_equal(op, WS_CLOSE);
    assert_int_equal(((uint8_t)buf[0] << 8) | (uint8_t)buf[1], 1009); /* message too big */
    close(fd);
    free(big);
}

static int count_in(const char *path, const char *needle)
{
    char *text = th_read_file(path, NULL), *p = text;
    int n = 0;

    while (p && (p = strstr(p, needle))) {
        n++;
        p += strlen(needle);
    }
    free(text);
    return n;
}

static void test_websocket_close_cancels_the_invocation(void **state)
{
    char buf[65536], payload[512];
    int fd, before = count_in(emu.log_path, "stream aborted by the client");
    uint8_t op;
    long t0;

    (void)state;
    fd = th_ws_connect(main_s.gw.port, "/ws", "");
    snprintf(payload, sizeof(payload), "{\"prompt\":\"%s\"}", SLOW_PROMPT);
    assert_int_equal(th_ws_send(fd, WS_TEXT, payload, strlen(payload)), 0);
    assert_true(th_ws_recv(fd, &op, buf, sizeof(buf), 10000) >= 0);
    assert_non_null(strstr(buf, "contentBlockDelta"));
    close(fd);
    t0 = now_ms();
    assert_true(th_wait_log_count(emu.log_path, "stream aborted by the client", before + 1, 5000) >=
                0);
    if (now_ms() - t0 > 1000)
        fail_msg("model request cancelled %ld ms after the socket closed", now_ms() - t0);
}

/* Runs after the down stack's agent-worker was killed. */
static void test_websocket_internal_error_closes_1011(void **state)
{
    char buf[4096];
    uint8_t op;
    json_t *f;
    long n;
    int fd;

    (void)state;
    fd = th_ws_connect(down_s.gw.port, "/ws", "");
    assert_true(fd >= 0);
    f = ws_invoke(fd, "{\"prompt\":\"anyone?\"}");
    assert_non_null(json_object_get(f, "error"));
    json_decref(f);
    n = th_ws_recv(fd, &op, buf, sizeof(buf), 5000);
    assert_true(n >= 2);
    assert_int_equal(op, WS_CLOSE);
    assert_int_equal(((uint8_t)buf[0] << 8) | (uint8_t)buf[1], 1011);
    close(fd);
}

static void test_websocket_bad_handshake(void **state)
{
    char url[128];
    struct th_resp r;

    (void)state;
    snprintf(url, sizeof(url), "%s/ws", main_s.url);
    assert_int_equal(th_http("GET", url, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 400);
    assert_string_equal(json_string_value(json_object_get(r.json, "error")),
                        "Invalid WebSocket handshake");
    th_resp_free(&r);
    assert_int_equal(th_http("POST", url, NULL, "{}", 2, &r), 0);
    assert_int_equal(r.status, 405);
    th_resp_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sse_deltas_add_up_to_the_answer),
        cmocka_unit_test(test_deltas_merge_only_while_the_stream_is_behind),
        cmocka_unit_test(test_accept_header_and_explicit_false),
        cmocka_unit_test(test_error_after_first_event),
        cmocka_unit_test(test_client_leaving_cancels_the_model_request),
        cmocka_unit_test(test_half_closed_client_gets_its_stream),
        cmocka_unit_test(test_client_leaving_cancels_a_slow_tool),
        cmocka_unit_test(test_ping_answers_during_100_streams),
        cmocka_unit_test(test_concurrency_cap),
        cmocka_unit_test(test_agent_worker_sigterm_mid_invocation),
        cmocka_unit_test(test_websocket_invocations_ping_and_close),
        cmocka_unit_test(test_websocket_message_cap),
        cmocka_unit_test(test_websocket_close_cancels_the_invocation),
        cmocka_unit_test(test_websocket_bad_handshake),
        cmocka_unit_test(test_ping_reports_a_dead_agent_worker),
        cmocka_unit_test(test_websocket_internal_error_closes_1011),
        cmocka_unit_test(test_background_work_makes_ping_busy),
        cmocka_unit_test(test_busy_replica_keeps_ping_busy),
        cmocka_unit_test(test_request_context_is_forwarded_and_masked),
        cmocka_unit_test(test_unsendable_header_bytes_are_refused),
        cmocka_unit_test(test_ws_foreign_origin_is_refused),
        cmocka_unit_test(test_body_limits_and_content_type),
        cmocka_unit_test(test_sigterm_with_a_stream_in_flight),
        cmocka_unit_test(test_sigterm_agent_worker_first),
    };
    int rc = cmocka_run_group_tests_name("e2e_streaming", tests, setup, teardown);

    return rc ? rc : teardown_failed;
}
