/* agentcore-gateway: the AgentCore HTTP contract on :8080, forwarding each
 * invocation over gRPC to an agent-worker. */
#include "cm_metrics.h"
#include "cm_otel.h"
#include "cm_log.h"
#include "cm_main.h"
#include "cm_rpc.h"
#include "cm_util.h"
#include "gw_http.h"

#include "agentcore.pb-c.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum {
    C_HOST,
    C_PORT,
    C_AGENT_ADDR,
    C_MAX_BODY,
    C_MAX_CONN,
    C_MAX_INFLIGHT_BODY,
    C_WS_IDLE,
    C_REQUEST_TIMEOUT,
    C_MAX_INVOCATIONS,
    C_INVOKE_TIMEOUT,
    C_STREAM_TIMEOUT,
    C_LOG_BODY,
    C_HEALTH_INTERVAL,
    C_WS_MAX,
    C_WS_ORIGINS,
    C_IDLE_TIMEOUT,
    C_SSE_KEEPALIVE,
    C_READY_WAIT,
    C_HTTP_THREADS,
    C_MAX_MSG,
    C_GRACE,
    C_AUTH_TOKEN,
    C_AUTH_CA,
    C_AUTH_CERT,
    C_AUTH_KEY,
    C_METRICS,
    C_TRIM,
    C_OTEL,
    C_OTEL_LAST = C_OTEL + CM_OTEL_CFG_COUNT - 1,
    C_LOG_LEVEL,
    C_COUNT
};

static const struct cm_cfg_entry config[C_COUNT] = {
    [C_HOST] = {"GATEWAY_HOST", NULL, CM_CFG_STR, "0.0.0.0", 0, 64,
                "IPv4 address to listen on (AgentCore requires 0.0.0.0)", 0},
    [C_PORT] = {"PORT", NULL, CM_CFG_INT, "8080", 0, 65535, "HTTP port (0 = any free port)", 0},
    [C_AGENT_ADDR] = {"AGENT_WORKER_ADDR", NULL, CM_CFG_STR, "127.0.0.1:50051", 0, 4096,
                      "agent-worker addresses: host:port list or a DNS name", 0},
    [C_MAX_BODY] = {"MAX_BODY_BYTES", NULL, CM_CFG_INT, "104857600", 1024, 1073741824,
                    "largest request body accepted (AgentCore allows 100 MB); larger gets 413", 0},
    [C_MAX_CONN] = {"GATEWAY_MAX_CONNECTIONS", NULL, CM_CFG_INT, "4096", 1, 65536,
                    "concurrent HTTP connections (32 more are let in for /ping only)", 0},
    [C_MAX_INFLIGHT_BODY] = {"MAX_INFLIGHT_BODY_BYTES", NULL, CM_CFG_INT, "268435456", 1024,
                             17179869184LL,
                             "request body bytes held at once across all connections (at least "
                             "MAX_BODY_BYTES); beyond: 503 + Retry-After before the body is read",
                             0},
    [C_WS_IDLE] = {"WS_IDLE_TIMEOUT_S", NULL, CM_CFG_INT, "600", 0, 86400,
                   "close a WebSocket with no message and no invocation for this long (1001; 0 = "
                   "never)",
                   0},
    [C_REQUEST_TIMEOUT] = {"HTTP_REQUEST_TIMEOUT_S", NULL, CM_CFG_INT, "120", 1, 86400,
                           "a request's headers and body must arrive within this; slower "
                           "connections are closed",
                           0},
    [C_MAX_INVOCATIONS] = {"MAX_CONCURRENT_INVOCATIONS", NULL, CM_CFG_INT, "4096", 1, 65536,
                           "invocations running at once; more get 503 with Retry-After", 0},
    [C_STREAM_TIMEOUT] = {"STREAM_TIMEOUT_MS", NULL, CM_CFG_INT, "3600000", 1000, 86400000,
                          "deadline of one streamed invocation (AgentCore allows 60 minutes)", 0},
    [C_LOG_BODY] = {"LOG_BODY_BYTES", NULL, CM_CFG_INT, "1024", 0, 1048576,
                    "request body bytes logged at DEBUG (headers are logged masked)", 0},
    [C_HEALTH_INTERVAL] = {"HEALTH_INTERVAL_MS", NULL, CM_CFG_INT, "1000", 100, 60000,
                           "how often the agent-worker's health is checked for /ping", 0},
    [C_WS_MAX] = {"WS_MAX_MESSAGE_BYTES", NULL, CM_CFG_INT, "1048576", 125, 104857600,
                  "largest WebSocket message accepted; larger closes with 1009", 0},
    [C_WS_ORIGINS] = {"GATEWAY_WS_ORIGINS", NULL, CM_CFG_STR, NULL, 0, 4096,
                      "browser Origins allowed to open /ws (comma-separated, * for any); a "
                      "request with another Origin gets 403, one without Origin is allowed",
                      0},
    [C_INVOKE_TIMEOUT] = {"INVOCATION_TIMEOUT_MS", NULL, CM_CFG_INT, "900000", 1000, 3600000,
                          "deadline of one invocation (AgentCore's own limit is 15 minutes)", 0},
    [C_IDLE_TIMEOUT] = {"HTTP_IDLE_TIMEOUT_S", NULL, CM_CFG_INT, "120", 0, 86400,
                        "close keep-alive connections idle this long between requests (0 = "
                        "never); a running invocation or stream is never idle",
                        0},
    [C_SSE_KEEPALIVE] = {"SSE_KEEPALIVE_S", NULL, CM_CFG_INT, "15", 1, 3600,
                         "a stream with no event for this long sends a ': keep-alive' comment", 0},
    [C_READY_WAIT] = {"AGENT_READY_WAIT_MS", NULL, CM_CFG_INT, "5000", 0, 600000,
                      "an invocation that arrives while no agent-worker is reachable (start-up, "
                      "restart) waits this long for one before 503",
                      0},
    [C_HTTP_THREADS] = {"GATEWAY_HTTP_THREADS", NULL, CM_CFG_INT, "2", 1, 64,
                        "threads serving HTTP (epoll; every connection, none parked per request)",
                        0},
    [C_MAX_MSG] = {"GRPC_MAX_MESSAGE_BYTES", NULL, CM_CFG_INT, "134217728", 65536, 1073741824,
                   "largest gRPC message accepted from the agent-worker", 0},
    [C_GRACE] = {"SHUTDOWN_GRACE_MS", NULL, CM_CFG_INT, "8000", 0, 600000,
                 "on SIGTERM, how long in-flight invocations may finish", 0},
    [C_AUTH_TOKEN] = CM_CFG_INTERNAL_TOKEN_FILE,
    [C_AUTH_CA] = CM_CFG_INTERNAL_TLS_CA,
    [C_AUTH_CERT] = CM_CFG_INTERNAL_TLS_CERT,
    [C_AUTH_KEY] = CM_CFG_INTERNAL_TLS_KEY,
    [C_METRICS] = CM_CFG_METRICS_LISTEN,
    [C_TRIM] = CM_CFG_RESIDENT_TRIM,
    CM_CFG_OTEL(C_OTEL),
    [C_LOG_LEVEL] = CM_CFG_LOG_LEVEL,
};

