/* tw_runner with real sandboxed processes on a real libuv loop: every limit
 * the sandbox promises, shown by a tool that tries to break it. */
#define _GNU_SOURCE
#include "cm_err.h"
#include "tw_egress.h"
#include "tw_runner.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

static uv_loop_t loop;
static struct tw_catalog *catalog;
static struct tw_sandbox *sandbox;
static struct tw_workspaces *workspaces;
static struct tw_egress *egress;
static char tool_dir[64], egress_path[160];
static struct tw_runner *runner;
static char ws_root[64], manifest[128], token[32];
static int background_seen;
static int warm_max; /* the group runs twice: every call cold, then with warm sandboxes */
static int started_warm, started_cold;

struct outcome {
    int done;
    int is_error, cancelled;
    char *text;
};

static void on_done(void *ud, const struct tw_result *r)
{
    struct outcome *o = ud;

    o->done = 1;
    o->is_error = r->is_error;
    o->cancelled = r->cancelled;
    o->text = strdup(r->text);
}

static void on_start(const char *how, void *ud)
{
    (void)ud;
    if (!strcmp(how, "warm"))
        started_warm++;
    else if (!strcmp(how, "cold"))
        started_cold++;
    else
        fail_msg("started '%s'", how);
}

static void on_background(int count, void *ud)
{
    (void)ud;
    background_seen = count;
}

/* Runs a call to its end: the loop sleeps in epoll until the process does
 * something (bounded by the tool's own wall-clock limit). */
static void call(const char *tool, const char *input, const char *session, struct outcome *o)
{
    memset(o, 0, sizeof(*o));
    assert_int_equal(tw_runner_start(runner, tool, input, session, on_done, o, NULL), 0);
    while (!o->done)
        uv_run(&loop, UV_RUN_ONCE);
}

static void expect_in(const char *session, const char *tool, const char *input, int is_error,
                      const char *says)
{
    struct outcome o;

    call(tool, input, session, &o);
    if (o.is_error != is_error || !strstr(o.text, says))
        fail_msg("%s(%s) -> error=%d '%.600s'; want error=%d '%s'", tool, input, o.is_error, o.text,
                 is_error, says);
    free(o.text);
}

static void expect(const char *tool, const char *input, int is_error, const char *says)
{
    expect_in("session-one", tool, input, is_error, says);
}

static void give_up(uv_timer_t *t)
{
    *(int *)t->data = 1;
}

/* Processes whose command line holds |needle|, anywhere on the machine. */
static int processes_with(const char *needle)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    int n = 0;

    assert_non_null(d);
    while ((de = readdir(d))) {
        char path[300], buf[4096];
        FILE *f;
        size_t len, i;

        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        snprintf(path, sizeof(path), "/proc/%s/cmdline", de->d_name);
        if (!(f = fopen(path, "r")))
            continue;
        len = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        for (i = 0; i < len; i++)
            buf[i] = buf[i] ? buf[i] : ' ';
        buf[len] = '\0';
        n += strstr(buf, needle) != NULL;
    }
    closedir(d);
    return n;
}

