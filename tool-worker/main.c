/* agentcore-tool-worker: serves agentcore.v1.ToolService over gRPC. */
#include "cm_metrics.h"
#include "cm_otel.h"
#include "cm_log.h"
#include "cm_loop.h"
#include "cm_main.h"
#include "cm_rpc.h"
#include "cm_status.h"
#include "cm_util.h"
#include "tw_egress.h"
#include "tw_runner.h"
#include "tw_sweep.h"
#include "tw_sandbox.h"
#include "tw_service.h"
#include "tw_tools.h"
#include "tw_workspace.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
    C_LISTEN,
    C_THREADS,
    C_MAX_CALLS,
    C_MAX_MSG,
    C_GRACE,
    C_MANIFEST,
    C_SANDBOX,
    C_SANDBOX_PROC,
    C_UID,
    C_GID,
    C_RO_PATHS,
    C_HELPERS,
    C_WARM,
    C_WARM_IDLE,
    C_WS_DIR,
    C_WS_TTL,
    C_WS_MAX,
    C_TIMEOUT,
    C_CPU,
    C_MEMORY,
    C_FSIZE,
    C_NOFILE,
    C_NPROC,
    C_OUTPUT,
    C_HTTP_HOSTS,
    C_HTTP_CIDRS,
    C_UNCHECKED_NET,
    C_TEST_TOOLS,
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
    [C_LISTEN] = {"TOOL_WORKER_LISTEN", NULL, CM_CFG_STR, "127.0.0.1:50061", 0, 256,
                  "gRPC listen address (host:port, port 0 = any free port)", 0},
    [C_THREADS] = {"TOOL_WORKER_THREADS", NULL, CM_CFG_INT, "2", 1, 256,
                   "threads for ListTools (tool calls run on the event loop, not on these)", 0},
    [C_MAX_CALLS] = {"TOOL_WORKER_MAX_CALLS", NULL, CM_CFG_INT, "32", 1, 4096,
                     "tool processes at once; beyond, calls get RESOURCE_EXHAUSTED", 0},
    [C_MAX_MSG] = {"GRPC_MAX_MESSAGE_BYTES", NULL, CM_CFG_INT, "16777216", 65536, 1073741824,
                   "largest gRPC message accepted", 0},
    [C_GRACE] = {"SHUTDOWN_GRACE_MS", NULL, CM_CFG_INT, "8000", 0, 600000,
                 "on SIGTERM, how long in-flight calls may finish before they are cancelled", 0},
    [C_MANIFEST] = {"TOOL_MANIFEST", NULL, CM_CFG_STR, NULL, 0, PATH_MAX,
                    "JSON manifest of command tools (see tool-worker/tw_tools.h)", 0},
    [C_SANDBOX] = {"TOOL_SANDBOX", NULL, CM_CFG_STR, "bwrap", 0, 16,
                   "bwrap: tools run in namespaces, refused when the kernel forbids them; "
                   "none: run them anyway with rlimits, seccomp and Landlock only (unsafe)",
                   0},
    [C_SANDBOX_PROC] = {"TOOL_SANDBOX_PROC", NULL, CM_CFG_STR, "auto", 0, 16,
                        "fresh: tools get a /proc of their own PID namespace, or no sandbox when "
                        "the container refuses one; auto: that, or no /proc at all (compose "
                        "cannot unmask Docker's /proc); none: never a /proc",
                        0},
    [C_UID] = {"TOOL_SANDBOX_UID", NULL, CM_CFG_INT, "65534", 1, 4294967294LL,
               "uid of tool processes when the worker runs as root", 0},
    [C_GID] = {"TOOL_SANDBOX_GID", NULL, CM_CFG_INT, "65534", 1, 4294967294LL,
               "gid of tool processes when the worker runs as root", 0},
    [C_RO_PATHS] = {"TOOL_SANDBOX_RO_PATHS", NULL, CM_CFG_STR, "/opt", 0, 4096,
                    "comma-separated paths shown read-only to tools, besides /usr and /etc", 0},
    [C_HELPERS] = {"TOOL_SANDBOX_HELPERS", NULL, CM_CFG_STR, NULL, 0, PATH_MAX,
                   "directory of agentcore-tool-exec and agentcore-tool-http (default: beside "
                   "this binary)",
                   0},
    [C_WARM] = {"TOOL_SANDBOX_WARM", NULL, CM_CFG_INT, "4", 0, 64,
                "sandboxes set up ahead of the next call of a session, waiting (each serves one "
                "call, then goes); 0: every call sets up its own",
                0},
    [C_WARM_IDLE] = {"TOOL_SANDBOX_WARM_IDLE_S", NULL, CM_CFG_INT, "60", 1, 3600,
                     "how long a sandbox set up ahead waits for its call before it is ended", 0},
    [C_WS_DIR] = {"TOOL_WORKSPACE_DIR", NULL, CM_CFG_STR, "/tmp/agentcore-workspaces", 1, 400,
                  "where session workspaces live", 0},
    [C_WS_TTL] = {"TOOL_WORKSPACE_TTL_S", NULL, CM_CFG_INT, "900", 1, 8 * 3600,
                  "a workspace unused this long is removed (AgentCore's idle session timeout)", 0},
    [C_WS_MAX] = {"TOOL_WORKSPACE_MAX", NULL, CM_CFG_INT, "1024", 1, 1000000,
                  "workspaces kept at most; the least recently used idle one goes first", 0},
    [C_TIMEOUT] = {"TOOL_TIMEOUT_MS", NULL, CM_CFG_INT, "30000", 100, 3600000,
                   "default wall-clock limit of a tool call (a manifest tool may set its own)", 0},
    [C_CPU] = {"TOOL_CPU_S", NULL, CM_CFG_INT, "10", 1, 3600, "default CPU seconds per call", 0},
    [C_MEMORY] = {"TOOL_MEMORY_MB", NULL, CM_CFG_INT, "1024", 16, 65536,
                  "default address-space limit per process", 0},
    [C_FSIZE] = {"TOOL_FILE_SIZE_MB", NULL, CM_CFG_INT, "64", 1, 65536,
                 "largest file a tool may write", 0},
    [C_NOFILE] = {"TOOL_OPEN_FILES", NULL, CM_CFG_INT, "256", 16, 65536,
                  "open files per tool process", 0},
    [C_NPROC] = {"TOOL_PROCESSES", NULL, CM_CFG_INT, "64", 4, 65536,
                 "processes per tool call (its own user namespace)", 0},
    [C_OUTPUT] = {"TOOL_OUTPUT_KB", NULL, CM_CFG_INT, "256", 1, 65536,
                  "stdout and stderr kept per call; more stops the tool", 0},
    [C_HTTP_HOSTS] = {"TOOL_HTTP_ALLOW_HOSTS", NULL, CM_CFG_STR, "*", 0, 4096,
                      "hosts http_request may reach (comma-separated; .example.com = any "
                      "subdomain; * = any public host)",
                      0},
    [C_HTTP_CIDRS] = {"TOOL_HTTP_ALLOW_CIDRS", NULL, CM_CFG_STR, NULL, 0, 4096,
                      "address ranges http_request may reach although they are loopback, "
                      "private or link-local (comma-separated CIDRs; none by default)",
                      0},
    [C_UNCHECKED_NET] = {"TOOL_SANDBOX_UNCHECKED_NETWORK", NULL, CM_CFG_BOOL, "false", 0, 1,
                         "tools that declare \"network\": true share the worker's network, "
                         "unchecked (loopback and the metadata service included), instead of "
                         "going through the egress proxy",
                         0},
    [C_TEST_TOOLS] = {"TOOL_WORKER_TEST_TOOLS", NULL, CM_CFG_BOOL, "false", 0, 1,
                      "also offer the test tools (slow, background)", 0},
    [C_AUTH_TOKEN] = CM_CFG_INTERNAL_TOKEN_FILE,
    [C_AUTH_CA] = CM_CFG_INTERNAL_TLS_CA,
    [C_AUTH_CERT] = CM_CFG_INTERNAL_TLS_CERT,
    [C_AUTH_KEY] = CM_CFG_INTERNAL_TLS_KEY,
    [C_METRICS] = CM_CFG_METRICS_LISTEN,
    [C_TRIM] = CM_CFG_RESIDENT_TRIM,
    CM_CFG_OTEL(C_OTEL),
    [C_LOG_LEVEL] = CM_CFG_LOG_LEVEL,
};