static const struct cm_main_flag gw_flags[] = {
    {"--healthcheck", "ask GET /ping of the gateway on PORT (GATEWAY_HOST, 127.0.0.1 for "
                      "0.0.0.0) and exit 0 when it answers 200, else 1 (a container "
                      "HEALTHCHECK needing no other tool)"},
    {NULL, NULL},
};

/* --healthcheck: one GET /ping over loopback, 2 s at most in all. */
static int healthcheck(const char *host, int port)
{
    static const char req[] = "GET /ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    struct sockaddr_in sa;
    char buf[64];
    size_t have = 0;
    uint64_t until = cm_now_ms() + 2000;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ok = 0;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (!strcmp(host, "0.0.0.0") || inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) ||
        write(fd, req, sizeof(req) - 1) != (ssize_t)(sizeof(req) - 1))
        goto out;
    while (have < 12) { /* "HTTP/1.1 200" */
        struct pollfd p = {fd, POLLIN, 0};
        uint64_t now = cm_now_ms();
        ssize_t r;

        if (now >= until || poll(&p, 1, (int)(until - now)) <= 0)
            goto out;
        r = read(fd, buf + have, sizeof(buf) - 1 - have);
        if (r <= 0)
            goto out;
        have += (size_t)r;
    }
    buf[have] = '\0';
    ok = !strncmp(buf + 8, " 200", 4);
out:
    if (fd >= 0)
        close(fd);
    printf("%s\n", ok ? "healthy" : "unhealthy");
    return ok ? 0 : 1;
}

/* Signed export: the gateway holds no credentials, so its export requests
 * (spans, metrics) go to an agent-worker, which signs and sends them. Runs on the
 * exporter thread; a worker that is starting gets a few seconds. */
static int relay_telemetry(void *ud, int signal, const uint8_t *body, size_t len)
{
    Agentcore__V1__ExportSpansRequest req = AGENTCORE__V1__EXPORT_SPANS_REQUEST__INIT;
    ProtobufCBinaryData *b = signal == CM_OTEL_METRICS ? &req.metrics : &req.request;
    struct cm_rpc_call_opts o = {0};
    struct cm_rpc_status st;
    ProtobufCMessage *resp = NULL;

    b->data = (uint8_t *)body;
    b->len = len;
    o.timeout_ms = 5000;
    o.wait_for_ready = 1;
    if (cm_rpc_call(ud, GW_HTTP_EXPORT_SPANS, &req.base, &resp, &o, &st) == 0) {
        protobuf_c_message_free_unpacked(resp, NULL);
        return 0;
    }
    /* Not there yet, or too slow: later. Refused (tracing off there, its
     * queue full): never. */
    return st.code == CM_RPC_UNAVAILABLE || st.code == CM_RPC_DEADLINE_EXCEEDED ? 1 : -1;
}

