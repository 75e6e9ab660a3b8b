/* agentcore-bench: figures for the README and the issue notes.
 *
 * Starts the real stack (emulator, tool-worker, agent-worker, gateway) on
 * loopback and prints: cold start to the first /ping and first invocation,
 * throughput and latency of plain and tool invocations, CPU per invocation
 * of each of our processes (from /proc, so it excludes the client and the
 * emulator), and resident memory idle, under load and per held session.
 * Every loop is bounded by a count and a time limit. Usage:
 *   agentcore-bench [invocations=4000] [concurrency=8] [sessions=2000] */
#include "th_http.h"
#include "th_proc.h"

#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_SECONDS 120

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(pid_t pid)
{
    char path[64], buf[1024], *p;
    unsigned long ut = 0, st = 0;
    FILE *f;
    int i;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (!f || !fgets(buf, sizeof(buf), f)) {
        if (f)
            fclose(f);
        return 0;
    }
    fclose(f);
    p = strrchr(buf, ')');
    for (i = 0; p && i < 12; i++) /* fields 14 and 15: utime, stime */
        p = strchr(p + 1, ' ');
    if (p)
        sscanf(p + 1, "%lu %lu", &ut, &st);
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    long kb = 0;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    while (f && fgets(line, sizeof(line), f)) {
        if (!strncmp(line, "VmRSS:", 6))
            sscanf(line + 6, "%ld", &kb);
    }
    if (f)
        fclose(f);
    return kb;
}

struct load {
    const char *url;
    const char *body;
    int per_thread;
    int session_base; /* >= 0: each request uses its own session id */
    double *lat;
    int errors;
    double deadline;
};

static void *worker(void *p)
{
    struct load *l = p;
    CURL *h = curl_easy_init();
    struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
    FILE *devnull = fopen("/dev/null", "w");
    int i;

    hd = curl_slist_append(hd, "Expect:");
    curl_easy_setopt(h, CURLOPT_URL, l->url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, devnull);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    for (i = 0; i < l->per_thread && now_s() < l->deadline; i++) {
        char body[256];
        long status = 0;
        double t0 = now_s();

        if (l->session_base >= 0) {
            snprintf(body, sizeof(body),
                     "{\"prompt\":\"hello\",\"session_id\":\"bench-session-%08d-pad-to-33-chars\"}",
                     l->session_base + i);
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        } else {
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, l->body);
        }
        if (curl_easy_perform(h) != CURLE_OK)
            l->errors++;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        if (status != 200)
            l->errors++;
        l->lat[i] = now_s() - t0;
    }
    l->per_thread = i;
    fclose(devnull);
    curl_slist_free_all(hd);
    curl_easy_cleanup(h);
    return NULL;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

struct procs {
    struct th_proc *p[3]; /* gateway, agent-worker, tool-worker */
};

static void run_load(const char *title, const char *url, const char *body, int total, int conc,
                     int session_base, const struct procs *ps)
{
    pthread_t t[64];
    struct load l[64];
    double cpu0[3], cpu1[3], t0, el, *all;
    int i, k, n = 0, errors = 0;

    for (k = 0; k < 3; k++)
        cpu0[k] = cpu_s(ps->p[k]->pid);
    t0 = now_s();
    for (i = 0; i < conc; i++) {
        l[i] = (struct load){url,
                             body,
                             total / conc,
                             session_base < 0 ? -1 : session_base + i * (total / conc),
                             calloc((size_t)(total / conc), sizeof(double)),
                             0,
                             t0 + MAX_SECONDS};
        pthread_create(&t[i], NULL, worker, &l[i]);
    }
    for (i = 0; i < conc; i++)
        pthread_join(t[i], NULL);
    el = now_s() - t0;
    for (k = 0; k < 3; k++)
        cpu1[k] = cpu_s(ps->p[k]->pid);
    all = calloc((size_t)total, sizeof(double));
    for (i = 0; i < conc; i++) {
        memcpy(all + n, l[i].lat, (size_t)l[i].per_thread * sizeof(double));
        n += l[i].per_thread;
        errors += l[i].errors;
        free(l[i].lat);
    }
    qsort(all, (size_t)n, sizeof(double), cmp_d);
    printf("%-28s %6d req  %2d conc  %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  errors %d\n", title,
           n, conc, n / el, all[n / 2] * 1e3, all[(int)(n * 0.99)] * 1e3, errors);
    printf(
        "  CPU per invocation:        gateway %5.0f us  agent-worker %5.0f us  tool-worker %5.0f "
        "us\n",
        (cpu1[0] - cpu0[0]) / n * 1e6, (cpu1[1] - cpu0[1]) / n * 1e6,
        (cpu1[2] - cpu0[2]) / n * 1e6);
    free(all);
}