struct app {
    struct cm_cfg_value *cfg;
    struct tw_netpolicy policy; /* TOOL_HTTP_ALLOW_*: http_request and the egress proxy */
    char egress_path[PATH_MAX];
    struct tw_egress *egress;
    struct tw_catalog *catalog;
    struct tw_sandbox *sandbox;
    struct tw_workspaces *workspaces;
    struct tw_runner *runner;
    struct tw_service svc;
    struct cm_loop *loop;
    struct cm_metrics *metrics; /* NULL unless METRICS_LISTEN */
};

static void helper_path(const char *dir, const char *name, char *out, size_t len)
{
    char self[PATH_MAX];
    ssize_t n;

    if (dir) {
        snprintf(out, len, "%s/%s", dir, name);
        return;
    }
    n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    self[n > 0 ? n : 0] = '\0';
    if (strrchr(self, '/'))
        *strrchr(self, '/') = '\0';
    snprintf(out, len, "%s/%s", self, name);
}

static struct tw_limits limits(const struct cm_cfg_value *cfg)
{
    struct tw_limits l;

    l.cpu_s = (long)cfg[C_CPU].i;
    l.as_bytes = cfg[C_MEMORY].i * 1024 * 1024;
    l.fsize_bytes = cfg[C_FSIZE].i * 1024 * 1024;
    l.nofile = (long)cfg[C_NOFILE].i;
    l.nproc = (long)cfg[C_NPROC].i;
    l.timeout_ms = (int)cfg[C_TIMEOUT].i;
    l.output_bytes = (size_t)cfg[C_OUTPUT].i * 1024;
    return l;
}

