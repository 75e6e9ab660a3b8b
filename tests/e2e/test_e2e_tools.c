/* Tools end to end: real tool-workers (the sandbox included), the
 * agent-worker routing calls to them, the gateway, the Bedrock emulator
 * asking for the tools. */
#include "th_http.h"
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
#include <unistd.h>

#include <cmocka.h>

#define KEYS "AWS_ACCESS_KEY_ID=" TH_EMU_AKID, "AWS_SECRET_ACCESS_KEY=" TH_EMU_SECRET
/* Small limits, so that breaking them is quick (manifest tools set their own). */
#define LIMITS                                                                                     \
    "TOOL_CPU_S=1", "TOOL_TIMEOUT_MS=3000", "TOOL_MEMORY_MB=256", "TOOL_OUTPUT_KB=64",             \
        "TOOL_PROCESSES=32"
#define MANIFEST "TOOL_MANIFEST=" AC_SOURCE_DIR "/examples/tools/manifest.json"
/* @modelcontextprotocol/server-filesystem from npm (scripts/setup.sh installs it) */
#define MCP_MANIFEST "TOOL_MANIFEST=" AC_SOURCE_DIR "/tests/mcp/manifest.json"

static struct th_proc emu, tool, mcp, rep[3];
static struct th_stack main_s, rep_s, serial_s;
static char ws_env[300], ws_dir[256], metrics_env[2][64];
static int metrics_port[2]; /* the two tool-workers behind main_s */

static int setup(void **state)
{
    /* The tool-worker gets the AWS keys too, as every process of a single
     * container does: it must drop them before any tool could see them. */
    const char *tool_env[] = {"TOOL_WORKER_LISTEN=127.0.0.1:0",
                              MANIFEST,
                              ws_env,
                              KEYS,
                              "AWS_SESSION_TOKEN=session-token-never-shown",
                              LIMITS,
                              metrics_env[0],
                              NULL};
    const char *rep_env[] = {"TOOL_WORKER_LISTEN=127.0.0.1:0", "TOOL_WORKER_TEST_TOOLS=true",
                             ws_env, NULL};
    const char *mcp_env[] = {
        "TOOL_WORKER_LISTEN=127.0.0.1:0", MCP_MANIFEST, ws_env, LIMITS, metrics_env[1], NULL};
    char replicas[200], both[120];
    int i;

    (void)state;
    snprintf(ws_dir, sizeof(ws_dir), "%s/tools-workspaces-%d", th_log_dir(), (int)getpid());
    snprintf(ws_env, sizeof(ws_env), "TOOL_WORKSPACE_DIR=%s", ws_dir);
    for (i = 0; i < 2; i++) {
        metrics_port[i] = th_free_port();
        snprintf(metrics_env[i], sizeof(metrics_env[i]), "METRICS_LISTEN=127.0.0.1:%d",
                 metrics_port[i]);
    }
    if (th_proc_start(&tool, "tools-tool-worker", AC_BIN_TOOL, tool_env, TH_READY_MS) ||
        th_proc_start(&mcp, "tools-mcp-tool-worker", AC_BIN_TOOL, mcp_env, TH_READY_MS) ||
        th_emulator_start(&emu, "tools-emulator", NULL))
        return -1;
    /* Two tool-workers with different tool sets (and one workspace directory,
     * as replicas on one host or with a shared volume have). */
    snprintf(both, sizeof(both), "TOOL_WORKERS=127.0.0.1:%d,127.0.0.1:%d", tool.port, mcp.port);
    for (i = 0; i < 3; i++) {
        char name[64];

        snprintf(name, sizeof(name), "tools-replica-%d", i + 1);
        if (th_proc_start(&rep[i], name, AC_BIN_TOOL, rep_env, TH_READY_MS))
            return -1;
    }
    snprintf(replicas, sizeof(replicas), "TOOL_WORKERS=127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d",
             rep[0].port, rep[1].port, rep[2].port);
    return th_stack_start_gw(&main_s, "tools-main", &emu, &tool,
                             (const char *[]){KEYS, both, "TOOLS_STATUS_INTERVAL_MS=100", NULL},
                             (const char *[]){"HEALTH_INTERVAL_MS=100", NULL}) ||
           th_stack_start(&rep_s, "tools-replicas", &emu, &tool,
                          (const char *[]){KEYS, replicas, NULL}) ||
           th_stack_start(&serial_s, "tools-serial", &emu, &tool,
                          (const char *[]){KEYS, "MAX_PARALLEL_TOOLS=1", NULL});
}

