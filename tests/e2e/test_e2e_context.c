/* End to end: a conversation that outgrows the model's context window. The
 * emulator answers Bedrock's overflow error ("Input is too long for requested
 * model") when a call's messages pass EMU_CONTEXT_LIMIT_BYTES; the
 * agent-worker shortens the oldest long tool results, then drops the oldest
 * turns, and calls again, so the user never sees the error; when nothing can
 * go, the error says so clearly. And a long conversation stays within the
 * sliding window (SESSION_MAX_MESSAGES, 40) and valid under the emulator's
 * checks of Bedrock's conversation rules on every call. */
#include "th_stack.h"

#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#define KEYS "AWS_ACCESS_KEY_ID=" TH_EMU_AKID, "AWS_SECRET_ACCESS_KEY=" TH_EMU_SECRET
#define LIMIT 6000

/* What the summarizing manager puts before a summary (aw_history.h). */
#define AW_SUMMARY_HEAD "Summary of the earlier conversation:"

static struct th_proc emu, tool;
static struct th_stack s;

static int setup(void **state)
{
    char limit[64];

    (void)state;
    snprintf(limit, sizeof(limit), "EMU_CONTEXT_LIMIT_BYTES=%d", LIMIT);
    return th_emulator_start(&emu, "ctx-emulator", (const char *[]){limit, NULL}) ||
           th_tool_start(&tool, "ctx-tool-worker") ||
           th_stack_start(&s, "ctx", &emu, &tool, (const char *[]){KEYS, NULL});
}

static int teardown(void **state)
{
    (void)state;
    return th_stack_stop(&s) | th_stop(&tool) | th_stop(&emu) ? -1 : 0;
}

/* POSTs |prompt| in |session|; the status, and the parsed answer in |r|. */
static long ask(const char *session, const char *prompt, struct th_resp *r)
{
    json_t *body = json_pack("{s:s}", "prompt", prompt);
    char *dumped = json_dumps(body, JSON_COMPACT);

    json_decref(body);
    assert_int_equal(th_invoke(&s, dumped, session, r), 0);
    free(dumped);
    return r->status;
}

static char *repeat(char c, size_t n)
{
    char *p = malloc(n + 1);

    memset(p, c, n);
    p[n] = '\0';
    return p;
}

/* A tool result too large for the context: shortened, then the model answers. */
static void test_a_large_tool_result_is_shortened(void **state)
{
    struct th_resp r;

    (void)state;
    assert_int_equal(ask("ctx-session-tool-00000000000000000001",
                         "[[tool:shell {\"command\":\"head -c 8000 /dev/zero | tr '\\\\0' x\"}]]",
                         &r),
                     200);
    if (!strstr(json_string_value(json_object_get(r.json, "response")), "[truncated: "))
        fail_msg("%s", r.body);
    th_resp_free(&r);
    assert_true(th_wait_log(s.agent.log_path, "shortened a tool result", 5000) >= 0);
}

/* Turns that add up past the limit: the oldest go, the conversation goes on. */
static void test_old_turns_make_room(void **state)
{
    static const char session[] = "ctx-session-turns-0000000000000000001";
    struct th_resp r;
    char *big = repeat('a', 2000), prompt[2100];
    int turn;

    (void)state;
    for (turn = 1; turn <= 4; turn++) {
        snprintf(prompt, sizeof(prompt), "turn %d %s", turn, big);
        if (ask(session, prompt, &r) != 200)
            fail_msg("turn %d: %s", turn, r.body);
        th_resp_free(&r);
    }
    free(big);
    assert_true(th_wait_log(s.agent.log_path, "oldest messages; calling the model again", 5000) >=
                0);
    /* The last turns are still there; the first went. */
    assert_int_equal(ask(session, "[[recall]]", &r), 200);
    if (!strstr(r.body, "turn 4") || strstr(r.body, "turn 1 "))
        fail_msg("%s", r.body);
    th_resp_free(&r);
}