/* Lists each MCP server's tools, once, in the sandbox (it forks: before
 * gRPC). A server that fails is logged and left out; the others serve. */
static const char *str_or(const char *s, const char *dflt)
{
    return s ? s : dflt;
}

static void discover_mcp(struct app *a)
{
    size_t i, n = tw_catalog_mcp_count(a->catalog);

    for (i = 0; i < n; i++) {
        const struct tw_mcp_server *m = tw_catalog_mcp_at(a->catalog, i);
        struct tw_sandbox_job job;
        char err[512], skipped[512], count[16], ms[24], *out = NULL;
        json_t *answer = NULL, *tools = NULL;
        uint64_t t0 = cm_now_ms();
        int rc, added = -1;

        memset(&job, 0, sizeof(job));
        job.tool_dir = m->tool_dir;
        job.network = m->network;
        job.env = (const char *const *)m->env;
        job.mode = "mcp_list";
        job.argv = (const char *const *)m->argv;
        job.lim = &m->lim;
        err[0] = skipped[0] = '\0';
        if (!a->sandbox || !tw_sandbox_usable(a->sandbox)) {
            snprintf(err, sizeof(err), "no sandbox to run it in");
        } else if ((rc = tw_sandbox_run(a->sandbox, &job, m->start_timeout_ms, &out, 8 << 20, err,
                                        sizeof(err))) == 0) {
            answer = json_loads(out, 0, NULL);
            if (strcmp(str_or(json_string_value(json_object_get(answer, "status")), ""), "success"))
                snprintf(err, sizeof(err), "%s",
                         str_or(json_string_value(json_object_get(answer, "content")),
                                "it did not answer tools/list"));
            else if (!(tools = json_loads(json_string_value(json_object_get(answer, "content")), 0,
                                          NULL)))
                snprintf(err, sizeof(err), "its tools/list answer is not JSON");
            else
                added = tw_catalog_add_mcp_tools(a->catalog, i, tools, skipped, sizeof(skipped),
                                                 err, sizeof(err));
        } else if (!err[0]) {
            snprintf(err, sizeof(err), "exit status %d", rc);
        }
        snprintf(count, sizeof(count), "%d", added);
        snprintf(ms, sizeof(ms), "%llu", (unsigned long long)(cm_now_ms() - t0));
        if (added >= 0) {
            const char *kv[] = {"server",     m->name, "prefix",  m->prefix, "tools", count,
                                "durationMs", ms,      "skipped", skipped,   NULL};

            CM_LOGF(skipped[0] ? CM_LOG_WARN : CM_LOG_INFO, kv, "MCP server listed");
        } else {
            const char *kv[] = {"server", m->name, "error", err, "durationMs", ms, NULL};

            CM_LOGF(CM_LOG_ERROR, kv, "MCP server unavailable: its tools are not offered");
        }
        json_decref(tools);
        json_decref(answer);
        free(out);
    }
}