static int teardown(void **state)
{
    char cmd[300];
    int bad;

    (void)state;
    bad = th_stack_stop(&main_s) + th_stack_stop(&rep_s) + th_stack_stop(&serial_s) +
          th_stop(&emu) + th_stop(&tool) + th_stop(&mcp) + th_stop(&rep[0]) + th_stop(&rep[1]) +
          th_stop(&rep[2]);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", ws_dir);
    if (system(cmd))
        bad++;
    return bad ? -1 : 0;
}

/* Invokes |s| with a prompt that makes the emulator call one tool, and
 * returns the answer text (the tool result is in it). */
static char *ask(const struct th_stack *s, const char *tool_name, const char *input_json,
                 const char *session)
{
    json_t *body = json_object();
    char prompt[4096], *text, *dumped;
    struct th_resp r;

    snprintf(prompt, sizeof(prompt), "[[tool:%s %s]]", tool_name, input_json);
    json_object_set_new(body, "prompt", json_string(prompt));
    dumped = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    assert_int_equal(th_invoke(s, dumped, session, &r), 0);
    free(dumped);
    if (r.status != 200)
        fail_msg("status %ld: %s", r.status, r.body);
    text = strdup(json_string_value(json_object_get(r.json, "response")));
    th_resp_free(&r);
    return text;
}

static void expect(const char *tool_name, const char *input, const char *says)
{
    char *text = ask(&main_s, tool_name, input, "tools-session-000000000000000000000001");

    if (!strstr(text, says))
        fail_msg("%s %s -> '%s'; want '%s'", tool_name, input, text, says);
    free(text);
}

static void test_manifest_tools_in_python_and_shell(void **state)
{
    (void)state;
    expect("statistics", "{\"numbers\":[1,2,3,4]}", "\"mean\": 2.5");
    expect("statistics", "{\"numbers\":[1,2,3,4]}", "\"stdev\": 1.118"); /* STATS_PRECISION=4 */
    expect("word_count", "{\"text\":\"one two\\nthree\\n\"}", "lines=2 words=3 characters=14");
    /* the schema speaks before the program runs */
    expect("statistics", "{\"numbers\":[]}", "input.numbers: must have at least 1 items (has 0)");
    expect("statistics", "{\"numbers\":[1,\"x\"]}", "input.numbers[1]: must be a number");
    expect("word_count", "{\"text\":\"x\",\"lang\":\"en\"}", "input: 'lang' is not allowed");
}

static void test_files_stay_in_the_session_workspace(void **state)
{
    (void)state;
    expect("file_write", "{\"path\":\"notes/today.txt\",\"content\":\"buy milk\"}", "wrote 8");
    expect("shell", "{\"command\":\"cat notes/today.txt\"}", "buy milk");
    expect("file_read", "{\"path\":\"../../../etc/passwd\"}", "'..' is not allowed");
    expect("shell", "{\"command\":\"ln -s /etc/hostname link; echo made\"}", "made");
    expect("file_read", "{\"path\":\"link\"}", "leads outside the workspace");
    expect("shell", "{\"command\":\"echo x > /etc/planted\"}", "Read-only file system");
}

/* One counter series (name and labels) summed over the two tool-workers. */
static long counted(const char *family, const char *series)
{
    char url[96], needle[160], type[160];
    struct th_resp r;
    const char *p;
    long sum = 0;
    int i;

    snprintf(needle, sizeof(needle), "%s%s ", family, series);
    snprintf(type, sizeof(type), "# TYPE %s counter", family);
    for (i = 0; i < 2; i++) {
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", metrics_port[i]);
        assert_int_equal(th_http("GET", url, NULL, NULL, 0, &r), 0);
        assert_int_equal(r.status, 200);
        assert_non_null(strstr(r.body, type));
        if ((p = strstr(r.body, needle)))
            sum += atol(p + strlen(needle));
        th_resp_free(&r);
    }
    return sum;
}

static long kills(const char *reason)
{
    char series[64];

    snprintf(series, sizeof(series), "{reason=\"%s\"}", reason);
    return counted("agentcore_sandbox_kills_total", series);
}