/* One prompt larger than the context: nothing can go, and the error says so. */
static void test_a_prompt_too_large_gets_a_clear_error(void **state)
{
    struct th_resp r;
    char *big = repeat('z', LIMIT + 100);

    (void)state;
    assert_int_equal(ask("ctx-session-big-00000000000000000000001", big, &r), 502);
    free(big);
    if (!strstr(r.body, "does not fit the model's context window"))
        fail_msg("%s", r.body);
    th_resp_free(&r);
}

/* 60 turns, every other one a tool round trip: all answered (the emulator
 * refuses any call whose conversation Bedrock would refuse), and what the
 * model sees is the window's worth: the last turns, not the first. */
static void test_sixty_turns_stay_in_the_window(void **state)
{
    static const char session[] = "ctx-session-sixty-0000000000000000001";
    struct th_resp r;
    char prompt[128];
    const char *said;
    int turn, n = 0;

    (void)state;
    for (turn = 1; turn <= 60; turn++) {
        if (turn % 2)
            snprintf(prompt, sizeof(prompt), "turn %d.", turn);
        else
            snprintf(prompt, sizeof(prompt),
                     "turn %d. [[tool:calculator {\"expression\":\"%d*2\"}]]", turn, turn);
        if (ask(session, prompt, &r) != 200)
            fail_msg("turn %d: %s", turn, r.body);
        th_resp_free(&r);
    }
    assert_int_equal(ask(session, "[[recall]]", &r), 200);
    said = json_string_value(json_object_get(r.json, "response"));
    for (const char *p = said; (p = strstr(p, "turn ")); p++)
        n++;
    /* 40 messages: 15 turns of 2 or 4 messages at most; the newest is there. */
    if (n > 20 || n < 10 || !strstr(said, "turn 60.") || strstr(said, "turn 1."))
        fail_msg("%d turns seen: %s", n, said);
    th_resp_free(&r);
}

struct racer {
    int n;
    long status;
};

static void *race(void *p)
{
    struct racer *r = p;
    struct th_resp resp;
    char prompt[32];

    snprintf(prompt, sizeof(prompt), "racer %02d.", r->n);
    r->status = ask("ctx-session-race-00000000000000000001", prompt, &resp);
    th_resp_free(&resp);
    return NULL;
}

/* 20 invocations of one session at once, with distinct request ids: each
 * runs as a whole turn after the one before (none interleaves, none is lost),
 * and the history holds all 20, once each, in a form Bedrock accepts (the
 * emulator checks it on every call). */
static void test_twenty_at_once_on_one_session(void **state)
{
    pthread_t t[20];
    struct racer r[20];
    struct th_resp resp;
    const char *said;
    int i;

    (void)state;
    for (i = 0; i < 20; i++) {
        r[i].n = i;
        assert_int_equal(pthread_create(&t[i], NULL, race, &r[i]), 0);
    }
    for (i = 0; i < 20; i++) {
        pthread_join(t[i], NULL);
        if (r[i].status != 200)
            fail_msg("racer %d: status %ld", i, r[i].status);
    }
    assert_int_equal(ask("ctx-session-race-00000000000000000001", "[[recall]]", &resp), 200);
    said = json_string_value(json_object_get(resp.json, "response"));
    for (i = 0; i < 20; i++) {
        char needle[32];
        const char *at;

        snprintf(needle, sizeof(needle), "racer %02d.", i);
        at = strstr(said, needle);
        if (!at || strstr(at + 1, needle))
            fail_msg("'%s' not exactly once in: %s", needle, said);
    }
    th_resp_free(&resp);
}

/* POSTs |body| with request id |rid| (NULL: none) in |session|. */
static long post_with_id(const char *session, const char *rid, const char *body, struct th_resp *r)
{
    char url[96], h1[160], h2[160];
    const char *hdrs[3] = {h1, NULL, NULL};

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/invocations", s.gw.port);
    snprintf(h1, sizeof(h1), "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id: %s", session);
    if (rid) {
        snprintf(h2, sizeof(h2), "X-Amzn-Bedrock-AgentCore-Runtime-Request-Id: %s", rid);
        hdrs[1] = h2;
    }
    assert_int_equal(th_http("POST", url, hdrs, body, strlen(body), r), 0);
    return r->status;
}

