/* End to end: sessions that outlive an agent-worker (SESSION_STORE).
 *
 * - file: a restarted agent-worker answers from the directory; an
 *   agent-worker killed (-9) while a tool runs left a checkpoint with the
 *   toolUse and no toolResult, and the session answers normally afterwards
 *   (repaired, or the emulator's strict validation would refuse it).
 * - s3 against s3rver (a third-party S3 server, from npm): two agent-workers
 *   behind one gateway share the bucket; the one holding the session is
 *   killed and the conversation goes on, whole, on the other.
 * - s3 against the emulator (which checks SigV4 for s3 and the conditional
 *   headers as S3 does): two agent-workers run a turn of one session at the
 *   same time; the second save is refused (412), reloads and keeps both. */
#include "th_stack.h"

#include <jansson.h>
#include <pthread.h>
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
#define S3RVER_KEYS "AWS_ACCESS_KEY_ID=S3RVER", "AWS_SECRET_ACCESS_KEY=S3RVER"
#define BUCKET "agentcore-sessions"

static struct th_proc emu, tool;
static char dir[512], dir_env[600];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "%s/sessions-%ld", th_log_dir(), (long)getpid());
    snprintf(dir_env, sizeof(dir_env), "SESSION_DIR=%s", dir);
    if (mkdir(dir, 0700))
        return -1;
    return th_emulator_start(&emu, "ses-emulator", NULL) || th_tool_start(&tool, "ses-tool-worker");
}

static int teardown(void **state)
{
    (void)state;
    return th_stop(&tool) | th_stop(&emu) ? -1 : 0;
}

/* POSTs |prompt| in |session| to |s|; the status, the answer in |r|. */
static long ask(const struct th_stack *s, const char *session, const char *prompt,
                struct th_resp *r)
{
    json_t *body = json_pack("{s:s}", "prompt", prompt);
    char *dumped = json_dumps(body, JSON_COMPACT);

    json_decref(body);
    assert_int_equal(th_invoke(s, dumped, session, r), 0);
    free(dumped);
    return r->status;
}

/* Asks and expects 200 with |needle| in the answer. */
static void ask_ok(const struct th_stack *s, const char *session, const char *prompt,
                   const char *needle)
{
    struct th_resp r;

    if (ask(s, session, prompt, &r) != 200 || (needle && !strstr(r.body, needle)))
        fail_msg("%s -> %ld %s", prompt, r.status, r.body);
    th_resp_free(&r);
}

static int file_stack(struct th_stack *s, const char *name)
{
    return th_stack_start(s, name, &emu, &tool,
                          (const char *[]){KEYS, "SESSION_STORE=file", dir_env, NULL});
}

static void test_file_store_survives_a_restart(void **state)
{
    static const char sid[] = "ses-file-restart-000000000000000000001";
    struct th_stack s;
    char path[700];
    char *doc;

    (void)state;
    assert_int_equal(file_stack(&s, "ses-file-a"), 0);
    ask_ok(&s, sid, "remember the apples.", NULL);
    snprintf(path, sizeof(path), "%s/%s.json", dir, sid);
    doc = th_read_file(path, NULL);
    assert_non_null(doc);
    assert_non_null(strstr(doc, "remember the apples."));
    assert_non_null(strstr(doc, "\"format\":\"agentcore-session/1\""));
    free(doc);
    assert_int_equal(th_stack_stop(&s), 0);

    assert_int_equal(file_stack(&s, "ses-file-b"), 0);
    ask_ok(&s, sid, "[[recall]]", "remember the apples.");
    assert_int_equal(th_stack_stop(&s), 0);
}

struct bg {
    const struct th_stack *s;
    const char *sid, *prompt;
    long status;
    char body[2048];
};

static void *bg_ask(void *p)
{
    struct bg *b = p;
    json_t *body = json_pack("{s:s}", "prompt", b->prompt);
    char *dumped = json_dumps(body, JSON_COMPACT);
    struct th_resp r;

    json_decref(body);
    if (th_invoke(b->s, dumped, b->sid, &r) == 0) {
        b->status = r.status;
        snprintf(b->body, sizeof(b->body), "%s", r.body ? r.body : "");
        th_resp_free(&r);
    }
    free(dumped);
    return NULL;
}