/* Every limit, broken by a tool the model asked for, through the worker. */
static void test_limits_through_the_worker(void **state)
{
    char *text;

    (void)state;
    expect("shell", "{\"command\":\"while :; do :; done\"}", "CPU time limit of 1 s (SIGXCPU)");
    expect("shell", "{\"command\":\"python3 -c 'bytearray(1 << 30)'\"}", "MemoryError");
    expect("shell", "{\"command\":\"yes\"}", "output passed 65536 bytes; it was stopped");
    expect("shell", "{\"command\":\"(b() { b | b & }; b); exec sleep 30\"}",
           "timed out after 3000 ms");
    expect("shell", "{\"command\":\"sleep 30\"}", "timed out after 3000 ms");
    /* each kill counted by its reason, on whichever worker ran it */
    assert_int_equal(kills("cpu"), 1);
    assert_int_equal(kills("output"), 1);
    assert_int_equal(kills("timeout"), 2);
    assert_int_equal(kills("signal"), 0); /* MemoryError is an exit, not a kill */
    /* the session's later calls found their sandbox set up ahead, and every
     * limit above held in it all the same */
    assert_true(counted("agentcore_sandbox_starts_total", "{how=\"cold\"}") > 0);
    assert_true(counted("agentcore_sandbox_starts_total", "{how=\"warm\"}") > 0);
    /* and the worker goes on serving */
    text = ask(&main_s, "shell", "{\"command\":\"echo alive\"}", NULL);
    assert_non_null(strstr(text, "alive"));
    free(text);
}

/* A /proc file whole (their size reads as 0, so th_read_file cannot). */
static char *read_proc(const char *path, size_t *len)
{
    static char buf[1 << 16];
    FILE *f = fopen(path, "r");
    char *copy;

    assert_non_null(f);
    *len = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[*len] = '\0';
    copy = malloc(*len + 1);
    memcpy(copy, buf, *len + 1);
    return copy;
}

static void test_the_agents_keys_are_invisible_to_tools(void **state)
{
    char *text;

    (void)state;
    text = ask(&main_s, "shell",
               "{\"command\":\"env; cat /proc/*/environ 2>/dev/null | tr '\\\\0' '\\\\n'; "
               "grep -rs AKID /proc/*/cmdline; ls /proc\"}",
               "tools-session-000000000000000000000001");
    if (strstr(text, TH_EMU_SECRET) || strstr(text, TH_EMU_AKID) || strstr(text, "AWS_") ||
        strstr(text, "session-token-never-shown"))
        fail_msg("a credential reached the tool: %s", text);
    assert_non_null(strstr(text, "PATH=/usr/local/bin")); /* the command did run */
    free(text);
    /* Nor can any process of the uid read them from /proc: the environment
     * block is empty of them and no core would be written. */
    {
        const struct th_proc *procs[] = {&main_s.agent, &main_s.gw, &tool};
        size_t i;

        for (i = 0; i < sizeof(procs) / sizeof(procs[0]); i++) {
            char path[64], *limits, *at;
            size_t n, k;
            char *env;

            snprintf(path, sizeof(path), "/proc/%d/environ", (int)procs[i]->pid);
            env = read_proc(path, &n);
            assert_true(n > 0); /* readable, and not empty: the check below means something */
            for (k = 0; k + 1 < n; k++) /* NUL-separated: make it one string */
                env[k] = env[k] ? env[k] : '\n';
            if (strstr(env, TH_EMU_SECRET) || strstr(env, "session-token-never-shown"))
                fail_msg("%s shows a credential in /proc/<pid>/environ", procs[i]->name);
            free(env);
            snprintf(path, sizeof(path), "/proc/%d/limits", (int)procs[i]->pid);
            limits = read_proc(path, &n);
            at = strstr(limits, "Max core file size");
            assert_non_null(at);
            assert_int_equal(strncmp(at + 26, "0", 1), 0);
            free(limits);
        }
    }
}

static void test_no_network_for_shell_and_guarded_http(void **state)
{
    char input[200];

    (void)state;
    expect("shell",
           "{\"command\":\"python3 -c \\\"import socket; socket.socket(socket.AF_INET, "
           "socket.SOCK_DGRAM).connect(('1.1.1.1', 53))\\\"\"}",
           "Network is unreachable");
    snprintf(input, sizeof(input), "{\"url\":\"http://127.0.0.1:%d/ping\"}", main_s.gw.port);
    expect("http_request", input, "refused: 127.0.0.1 is a loopback address");
    /* a name that resolves to loopback is refused after resolution */
    snprintf(input, sizeof(input), "{\"url\":\"http://localhost:%d/ping\"}", main_s.gw.port);
    expect("http_request", input, "is a loopback address");
    expect("http_request", "{\"url\":\"http://169.254.169.254/latest/meta-data/\"}",
           "refused: 169.254.169.254 is the cloud metadata service");
    /* a manifest tool with a network goes through the egress proxy */
    expect("fetch_url", "{\"url\":\"http://169.254.169.254/latest/meta-data/\"}",
           "HTTP 403\n\nrefused by the agentcore egress proxy: 169.254.169.254 is the cloud "
           "metadata service");
    snprintf(input, sizeof(input), "{\"url\":\"http://localhost:%d/ping\"}", main_s.gw.port);
    expect("fetch_url", input, "is a loopback address");
}