/* How many times |what| appears in the session's conversation. */
static int turns_with(const char *session, const char *what)
{
    struct th_resp r;
    const char *said, *p;
    int n = 0;

    assert_int_equal(ask(session, "[[recall]]", &r), 200);
    said = json_string_value(json_object_get(r.json, "response"));
    for (p = said; p && (p = strstr(p, what)); p++)
        n++;
    th_resp_free(&r);
    return n;
}

struct dup {
    const char *session, *rid, *body;
    long status;
    char id[64];
};

static void *dup_post(void *p)
{
    struct dup *d = p;
    struct th_resp r;

    d->status = post_with_id(d->session, d->rid, d->body, &r);
    snprintf(d->id, sizeof(d->id), "%s",
             json_string_value(json_object_get(r.json, "invocation_id")) ?: "");
    th_resp_free(&r);
    return NULL;
}

/* A retried request id gets the first run's answer, not a second run: after
 * it finished, while it still runs (the retry joins the run),
 * and by the body's idempotency_key; another session's same id runs. */
static void test_a_retried_request_id_runs_once(void **state)
{
    static const char sa[] = "ctx-session-idem-00000000000000000001",
                      sb[] = "ctx-session-idem-00000000000000000002";
    struct th_resp r1, r2;
    struct dup d[2];
    pthread_t t[2];
    int i;

    (void)state;
    assert_int_equal(post_with_id(sa, "retry-me-1", "{\"prompt\":\"only once A.\"}", &r1), 200);
    assert_int_equal(post_with_id(sa, "retry-me-1", "{\"prompt\":\"only once A.\"}", &r2), 200);
    assert_string_equal(json_string_value(json_object_get(r1.json, "response")),
                        json_string_value(json_object_get(r2.json, "response")));
    assert_string_equal(json_string_value(json_object_get(r2.json, "invocation_id")), "retry-me-1");
    th_resp_free(&r1);
    th_resp_free(&r2);
    assert_int_equal(turns_with(sa, "only once A."), 1);
    assert_true(th_wait_log(s.agent.log_path, "answered from its earlier run", 5000) >= 0);

    /* Two at once: the second joins the first's run and gets its answer. */
    for (i = 0; i < 2; i++) {
        d[i] = (struct dup){sa, "retry-me-2", "{\"prompt\":\"[[sleep:300]] only once B.\"}", 0, ""};
        assert_int_equal(pthread_create(&t[i], NULL, dup_post, &d[i]), 0);
    }
    for (i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(d[i].status, 200);
    }
    assert_int_equal(turns_with(sa, "only once B."), 1);

    /* The body's idempotency_key, when no request-id header came. */
    for (i = 0; i < 2; i++) {
        assert_int_equal(post_with_id(sa, NULL,
                                      "{\"prompt\":\"only once C.\",\"idempotency_key\":\"key-3\"}",
                                      &r1),
                         200);
        assert_string_equal(json_string_value(json_object_get(r1.json, "invocation_id")), "key-3");
        th_resp_free(&r1);
    }
    assert_int_equal(turns_with(sa, "only once C."), 1);

    /* The same id in another session is another request. */
    assert_int_equal(post_with_id(sb, "retry-me-1", "{\"prompt\":\"only once A.\"}", &r1), 200);
    th_resp_free(&r1);
    assert_int_equal(turns_with(sb, "only once A."), 1);
}

/* A streaming retry of a request still running joins it: it gets the
 * events streamed so far at once, then the rest, then the same answer;
 * when the first client leaves, the run goes on for the retry. One model
 * call in all. */
