/* End to end over real HTTPS and HTTP/2, the way real Bedrock is reached: the
 * agent-worker talks TLS + h2 to nghttpx (Debian's nghttp2-proxy), which
 * forwards HTTP/1.1 to the emulator. A test CA made here is given through
 * AWS_CA_BUNDLE. Shown: ALPN picks h2; 50 concurrent invocations share one
 * connection; cancelling one resets only its stream; a certificate for
 * another name is refused. */
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
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#define KEYS "AWS_ACCESS_KEY_ID=" TH_EMU_AKID, "AWS_SECRET_ACCESS_KEY=" TH_EMU_SECRET
#define NGHTTPX "/usr/sbin/nghttpx"
#define N_CONCURRENT 50

static struct th_proc emu, tool, proxy, wrong_proxy;
static struct th_stack h2_s, wrong_s, secret_s;
static char dir[512], ca[600], access_log[600];

/* Runs a shell command (openssl); 0 on success. */
static int sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd) == 0 ? 0 : -1;
}

/* A CA, a certificate for localhost/127.0.0.1 and one for wrong.example. */
static int make_certs(void)
{
    snprintf(dir, sizeof(dir), "%s/tls", th_log_dir());
    mkdir(dir, 0755);
    snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
    return sh("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=agentcore "
              "test CA' -keyout ca.key -out ca.pem 2>/dev/null",
              dir) ||
           sh("cd %s && for n in localhost wrong.example; do "
              "openssl req -newkey rsa:2048 -nodes -subj \"/CN=$n\" -keyout $n.key -out $n.csr "
              "2>/dev/null && "
              "printf 'subjectAltName=DNS:%%s%%s\\n' $n \"$( [ $n = localhost ] && echo "
              ",IP:127.0.0.1)\" > $n.ext && "
              "openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
              "-extfile $n.ext -out $n.pem 2>/dev/null || exit 1; done",
              dir);
}

/* nghttpx on a free port: TLS with |name|'s certificate, h2 (and http/1.1)
 * to us, HTTP/1.1 to the emulator. */
static int start_proxy(struct th_proc *p, const char *pname, const char *name, char *log,
                       size_t cap)
{
    char front[64], back[64], key[600], cert[600], alog[640], opt_log[700];
    int port = th_free_port();

    snprintf(front, sizeof(front), "--frontend=127.0.0.1,%d", port);
    snprintf(back, sizeof(back), "--backend=127.0.0.1,%d", emu.port);
    snprintf(key, sizeof(key), "%s/%s.key", dir, name);
    snprintf(cert, sizeof(cert), "%s/%s.pem", dir, name);
    snprintf(log, cap, "%s/%s-access.log", th_log_dir(), pname);
    unlink(log);
    snprintf(alog, sizeof(alog), "--accesslog-file=%s", log);
    snprintf(opt_log, sizeof(opt_log), "%s", alog);
    if (th_proc_spawn_args(p, pname, NGHTTPX,
                           (const char *[]){"--conf=/dev/null", front, back, "--workers=1",
                                            "--no-ocsp", "--backend-connections-per-host=256",
                                            "--accesslog-format=$remote_port $alpn $status $path",
                                            opt_log, "--log-level=INFO", key, cert, NULL},
                           NULL))
        return -1;
    if (th_wait_log(p->log_path, "Entering event loop", 10000) < 0)
        return -1;
    p->port = port;
    return 0;
}

static int setup(void **state)
{
    char ep[96], ep2[96], sm[96], bundle[640], wrong_log[600];

    (void)state;
    if (make_certs() || th_emulator_start(&emu, "tls-emulator", NULL) ||
        th_tool_start(&tool, "tls-tool-worker") ||
        start_proxy(&proxy, "tls-nghttpx", "localhost", access_log, sizeof(access_log)) ||
        start_proxy(&wrong_proxy, "tls-nghttpx-wrong", "wrong.example", wrong_log,
                    sizeof(wrong_log)))
        return -1;
    snprintf(ep, sizeof(ep), "AWS_ENDPOINT_URL_BEDROCK_RUNTIME=https://localhost:%d", proxy.port);
    snprintf(ep2, sizeof(ep2), "AWS_ENDPOINT_URL_BEDROCK_RUNTIME=https://localhost:%d",
             wrong_proxy.port);
    snprintf(sm, sizeof(sm), "AWS_ENDPOINT_URL_SECRETS_MANAGER=https://localhost:%d", proxy.port);
    snprintf(bundle, sizeof(bundle), "AWS_CA_BUNDLE=%s", ca);
    return th_stack_start(&h2_s, "tls-h2", &emu, &tool, (const char *[]){KEYS, ep, bundle, NULL}) ||
           th_stack_start(&secret_s, "tls-secret", &emu, &tool,
                          (const char *[]){"AWS_ACCESS_KEY_ID=" TH_EMU_BOOT_AKID,
                                           "AWS_SECRET_ACCESS_KEY=" TH_EMU_BOOT_SECRET,
                                           "BEDROCK_CREDENTIALS_SECRET=agentcore/bedrock", ep, sm,
                                           bundle, NULL}) ||
           th_stack_start(&wrong_s, "tls-wrong", &emu, &tool,
                          (const char *[]){KEYS, ep2, bundle, "AWS_MAX_ATTEMPTS=1", NULL});
}

static int teardown(void **state)
{
    int bad;

    (void)state;
    bad = th_stack_stop(&h2_s) | th_stack_stop(&wrong_s) | th_stack_stop(&secret_s) |
          th_stop(&tool) | th_stop(&emu);
    th_proc_stop(&proxy, SIGTERM); /* nghttpx's own exit status is not ours to judge */
    th_proc_stop(&wrong_proxy, SIGTERM);
    return bad ? -1 : 0;
}

