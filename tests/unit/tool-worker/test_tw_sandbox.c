#include "tw_job.h"
#include "tw_sandbox.h"

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

static struct tw_sandbox_config config(const char *bwrap, int unconfined)
{
    struct tw_sandbox_config c;

    memset(&c, 0, sizeof(c));
    c.bwrap = bwrap;
    c.helper = AC_BIN_DIR "/agentcore-tool-exec";
    c.http = AC_BIN_DIR "/agentcore-tool-http";
    c.ro_paths = "/opt,/srv";
    c.allow_unconfined = unconfined;
    c.uid = 65534;
    c.gid = 65534;
    c.allow_cidrs = "127.0.0.1/32";
    c.allow_hosts = "*";
    c.egress = "/tmp"; /* any existing path: only opened, never connected to here */
    return c;
}

static int has(char **argv, const char *a)
{
    size_t i;

    for (i = 0; argv[i]; i++) {
        if (!strcmp(argv[i], a))
            return (int)i;
    }
    return 0;
}

/* argv[i..i+n) == the words given */
static int has_seq(char **argv, const char *a, const char *b, const char *c)
{
    size_t i;

    for (i = 0; argv[i] && argv[i + 1]; i++) {
        if (!strcmp(argv[i], a) && !strcmp(argv[i + 1], b) &&
            (!c || (argv[i + 2] && !strcmp(argv[i + 2], c))))
            return 1;
    }
    return 0;
}

static void test_the_probe_finds_namespaces(void **state)
{
    struct tw_sandbox_config c = config(NULL, 0);
    char err[256];
    struct tw_sandbox *sb = tw_sandbox_new(&c, err, sizeof(err));

    (void)state;
    assert_non_null(sb);
    /* This suite runs where user namespaces work (the project's machines do);
     * the message says what the kernel refused otherwise. */
    if (strcmp(tw_sandbox_isolation(sb), "namespaces"))
        fail_msg("no namespaces here: %s", tw_sandbox_describe(sb));
    assert_true(tw_sandbox_usable(sb));
    assert_non_null(strstr(tw_sandbox_describe(sb), "seccomp"));
    tw_sandbox_free(sb);
}

static void test_a_shell_job(void **state)
{
    struct tw_sandbox_config c = config(NULL, 0);
    struct tw_sandbox *sb = tw_sandbox_new(&c, NULL, 0);
    static const char *const argv[] = {"/bin/sh", "-c", "echo hi", NULL};
    static const char *const env[] = {"GREETING=hello", NULL};
    struct tw_limits lim = {3, 1LL << 28, 1 << 20, 32, 16, 5000, 4096};
    struct tw_sandbox_job job = {"/tmp", NULL, 0, env, "exec", argv, &lim, 0};
    struct tw_sandbox_cmd cmd;
    char err[256];
    size_t i;
    int sep;

    (void)state;
    assert_int_equal(tw_sandbox_build(sb, &job, &cmd, err, sizeof(err)), 0);
    assert_non_null(strstr(cmd.argv[0], "bwrap"));
    for (i = 0; i < 6; i++) {
        static const char *const need[] = {"--unshare-all",    "--unshare-user",
                                           "--disable-userns", "--die-with-parent",
                                           "--new-session",    "--clearenv"};
        if (!has(cmd.argv, need[i]))
            fail_msg("missing %s", need[i]);
    }
    assert_false(has(cmd.argv, "--share-net")); /* no network unless declared */
    assert_true(has_seq(cmd.argv, "--cap-drop", "ALL", NULL));
    assert_true(has_seq(cmd.argv, "--ro-bind-try", "/usr", "/usr"));
    assert_true(has_seq(cmd.argv, "--ro-bind-try", "/srv", "/srv"));
    assert_true(has_seq(cmd.argv, "--bind-fd", "5", "/workspace"));
    assert_true(has_seq(cmd.argv, "--setenv", "GREETING", "hello"));
    assert_true(has_seq(cmd.argv, "--setenv", "HOME", "/workspace"));
    /* the environment is exactly the base four plus the declared one */
    for (i = 0, sep = 0; cmd.argv[i]; i++)
        sep += !strcmp(cmd.argv[i], "--setenv");
    assert_int_equal(sep, 5);
    /* the helper confines, then runs the program */
    sep = has(cmd.argv, "--");
    assert_string_equal(cmd.argv[sep + 1], "/.agentcore/tool-exec");
    assert_true(has_seq(cmd.argv, "--cpu", "3", NULL));
    assert_true(has_seq(cmd.argv, "--nproc", "16", NULL));
    assert_true(has_seq(cmd.argv, "--seccomp-fd", "3", NULL));
    assert_true(has_seq(cmd.argv, "exec", "/bin/sh", "-c"));
    assert_int_equal(cmd.n_fds, 4); /* filter, helper, workspace, bubblewrap's info pipe */
    assert_true(cmd.info_fd >= 0);
    assert_true(cmd.set_ids == (geteuid() == 0));
    /* bubblewrap itself starts with nothing of ours but PATH */
    assert_string_equal(cmd.env[0],
                        "PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin");
    assert_null(cmd.env[1]);
    tw_sandbox_cmd_cleanup(&cmd);

    job.network = 1;
    job.mode = "http_request";
    assert_int_equal(tw_sandbox_build(sb, &job, &cmd, err, sizeof(err)), 0);
    assert_true(has(cmd.argv, "--share-net"));
    assert_true(has_seq(cmd.argv, "exec", "/.agentcore/tool-http", "--timeout-ms"));
    assert_true(has_seq(cmd.argv, "--allow-cidr", "127.0.0.1/32", NULL));
    assert_int_equal(cmd.n_fds, 5); /* and the http_request program */
    tw_sandbox_cmd_cleanup(&cmd);

    /* a command tool with a network keeps its own namespace and gets the proxy */
    job.mode = "exec";
    assert_int_equal(tw_sandbox_build(sb, &job, &cmd, err, sizeof(err)), 0);
    assert_false(has(cmd.argv, "--share-net"));
    assert_true(has_seq(cmd.argv, "--setenv", "HTTPS_PROXY", "http://127.0.0.1:3128"));
    assert_true(has_seq(cmd.argv, "--egress", "/.agentcore/egress.sock", NULL));
    assert_true(has_seq(cmd.argv, "--bind-fd", "6", "/.agentcore/egress.sock"));
    tw_sandbox_cmd_cleanup(&cmd);

    job.workspace = "/nonexistent/workspace";
    assert_int_equal(tw_sandbox_build(sb, &job, &cmd, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "/nonexistent/workspace"));
    tw_sandbox_cmd_cleanup(&cmd);
    tw_sandbox_free(sb);
}