static void test_a_streamed_retry_joins_the_running_stream(void **state)
{
    static const char hdrs[] = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id: "
                               "ctx-session-join-00000000000000000001\r\n"
                               "X-Amzn-Bedrock-AgentCore-Runtime-Request-Id: join-me-1\r\n";
    static const char body[] =
        "{\"prompt\":\"[[slow-stream:100]] first words, then more words, and more words, and "
        "still more words, one small piece at a time, then the last words of a slow answer\","
        "\"stream\":true}";
    static char a[65536], b[65536];
    long long streams = th_emu_stat(&emu, "streams");
    int fa, fb;

    (void)state;
    fa = th_raw_post(s.gw.port, "/invocations", hdrs, body);
    assert_true(fa >= 0);
    assert_int_equal(th_raw_read_until(fa, a, sizeof(a), "contentBlockDelta", 10000), 0);
    fb = th_raw_post(s.gw.port, "/invocations", hdrs, body);
    assert_true(fb >= 0);
    /* The retry sees at once what the first client saw first. */
    assert_int_equal(th_raw_read_until(fb, b, sizeof(b), "contentBlockDelta", 10000), 0);
    /* (the retry of the test before joined once already) */
    assert_true(th_wait_log_count(s.agent.log_path, "joined its running invocation", 2, 5000) >= 0);
    assert_null(strstr(b, "stop_reason")); /* mid-stream, not a replay of a finished run */
    {
        /* The first client leaves mid-stream (a reset, as a client that dies). */
        struct linger lg = {1, 0};

        setsockopt(fa, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(fa);
    }
    assert_true(th_wait_log(s.agent.log_path, "the run goes on for its retry", 5000) >= 0);
    assert_int_equal(th_raw_read_until(fb, b, sizeof(b), "\"stop_reason\"", 20000), 0);
    close(fb);
    /* The whole answer, from one model call. */
    assert_non_null(strstr(b, "last words of a slow answer"));
    assert_int_equal(th_emu_stat(&emu, "streams"), streams + 1);
    assert_int_equal(turns_with("ctx-session-join-00000000000000000001", "first words"), 1);
}

/* CONVERSATION_MANAGER=summarizing with a window of 4 messages: what the
 * window drops is summarized by the model (the emulator's summary lists the
 * user's prompts), so the first turn is still known three turns later, and
 * the conversation stays valid (the emulator refuses any that is not). */
static void test_the_summarizing_manager_keeps_what_the_window_drops(void **state)
{
    static const char sid[] = "ctx-session-summary-0000000000000000001";
    struct th_stack sum;
    struct th_resp r;
    const char *said;
    int turn;
    char prompt[64];

    (void)state;
    assert_int_equal(th_stack_start(&sum, "ctx-sum", &emu, &tool,
                                    (const char *[]){KEYS, "CONVERSATION_MANAGER=summarizing",
                                                     "SESSION_MAX_MESSAGES=4", NULL}),
                     0);
    for (turn = 1; turn <= 4; turn++) {
        snprintf(prompt, sizeof(prompt), "{\"prompt\":\"fact number %d.\"}", turn);
        assert_int_equal(th_invoke(&sum, prompt, sid, &r), 0);
        if (r.status != 200)
            fail_msg("turn %d: %s", turn, r.body);
        th_resp_free(&r);
    }
    assert_true(th_wait_log(sum.agent.log_path, "history summarized", 5000) >= 0);
    assert_int_equal(th_invoke(&sum, "{\"prompt\":\"[[recall]]\"}", sid, &r), 0);
    assert_int_equal(r.status, 200);
    said = json_string_value(json_object_get(r.json, "response"));
    /* The first fact left the window long ago: only the summary has it. */
    if (!said || !strstr(said, AW_SUMMARY_HEAD) || !strstr(said, "fact number 1."))
        fail_msg("%s", r.body);
    th_resp_free(&r);
    assert_int_equal(th_stack_stop(&sum), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_large_tool_result_is_shortened),
        cmocka_unit_test(test_old_turns_make_room),
        cmocka_unit_test(test_a_prompt_too_large_gets_a_clear_error),
        cmocka_unit_test(test_sixty_turns_stay_in_the_window),
        cmocka_unit_test(test_twenty_at_once_on_one_session),
        cmocka_unit_test(test_a_retried_request_id_runs_once),
        cmocka_unit_test(test_a_streamed_retry_joins_the_running_stream),
        cmocka_unit_test(test_the_summarizing_manager_keeps_what_the_window_drops),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