/* TOOL_HTTP_ALLOW_HOSTS and TOOL_HTTP_ALLOW_CIDRS, checked once here (the
 * http_request program and the egress proxy take the same lists). */
static int parse_policy(struct tw_netpolicy *p, const char *hosts, const char *cidrs, char *err,
                        size_t errlen)
{
    const char *lists[2] = {hosts, cidrs},
               *names[2] = {"TOOL_HTTP_ALLOW_HOSTS", "TOOL_HTTP_ALLOW_CIDRS"};
    int k;

    memset(p, 0, sizeof(*p));
    for (k = 0; k < 2; k++) {
        const char *c = lists[k];

        while (c && *c) {
            char item[300];
            size_t len = strcspn(c, ",");

            snprintf(item, sizeof(item), "%.*s", (int)len, c);
            if (len && (len >= sizeof(item) || (k ? tw_netpolicy_allow_cidr(p, item)
                                                  : tw_netpolicy_allow_host(p, item)))) {
                snprintf(err, errlen, "%s: bad or too many entries at '%.100s'", names[k], item);
                return -1;
            }
            c += len + (c[len] == ',');
        }
    }
    return 0;
}

/* Everything a tool call needs, before gRPC starts (the probe forks). */
static int build(struct app *a)
{
    const struct cm_cfg_value *cfg = a->cfg;
    struct tw_catalog_config cc;
    struct tw_sandbox_config sc;
    char exec_path[PATH_MAX + 32], http_path[PATH_MAX + 32], err[512];
    const char *mode = cfg[C_SANDBOX].s;
    enum cm_log_level level;

    if (strcmp(mode, "bwrap") && strcmp(mode, "none")) {
        cm_error("invalid configuration: TOOL_SANDBOX: must be bwrap or none");
        return 2;
    }
    if (strcmp(cfg[C_SANDBOX_PROC].s, "auto") && strcmp(cfg[C_SANDBOX_PROC].s, "fresh") &&
        strcmp(cfg[C_SANDBOX_PROC].s, "none")) {
        cm_error("invalid configuration: TOOL_SANDBOX_PROC: must be auto, fresh or none");
        return 2;
    }
    if (parse_policy(&a->policy, cfg[C_HTTP_HOSTS].s, cfg[C_HTTP_CIDRS].s, err, sizeof(err))) {
        cm_error("invalid configuration: %s", err);
        return 2;
    }
    memset(&cc, 0, sizeof(cc));
    cc.manifest = cfg[C_MANIFEST].s;
    cc.test_tools = (int)cfg[C_TEST_TOOLS].i;
    if (cfg[C_UNCHECKED_NET].i)
        cm_warn("TOOL_SANDBOX_UNCHECKED_NETWORK: tools that declare a network get the worker's "
                "network without address checks");
    cc.defaults = limits(cfg);
    cc.max.cpu_s = 3600;
    cc.max.as_bytes = 65536LL * 1024 * 1024;
    cc.max.fsize_bytes = 65536LL * 1024 * 1024;
    cc.max.nofile = 65536;
    cc.max.nproc = 65536;
    cc.max.timeout_ms = 3600000;
    cc.max.output_bytes = 64 * 1024 * 1024;
    if (!(a->catalog = tw_catalog_new(&cc, err, sizeof(err)))) {
        cm_error("%s", err);
        return 1;
    }
    helper_path(cfg[C_HELPERS].s, "agentcore-tool-exec", exec_path, sizeof(exec_path));
    helper_path(cfg[C_HELPERS].s, "agentcore-tool-http", http_path, sizeof(http_path));
    memset(&sc, 0, sizeof(sc));
    sc.helper = exec_path;
    sc.http = http_path;
    sc.ro_paths = cfg[C_RO_PATHS].s;
    sc.allow_unconfined = !strcmp(mode, "none");
    sc.proc = !strcmp(cfg[C_SANDBOX_PROC].s, "fresh")  ? TW_PROC_FRESH
              : !strcmp(cfg[C_SANDBOX_PROC].s, "none") ? TW_PROC_NONE
                                                       : TW_PROC_AUTO;
    sc.uid = (uid_t)cfg[C_UID].i;
    sc.gid = (gid_t)cfg[C_GID].i;
    sc.allow_hosts = cfg[C_HTTP_HOSTS].s;
    sc.allow_cidrs = cfg[C_HTTP_CIDRS].s;
    if (!cfg[C_UNCHECKED_NET].i) {
        snprintf(a->egress_path, sizeof(a->egress_path), "%s/.egress.sock", cfg[C_WS_DIR].s);
        sc.egress = a->egress_path;
    }
    if (!(a->sandbox = tw_sandbox_new(&sc, err, sizeof(err)))) {
        cm_error("sandboxed tools are off: %s", err);
    } else {
        const char *kv[] = {"isolation", tw_sandbox_isolation(a->sandbox), "detail",
                            tw_sandbox_describe(a->sandbox), NULL};

        int swept;

        level = !strcmp(tw_sandbox_isolation(a->sandbox), "namespaces") ? CM_LOG_INFO : CM_LOG_WARN;
        CM_LOGF(level, kv, "tool sandbox");
        if ((swept = tw_sweep_orphans(tw_sandbox_uid(a->sandbox), TW_SANDBOX_IN_HELPER)) > 0)
            cm_warn("killed %d sandbox(es) an earlier tool-worker left half-built when it died",
                    swept);
    }
    discover_mcp(a);
    return 0;
}