int main(int argc, char **argv)
{
    struct cm_cfg_value cfg[C_COUNT];
    struct cm_rpc_client *agent = NULL;
    struct gw_http_config hcfg;
    struct gw_http *http = NULL;
    struct cm_otel *otel = NULL;
    struct cm_metrics *metrics = NULL;
    char err[512], portstr[16];
    int rc, sig;

    rc = cm_main_boot(argc, argv, "agentcore.gateway",
                      "Gateway: serves the AgentCore HTTP protocol (GET /ping, POST /invocations) "
                      "and forwards invocations to agent-workers over gRPC.",
                      gw_flags, config, C_COUNT, cfg);
    if (rc >= 0)
        goto out_cfg;
    if (cm_main_has_flag(argc, argv, "--healthcheck")) {
        rc = healthcheck(cfg[C_HOST].s, (int)cfg[C_PORT].i);
        goto out_cfg;
    }
    if (cm_main_drop_secrets() > 0)
        cm_info("removed credential variables from the environment: this process needs none");
    cm_main_block_signals();
    cm_rpc_init();
    rc = 1;
    agent = cm_rpc_client_new(cfg[C_AGENT_ADDR].s, gw_http_agent_methods, GW_HTTP_N_AGENT_METHODS,
                              (int)cfg[C_MAX_MSG].i, err, sizeof(err));
    if (!agent) {
        cm_error("invalid configuration: AGENT_WORKER_ADDR: %s", err);
        rc = 2;
        goto out;
    }
    cm_rpc_client_resolve(agent); /* sessions are routed by the names' addresses */
    {
        struct cm_otel_hooks hooks = {NULL, NULL, relay_telemetry, cm_rpc_thread_done, agent};

        if ((rc = cm_main_observe(&cfg[C_OTEL], cfg[C_METRICS].s, "agentcore-gateway", &hooks,
                                  &otel, &metrics)))
            goto out;
    }
    rc = 1;
    hcfg.otel = otel;
    hcfg.metrics = metrics;
    hcfg.host = cfg[C_HOST].s;
    hcfg.port = (int)cfg[C_PORT].i;
    hcfg.max_body = (size_t)cfg[C_MAX_BODY].i;
    hcfg.max_connections = (int)cfg[C_MAX_CONN].i;
    hcfg.max_inflight_body = (size_t)cfg[C_MAX_INFLIGHT_BODY].i;
    hcfg.request_timeout_s = (int)cfg[C_REQUEST_TIMEOUT].i;
    if (hcfg.max_inflight_body < hcfg.max_body) {
        cm_error("invalid configuration: MAX_INFLIGHT_BODY_BYTES (%zu) must be at least "
                 "MAX_BODY_BYTES (%zu), or the largest request could never be accepted",
                 hcfg.max_inflight_body, hcfg.max_body);
        rc = 2;
        goto out;
    }
    hcfg.invoke_timeout_ms = (int)cfg[C_INVOKE_TIMEOUT].i;
    hcfg.max_invocations = (int)cfg[C_MAX_INVOCATIONS].i;
    hcfg.stream_timeout_ms = (int)cfg[C_STREAM_TIMEOUT].i;
    hcfg.log_body_bytes = (size_t)cfg[C_LOG_BODY].i;
    hcfg.health_interval_ms = (int)cfg[C_HEALTH_INTERVAL].i;
    hcfg.health_timeout_ms = 500;
    hcfg.ws_max_message = (size_t)cfg[C_WS_MAX].i;
    hcfg.ws_origins = cfg[C_WS_ORIGINS].s;
    hcfg.ws_idle_timeout_s = (int)cfg[C_WS_IDLE].i;
    hcfg.idle_timeout_s = (int)cfg[C_IDLE_TIMEOUT].i;
    hcfg.sse_keepalive_s = (int)cfg[C_SSE_KEEPALIVE].i;
    hcfg.agent_ready_wait_ms = (int)cfg[C_READY_WAIT].i;
    hcfg.http_threads = (int)cfg[C_HTTP_THREADS].i;
    http = gw_http_start(&hcfg, agent, err, sizeof(err));
    if (!http) {
        cm_error("%s", err);
        goto out;
    }
    snprintf(portstr, sizeof(portstr), "%d", gw_http_port(http));
    {
        const char *kv[] = {"host",         cfg[C_HOST].s,       "port", portstr,
                            "agentWorkers", cfg[C_AGENT_ADDR].s, NULL};
        CM_LOGF(CM_LOG_INFO, kv, "gateway ready");
    }
    cm_notify_ready(gw_http_port(http));
    sig = cm_main_wait_signal((int)cfg[C_TRIM].i);
    cm_info("signal %d: shutting down (grace %lld ms)", sig, cfg[C_GRACE].i);
    gw_http_stop(http, (int)cfg[C_GRACE].i);
    http = NULL;
    rc = 0;
out:
    gw_http_stop(http, 0);
    cm_otel_stop(otel, 2000); /* every call has ended: its span is queued */
    cm_metrics_free(metrics);
    cm_otel_free(otel, 0);
    cm_rpc_client_free(agent);
    cm_rpc_thread_done();
    cm_rpc_shutdown();
    if (rc == 0)
        cm_info("stopped");
out_cfg:
    cm_config_free(cfg, C_COUNT);
    return rc;
}
