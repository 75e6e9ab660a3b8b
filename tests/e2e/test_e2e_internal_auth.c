/* End to end: only the runtime's own processes may call its gRPC services.
 * Shown, with real processes:
 * - TCP with a token (how compose runs): a call without it, or with another
 *   one, gets UNAUTHENTICATED and a WARN line that names the method, never
 *   a value; health checks stay open; the runtime's own calls carry it.
 * - unix sockets (single container, scripts/run.sh): the sockets are 0600
 *   and another uid cannot connect; the whole runtime works over them.
 * - mutual TLS: the runtime works over it; a plaintext client is refused. */
#include "agentcore.pb-c.h"
#include "cm_rpc.h"
#include "th_stack.h"

#include <errno.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define KEYS "AWS_ACCESS_KEY_ID=" TH_EMU_AKID, "AWS_SECRET_ACCESS_KEY=" TH_EMU_SECRET

static const struct cm_rpc_method list_tools = {
    "/agentcore.v1.ToolService/ListTools", &agentcore__v1__list_tools_request__descriptor,
    &agentcore__v1__list_tools_response__descriptor, CM_RPC_UNARY};

static struct th_proc emu, tool, utool, uagent, ugw, ttool;
static struct th_stack tls_s;
static char dir[80], tool_sock[100], agent_sock[100], ugw_url[64];

static int sh(const char *cmd)
{
    return system(cmd) == 0 ? 0 : -1;
}

/* A CA and one certificate for 127.0.0.1 / localhost that every process
 * presents (as a compose deployment might share one). */
static int make_certs(void)
{
    char cmd[2048];

    snprintf(cmd, sizeof(cmd),
             "cd %s && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=internal CA' "
             "-keyout ca.key -out ca.pem 2>/dev/null && "
             "openssl req -newkey rsa:2048 -nodes -subj '/CN=agentcore' -keyout node.key "
             "-out node.csr 2>/dev/null && "
             "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > node.ext && "
             "openssl x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
             "-extfile node.ext -out node.pem 2>/dev/null",
             dir);
    return sh(cmd);
}

static int setup(void **state)
{
    char tl[640], al[640], tw[640], aa[640], ca[640], cert[640], key[640], tl2[64];

    (void)state;
    /* A unix socket path must fit in 108 bytes: not under the build tree. */
    snprintf(dir, sizeof(dir), "/tmp/agentcore-auth-%d", (int)getpid());
    if (mkdir(dir, 0700) || make_certs())
        return -1;
    snprintf(tool_sock, sizeof(tool_sock), "%s/tool.sock", dir);
    snprintf(agent_sock, sizeof(agent_sock), "%s/agent.sock", dir);
    snprintf(tl, sizeof(tl), "TOOL_WORKER_LISTEN=unix:%s", tool_sock);
    snprintf(al, sizeof(al), "AGENT_WORKER_LISTEN=unix:%s", agent_sock);
    snprintf(tw, sizeof(tw), "TOOL_WORKERS=unix:%s", tool_sock);
    snprintf(aa, sizeof(aa), "AGENT_WORKER_ADDR=unix:%s", agent_sock);
    snprintf(ca, sizeof(ca), "INTERNAL_TLS_CA=%s/ca.pem", dir);
    snprintf(cert, sizeof(cert), "INTERNAL_TLS_CERT=%s/node.pem", dir);
    snprintf(key, sizeof(key), "INTERNAL_TLS_KEY=%s/node.key", dir);
    snprintf(tl2, sizeof(tl2), "TOOL_WORKER_LISTEN=127.0.0.1:0");
    if (th_emulator_start(&emu, "auth-emulator", NULL) || th_tool_start(&tool, "auth-tool-worker"))
        return -1;
    /* One host, unix sockets, no token: file permissions are the credential. */
    if (th_proc_start(&utool, "auth-unix-tool-worker", AC_BIN_TOOL,
                      (const char *[]){tl, "INTERNAL_TOKEN_FILE=", NULL}, TH_READY_MS))
        return -1;
    {
        char ep[128];

        snprintf(ep, sizeof(ep), "AWS_ENDPOINT_URL_BEDROCK_RUNTIME=http://127.0.0.1:%d", emu.port);
        if (th_proc_start(&uagent, "auth-unix-agent-worker", AC_BIN_AGENT,
                          (const char *[]){al, tw, ep, KEYS, "AWS_REGION=us-east-1",
                                           "AWS_EC2_METADATA_DISABLED=true",
                                           "INTERNAL_TOKEN_FILE=", NULL},
                          TH_READY_MS) ||
            th_proc_start(&ugw, "auth-unix-gateway", AC_BIN_GATEWAY,
                          (const char *[]){aa, "PORT=0", "GATEWAY_HOST=127.0.0.1",
                                           "INTERNAL_TOKEN_FILE=", NULL},
                          TH_READY_MS))
            return -1;
        snprintf(ugw_url, sizeof(ugw_url), "http://127.0.0.1:%d", ugw.port);
    }
    /* Mutual TLS over TCP (with the token as well). */
    if (th_proc_start(&ttool, "auth-tls-tool-worker", AC_BIN_TOOL,
                      (const char *[]){tl2, ca, cert, key, NULL}, TH_READY_MS) ||
        th_stack_start_gw(&tls_s, "auth-tls", &emu, &ttool,
                          (const char *[]){KEYS, ca, cert, key, NULL},
                          (const char *[]){ca, cert, key, NULL}))
        return -1;
    cm_rpc_init(); /* after every child was exec'd: gRPC is not fork-safe */
    return 0;
}