static void write_manifest(void)
{
    FILE *f;
    int fd;

    strcpy(tool_dir, "/tmp/tw-runner-tools-XXXXXX");
    assert_non_null(mkdtemp(tool_dir));
    chmod(tool_dir, 0755);
    snprintf(manifest, sizeof(manifest), "%s/manifest.json", tool_dir);
    /* A tool with a network: it finds the egress proxy in HTTP_PROXY. With
     * "tunnel" it uses CONNECT (what HTTPS does), else a proxied GET. */
    snprintf(egress_path, sizeof(egress_path), "%s/fetch.py", tool_dir);
    f = fopen(egress_path, "w");
    assert_non_null(f);
    fputs("import http.client, json, os, socket, sys, urllib.request\n"
          "a = json.load(sys.stdin)\n"
          "if a.get('direct'):\n"
          "    socket.create_connection((a['direct'], 80), 3)\n"
          "elif a.get('tunnel'):\n"
          "    c = http.client.HTTPConnection('127.0.0.1', 3128, timeout=5)\n"
          "    host, port = a['tunnel'].split(':')\n"
          "    c.set_tunnel(host, int(port))\n"
          "    c.request('GET', '/hello')\n"
          "    print('tunnel', c.getresponse().read().decode())\n"
          "else:\n"
          "    try:\n"
          "        print(urllib.request.urlopen(a['url'], timeout=5).read().decode())\n"
          "    except urllib.error.HTTPError as e:\n"
          "        print(e.code, e.read().decode())\n"
          "        sys.exit(1)\n",
          f);
    fclose(f);
    chmod(egress_path, 0644);
    snprintf(egress_path, sizeof(egress_path), "%s/egress.sock", tool_dir);
    fd = open(manifest, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    fprintf(f,
            "{\"tools\":["
            "{\"name\":\"spin\",\"description\":\"CPU loop\",\"input_schema\":{},"
            "\"command\":[\"/bin/sh\",\"-c\",\"while :; do :; done\"],\"limits\":{\"cpu_s\":1}},"
            "{\"name\":\"hog\",\"description\":\"memory bomb\",\"input_schema\":{},"
            "\"command\":[\"python3\",\"-c\",\"b = bytearray(1 << 30)\\nprint(len(b))\"],"
            "\"limits\":{\"memory_mb\":256}},"
            "{\"name\":\"bomb\",\"description\":\"fork bomb\",\"input_schema\":{},"
            "\"command\":[\"/bin/sh\",\"-c\",\"(b() { b | b & }; b); exec sleep 100 # %s\"],"
            "\"timeout_ms\":1500,\"limits\":{\"processes\":16}},"
            "{\"name\":\"flood\",\"description\":\"output flood\",\"input_schema\":{},"
            "\"command\":[\"yes\",\"%s\"],\"limits\":{\"output_kb\":64}},"
            "{\"name\":\"nap\",\"description\":\"sleeps\",\"input_schema\":{},"
            "\"command\":[\"/bin/sh\",\"-c\",\"sleep 100 & sleep 100 # %s\"],"
            "\"timeout_ms\":300},"
            "{\"name\":\"bigfile\",\"description\":\"writes too much\",\"input_schema\":{},"
            "\"command\":[\"/bin/sh\",\"-c\",\"head -c 3000000 /dev/zero > f && echo done\"],"
            "\"limits\":{\"file_size_mb\":1}},"
            "{\"name\":\"echo_input\",\"description\":\"returns its input\",\"input_schema\":"
            "{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"integer\",\"maximum\":9}}},"
            "\"command\":[\"cat\"],\"env\":{\"GREETING\":\"hi\"}},"
            "{\"name\":\"greet\",\"description\":\"its environment\",\"input_schema\":{},"
            "\"command\":[\"/bin/sh\",\"-c\",\"echo \\\"$GREETING from $(pwd)\\\"\"],"
            "\"env\":{\"GREETING\":\"hi\"}},"
            "{\"name\":\"later\",\"description\":\"background\",\"input_schema\":{},"
            "\"command\":[\"/bin/sh\",\"-c\",\"cat > /dev/null; echo finished\"],"
            "\"background\":true},"
            "{\"name\":\"fetch\",\"description\":\"network\",\"input_schema\":{},"
            "\"command\":[\"python3\",\"{tool_dir}/fetch.py\"],\"network\":true}"
            "]}",
            token, token, token);
    fclose(f);
}

/* A runner over the suite's catalogue, sandbox and workspaces: at most
 * |warm| sandboxes set up ahead, |idle_ms| each, the first one |prime_ms|
 * after start (0: none). */
static struct tw_runner *new_runner(int warm, int idle_ms, int prime_ms)
{
    struct tw_runner_config rc;
    struct tw_runner *r;

    memset(&rc, 0, sizeof(rc));
    rc.loop = &loop;
    rc.catalog = catalog;
    rc.sandbox = sandbox;
    rc.workspaces = workspaces;
    rc.max_calls = 4;
    rc.on_background = on_background;
    rc.on_start = on_start;
    rc.warm_max = warm;
    rc.warm_idle_ms = idle_ms;
    rc.warm_prime_ms = prime_ms;
    r = tw_runner_new(&rc);
    assert_non_null(r);
    return r;
}

static int setup(void **state)
{
    struct tw_catalog_config cc;
    struct tw_sandbox_config sc;
    char err[512];

    (void)state;
    snprintf(token, sizeof(token), "tw-runner-%d", (int)getpid());
    write_manifest();
    memset(&cc, 0, sizeof(cc));
    cc.manifest = manifest;
    cc.test_tools = 1;
    cc.defaults = (struct tw_limits){10, 1LL << 30, 64LL << 20, 256, 64, 20000, 262144};
    cc.max = (struct tw_limits){60, 8LL << 30, 1LL << 30, 4096, 1024, 600000, 1 << 20};
    catalog = tw_catalog_new(&cc, err, sizeof(err));
    if (!catalog)
        fail_msg("%s", err);
    memset(&sc, 0, sizeof(sc));
    sc.helper = AC_BIN_DIR "/agentcore-tool-exec";
    sc.http = AC_BIN_DIR "/agentcore-tool-http";
    sc.uid = 65534;
    sc.gid = 65534;
    sc.allow_cidrs = "127.0.0.1/32";
    sc.egress = egress_path;
    sandbox = tw_sandbox_new(&sc, err, sizeof(err));
    assert_non_null(sandbox);
    if (strcmp(tw_sandbox_isolation(sandbox), "namespaces"))
        fail_msg("no sandbox here: %s", tw_sandbox_describe(sandbox));
    uv_loop_init(&loop);
    strcpy(ws_root, "/tmp/tw-runner-ws-XXXXXX");
    assert_non_null(mkdtemp(ws_root));
    chmod(ws_root, 0711);
    workspaces = tw_workspaces_new(&loop, ws_root, tw_sandbox_uid(sandbox), tw_sandbox_gid(sandbox),
                                   geteuid() == 0, 900, 64, err, sizeof(err));
    assert_non_null(workspaces);
    {
        struct tw_netpolicy p;

        memset(&p, 0, sizeof(p));
        assert_int_equal(tw_netpolicy_allow_cidr(&p, "127.0.0.1/32"), 0);
        egress = tw_egress_new(&loop, egress_path, &p, 16, err, sizeof(err));
        if (!egress)
            fail_msg("%s", err);
        tw_netpolicy_cleanup(&p);
    }
    runner = new_runner(warm_max, 60000, 0);
    return 0;
}

static int setup_cold(void **state)
{
    warm_max = 0;
    return setup(state);
}

static int setup_warm(void **state)
{
    warm_max = 4;
    return setup(state);
}

static int teardown(void **state)
{
    char cmd[256];

    (void)state;
    tw_runner_free(runner);
    tw_workspaces_free(workspaces);
    tw_egress_free(egress);
    while (uv_run(&loop, UV_RUN_DEFAULT))
        ;
    assert_int_equal(uv_loop_close(&loop), 0);
    tw_sandbox_free(sandbox);
    tw_catalog_free(catalog);
    snprintf(cmd, sizeof(cmd), "rm -rf %s %s", ws_root, tool_dir);
    return system(cmd);
}

static void test_shell_and_workspace(void **state)
{
    (void)state;
    expect("shell", "{\"command\":\"echo hello > note.txt; pwd\"}", 0, "/workspace");
    expect("file_read", "{\"path\":\"note.txt\"}", 0, "hello");
    expect("file_list", "{}", 0, "file\tnote.txt\t6");
    expect("shell", "{\"command\":\"exit 3\"}", 1, "[exit status 3]");
    expect("shell", "{\"command\":\"echo oops >&2; false\"}", 1, "[stderr]\noops");
    /* another session sees nothing of it */
    {
        struct outcome o;

        call("file_read", "{\"path\":\"note.txt\"}", "session-two", &o);
        assert_true(o.is_error);
        assert_non_null(strstr(o.text, "No such file"));
        free(o.text);
    }
    /* the system is read-only, the sandbox's own /tmp is not the host's */
    expect("shell", "{\"command\":\"touch /usr/x\"}", 1, "Read-only file system");
    expect("shell", "{\"command\":\"ls /tmp | wc -l\"}", 0, "0");
    expect("shell", "{\"command\":\"id -u\"}", 0, geteuid() == 0 ? "65534" : "");
}

static void test_schema_errors_name_the_field(void **state)
{
    (void)state;
    expect("shell", "{\"cmd\":\"ls\"}", 1, "input: 'command' is required");
    expect("shell", "{\"command\":\"ls\",\"cmd\":1}", 1, "input: 'cmd' is not allowed");
    expect("echo_input", "{\"n\":10}", 1, "input.n: must be at most 9 (got 10)");
    expect("file_write", "{\"path\":\"a\",\"content\":5}", 1,
           "input.content: must be a string (got integer)");
}

static void test_limits(void **state)
{
    (void)state;
    expect("spin", "{}", 1, "CPU time limit of 1 s (SIGXCPU)");
    expect("hog", "{}", 1, "MemoryError");
    expect("flood", "{}", 1, "output passed 65536 bytes; it was stopped");
    expect("bigfile", "{}", 1, "File too large");
    expect("nap", "{}", 1, "timed out after 300 ms");
    assert_int_equal(processes_with(token), 0); /* the whole tree went */
    expect("bomb", "{}", 1, "timed out after 1500 ms");
    expect("bomb", "{}", 1, "Cannot fork"); /* it ran into the process limit */
    assert_int_equal(processes_with(token), 0);
}

static void test_environment_and_secrets(void **state)
{
    (void)state;
    setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-never-shown", 1);
    expect("echo_input", "{\"n\":1}", 0, "{\"n\":1}");
    expect("greet", "{}", 0, "hi from /workspace");
    expect("greet", "{}", 0, "hi from /workspace");
    expect("shell", "{\"command\":\"env\"}", 0, "LANG=C.UTF-8");
    {
        struct outcome o;

        call("shell",
             "{\"command\":\"env; cat /proc/*/environ 2>/dev/null | tr '\\\\0' '\\\\n'; ls "
             "/proc\"}",
             "s", &o);
        assert_null(strstr(o.text, "wJalrXUtnFEMI"));
        assert_null(strstr(o.text, "AWS_"));
        free(o.text);
    }
    unsetenv("AWS_SECRET_ACCESS_KEY");
    /* the worker's processes are invisible: only the sandbox's own PIDs */
    expect("shell",
           "{\"command\":\"ls /proc | grep -c '^[0-9]' | awk '$1 < 10 {print \\\"few\\\"}'\"}", 0,
           "few");
}

static void test_no_network_for_shell(void **state)
{
    (void)state;
    /* the only interface is the sandbox's own loopback */
    expect("shell", "{\"command\":\"tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '\"}", 0,
           "lo\n[exit status 0]");
    /* UDP: no route out of the empty network namespace */
    expect("shell",
           "{\"command\":\"python3 -c \\\"import socket; socket.socket(socket.AF_INET, "
           "socket.SOCK_DGRAM).connect(('1.1.1.1', 53))\\\"\"}",
           1, "Network is unreachable");
    /* TCP: refused before that, by Landlock (connect and bind denied) */
    expect("shell",
           "{\"command\":\"python3 -c \\\"import socket; socket.create_connection(('1.1.1.1', "
           "53), 2)\\\"\"}",
           1, "PermissionError");
    expect("shell",
           "{\"command\":\"python3 -c \\\"import socket; socket.socket(socket.AF_PACKET, "
           "socket.SOCK_RAW)\\\"\"}",
           1, "Operation not permitted");
}

/* A tiny HTTP server on 127.0.0.1 for http_request: /hello answers, the
 * others redirect to where a tool must never go. */
static int http_port, http_fd;

static void *serve(void *arg)
{
    int c;

    (void)arg;
    while ((c = accept(http_fd, NULL, NULL)) >= 0) {
        char req[2048], resp[512];
        ssize_t n = recv(c, req, sizeof(req) - 1, 0);

        req[n > 0 ? n : 0] = '\0';
        if (strstr(req, "GET /hello"))
            snprintf(resp, sizeof(resp),
                     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
                     "Connection: close\r\n\r\nhello");
        else if (strstr(req, "GET /to-metadata"))
            snprintf(resp, sizeof(resp),
                     "HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/"
                     "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        else if (strstr(req, "GET /to-loopback"))
            snprintf(resp, sizeof(resp),
                     "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.2:%d/hello"
                     "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                     http_port);
        else
            snprintf(resp, sizeof(resp),
                     "HTTP/1.1 302 Found\r\nLocation: /hello\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n");
        if (send(c, resp, strlen(resp), 0) < 0)
            break;
        close(c);
    }
    return NULL;
}

/* The test server on an ephemeral port of 127.0.0.1 (http_port). */
static pthread_t server_start(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    pthread_t t;

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    http_fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(bind(http_fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(http_fd, 16), 0);
    getsockname(http_fd, (struct sockaddr *)&a, &len);
    http_port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&t, NULL, serve, NULL), 0);
    return t;
}

static void server_stop(pthread_t t)
{
    shutdown(http_fd, SHUT_RDWR);
    close(http_fd);
    pthread_join(t, NULL);
}

static void test_http_request(void **state)
{
    pthread_t t;
    char input[256];

    (void)state;
    t = server_start();

    /* 127.0.0.1/32 is allowed in this test's configuration, nothing else */
    snprintf(input, sizeof(input), "{\"url\":\"http://127.0.0.1:%d/hello\"}", http_port);
    expect("http_request", input, 0, "HTTP 200\nContent-Type: text/plain\n\nhello");
    snprintf(input, sizeof(input), "{\"url\":\"http://127.0.0.1:%d/elsewhere\"}", http_port);
    expect("http_request", input, 0, "hello"); /* a redirect it may follow */
    snprintf(input, sizeof(input), "{\"url\":\"http://127.0.0.1:%d/to-metadata\"}", http_port);
    expect("http_request", input, 1, "refused: 169.254.169.254 is the cloud metadata service");
    snprintf(input, sizeof(input), "{\"url\":\"http://127.0.0.1:%d/to-loopback\"}", http_port);
    expect("http_request", input, 1, "refused: 127.0.0.2 is a loopback address");
    expect("http_request", "{\"url\":\"http://169.254.169.254/latest/meta-data/\"}", 1,
           "the cloud metadata service");
    expect("http_request", "{\"url\":\"http://[::1]:9/\"}", 1, "::1 is a loopback address");
    expect("http_request", "{\"url\":\"file:///etc/passwd\"}", 1, "only http:// and https://");
    expect("http_request", "{\"url\":\"http://x/\",\"method\":\"TRACE\"}", 1,
           "input.method: must be one of");
    server_stop(t);
}

/* A tool that declared a network reaches the outside only through the
 * egress proxy, which checks every destination like http_request does. */
static void test_network_through_the_egress_proxy(void **state)
{
    pthread_t t;
    char input[256];

    (void)state;
    t = server_start();

    /* 127.0.0.1 is allowed in this test's configuration */
    snprintf(input, sizeof(input), "{\"url\":\"http://127.0.0.1:%d/hello\"}", http_port);
    expect("fetch", input, 0, "hello");
    snprintf(input, sizeof(input), "{\"tunnel\":\"127.0.0.1:%d\"}", http_port);
    expect("fetch", input, 0, "tunnel hello");
    /* refused destinations: the proxy answers 403 and says why */
    expect("fetch", "{\"url\":\"http://169.254.169.254/latest/meta-data/\"}", 1,
           "403 refused by the agentcore egress proxy: 169.254.169.254 is the cloud metadata "
           "service");
    snprintf(input, sizeof(input), "{\"url\":\"http://127.0.0.2:%d/hello\"}", http_port);
    expect("fetch", input, 1, "127.0.0.2 is a loopback address");
    snprintf(input, sizeof(input), "{\"tunnel\":\"127.0.0.2:%d\"}", http_port);
    expect("fetch", input, 1, "Tunnel connection failed: 403");
    /* and nothing goes around it */
    expect("fetch", "{\"direct\":\"1.1.1.1\"}", 1, "PermissionError");
    server_stop(t);
}

static void test_cancel_kills_the_tree(void **state)
{
    struct outcome o;
    struct tw_call *c;

    (void)state;
    memset(&o, 0, sizeof(o));
    assert_int_equal(tw_runner_start(runner, "nap", "{}", "s", on_done, &o, &c), 0);
    assert_non_null(c);
    /* let it start (one loop turn at most before bubblewrap tells its PID) */
    uv_run(&loop, UV_RUN_NOWAIT);
    tw_call_cancel(c);
    while (!o.done)
        uv_run(&loop, UV_RUN_ONCE);
    assert_true(o.cancelled);
    assert_int_equal(processes_with(token), 0);
    free(o.text);
}

static void test_capacity_and_background(void **state)
{
    struct outcome o[5];
    int i;

    (void)state;
    /* timers are not processes: the cap is on processes */
    for (i = 0; i < 4; i++) {
        memset(&o[i], 0, sizeof(o[i]));
        assert_int_equal(tw_runner_start(runner, "slow", "{\"ms\":1}", "s", on_done, &o[i], NULL),
                         0);
    }
    assert_int_equal(tw_runner_active(runner), 0);
    for (i = 0; i < 4; i++) {
        while (!o[i].done)
            uv_run(&loop, UV_RUN_ONCE);
        free(o[i].text);
    }
    for (i = 0; i < 4; i++) {
        memset(&o[i], 0, sizeof(o[i]));
        assert_int_equal(tw_runner_start(runner, "nap", "{}", "s", on_done, &o[i], NULL), 0);
    }
    assert_int_equal(tw_runner_active(runner), 4);
    assert_int_equal(
        tw_runner_start(runner, "shell", "{\"command\":\"true\"}", "s", on_done, &o[4], NULL),
        CM_EBUSY);
    while (tw_runner_active(runner))
        uv_run(&loop, UV_RUN_ONCE);
    for (i = 0; i < 4; i++)
        free(o[i].text);

    /* a background tool answers at once and counts until it ends */
    background_seen = 0;
    call("later", "{}", "s", &o[0]);
    assert_false(o[0].is_error);
    assert_non_null(strstr(o[0].text, "started in the background as task"));
    free(o[0].text);
    assert_int_equal(background_seen, 1);
    assert_int_equal(tw_runner_background(runner), 1);
    while (tw_runner_background(runner))
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(background_seen, 0);
}

/* Runs the loop until |r| has |want| sandboxes waiting (-1: any number) and
 * every one of them is built: it sleeps until the pool's timer or a helper
 * acts; the guard only bounds a broken one. */
static void wait_warm(struct tw_runner *r, int want)
{
    static uv_timer_t guard;
    int gave_up = 0;

    uv_timer_init(&loop, &guard);
    guard.data = &gave_up;
    uv_timer_start(&guard, give_up, 10000, 0);
    while (((want >= 0 && tw_runner_warm(r) != want) ||
            tw_runner_warm_ready(r) != tw_runner_warm(r)) &&
           !gave_up)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_false(gave_up);
}

static void call_on(struct tw_runner *r, const char *input, const char *session, struct outcome *o)
{
    memset(o, 0, sizeof(*o));
    assert_int_equal(tw_runner_start(r, "shell", input, session, on_done, o, NULL), 0);
    while (!o->done)
        uv_run(&loop, UV_RUN_ONCE);
}

/* A sandbox set up ahead serves the next call of its session, once: the
 * call after it finds nothing of the one before (not its /tmp, not its
 * processes), and a call of another session never gets it. */
static void test_warm_sandboxes(void **state)
{
    struct outcome o;
    int warm0, cold0, i;

    (void)state;
    if (!warm_max) {
        call("shell", "{\"command\":\"true\"}", "warm-a", &o);
        free(o.text);
        assert_int_equal(tw_runner_warm(runner), 0);
        return;
    }
    cold0 = started_cold;
    warm0 = started_warm;
    expect_in("warm-a", "shell",
              "{\"command\":\"echo one > /tmp/mark; echo kept > f; sleep 30 & echo started\"}", 0,
              "started");
    assert_int_equal(started_cold, cold0 + 1); /* the session's first call */
    expect_in("warm-a", "shell",
              "{\"command\":\"ls -A /tmp | wc -l; cat f; ps -e | grep -c sleep || true\"}", 0,
              "0\nkept\n0\n");
    assert_int_equal(started_warm, warm0 + 1);
    /* another session: its own sandbox, its own workspace */
    expect_in("warm-b", "file_read", "{\"path\":\"f\"}", 1, "No such file");
    assert_int_equal(started_cold, cold0 + 2);
    assert_int_equal(started_warm, warm0 + 1);
    expect_in("warm-b", "file_write", "{\"path\":\"g\",\"content\":\"x\"}", 0, "");
    assert_int_equal(started_warm, warm0 + 2);
    /* calls without a session: a fresh workspace each, warm or not */
    expect_in(NULL, "shell", "{\"command\":\"echo x > y; ls\"}", 0, "y"); /* cold */
    expect_in(NULL, "shell", "{\"command\":\"ls | wc -l\"}", 0, "0");
    assert_int_equal(started_warm, warm0 + 3);
    /* one made around a fresh workspace now waits: once built, a new
     * session's first call takes it, and the workspace is the session's */
    wait_warm(runner, -1);
    expect_in("warm-c", "shell", "{\"command\":\"ls | wc -l; echo mine > f\"}", 0, "0\n");
    assert_int_equal(started_warm, warm0 + 4);
    expect_in("warm-c", "file_read", "{\"path\":\"f\"}", 0, "mine");
    assert_int_equal(started_warm, warm0 + 5);
    /* a session that has a workspace never takes a fresh one: warm-a's own
     * sandbox is gone (displaced below), so its call sets up its own */
    for (i = 0; i < warm_max + 2; i++) {
        char session[32];

        snprintf(session, sizeof(session), "warm-many-%d", i);
        wait_warm(runner, -1);
        expect_in(session, "shell", "{\"command\":\"true\"}", 0, "");
        assert_true(tw_runner_warm(runner) <= warm_max);
    }
    assert_int_equal(tw_runner_warm(runner), warm_max);
    assert_int_equal(started_cold, cold0 + 3); /* every new session found one */
    expect_in("warm-a", "file_read", "{\"path\":\"f\"}", 0, "kept");
    assert_int_equal(started_cold, cold0 + 4);
}

/* Started with a priming delay: one waits before any call came, and the
 * first session's first call is warm. */
static void test_warm_sandbox_before_the_first_call(void **state)
{
    struct tw_runner *r;
    struct outcome o;
    int warm0 = started_warm;

    (void)state;
    if (!warm_max)
        return;
    r = new_runner(2, 60000, 50);
    assert_int_equal(tw_runner_warm(r), 0);
    wait_warm(r, 1);
    call_on(r, "{\"command\":\"pwd\"}", "primed-session", &o);
    assert_false(o.is_error);
    assert_non_null(strstr(o.text, "/workspace"));
    free(o.text);
    assert_int_equal(started_warm, warm0 + 1);
    tw_runner_free(r);
    uv_run(&loop, UV_RUN_NOWAIT);
}

/* One set up ahead and never used ends after the idle time. */
static void test_warm_sandbox_expires(void **state)
{
    struct tw_runner *r;
    struct outcome o;

    (void)state;
    if (!warm_max)
        return;
    r = new_runner(2, 200, 0);
    memset(&o, 0, sizeof(o));
    assert_int_equal(
        tw_runner_start(r, "shell", "{\"command\":\"true\"}", "expiring", on_done, &o, NULL), 0);
    assert_int_equal(tw_runner_warm(r), 0); /* set up once the call has answered */
    while (!o.done)
        uv_run(&loop, UV_RUN_ONCE);
    free(o.text);
    assert_int_equal(tw_runner_warm(r), 1);
    wait_warm(r, 0);
    tw_runner_free(r);
    uv_run(&loop, UV_RUN_NOWAIT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shell_and_workspace),
        cmocka_unit_test(test_schema_errors_name_the_field),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_environment_and_secrets),
        cmocka_unit_test(test_no_network_for_shell),
        cmocka_unit_test(test_http_request),
        cmocka_unit_test(test_network_through_the_egress_proxy),
        cmocka_unit_test(test_cancel_kills_the_tree),
        cmocka_unit_test(test_capacity_and_background),
        cmocka_unit_test(test_warm_sandboxes),
        cmocka_unit_test(test_warm_sandbox_expires),
        cmocka_unit_test(test_warm_sandbox_before_the_first_call),
    };

    return cmocka_run_group_tests_name("every sandbox set up for its call", tests, setup_cold,
                                       teardown) |
           cmocka_run_group_tests_name("warm sandboxes", tests, setup_warm, teardown);
}