/* A tool declared "background" answers at once; /ping says HealthyBusy
 * until it ends, then Healthy again, and its work is there. */
static void test_background_tool_makes_ping_busy(void **state)
{
    const char *log = main_s.gw.log_path;
    char url[128];
    struct th_resp r;

    (void)state;
    expect("report", "{\"title\":\"quarterly\"}", "started in the background as task");
    assert_true(th_wait_log(log, "ping status is now HealthyBusy", 5000) >= 0);
    snprintf(url, sizeof(url), "%s/ping", main_s.url);
    assert_int_equal(th_http("GET", url, NULL, NULL, 0, &r), 0);
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), "HealthyBusy");
    th_resp_free(&r);
    assert_true(th_wait_log(log, "ping status is now Healthy\"", 10000) >= 0);
    assert_true(th_wait_log(tool.log_path, "background tool finished", 1000) >= 0);
    expect("file_read", "{\"path\":\"report.txt\"}", "Report: {\"title\":\"quarterly\"}");
}

/* A real MCP server nobody here wrote, listed at start-up and called in
 * the sandbox of the session: what it writes lands in the workspace. */
static void test_an_npm_mcp_server(void **state)
{
    char *text;

    (void)state;
    assert_true(th_wait_log(mcp.log_path, "\"message\":\"MCP server listed\"", 1000) >= 0);
    expect("fs_list_allowed_directories", "{}", "/workspace");
    expect("fs_write_file",
           "{\"path\":\"/workspace/from-mcp.md\",\"content\":\"# written by MCP\"}",
           "Successfully wrote to /workspace/from-mcp.md");
    expect("file_read", "{\"path\":\"from-mcp.md\"}", "# written by MCP");
    expect("fs_read_text_file", "{\"path\":\"/workspace/from-mcp.md\"}", "# written by MCP");
    expect("fs_read_text_file", "{\"path\":\"/etc/passwd\"}", "Access denied");
    /* the input schema the server declared is checked before it starts */
    expect("fs_write_file", "{\"content\":\"x\"}", "input: 'path' is required");
    /* another session has a workspace of its own */
    text = ask(&main_s, "fs_read_text_file", "{\"path\":\"/workspace/from-mcp.md\"}",
               "tools-session-000000000000000000000002");
    if (!strstr(text, "ENOENT") && !strstr(text, "no such file"))
        fail_msg("another session saw the file: %s", text);
    free(text);
}

static int count_in(const char *path, const char *needle)
{
    char *text = th_read_file(path, NULL), *at;
    int n = 0;

    for (at = text; at && (at = strstr(at, needle)); at++)
        n++;
    free(text);
    return n;
}

static void test_replicas_share_calls(void **state)
{
    int i, before[3];

    (void)state;
    for (i = 0; i < 3; i++)
        before[i] = count_in(rep[i].log_path, "\"message\":\"tool executed\"");
    for (i = 0; i < 9; i++) {
        char *text = ask(&rep_s, "calculator", "{\"expression\":\"6*7\"}", NULL);

        assert_non_null(strstr(text, "42"));
        free(text);
    }
    for (i = 0; i < 3; i++) {
        int n = count_in(rep[i].log_path, "\"message\":\"tool executed\"") - before[i];

        if (n != 3)
            fail_msg("replica %d ran %d of 9 calls; want 3 each (round-robin)", i + 1, n);
    }
}

/* Starts a streamed invocation of |tool_name| on the replicas' stack, waits
 * until a replica started it (its log says so) and kills that replica with
 * SIGKILL. Returns the socket; |*killed| is the replica's index. */
static int kill_the_runner(const char *tool_name, const char *input, int *killed)
{
    const char *live[3];
    char body[512], needle[128], buf[8192] = "";
    int map[3], n = 0, k, fd;

    for (k = 0; k < 3; k++) {
        if (rep[k].pid > 0) {
            live[n] = rep[k].log_path;
            map[n++] = k;
        }
    }
    snprintf(body, sizeof(body), "{\"prompt\":\"[[tool:%s %s]]\",\"stream\":true}", tool_name,
             input);
    fd = th_raw_post(rep_s.gw.port, "/invocations", "", body);
    assert_true(fd >= 0);
    assert_int_equal(th_raw_read_until(fd, buf, sizeof(buf), "tool_use", 10000), 0);
    /* each test tool runs once per replica here, so its name marks the runner */
    snprintf(needle, sizeof(needle), "\"tool\":\"%s\"", tool_name);
    k = th_wait_logs(live, n, needle, 1, 10000, NULL);
    assert_true(k >= 0);
    *killed = map[k];
    assert_int_equal(kill(rep[*killed].pid, SIGKILL), 0);
    th_proc_stop(&rep[*killed], 0); /* reaps it */
    rep[*killed].pid = 0;
    return fd;
}