static int teardown(void **state)
{
    int bad;

    (void)state;
    cm_rpc_set_token(NULL);
    cm_rpc_set_tls(NULL, NULL, NULL);
    cm_rpc_thread_done();
    cm_rpc_shutdown();
    bad = th_stack_stop(&tls_s) | th_stop(&ttool) | th_stop(&ugw) | th_stop(&uagent) |
          th_stop(&utool) | th_stop(&tool) | th_stop(&emu);
    {
        char cmd[160];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        sh(cmd);
    }
    return bad ? -1 : 0;
}

/* ListTools on |target| as this process is set up; the status code. */
static int call_list_tools(const char *target)
{
    Agentcore__V1__ListToolsRequest req = AGENTCORE__V1__LIST_TOOLS_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    struct cm_rpc_call_opts o = {5000, NULL, NULL, 0, 0, NULL, NULL}; /* fail fast */
    struct cm_rpc_status st;
    struct cm_rpc_client *c;
    char err[128];
    int code;

    c = cm_rpc_client_new(target, &list_tools, 1, 1 << 20, err, sizeof(err));
    assert_non_null(c);
    if (cm_rpc_call(c, &list_tools, &req.base, &resp, &o, &st) == 0) {
        protobuf_c_message_free_unpacked(resp, NULL);
        code = CM_RPC_OK;
    } else {
        code = st.code;
    }
    cm_rpc_client_free(c);
    return code;
}

static void test_tcp_call_without_the_token_is_refused(void **state)
{
    struct cm_rpc_client *c;
    struct cm_rpc_status st;
    char target[64], err[128], *log, *token;

    (void)state;
    snprintf(target, sizeof(target), "127.0.0.1:%d", tool.port);
    assert_int_equal(call_list_tools(target), CM_RPC_UNAUTHENTICATED);
    assert_true(th_wait_log(tool.log_path, "internal call refused", 5000) >= 0);
    assert_int_equal(cm_rpc_set_token("not-the-token-0123456789"), 0);
    assert_int_equal(call_list_tools(target), CM_RPC_UNAUTHENTICATED);
    /* Health checks carry no token and reveal nothing: they stay open. */
    c = cm_rpc_client_new(target, &list_tools, 1, 1 << 20, err, sizeof(err));
    assert_non_null(c);
    cm_rpc_set_token(NULL);
    assert_int_equal(cm_rpc_health(c, "", 5000, &st), 1);
    cm_rpc_client_free(c);
    /* With the runtime's token it is served. */
    assert_int_equal(th_use_token(), 0);
    assert_int_equal(call_list_tools(target), CM_RPC_OK);
    cm_rpc_set_token(NULL);
    /* The log names the method, never a token. */
    log = th_read_file(tool.log_path, NULL);
    token = th_read_file(th_token_path(), NULL);
    assert_non_null(log);
    assert_non_null(token);
    token[strcspn(token, "\n")] = '\0';
    assert_non_null(strstr(log, "/agentcore.v1.ToolService/ListTools"));
    assert_null(strstr(log, "not-the-token-0123456789"));
    assert_null(strstr(log, token));
    free(log);
    free(token);
}

static void test_unix_sockets_serve_only_this_uid(void **state)
{
    struct th_resp r;
    struct stat sb;
    char url[700];

    (void)state;
    assert_int_equal(stat(agent_sock, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(stat(tool_sock, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    /* The whole runtime works over them: gateway -> agent-worker -> tool. */
    snprintf(url, sizeof(url), "%s/invocations", ugw_url);
    {
        static const char body[] =
            "{\"prompt\":\"[[tool:calculator {\\\"expression\\\":\\\"6*7\\\"}]]\"}";

        assert_int_equal(th_http("POST", url, NULL, body, sizeof(body) - 1, &r), 0);
    }
    if (r.status != 200 || !strstr(r.body, "42"))
        fail_msg("%ld %s", r.status, r.body);
    th_resp_free(&r);
    /* Another uid cannot even connect. */
    if (geteuid() == 0) {
        pid_t pid = fork();
        int st;

        if (pid == 0) {
            struct sockaddr_un sa;
            int fd;

            if (setgid(65534) || setuid(65534))
                _exit(3);
            fd = socket(AF_UNIX, SOCK_STREAM, 0);
            memset(&sa, 0, sizeof(sa));
            sa.sun_family = AF_UNIX;
            snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", agent_sock);
            _exit(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 && errno == EACCES ? 0 : 1);
        }
        assert_true(pid > 0);
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
    }
}

static void test_mutual_tls(void **state)
{
    struct th_resp r;
    char target[64];

    (void)state;
    assert_int_equal(
        th_invoke(&tls_s, "{\"prompt\":\"[[tool:calculator {\\\"expression\\\":\\\"2+3\\\"}]]\"}",
                  NULL, &r),
        0);
    if (r.status != 200 || !strstr(r.body, "5"))
        fail_msg("%ld %s", r.status, r.body);
    th_resp_free(&r);
    /* A plaintext client, even with the token, does not get through. */
    assert_int_equal(th_use_token(), 0);
    snprintf(target, sizeof(target), "127.0.0.1:%d", ttool.port);
    assert_int_equal(call_list_tools(target), CM_RPC_UNAVAILABLE);
    cm_rpc_set_token(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tcp_call_without_the_token_is_refused),
        cmocka_unit_test(test_unix_sockets_serve_only_this_uid),
        cmocka_unit_test(test_mutual_tls),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
