#include "th_stack.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

int th_emulator_start(struct th_proc *p, const char *name, const char *const *env)
{
    const char *all[24];
    int n = 0, i;

    for (i = 0; env && env[i] && n < 18; i++)
        all[n++] = env[i];
    all[n++] = "EMU_ACCESS_KEY_ID=" TH_EMU_AKID;
    all[n++] = "EMU_SECRET_ACCESS_KEY=" TH_EMU_SECRET;
    all[n++] = "EMU_BOOTSTRAP_ACCESS_KEY_ID=" TH_EMU_BOOT_AKID;
    all[n++] = "EMU_BOOTSTRAP_SECRET_ACCESS_KEY=" TH_EMU_BOOT_SECRET;
    all[n] = NULL;
    return th_proc_start(p, name, AC_BIN_EMULATOR, all, TH_READY_MS);
}

int th_tool_start(struct th_proc *p, const char *name)
{
    const char *env[] = {"TOOL_WORKER_LISTEN=127.0.0.1:0", NULL};

    return th_proc_start(p, name, AC_BIN_TOOL, env, TH_READY_MS);
}

int th_stack_start(struct th_stack *s, const char *name, const struct th_proc *emu,
                   const struct th_proc *tool, const char *const *env)
{
    return th_stack_start_gw(s, name, emu, tool, env, NULL);
}

int th_stack_start_gw(struct th_stack *s, const char *name, const struct th_proc *emu,
                      const struct th_proc *tool, const char *const *env,
                      const char *const *gw_extra)
{
    char endpoint[128], tools[64], addr[64], n_agent[96], n_gw[96];
    const char *all[40], *gw_env[24];
    int n = 0, i, g = 0;

    memset(s, 0, sizeof(*s));
    snprintf(endpoint, sizeof(endpoint), "AWS_ENDPOINT_URL_BEDROCK_RUNTIME=http://127.0.0.1:%d",
             emu->port);
    snprintf(tools, sizeof(tools), "TOOL_WORKERS=127.0.0.1:%d", tool->port);
    /* getenv() returns the first match, so the caller's settings go first. */
    for (i = 0; env && env[i] && n < 28; i++)
        all[n++] = env[i];
    all[n++] = "AGENT_WORKER_LISTEN=127.0.0.1:0";
    all[n++] = tools;
    all[n++] = endpoint;
    all[n++] = "AWS_REGION=us-east-1";
    all[n++] = "MAX_ITERATIONS=3";
    all[n++] = "BEDROCK_RETRY_BASE_MS=20";
    all[n++] = "AWS_EC2_METADATA_DISABLED=true";
    all[n] = NULL;
    snprintf(n_agent, sizeof(n_agent), "%s-agent-worker", name);
    snprintf(n_gw, sizeof(n_gw), "%s-gateway", name);
    if (th_proc_start(&s->agent, n_agent, AC_BIN_AGENT, all, TH_READY_MS))
        return -1;
    snprintf(addr, sizeof(addr), "AGENT_WORKER_ADDR=127.0.0.1:%d", s->agent.port);
    for (i = 0; gw_extra && gw_extra[i] && g < 20; i++)
        gw_env[g++] = gw_extra[i];
    gw_env[g++] = "PORT=0";
    gw_env[g++] = "GATEWAY_HOST=127.0.0.1";
    gw_env[g++] = "AGENT_READY_WAIT_MS=1000"; /* a killed agent-worker: 503 within a second */
    gw_env[g++] = addr;
    gw_env[g] = NULL;
    if (th_proc_start(&s->gw, n_gw, AC_BIN_GATEWAY, gw_env, TH_READY_MS))
        return -1;
    snprintf(s->url, sizeof(s->url), "http://127.0.0.1:%d", s->gw.port);
    return 0;
}

int th_stop(struct th_proc *p)
{
    int st;

    if (p->pid <= 0)
        return 0;
    st = th_proc_stop(p, SIGTERM);
    if (st != 0)
        fprintf(stderr, "%s exited with %d on SIGTERM (see %s)\n", p->name, st, p->log_path);
    return st != 0;
}

int th_stack_stop(struct th_stack *s)
{
    return th_stop(&s->gw) + th_stop(&s->agent);
}

int th_front_start(struct th_proc *gw, const char *name, const char *host, int a, int b)
{
    char addr[300];

    snprintf(addr, sizeof(addr), "AGENT_WORKER_ADDR=%s:%d,%s:%d", host, a, host, b);
    return th_proc_start(gw, name, AC_BIN_GATEWAY,
                         (const char *[]){addr, "PORT=0", "GATEWAY_HOST=127.0.0.1",
                                          "AGENT_READY_WAIT_MS=1000", NULL},
                         TH_READY_MS);
}

int th_invoke(const struct th_stack *s, const char *body, const char *session, struct th_resp *r)
{
    char url[128], hdr[400];
    const char *headers[] = {hdr, NULL};

    snprintf(url, sizeof(url), "%s/invocations", s->url);
    snprintf(hdr, sizeof(hdr), "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id: %s",
             session ? session : "");
    return th_http("POST", url, session ? headers : NULL, body, body ? strlen(body) : 0, r);
}

long long th_emu_stat(const struct th_proc *emu, const char *key)
{
    char url[128];
    struct th_resp r;
    long long v = -1;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/_emu/stats", emu->port);
    if (th_http("GET", url, NULL, NULL, 0, &r) == 0 &&
        json_is_integer(json_object_get(r.json, key)))
        v = json_integer_value(json_object_get(r.json, key));
    th_resp_free(&r);
    return v;
}