static void test_kill_between_tool_use_and_result(void **state)
{
    static const char sid[] = "ses-file-kill9-0000000000000000000001";
    /* A tool that takes a while (bounded: 10 s at most). */
    struct bg b = {NULL, sid,
                   "slow one. [[tool:shell {\"command\":\"i=0; while [ $i -lt 500 ]; do sleep "
                   "0.02; i=$((i+1)); done; echo finished\"}]]",
                   0, ""};
    struct th_stack s;
    pthread_t t;
    char path[700];

    (void)state;
    assert_int_equal(file_stack(&s, "ses-kill-a"), 0);
    ask_ok(&s, sid, "first turn.", NULL);
    b.s = &s;
    assert_int_equal(pthread_create(&t, NULL, bg_ask, &b), 0);
    /* The checkpoint: the prompt and the toolUse, written while the tool runs. */
    snprintf(path, sizeof(path), "%s/%s.json", dir, sid);
    assert_true(th_wait_log(path, "\"toolUse\"", 10000) >= 0);
    assert_int_equal(th_proc_stop(&s.agent, SIGKILL), 128 + SIGKILL);
    pthread_join(t, NULL);
    if (b.status == 200)
        fail_msg("the invocation survived its agent-worker: %s", b.body);
    th_proc_stop(&s.gw, SIGTERM);

    assert_int_equal(file_stack(&s, "ses-kill-b"), 0);
    /* The interrupted turn is there, repaired: the model is told the tool
     * call did not complete, and the conversation goes on. */
    ask_ok(&s, sid, "after the crash.", "interrupted: this tool call did not complete");
    assert_true(th_wait_log(s.agent.log_path, "session history repaired", 5000) >= 0);
    ask_ok(&s, sid, "[[recall]]", "slow one.");
    assert_int_equal(th_stack_stop(&s), 0);
}

/* ---- S3 ---- */

static int s3_stack(struct th_stack *s, const char *name, const struct th_proc *e, int port,
                    int s3rver)
{
    char endpoint[96];

    snprintf(endpoint, sizeof(endpoint), "SESSION_S3_ENDPOINT=http://127.0.0.1:%d", port);
    if (s3rver)
        return th_stack_start(s, name, e, &tool,
                              (const char *[]){S3RVER_KEYS, "SESSION_STORE=s3",
                                               "SESSION_S3_BUCKET=" BUCKET, endpoint, NULL});
    return th_stack_start(
        s, name, e, &tool,
        (const char *[]){KEYS, "SESSION_STORE=s3", "SESSION_S3_BUCKET=" BUCKET, endpoint, NULL});
}

