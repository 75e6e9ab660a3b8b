/* agentcore-tool-worker: serves agentcore.v1.ToolService over gRPC. */
#include "cm_log.h"
#include "cm_loop.h"
#include "cm_main.h"
#include "cm_rpc.h"
#include "cm_status.h"
#include "cm_util.h"
#include "tw_service.h"
#include "tw_tools.h"

enum { C_LISTEN, C_THREADS, C_MAX_MSG, C_GRACE, C_TEST_TOOLS, C_LOG_LEVEL, C_COUNT };

static const struct cm_cfg_entry config[C_COUNT] = {
    [C_LISTEN] = {"TOOL_WORKER_LISTEN", NULL, CM_CFG_STR, "127.0.0.1:50061", 0, 256,
                  "gRPC listen address (host:port, port 0 = any free port)", 0},
    [C_THREADS] = {"TOOL_WORKER_THREADS", NULL, CM_CFG_INT, "8", 1, 256,
                   "worker threads = tool calls executed at once", 0},
    [C_MAX_MSG] = {"GRPC_MAX_MESSAGE_BYTES", NULL, CM_CFG_INT, "16777216", 65536, 1073741824,
                   "largest gRPC message accepted", 0},
    [C_GRACE] = {"SHUTDOWN_GRACE_MS", NULL, CM_CFG_INT, "10000", 0, 600000,
                 "on SIGTERM, how long in-flight calls may finish before they are cancelled", 0},
    [C_TEST_TOOLS] = {"TOOL_WORKER_TEST_TOOLS", NULL, CM_CFG_BOOL, "false", 0, 1,
                      "also offer the test tools (slow), for the cancellation tests", 0},
    [C_LOG_LEVEL] = CM_CFG_LOG_LEVEL,
};

int main(int argc, char **argv)
{
    struct cm_cfg_value cfg[C_COUNT];
    struct cm_rpc_server_config scfg;
    struct cm_rpc_server *srv = NULL;
    struct cm_loop *loop = NULL;
    struct cm_rpc_events *ev = NULL;
    struct cm_status *hub = NULL;
    char portstr[16];
    int rc, port, sig;

    rc =
        cm_main_boot(argc, argv, "agentcore.tool_worker",
                     "Tool worker: executes tools for the agent-worker (agentcore.v1.ToolService).",
                     config, C_COUNT, cfg);
    if (rc >= 0)
        goto out;
    if (cm_main_drop_secrets() > 0)
        cm_info("removed credential variables from the environment: this process needs none");
    tw_tools_enable_test_tools((int)cfg[C_TEST_TOOLS].i);
    cm_main_block_signals();
    cm_rpc_init();
    scfg.listen = cfg[C_LISTEN].s;
    scfg.threads = (int)cfg[C_THREADS].i;
    scfg.max_msg_bytes = (int)cfg[C_MAX_MSG].i;
    srv = cm_rpc_server_new(&scfg);
    /* A small loop only for WatchStatus: the agent-worker hears of background
     * work when it starts and ends, without asking every second. */
    loop = cm_loop_new();
    ev = loop ? cm_rpc_events_new(loop) : NULL;
    hub = loop ? cm_status_new(loop) : NULL;
    if (!srv || !ev || !hub || tw_service_register(srv, hub, ev) || cm_loop_start(loop)) {
        cm_error("cannot create the gRPC server");
        rc = 1;
        goto out_rpc;
    }
    port = cm_rpc_server_start(srv);
    if (port <= 0) {
        cm_error("cannot listen on %s (address in use or invalid)", cfg[C_LISTEN].s);
        rc = 1;
        goto out_rpc;
    }
    snprintf(portstr, sizeof(portstr), "%d", port);
    {
        const char *kv[] = {"listen", cfg[C_LISTEN].s, "port", portstr, NULL};
        CM_LOGF(CM_LOG_INFO, kv, "tool-worker ready");
    }
    cm_notify_ready(port);
    sig = cm_main_wait_signal();
    cm_info("signal %d: shutting down (grace %lld ms)", sig, cfg[C_GRACE].i);
    cm_status_close(hub); /* watches never end by themselves */
    cm_rpc_server_shutdown(srv, (int)cfg[C_GRACE].i);
    rc = 0;
out_rpc:
    cm_status_close(hub);
    cm_rpc_server_shutdown(srv, 0);
    tw_tools_on_background(NULL, NULL);
    cm_rpc_server_free(srv);
    cm_rpc_events_free(ev);
    cm_loop_free(loop);
    cm_status_free(hub);
    cm_rpc_shutdown();
    if (rc == 0)
        cm_info("stopped");
out:
    cm_config_free(cfg, C_COUNT);
    return rc;
}