static const struct cm_main_flag tw_flags[] = {
    {"--healthcheck", "ask grpc.health.v1 of the worker on TOOL_WORKER_LISTEN and exit 0 "
                      "when it is serving, else 1 (a container HEALTHCHECK)"},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    struct cm_cfg_value cfg[C_COUNT];
    struct cm_rpc_server_config scfg;
    struct cm_rpc_server *srv = NULL;
    struct cm_rpc_events *ev = NULL;
    struct cm_status *hub = NULL;
    struct tw_runner_config rc_cfg;
    struct app a;
    char portstr[16], err[256];
    int rc, port, sig;

    memset(&a, 0, sizeof(a));
    a.cfg = cfg;
    rc =
        cm_main_boot(argc, argv, "agentcore.tool_worker",
                     "Tool worker: executes tools for the agent-worker (agentcore.v1.ToolService).",
                     tw_flags, config, C_COUNT, cfg);
    if (rc >= 0)
        goto out;
    if (cm_main_has_flag(argc, argv, "--healthcheck")) {
        rc = cm_main_rpc_healthcheck(cfg[C_LISTEN].s);
        goto out;
    }
    if (cm_main_drop_secrets() > 0)
        cm_info("removed credential variables from the environment: this process needs none");
    {
        /* Whoever starts it (s6's run script, compose, a shell): what tools
         * could ever see of the worker starts from this allow-list. */
        static const char *const keep[] = {"PATH",      "TZ",        "LANG",   "LC_*",
                                           "LOG_LEVEL", "NOTIFY_FD", "GRPC_*", "SHUTDOWN_GRACE_MS",
                                           "TOOL_*",    NULL};

        cm_main_keep_env(keep);
    }
    if ((rc = build(&a)))
        goto out_app;
    cm_main_block_signals();
    a.loop = cm_loop_new();
    if (!a.loop)
        goto oom;
    if (a.sandbox) {
        a.workspaces =
            tw_workspaces_new(cm_loop_uv(a.loop), cfg[C_WS_DIR].s, tw_sandbox_uid(a.sandbox),
                              tw_sandbox_gid(a.sandbox), geteuid() == 0, (int)cfg[C_WS_TTL].i,
                              (size_t)cfg[C_WS_MAX].i, err, sizeof(err));
        if (!a.workspaces) {
            cm_error("%s", err);
            rc = 1;
            goto out_app;
        }
    }
    if (a.workspaces && a.egress_path[0] &&
        !strcmp(tw_sandbox_isolation(a.sandbox), "namespaces")) {
        a.egress =
            tw_egress_new(cm_loop_uv(a.loop), a.egress_path, &a.policy, 256, err, sizeof(err));
        if (!a.egress) {
            cm_error("%s", err);
            rc = 1;
            goto out_app;
        }
    }
    cm_rpc_init();
    scfg.listen = cfg[C_LISTEN].s;
    scfg.threads = (int)cfg[C_THREADS].i;
    scfg.max_msg_bytes = (int)cfg[C_MAX_MSG].i;
    srv = cm_rpc_server_new(&scfg);
    ev = cm_rpc_events_new(a.loop);
    hub = cm_status_new(a.loop);
    memset(&rc_cfg, 0, sizeof(rc_cfg));
    rc_cfg.loop = cm_loop_uv(a.loop);
    rc_cfg.catalog = a.catalog;
    rc_cfg.sandbox = a.sandbox;
    rc_cfg.workspaces = a.workspaces;
    rc_cfg.max_calls = (int)cfg[C_MAX_CALLS].i;
    rc_cfg.on_background = tw_service_on_background;
    rc_cfg.background_ud = &a.svc;
    rc_cfg.on_kill = tw_service_on_kill;
    rc_cfg.kill_ud = &a.svc;
    rc_cfg.warm_max = (int)cfg[C_WARM].i;
    rc_cfg.warm_idle_ms = (int)cfg[C_WARM_IDLE].i * 1000;
    /* A second after start: clear of the first /ping and invocation (tens of
     * ms), ready before the first tool call, which waits for a model turn. */
    rc_cfg.warm_prime_ms = 1000;
    rc_cfg.on_start = tw_service_on_start;
    rc_cfg.start_ud = &a.svc;
    a.runner = tw_runner_new(&rc_cfg);
    a.svc.catalog = a.catalog;
    a.svc.runner = a.runner;
    a.svc.sandbox = a.sandbox;
    a.svc.status_hub = hub;
    if ((rc = cm_main_observe(&cfg[C_OTEL], cfg[C_METRICS].s, "agentcore-tool-worker", NULL,
                              &a.svc.otel, &a.metrics)))
        goto out_rpc;
    if (a.metrics && tw_service_metrics(&a.svc, a.metrics)) {
        cm_error("out of memory at start-up");
        rc = 1;
        goto out_rpc;
    }
    if (!srv || !ev || !hub || !a.runner || tw_service_register(srv, ev, &a.svc) ||
        cm_loop_start(a.loop)) {
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
    sig = cm_main_wait_signal((int)cfg[C_TRIM].i);
    cm_info("signal %d: shutting down (grace %lld ms)", sig, cfg[C_GRACE].i);
    cm_status_close(hub); /* watches never end by themselves */
    cm_rpc_server_shutdown(srv, (int)cfg[C_GRACE].i);
    rc = 0;
out_rpc:
    cm_status_close(hub);
    cm_rpc_server_shutdown(srv, 0);
    cm_rpc_server_free(srv);
    if (a.runner)
        cm_loop_call(a.loop, (void (*)(void *))tw_runner_free, a.runner);
    if (a.workspaces)
        cm_loop_call(a.loop, (void (*)(void *))tw_workspaces_free, a.workspaces);
    if (a.egress)
        cm_loop_call(a.loop, (void (*)(void *))tw_egress_free, a.egress);
    cm_rpc_events_free(ev);
    cm_loop_free(a.loop);           /* runs until the last tool process is gone */
    cm_otel_stop(a.svc.otel, 2000); /* every call has ended: its span is queued */
    cm_metrics_free(a.metrics);     /* its server reads the exporter */
    cm_status_free(hub);
    cm_otel_free(a.svc.otel, 0);
    cm_rpc_shutdown();
    if (rc == 0)
        cm_info("stopped");
    goto out_app;
oom:
    cm_error("out of memory");
    rc = 1;
out_app:
    tw_netpolicy_cleanup(&a.policy);
    tw_sandbox_free(a.sandbox);
    tw_catalog_free(a.catalog);
out:
    cm_config_free(cfg, C_COUNT);
    return rc;
}