static void test_s3rver_two_workers_share_a_session(void **state)
{
    static const char sid[] = "ses-s3rver-share-00000000000000000001";
    char script[1200], data[600];
    struct th_proc s3, emu2, gw;
    struct th_stack a, b, front;
    const char *logs[2];
    int port = th_free_port(), which, tries;
    long waited, st = 0;
    struct th_resp r;

    (void)state;
    snprintf(data, sizeof(data), "%s/s3rver-%ld", th_log_dir(), (long)getpid());
    snprintf(script, sizeof(script),
             "exec node %s/tests/s3/node_modules/s3rver/bin/s3rver.js -d %s -a 127.0.0.1 -p %d "
             "--configure-bucket " BUCKET " 1>&2",
             AC_SOURCE_DIR, data, port);
    assert_int_equal(th_proc_spawn_args(&s3, "ses-s3rver", "/bin/sh",
                                        (const char *[]){"-c", script, NULL},
                                        (const char *[]){"PATH=/usr/bin:/bin", NULL}),
                     0);
    if (th_wait_log(s3.log_path, "S3rver listening", 30000) < 0)
        fail_msg("s3rver did not start (run scripts/setup.sh): see %s", s3.log_path);
    /* s3rver knows one key pair, S3RVER: the emulator is told to accept it. */
    assert_int_equal(th_emulator_start(&emu2, "ses-emulator-s3rver",
                                       (const char *[]){"EMU_ACCESS_KEY_ID=S3RVER",
                                                        "EMU_SECRET_ACCESS_KEY=S3RVER", NULL}),
                     0);
    assert_int_equal(s3_stack(&a, "ses-s3rver-a", &emu2, port, 1), 0);
    assert_int_equal(s3_stack(&b, "ses-s3rver-b", &emu2, port, 1), 0);
    assert_int_equal(
        th_front_start(&gw, "ses-s3rver-gateway", "127.0.0.1", a.agent.port, b.agent.port), 0);
    memset(&front, 0, sizeof(front));
    snprintf(front.url, sizeof(front.url), "http://127.0.0.1:%d", gw.port);

    ask_ok(&front, sid, "turn one: pears.", NULL);
    ask_ok(&front, sid, "turn two: plums.", NULL);
    /* Whichever agent-worker holds the session dies. */
    logs[0] = a.agent.log_path;
    logs[1] = b.agent.log_path;
    which = th_wait_logs(logs, 2, sid, 1, 5000, &waited);
    assert_true(which >= 0);
    assert_int_equal(th_proc_stop(which ? &b.agent : &a.agent, SIGKILL), 128 + SIGKILL);
    /* The other one has the whole conversation. The first call may still
     * go to the dead worker's channel before gRPC has seen it fail (503, a
     * clear answer a client retries); at most 20 tries. */
    for (tries = 0; tries < 20 && st != 200; tries++) {
        st = ask(&front, sid, "[[recall]]", &r);
        if (st != 200 && st != 503)
            fail_msg("%ld %s", st, r.body);
        if (st == 200 &&
            (!strstr(r.body, "turn one: pears.") || !strstr(r.body, "turn two: plums.")))
            fail_msg("the conversation was lost: %s", r.body);
        th_resp_free(&r);
    }
    assert_int_equal(st, 200);

    assert_int_equal(th_stop(&gw), 0);
    th_proc_stop(&a.gw, SIGTERM);
    th_proc_stop(&b.gw, SIGTERM);
    assert_int_equal(th_stop(which ? &a.agent : &b.agent), 0);
    assert_int_equal(th_stop(&emu2), 0);
    th_proc_stop(&s3, SIGTERM);
}

static void test_concurrent_turns_on_two_workers_keep_both(void **state)
{
    static const char sid[] = "ses-s3-conflict-000000000000000000001";
    struct th_stack a, b;
    struct bg slow = {NULL, sid, "[[sleep:1500]] from A.", 0, ""};
    pthread_t t;
    long conflicts = th_emu_stat(&emu, "s3_conflict");
    long rejected = th_emu_stat(&emu, "auth_rejected");

    (void)state;
    assert_int_equal(s3_stack(&a, "ses-s3-a", &emu, emu.port, 0), 0);
    assert_int_equal(s3_stack(&b, "ses-s3-b", &emu, emu.port, 0), 0);
    ask_ok(&a, sid, "start.", NULL);
    slow.s = &a;
    assert_int_equal(pthread_create(&t, NULL, bg_ask, &slow), 0);
    /* A loaded the session and waits on the model: B runs a whole turn. */
    assert_true(th_wait_log(emu.log_path, "model thinking", 10000) >= 0);
    ask_ok(&b, sid, "from B.", NULL);
    pthread_join(t, NULL);
    if (slow.status != 200)
        fail_msg("A: %ld %s", slow.status, slow.body);
    assert_true(th_emu_stat(&emu, "s3_conflict") > conflicts);
    assert_true(th_wait_log(a.agent.log_path, "session saved by another writer meanwhile", 5000) >=
                0);
    /* Both turns are in the session, on either worker. */
    ask_ok(&b, sid, "[[recall]]", "from A.");
    ask_ok(&a, sid, "[[recall]]", "from B.");
    assert_int_equal(th_emu_stat(&emu, "auth_rejected"), rejected);
    assert_true(th_emu_stat(&emu, "s3_not_modified") > 0); /* a cached session costs a 304 */
    assert_int_equal(th_stack_stop(&a) | th_stack_stop(&b), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_store_survives_a_restart),
        cmocka_unit_test(test_kill_between_tool_use_and_result),
        cmocka_unit_test(test_s3rver_two_workers_share_a_session),
        cmocka_unit_test(test_concurrent_turns_on_two_workers_keep_both),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