/* A warm sandbox: the same bubblewrap, a helper that waits for its job on
 * stdin, and the job carries what the command line carried before. */
static void test_a_job_that_waits(void **state)
{
    struct tw_sandbox_config c = config(NULL, 0);
    struct tw_sandbox *sb = tw_sandbox_new(&c, NULL, 0);
    static const char *const argv[] = {"/bin/sh", "-c", "", NULL};
    static const char *const env[] = {"GREETING=hello", NULL};
    struct tw_limits lim = {3, 1LL << 28, 1 << 20, 32, 16, 5000, 4096};
    struct tw_sandbox_job job = {"/tmp", NULL, 0, env, "exec", argv, &lim, 0};
    struct tw_sandbox_cmd cmd;
    char err[256], *msg, **args, **envs;
    size_t len = 0, i;
    int at;

    (void)state;
    assert_true(tw_sandbox_warmable(sb, &job));
    job.deferred = 1;
    assert_int_equal(tw_sandbox_build(sb, &job, &cmd, err, sizeof(err)), 0);
    at = has(cmd.argv, "--");
    assert_string_equal(cmd.argv[at + 1], "/.agentcore/tool-exec");
    assert_string_equal(cmd.argv[at + 2], "--job-stdin");
    /* the helper's word that the sandbox is built: its last descriptor */
    assert_string_equal(cmd.argv[at + 3], "--ready-fd");
    assert_int_equal(atoi(cmd.argv[at + 4]), 2 + cmd.n_fds);
    assert_null(cmd.argv[at + 5]);
    assert_true(cmd.ready_fd >= 0);
    assert_true(has(cmd.argv, "--unshare-all"));
    assert_false(has(cmd.argv, "--share-net"));
    assert_true(has_seq(cmd.argv, "--bind-fd", "5", "/workspace"));
    assert_true(has_seq(cmd.argv, "--setenv", "HOME", "/workspace"));
    assert_false(has_seq(cmd.argv, "--setenv", "GREETING", "hello")); /* that is the job's */
    assert_false(has(cmd.argv, "--cpu"));
    tw_sandbox_cmd_cleanup(&cmd);

    msg = tw_sandbox_job_message(sb, &job, &len);
    assert_non_null(msg);
    assert_int_equal(tw_job_length((unsigned char *)msg), len - 4);
    assert_int_equal(tw_job_decode(msg + 4, len - 4, &args, &envs), 0);
    assert_true(has_seq(args, "--cpu", "3", NULL));
    assert_true(has_seq(args, "--nproc", "16", NULL));
    assert_true(has_seq(args, "--seccomp-fd", "3", NULL));
    for (i = 0; args[i]; i++)
        ;
    assert_true(i >= 4);
    assert_string_equal(args[i - 4], "exec");
    assert_string_equal(args[i - 1], ""); /* the empty command survives */
    assert_string_equal(envs[0], "GREETING=hello");
    assert_null(envs[1]);
    free(args);
    free(envs);
    free(msg);

    /* what needs a network is never set up ahead: its namespace differs */
    job.network = 1;
    assert_false(tw_sandbox_warmable(sb, &job));
    assert_int_equal(tw_sandbox_build(sb, &job, &cmd, err, sizeof(err)), -1);
    tw_sandbox_cmd_cleanup(&cmd);
    job.mode = "http_request";
    assert_false(tw_sandbox_warmable(sb, &job));
    tw_sandbox_free(sb);

    /* nor without namespaces */
    c.bwrap = "/nonexistent/bwrap";
    c.allow_unconfined = 1;
    sb = tw_sandbox_new(&c, NULL, 0);
    job.network = 0;
    job.mode = "exec";
    assert_false(tw_sandbox_warmable(sb, &job));
    tw_sandbox_free(sb);
}