/* The model requests nghttpx saw: "<client port> <alpn> <status> <path>". */
struct seen {
    int n, h2, ports[512];
    int nports;
};

static void read_access_log(struct seen *s)
{
    char *text = th_read_file(access_log, NULL), *line, *save = NULL;

    memset(s, 0, sizeof(*s));
    for (line = text ? strtok_r(text, "\n", &save) : NULL; line;
         line = strtok_r(NULL, "\n", &save)) {
        int port, status, k, known = 0;
        char alpn[32], path[1024];

        if (sscanf(line, "%d %31s %d %1023s", &port, alpn, &status, path) != 4 ||
            !strstr(path, "/converse"))
            continue;
        s->n++;
        s->h2 += !strcmp(alpn, "h2");
        for (k = 0; k < s->nports; k++)
            known |= s->ports[k] == port;
        if (!known && s->nports < 512)
            s->ports[s->nports++] = port;
    }
    free(text);
}

static void test_alpn_selects_h2(void **state)
{
    struct th_resp r;
    struct seen s;

    (void)state;
    assert_int_equal(th_invoke(&h2_s, "{\"prompt\":\"over tls\"}", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "response")), "Echo: over tls");
    th_resp_free(&r);
    assert_true(th_wait_log(access_log, "/converse", 5000) >= 0);
    read_access_log(&s);
    assert_true(s.n >= 1);
    assert_int_equal(s.h2, s.n);
}

static char bufs[N_CONCURRENT][16384];

/* Opens |n| streaming invocations and waits for the first delta of each: all
 * are then in flight at once. */
static void open_streams(int *fds, int n, const char *body)
{
    int i;

    for (i = 0; i < n; i++) {
        fds[i] = th_raw_post(h2_s.gw.port, "/invocations", "", body);
        assert_true(fds[i] >= 0);
        bufs[i][0] = '\0';
    }
    for (i = 0; i < n; i++)
        assert_int_equal(
            th_raw_read_until(fds[i], bufs[i], sizeof(bufs[i]), "contentBlockDelta", 20000), 0);
}

static void test_concurrent_invocations_share_one_connection(void **state)
{
    int fds[N_CONCURRENT], i;
    struct seen before, after;
    const char *body = "{\"prompt\":\"[[slow-stream:50]] side by side over one "
                       "connection\",\"stream\":true}";

    (void)state;
    read_access_log(&before);
    open_streams(fds, N_CONCURRENT, body);
    for (i = 0; i < N_CONCURRENT; i++) {
        if (th_raw_read_until(fds[i], bufs[i], sizeof(bufs[i]), "\"stop_reason\":\"EndTurn\"",
                              20000))
            fail_msg("stream %d did not finish", i);
        close(fds[i]);
    }
    assert_true(th_wait_log_count(access_log, "/converse", before.n + N_CONCURRENT, 5000) >= 0);
    read_access_log(&after);
    assert_int_equal(after.n - before.n, N_CONCURRENT);
    assert_int_equal(after.h2, after.n);
    /* One client port for every request so far: one TLS connection. */
    assert_int_equal(after.nports, 1);
}

#define N_CANCEL 8

static void test_cancel_resets_only_its_stream(void **state)
{
    int fds[N_CANCEL], i;
    long long aborted = th_emu_stat(&emu, "streams_aborted");
    struct seen s;
    const char *body = "{\"prompt\":\"[[slow-stream:100]] one of these will be dropped on the "
                       "floor midway\",\"stream\":true}";

    (void)state;
    open_streams(fds, N_CANCEL, body);
    close(fds[0]);
    for (i = 1; i < N_CANCEL; i++) {
        if (th_raw_read_until(fds[i], bufs[i], sizeof(bufs[i]), "\"stop_reason\":\"EndTurn\"",
                              20000))
            fail_msg("stream %d did not finish", i);
        close(fds[i]);
    }
    /* nghttpx closed the emulator side of the reset stream only. */
    assert_true(th_wait_log(emu.log_path, "stream aborted by the client", 5000) >= 0);
    assert_int_equal(th_emu_stat(&emu, "streams_aborted") - aborted, 1);
    read_access_log(&s);
    assert_int_equal(s.nports, 1); /* and the connection stayed up for the others */
}

static void test_certificate_for_another_name_is_refused(void **state)
{
    struct th_resp r;
    const char *details;

    (void)state;
    assert_int_equal(th_invoke(&wrong_s, "{\"prompt\":\"who are you\"}", NULL, &r), 0);
    assert_int_equal(r.status, 502);
    details = json_string_value(json_object_get(r.json, "details"));
    assert_non_null(details);
    if (!strstr(details, "TransportError") || !strstr(details, "certificate"))
        fail_msg("unexpected details: %s", details);
    th_resp_free(&r);
}

/* Secrets Manager over TLS trusts AWS_CA_BUNDLE as Bedrock calls do. */
static void test_secrets_manager_trusts_the_ca_bundle(void **state)
{
    struct th_resp r;
    char *log;

    (void)state;
    assert_int_equal(th_invoke(&secret_s, "{\"prompt\":\"secret\"}", NULL, &r), 0);
    if (r.status != 200)
        fail_msg("%ld %s", r.status, r.body);
    th_resp_free(&r);
    log = th_read_file(secret_s.agent.log_path, NULL);
    assert_non_null(log);
    assert_non_null(strstr(log, "AWS credentials from secrets-manager"));
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alpn_selects_h2),
        cmocka_unit_test(test_concurrent_invocations_share_one_connection),
        cmocka_unit_test(test_cancel_resets_only_its_stream),
        cmocka_unit_test(test_certificate_for_another_name_is_refused),
        cmocka_unit_test(test_secrets_manager_trusts_the_ca_bundle),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