static void test_a_replica_dies_mid_call(void **state)
{
    char buf[65536] = "";
    int fd, killed;

    (void)state;
    /* slow is idempotent: it runs again on another replica */
    fd = kill_the_runner("slow", "{\\\"ms\\\":1500}", &killed);
    assert_int_equal(th_raw_read_until(fd, buf, sizeof(buf), "\"stop_reason\"", 20000), 0);
    close(fd);
    if (!strstr(buf, "waited 1500 ms"))
        fail_msg("replica %d killed; the invocation said: %s", killed + 1, buf);
    /* shell is not: the model hears what happened, the invocation ends well */
    memset(buf, 0, sizeof(buf));
    fd = kill_the_runner("shell", "{\\\"command\\\":\\\"sleep 2; echo late\\\"}", &killed);
    assert_int_equal(th_raw_read_until(fd, buf, sizeof(buf), "\"stop_reason\"", 20000), 0);
    close(fd);
    if (!strstr(buf, "went away during the call") || !strstr(buf, "may or may not"))
        fail_msg("replica %d killed; the invocation said: %s", killed + 1, buf);
    /* the last replica still serves */
    {
        char *text = ask(&rep_s, "calculator", "{\"expression\":\"1+1\"}", NULL);

        assert_non_null(strstr(text, "Tool result: 2"));
        free(text);
    }
}

/* One turn asking for two shell tools that wait for each other (each marks
 * that it started, then looks for the other's mark, about 1 s at most): they meet
 * only if they run at the same time. Results come back in the model's order. */
static char *two_tools_meeting(const struct th_stack *s, const char *session)
{
    static const char fmt[] =
        "[[tool:shell {\\\"command\\\":\\\"touch %s.started; i=0; while [ ! -e %s.started ] "
        "&& [ $i -lt 100 ]; do sleep 0.01; i=$((i+1)); done; [ -e %s.started ] "
        "&& echo %s-met-%s || echo %s-alone\\\"}]]";
    char a[512], b[512], body[1200];
    struct th_resp r;
    char *text;

    snprintf(a, sizeof(a), fmt, "A", "B", "B", "A", "B", "A");
    snprintf(b, sizeof(b), fmt, "B", "A", "A", "B", "A", "B");
    snprintf(body, sizeof(body), "{\"prompt\":\"%s %s\"}", a, b);
    assert_int_equal(th_invoke(s, body, session, &r), 0);
    if (r.status != 200)
        fail_msg("status %ld: %s", r.status, r.body);
    text = strdup(json_string_value(json_object_get(r.json, "response")));
    th_resp_free(&r);
    return text;
}

/* |first| and then |second| in |text| ("Tool result: <A's>; <B's>"). */
static int in_order(const char *text, const char *first, const char *second)
{
    const char *a = strstr(text, first), *b = strstr(text, second);

    return a && b && a < b;
}

static void test_tools_of_one_turn_run_together(void **state)
{
    char *text;

    (void)state;
    text = two_tools_meeting(&main_s, "parallel-tools-session-0000000000000001");
    if (!in_order(text, "A-met-B", "B-met-A"))
        fail_msg("two tools of one turn did not run together: %s", text);
    free(text);
    /* MAX_PARALLEL_TOOLS=1: one after the other, still in the model's order. */
    text = two_tools_meeting(&serial_s, "parallel-tools-session-0000000000000002");
    if (!in_order(text, "A-alone", "B-met-A"))
        fail_msg("with MAX_PARALLEL_TOOLS=1: %s", text);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_manifest_tools_in_python_and_shell),
        cmocka_unit_test(test_tools_of_one_turn_run_together),
        cmocka_unit_test(test_files_stay_in_the_session_workspace),
        cmocka_unit_test(test_limits_through_the_worker),
        cmocka_unit_test(test_the_agents_keys_are_invisible_to_tools),
        cmocka_unit_test(test_no_network_for_shell_and_guarded_http),
        cmocka_unit_test(test_background_tool_makes_ping_busy),
        cmocka_unit_test(test_an_npm_mcp_server),
        cmocka_unit_test(test_replicas_share_calls),
        cmocka_unit_test(test_a_replica_dies_mid_call),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
