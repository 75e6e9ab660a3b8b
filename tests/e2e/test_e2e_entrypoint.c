/* End to end: the single container's start script (compose/entrypoint.sh,
 * the image's CMD and what scripts/run.sh runs) with the real binaries, the
 * way an arbitrary-uid, read-only container runs it: as another uid (65534,
 * when the suite runs as root), with only a fresh sticky directory writable.
 * Shown: s6 brings up the gateway, agent-worker, tool-worker and the bundled
 * emulator (BEDROCK_EMULATOR=1); a tool round trip crosses all three over the
 * private unix sockets (0600, owned by that uid); SIGTERM brings it all down
 * with exit 0 within the grace. */
#include "th_stack.h"

#include <dirent.h>
#include <jansson.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static struct th_proc s6;
static char base[64], url[96];
static int port;

static int setup(void **state)
{
    char p[32], ep[32], rd[96], bin[600], svc[600], script[600];
    const char *args[8];
    int n = 0;

    (void)state;
    snprintf(base, sizeof(base), "/tmp/agentcore-entry-%d", (int)getpid());
    if (mkdir(base, 0700) || chmod(base, 01777)) /* like /run or /tmp: any uid writes */
        return -1;
    port = th_free_port();
    snprintf(p, sizeof(p), "PORT=%d", port);
    snprintf(ep, sizeof(ep), "EMULATOR_PORT=%d", th_free_port());
    snprintf(rd, sizeof(rd), "AGENTCORE_RUN_DIR=%s", base);
    snprintf(bin, sizeof(bin), "AGENTCORE_BIN=%s", AC_BIN_DIR);
    snprintf(svc, sizeof(svc), "AGENTCORE_SVC=%s/compose/s6", AC_SOURCE_DIR);
    snprintf(script, sizeof(script), "%s/compose/entrypoint.sh", AC_SOURCE_DIR);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/invocations", port);
    if (geteuid() == 0) {
        args[n++] = "--reuid=65534";
        args[n++] = "--regid=65534";
        args[n++] = "--clear-groups";
    }
    args[n++] = "/bin/sh";
    args[n++] = script;
    args[n] = NULL;
    if (th_proc_spawn_args(&s6, "entrypoint", geteuid() == 0 ? "/usr/bin/setpriv" : "/bin/sh",
                           geteuid() == 0 ? args : args + n - 1,
                           (const char *[]){p, ep, rd, bin, svc, "GATEWAY_HOST=127.0.0.1",
                                            "BEDROCK_EMULATOR=1", "SHUTDOWN_GRACE_MS=3000",
                                            "AWS_EC2_METADATA_DISABLED=true", "HOME=/nonexistent",
                                            /* the suite's token file is root's: none here */
                                            "INTERNAL_TOKEN_FILE=", "LOG_LEVEL=INFO", NULL}))
        return -1;
    return th_wait_log(s6.log_path, "gateway ready", 30000) < 0 ? -1 : 0;
}

static int teardown(void **state)
{
    char cmd[128];

    (void)state;
    th_proc_stop(&s6, SIGTERM); /* normally stopped by the last test already */
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_tool_round_trip_through_all_three(void **state)
{
    static const char body[] =
        "{\"prompt\":\"[[tool:calculator {\\\"expression\\\":\\\"6*7\\\"}]]\"}";
    struct th_resp r;

    (void)state;
    /* The agent-worker may still be connecting to the tool-worker: the
     * gateway waits for it (AGENT_READY_WAIT_MS), no retry needed here. */
    assert_int_equal(th_http("POST", url, NULL, body, sizeof(body) - 1, &r), 0);
    if (r.status != 200 || !strstr(r.body, "42"))
        fail_msg("%ld %s", r.status, r.body);
    th_resp_free(&r);
}

static void test_sockets_are_private(void **state)
{
    DIR *d = opendir(base);
    struct dirent *e;
    char path[512];
    struct stat sb;
    int found = 0;

    (void)state;
    assert_non_null(d);
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "agentcore.", 10))
            continue;
        snprintf(path, sizeof(path), "%s/%s", base, e->d_name);
        assert_int_equal(stat(path, &sb), 0);
        assert_int_equal(sb.st_mode & 0777, 0700);
        snprintf(path, sizeof(path), "%s/%s/sock/agent.sock", base, e->d_name);
        assert_int_equal(stat(path, &sb), 0);
        assert_int_equal(sb.st_mode & 0777, 0600);
        if (geteuid() == 0)
            assert_int_equal(sb.st_uid, 65534);
        found++;
    }
    closedir(d);
    assert_int_equal(found, 1);
}

static void test_sigterm_stops_everything(void **state)
{
    struct timespec t0, t1;
    double ms;

    (void)state;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(th_proc_stop(&s6, SIGTERM), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    if (ms > 15000)
        fail_msg("s6-svscan took %.0f ms to stop", ms);
    assert_true(th_wait_log(s6.log_path, "\"logger\":\"agentcore.gateway\"", 0) >= 0);
    assert_true(th_wait_log(s6.log_path,
                            "\"message\":\"stopped\",\"logger\":\"agentcore.agent_worker\"",
                            0) >= 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tool_round_trip_through_all_three),
        cmocka_unit_test(test_sockets_are_private),
        cmocka_unit_test(test_sigterm_stops_everything),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