/* Counts the entries of /proc a tool sees (-1 when it could not run). */
static int proc_entries(const struct tw_sandbox *sb)
{
    static const char *const argv[] = {"/bin/sh", "-c", "ls -A /proc | wc -l", NULL};
    struct tw_limits lim = {3, 1LL << 28, 1 << 20, 32, 16, 5000, 4096};
    struct tw_sandbox_job job = {NULL, NULL, 0, NULL, "exec", argv, &lim, 0};
    char *out = NULL, err[256];
    int n = -1;

    if (tw_sandbox_run(sb, &job, 10000, &out, 4096, err, sizeof(err)) == 0 && out)
        n = atoi(out);
    free(out);
    return n;
}

/* Compose cannot unmask Docker's /proc, and the kernel then refuses a fresh
 * procfs: the sandbox keeps every namespace and gives tools no /proc,
 * saying so (TOOL_SANDBOX_PROC=none forces it here, where one is allowed). */
static void test_no_proc(void **state)
{
    struct tw_sandbox_config c = config(NULL, 0);
    struct tw_sandbox *sb;
    static const char *const argv[] = {"/bin/true", NULL};
    struct tw_limits lim = {3, 1LL << 28, 1 << 20, 32, 16, 5000, 4096};
    struct tw_sandbox_job job = {"/tmp", NULL, 0, NULL, "exec", argv, &lim, 0};
    struct tw_sandbox_cmd cmd;
    char err[256];

    (void)state;
    sb = tw_sandbox_new(&c, NULL, 0);
    assert_non_null(sb);
    assert_int_equal(tw_sandbox_build(sb, &job, &cmd, err, sizeof(err)), 0);
    assert_true(has_seq(cmd.argv, "--proc", "/proc", NULL));
    tw_sandbox_cmd_cleanup(&cmd);
    assert_true(proc_entries(sb) > 0); /* its own PID namespace's */
    assert_null(strstr(tw_sandbox_describe(sb), "no /proc"));
    tw_sandbox_free(sb);

    c.proc = TW_PROC_NONE;
    sb = tw_sandbox_new(&c, NULL, 0);
    assert_non_null(sb);
    assert_string_equal(tw_sandbox_isolation(sb), "namespaces");
    assert_non_null(strstr(tw_sandbox_describe(sb), "no /proc for tools"));
    assert_int_equal(tw_sandbox_build(sb, &job, &cmd, err, sizeof(err)), 0);
    assert_false(has(cmd.argv, "--proc"));
    assert_true(has_seq(cmd.argv, "--dir", "/proc", NULL));
    tw_sandbox_cmd_cleanup(&cmd);
    assert_int_equal(proc_entries(sb), 0);
    tw_sandbox_free(sb);
}

static void test_without_bubblewrap(void **state)
{
    struct tw_sandbox_config c = config("/nonexistent/bwrap", 0);
    struct tw_sandbox *sb = tw_sandbox_new(&c, NULL, 0);
    static const char *const argv[] = {"/bin/true", NULL};
    struct tw_limits lim = {3, 1LL << 28, 1 << 20, 32, 16, 5000, 4096};
    struct tw_sandbox_job job = {"/tmp", NULL, 0, NULL, "exec", argv, &lim, 0};
    struct tw_sandbox_cmd cmd;
    char err[512];

    (void)state;
    /* refused, and said so: never a claim of isolation it lacks */
    assert_string_equal(tw_sandbox_isolation(sb), "unavailable");
    assert_false(tw_sandbox_usable(sb));
    assert_non_null(strstr(tw_sandbox_describe(sb), "not installed"));
    assert_int_equal(tw_sandbox_build(sb, &job, &cmd, err, sizeof(err)), -1);
    tw_sandbox_cmd_cleanup(&cmd);
    tw_sandbox_free(sb);

    /* TOOL_SANDBOX=none: runs, loudly, with the helper's own confinement only */
    c.allow_unconfined = 1;
    sb = tw_sandbox_new(&c, NULL, 0);
    assert_string_equal(tw_sandbox_isolation(sb), "none");
    assert_true(tw_sandbox_usable(sb));
    assert_non_null(strstr(tw_sandbox_describe(sb), "NONE"));
    assert_int_equal(tw_sandbox_build(sb, &job, &cmd, err, sizeof(err)), 0);
    assert_string_equal(cmd.argv[0], AC_BIN_DIR "/agentcore-tool-exec");
    assert_string_equal(cmd.cwd, "/tmp");
    tw_sandbox_cmd_cleanup(&cmd);
    tw_sandbox_free(sb);

    c.helper = "/nonexistent/helper";
    assert_null(tw_sandbox_new(&c, err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/helper"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_probe_finds_namespaces), cmocka_unit_test(test_a_shell_job),
        cmocka_unit_test(test_a_job_that_waits),           cmocka_unit_test(test_no_proc),
        cmocka_unit_test(test_without_bubblewrap),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