int main(int argc, char **argv)
{
    int total = argc > 1 ? atoi(argv[1]) : 4000, conc = argc > 2 ? atoi(argv[2]) : 8;
    int sessions = argc > 3 ? atoi(argv[3]) : 2000;
    struct th_proc emu, tool, agent, gw;
    char tools[64], endpoint[128], addr[64], url[96], ping[96];
    struct procs ps = {{&gw, &agent, &tool}};
    struct th_resp r;
    double t0, t_ping, t_inv;
    long rss_idle[3], rss_after[3], before_sessions;
    int k, tries;

    if (conc < 1 || conc > 64 || total < conc || sessions < 0)
        return 2;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (th_proc_start(&emu, "bench-emulator", AC_BIN_EMULATOR,
                      (const char *[]){"LOG_LEVEL=WARN", NULL}, 30000))
        return 1;
    /* Cold start: spawn the three runtime processes, time the first answers. */
    t0 = now_s();
    if (th_proc_start(&tool, "bench-tool-worker", AC_BIN_TOOL,
                      (const char *[]){"TOOL_WORKER_LISTEN=127.0.0.1:0", "LOG_LEVEL=WARN", NULL},
                      30000))
        return 1;
    snprintf(tools, sizeof(tools), "TOOL_WORKERS=127.0.0.1:%d", tool.port);
    snprintf(endpoint, sizeof(endpoint), "AWS_ENDPOINT_URL_BEDROCK_RUNTIME=http://127.0.0.1:%d",
             emu.port);
    if (th_proc_start(
            &agent, "bench-agent-worker", AC_BIN_AGENT,
            (const char *[]){"AGENT_WORKER_LISTEN=127.0.0.1:0", tools, endpoint,
                             "AWS_ACCESS_KEY_ID=AKIDEMULATOR0000000",
                             "AWS_SECRET_ACCESS_KEY=emulator-secret-key", "LOG_LEVEL=WARN",
                             "SESSION_MAX=1000000",
                             getenv("BENCH_AGENT_ENV") ? getenv("BENCH_AGENT_ENV") : "X=1", NULL},
            30000))
        return 1;
    snprintf(addr, sizeof(addr), "AGENT_WORKER_ADDR=127.0.0.1:%d", agent.port);
    if (th_proc_start(
            &gw, "bench-gateway", AC_BIN_GATEWAY,
            (const char *[]){"PORT=0", "GATEWAY_HOST=127.0.0.1", addr, "LOG_LEVEL=WARN", NULL},
            30000))
        return 1;
    snprintf(ping, sizeof(ping), "http://127.0.0.1:%d/ping", gw.port);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/invocations", gw.port);
    th_http("GET", ping, NULL, NULL, 0, &r);
    t_ping = now_s() - t0;
    th_resp_free(&r);
    for (tries = 0; tries < 100; tries++) {
        th_http("POST", url, NULL, "{\"prompt\":\"hi\"}", 15, &r);
        k = r.status == 200;
        th_resp_free(&r);
        if (k)
            break;
    }
    t_inv = now_s() - t0;
    printf("agentcore-bench (loopback, scripted Bedrock emulator with no latency)\n");
    printf("cold start (spawn of 3 processes ->): first /ping %.1f ms, first invocation %.1f ms\n",
           t_ping * 1e3, t_inv * 1e3);
    for (k = 0; k < 3; k++)
        rss_idle[k] = rss_kb(ps.p[k]->pid);
    printf("RSS idle:                    gateway %ld KiB  agent-worker %ld KiB  tool-worker %ld "
           "KiB\n",
           rss_idle[0], rss_idle[1], rss_idle[2]);

    run_load("plain invocation", url, "{\"prompt\":\"hello\"}", total, conc, -1, &ps);
    run_load("tool invocation (2 calls)", url,
             "{\"prompt\":\"[[tool:calculator {\\\"expression\\\":\\\"6*7\\\"}]]\"}", total / 2,
             conc, -1, &ps);
    for (k = 0; k < 3; k++)
        rss_after[k] = rss_kb(ps.p[k]->pid);
    printf("RSS after load:              gateway %ld KiB  agent-worker %ld KiB  tool-worker %ld "
           "KiB\n",
           rss_after[0], rss_after[1], rss_after[2]);
    if (sessions >= conc) {
        before_sessions = rss_kb(agent.pid);
        run_load("new session each", url, NULL, sessions, conc, 0, &ps);
        printf("sessions: %d held, agent-worker RSS +%ld KiB = %.2f KiB per session (one turn "
               "each)\n",
               sessions, rss_kb(agent.pid) - before_sessions,
               (double)(rss_kb(agent.pid) - before_sessions) / sessions);
    }
    th_proc_stop(&gw, SIGTERM);
    th_proc_stop(&agent, SIGTERM);
    th_proc_stop(&tool, SIGTERM);
    th_proc_stop(&emu, SIGTERM);
    curl_global_cleanup();
    return 0;
}
