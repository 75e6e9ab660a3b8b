/* End to end: two agent-workers behind one gateway (AGENT_WORKER_ADDR lists
 * both). Each session's invocations go to the same agent-worker, which holds
 * its conversation (the emulator's [[recall]] shows the earlier turns), and
 * the sessions spread over both; when a session's agent-worker is killed,
 * the session goes on on the other one, and the gateway says so. The same
 * with DNS names (compose --scale gives one name several addresses): the
 * gateway looks them up and keeps a session on one address. */
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

#include <cmocka.h>

#define KEYS "AWS_ACCESS_KEY_ID=" TH_EMU_AKID, "AWS_SECRET_ACCESS_KEY=" TH_EMU_SECRET
#define SESSIONS 16

static struct th_proc emu, tool, gw, gw_dns;
static struct th_stack a_s, b_s;
static char url[96], url_dns[96];

static int setup(void **state)
{
    (void)state;
    if (th_emulator_start(&emu, "aff-emulator", NULL) || th_tool_start(&tool, "aff-tool-worker") ||
        th_stack_start(&a_s, "aff-a", &emu, &tool, (const char *[]){KEYS, NULL}) ||
        th_stack_start(&b_s, "aff-b", &emu, &tool, (const char *[]){KEYS, NULL}))
        return -1;
    if (th_front_start(&gw, "aff-gateway", "127.0.0.1", a_s.agent.port, b_s.agent.port))
        return -1;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/invocations", gw.port);
    if (th_front_start(&gw_dns, "aff-gateway-dns", "localhost", a_s.agent.port, b_s.agent.port))
        return -1;
    snprintf(url_dns, sizeof(url_dns), "http://127.0.0.1:%d/invocations", gw_dns.port);
    return 0;
}

static int teardown(void **state)
{
    int bad;

    (void)state;
    bad = th_stop(&gw) | th_stop(&gw_dns) | th_stack_stop(&b_s) | th_stop(&tool) | th_stop(&emu);
    th_proc_stop(&a_s.gw, SIGTERM);
    th_proc_stop(&a_s.agent, SIGTERM); /* killed by the last test */
    return bad ? -1 : 0;
}

/* POSTs |prompt| in session |sid|; the status, and the answer in |out|. */
static long invoke_at(const char *at, const char *sid, const char *prompt, char *out, size_t cap)
{
    char hdr[160], body[256];
    struct th_resp r;
    long st;

    snprintf(hdr, sizeof(hdr), "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id: %s", sid);
    snprintf(body, sizeof(body), "{\"prompt\":\"%s\"}", prompt);
    assert_int_equal(th_http("POST", at, (const char *[]){hdr, NULL}, body, strlen(body), &r), 0);
    st = r.status;
    snprintf(out, cap, "%s", r.body ? r.body : "");
    th_resp_free(&r);
    return st;
}

static long invoke(const char *sid, const char *prompt, char *out, size_t cap)
{
    return invoke_at(url, sid, prompt, out, cap);
}

static void session_id_of(const char *kind, int i, char *out, size_t cap)
{
    snprintf(out, cap, "affinity-%s-%04d-0000000000000000", kind, i);
}

static void session_id(int i, char *out, size_t cap)
{
    session_id_of("session", i, out, cap);
}

/* SESSIONS sessions of two turns through |at|: each stays on one worker. */
static void sessions_stay(const char *at, const char *kind)
{
    char sid[64], prompt[64], out[4096], *la, *lb;
    int i, on_a = 0, on_b = 0;

    for (i = 0; i < SESSIONS; i++) {
        session_id_of(kind, i, sid, sizeof(sid));
        snprintf(prompt, sizeof(prompt), "first turn %d", i);
        assert_int_equal(invoke_at(at, sid, prompt, out, sizeof(out)), 200);
    }
    /* In reverse order: round-robin would now send each session to the
     * other worker. */
    for (i = SESSIONS - 1; i >= 0; i--) {
        session_id_of(kind, i, sid, sizeof(sid));
        snprintf(prompt, sizeof(prompt), "first turn %d", i);
        assert_int_equal(invoke_at(at, sid, "[[recall]]", out, sizeof(out)), 200);
        if (!strstr(out, prompt))
            fail_msg("session %d lost its first turn (another agent-worker?): %s", i, out);
    }
    /* Both workers hold sessions. */
    la = th_read_file(a_s.agent.log_path, NULL);
    lb = th_read_file(b_s.agent.log_path, NULL);
    assert_non_null(la);
    assert_non_null(lb);
    for (i = 0; i < SESSIONS; i++) {
        session_id_of(kind, i, sid, sizeof(sid));
        on_a += strstr(la, sid) != NULL;
        on_b += strstr(lb, sid) != NULL;
    }
    free(la);
    free(lb);
    assert_int_equal(on_a + on_b, SESSIONS); /* each on exactly one */
    assert_true(on_a > 0 && on_b > 0);
}

static void test_sessions_stay_on_their_worker(void **state)
{
    (void)state;
    sessions_stay(url, "session");
}

/* Through names: each name's address gets a channel of its own. */
static void test_sessions_stay_on_their_worker_by_name(void **state)
{
    char line[96];

    (void)state;
    sessions_stay(url_dns, "by-name");
    snprintf(line, sizeof(line), "localhost:%d resolves to 127.0.0.1:%d", a_s.agent.port,
             a_s.agent.port);
    assert_true(th_wait_log(gw_dns.log_path, line, 5000) >= 0);
}

static void test_session_moves_when_its_worker_is_gone(void **state)
{
    char sid[64], out[4096], *la;
    int i, moved = -1, tries;
    long st = 0;

    (void)state;
    la = th_read_file(a_s.agent.log_path, NULL);
    assert_non_null(la);
    for (i = 0; i < SESSIONS && moved < 0; i++) {
        session_id(i, sid, sizeof(sid));
        if (strstr(la, sid))
            moved = i;
    }
    free(la);
    assert_true(moved >= 0);
    th_proc_stop(&a_s.agent, SIGKILL);
    session_id(moved, sid, sizeof(sid));
    /* The first call may still be sent to the dead worker's channel before
     * gRPC has seen it fail (503); each try is answered, at most 20. */
    for (tries = 0; tries < 20 && st != 200; tries++)
        st = invoke(sid, "[[recall]]", out, sizeof(out));
    assert_int_equal(st, 200);
    assert_true(th_wait_log(gw.log_path, "is unreachable: this session continues on", 5000) >= 0);
    assert_true(th_wait_log(b_s.agent.log_path, sid, 5000) >= 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sessions_stay_on_their_worker),
        cmocka_unit_test(test_sessions_stay_on_their_worker_by_name),
        cmocka_unit_test(test_session_moves_when_its_worker_is_gone),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
