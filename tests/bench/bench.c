/* agentcore-bench: figures for the README and the issue notes, measured the
 * way users run the runtime (../DEVELOPERS.md, "Measure what users see").
 *
 * It starts the real stack (emulator, tool-worker, agent-worker, gateway) on
 * loopback and prints:
 *   - cold start with the three processes spawned at the same moment (as s6
 *     does): first /ping 200, first successful invocation, non-200 answers in
 *     between (median of 10 runs);
 *   - model latency 0, 50 clients: throughput, latency, CPU per invocation of
 *     each of our processes (from /proc: the client and the emulator are not
 *     counted), and idle RSS;
 *   - model latency 200 ms, 50 clients: throughput against the 250 req/s
 *     ceiling, p50/p99;
 *   - 2,000 concurrent streaming invocations each waiting 2 s on the model:
 *     all succeed?, p99, /ping p99 meanwhile, RSS of every process;
 *   - CPU while waiting: streams that wait 10 s on the model, CPU of all our
 *     processes per invocation-second of waiting;
 *   - tool invocations and memory per held session;
 *   - a sandboxed tool call (shell "true": bubblewrap, the helper's
 *     confinement, /bin/sh) from Execute to its answer, p50/p99, one at a
 *     time and 8 at once, against the in-process calculator, and the CPU of
 *     the tool-worker and its children per call.
 * Model latency is the emulator's [[sleep:MS]]. Every loop is bounded by a
 * count and a time limit. Usage:
 *   agentcore-bench [invocations=4000] [concurrency=50] [sessions=2000] [streams=2000] */
#include "cm_main.h"
#include "cm_rpc.h"
#include "th_http.h"
#include "th_proc.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agentcore.pb-c.h"

#define MAX_SECONDS 120
#define COLD_RUNS 10

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

/* On-CPU nanoseconds of every live thread of |pid| (schedstat): precise, for
 * short windows in which threads neither start nor end. */
static double cpu_live_s(pid_t pid)
{
    char path[96];
    double sum = 0;
    DIR *d;
    struct dirent *e;

    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    d = opendir(path);
    while (d && (e = readdir(d))) {
        char f[320];
        unsigned long long ns = 0;
        FILE *fp;

        if (e->d_name[0] == '.')
            continue;
        snprintf(f, sizeof(f), "/proc/%d/task/%s/schedstat", (int)pid, e->d_name);
        fp = fopen(f, "r");
        if (fp && fscanf(fp, "%llu", &ns) == 1)
            sum += (double)ns / 1e9;
        if (fp)
            fclose(fp);
    }
    if (d)
        closedir(d);
    return sum;
}

/* One "Name:   N kB" figure of a /proc file of |pid|. */
static long proc_kb(pid_t pid, const char *file, const char *name)
{
    char path[64], line[256];
    size_t n = strlen(name);
    long kb = 0;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
    f = fopen(path, "r");
    while (f && fgets(line, sizeof(line), f)) {
        if (!strncmp(line, name, n) && line[n] == ':')
            sscanf(line + n + 1, "%ld", &kb);
    }
    if (f)
        fclose(f);
    return kb;
}

static long rss_kb(pid_t pid)
{
    return proc_kb(pid, "status", "VmRSS");
}

/* Proportional set size: a shared library's pages split between the
 * processes that map them, so the three add up to what they use together. */
static long pss_kb(pid_t pid)
{
    return proc_kb(pid, "smaps_rollup", "Pss");
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static double pct(double *v, int n, double q)
{
    int i = (int)(n * q);

    if (n <= 0)
        return 0;
    return v[i < n ? i : n - 1];
}

struct stack {
    struct th_proc emu, tool, agent, gw;
    char url[96], ping[96];
};

static struct th_proc *ours(struct stack *s, int k)
{
    return k == 0 ? &s->gw : k == 1 ? &s->agent : &s->tool;
}

static void cpu_snap(struct stack *s, double out[3])
{
    int k;

    for (k = 0; k < 3; k++)
        out[k] = cpu_s(ours(s, k)->pid);
}

static double live_snap(struct stack *s, double out[3])
{
    int k;

    for (k = 0; k < 3; k++)
        out[k] = cpu_live_s(ours(s, k)->pid);
    return out[0] + out[1] + out[2];
}

/* CPU of our processes over |secs| with nothing to do: the background (health
 * and status checks, gRPC's timers). */
static double idle_cpu_per_s(struct stack *s, double secs)
{
    double a[3], b[3], x, y;
    struct timespec t = {(time_t)secs, (long)((secs - (time_t)secs) * 1e9)};

    x = live_snap(s, a);
    nanosleep(&t, NULL);
    y = live_snap(s, b);
    return (y - x) / secs;
}

/* ---- load: one curl multi handle keeps |conc| requests in flight ---- */

static size_t discard(char *p, size_t sz, size_t n, void *ud)
{
    (void)p, (void)ud;
    return sz * n;
}

struct run {
    int done, errors;
    double *lat, elapsed;
};

static CURL *easy_for(const char *url, const char *body, struct curl_slist *hd)
{
    CURL *h = curl_easy_init();

    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)MAX_SECONDS);
    return h;
}

/* |total| requests of |body| (or, with |session_base| >= 0, one new session
 * each), |conc| at a time. */
static void load(const char *url, const char *body, int total, int conc, int session_base,
                 struct run *out)
{
    CURLM *m = curl_multi_init();
    struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
    char(*bodies)[160] = NULL;
    double t0 = now_s();
    int started = 0, running = 0, i;

    hd = curl_slist_append(hd, "Expect:");
    memset(out, 0, sizeof(*out));
    out->lat = calloc((size_t)total, sizeof(double));
    if (session_base >= 0)
        bodies = calloc((size_t)total, sizeof(*bodies));
    for (i = 0; i < conc && started < total; i++, started++) {
        const char *b = body;

        if (bodies) {
            snprintf(bodies[started], sizeof(bodies[0]),
                     "{\"prompt\":\"hello\",\"session_id\":\"bench-session-%08d-pad-to-33-chars\"}",
                     session_base + started);
            b = bodies[started];
        }
        curl_multi_add_handle(m, easy_for(url, b, hd));
    }
    while (out->done < total && now_s() - t0 < MAX_SECONDS) {
        CURLMsg *msg;
        int left;

        curl_multi_perform(m, &running);
        while ((msg = curl_multi_info_read(m, &left))) {
            CURL *h = msg->easy_handle;
            long status = 0;
            curl_off_t us = 0;

            if (msg->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
            curl_easy_getinfo(h, CURLINFO_TOTAL_TIME_T, &us);
            if (msg->data.result != CURLE_OK || status != 200)
                out->errors++;
            out->lat[out->done++] = (double)us / 1e6;
            curl_multi_remove_handle(m, h);
            if (started < total) {
                if (bodies) {
                    snprintf(bodies[started], sizeof(bodies[0]),
                             "{\"prompt\":\"hello\",\"session_id\":\"bench-session-%08d-pad-to-"
                             "33-chars\"}",
                             session_base + started);
                    curl_easy_setopt(h, CURLOPT_POSTFIELDS, bodies[started]);
                }
                started++;
                curl_multi_add_handle(m, h); /* the same handle keeps its connection */
            } else {
                curl_easy_cleanup(h);
            }
        }
        curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    out->elapsed = now_s() - t0;
    curl_multi_cleanup(m);
    curl_slist_free_all(hd);
    free(bodies);
    qsort(out->lat, (size_t)out->done, sizeof(double), cmp_d);
}

static void run_load(const char *title, struct stack *s, const char *body, int total, int conc,
                     int session_base)
{
    double c0[3], c1[3], all;
    struct run r;

    cpu_snap(s, c0);
    load(s->url, body, total, conc, session_base, &r);
    cpu_snap(s, c1);
    all = (c1[0] - c0[0]) + (c1[1] - c0[1]) + (c1[2] - c0[2]);
    printf("%-28s %6d req  %4d conc  %8.0f req/s  p50 %7.2f ms  p99 %7.2f ms  errors %d\n", title,
           r.done, conc, r.done / r.elapsed, pct(r.lat, r.done, 0.5) * 1e3,
           pct(r.lat, r.done, 0.99) * 1e3, r.errors);
    printf("  CPU per invocation: all %5.0f us = gateway %5.0f + agent-worker %5.0f + "
           "tool-worker %5.0f\n",
           all / r.done * 1e6, (c1[0] - c0[0]) / r.done * 1e6, (c1[1] - c0[1]) / r.done * 1e6,
           (c1[2] - c0[2]) / r.done * 1e6);
    free(r.lat);
}

/* ---- the stack ---- */

static int emu_start(struct th_proc *emu)
{
    return th_proc_start(emu, "bench-emulator", AC_BIN_EMULATOR,
                         (const char *[]){"LOG_LEVEL=WARN", NULL}, 30000);
}

/* Spawns the three of ours at the same moment on ports chosen beforehand (so
 * none waits for another's readiness), as s6 starts them. */
/* Settings the next stacks' agent-worker gets besides the defaults (the
 * session store phase sets them), and settings all three get (the tracing
 * phase). */
static const char *agent_extra[4];
static const char *all_extra[4];
#define EXTRA(a, i) ((a)[i] ? (a)[i] : "X=1")
/* BENCH_ALL_ENV=NAME=VALUE: one setting all three get (for A/B runs). */
#define ALL_ENV (getenv("BENCH_ALL_ENV") ? getenv("BENCH_ALL_ENV") : "X=1")

static int spawn_three(struct stack *s, const char *tag)
{
    char tl[64], tw[64], al[64], aa[64], gp[32], ep[128], n[3][64];
    int t = th_free_port(), a = th_free_port(), g = th_free_port();

    snprintf(tl, sizeof(tl), "TOOL_WORKER_LISTEN=127.0.0.1:%d", t);
    snprintf(tw, sizeof(tw), "TOOL_WORKERS=127.0.0.1:%d", t);
    snprintf(al, sizeof(al), "AGENT_WORKER_LISTEN=127.0.0.1:%d", a);
    snprintf(aa, sizeof(aa), "AGENT_WORKER_ADDR=127.0.0.1:%d", a);
    snprintf(gp, sizeof(gp), "PORT=%d", g);
    snprintf(ep, sizeof(ep), "AWS_ENDPOINT_URL_BEDROCK_RUNTIME=http://127.0.0.1:%d", s->emu.port);
    snprintf(n[0], sizeof(n[0]), "bench-%s-gateway", tag);
    snprintf(n[1], sizeof(n[1]), "bench-%s-agent-worker", tag);
    snprintf(n[2], sizeof(n[2]), "bench-%s-tool-worker", tag);
    snprintf(s->url, sizeof(s->url), "http://127.0.0.1:%d/invocations", g);
    snprintf(s->ping, sizeof(s->ping), "http://127.0.0.1:%d/ping", g);
    if (th_proc_spawn(&s->gw, n[0], AC_BIN_GATEWAY,
                      (const char *[]){gp, "GATEWAY_HOST=127.0.0.1", aa, "LOG_LEVEL=WARN",
                                       EXTRA(all_extra, 0), EXTRA(all_extra, 1),
                                       EXTRA(all_extra, 2), ALL_ENV, NULL}) ||
        th_proc_spawn(
            &s->agent, n[1], AC_BIN_AGENT,
            (const char *[]){al, tw, ep, "AWS_ACCESS_KEY_ID=AKIDEMULATOR0000000",
                             "AWS_SECRET_ACCESS_KEY=emulator-secret-key", "LOG_LEVEL=WARN",
                             "SESSION_MAX=1000000",
                             getenv("BENCH_AGENT_ENV") ? getenv("BENCH_AGENT_ENV") : "X=1",
                             agent_extra[0] ? agent_extra[0] : "X=1",
                             agent_extra[1] ? agent_extra[1] : "X=1",
                             agent_extra[2] ? agent_extra[2] : "X=1", EXTRA(all_extra, 0),
                             EXTRA(all_extra, 1), EXTRA(all_extra, 2), ALL_ENV, NULL}) ||
        th_proc_spawn(&s->tool, n[2], AC_BIN_TOOL,
                      (const char *[]){tl, "LOG_LEVEL=WARN", EXTRA(all_extra, 0),
                                       EXTRA(all_extra, 1), EXTRA(all_extra, 2), ALL_ENV, NULL}))
        return -1;
    return 0;
}

static int wait_three(struct stack *s)
{
    int k, bad = 0;

    for (k = 0; k < 3; k++)
        bad |= th_proc_wait_ready(ours(s, k), 30000);
    return bad;
}

static void stop_three(struct stack *s)
{
    int k;

    for (k = 0; k < 3; k++)
        th_proc_stop(ours(s, k), SIGTERM);
}

/* One cold start: from the spawn to the first /ping 200 and the first 200
 * invocation; answers other than 200 on the way are counted (connections
 * refused before the gateway listens are not answers). */
static int cold_start(struct stack *s, int run, double *t_ping, double *t_inv, int *non200)
{
    double t0 = now_s();
    struct th_resp r;
    char tag[16];
    int ok = 0;

    *non200 = 0;
    snprintf(tag, sizeof(tag), "cold%d", run);
    if (spawn_three(s, tag))
        return -1;
    while (now_s() - t0 < 10) {
        if (th_http("GET", s->ping, NULL, NULL, 0, &r) == 0 && r.status) {
            ok = r.status == 200;
            *non200 += !ok;
        }
        th_resp_free(&r);
        if (ok)
            break;
    }
    *t_ping = now_s() - t0;
    for (ok = 0; !ok && now_s() - t0 < 10;) {
        if (th_http("POST", s->url, NULL, "{\"prompt\":\"hi\"}", 15, &r) == 0 && r.status) {
            ok = r.status == 200;
            *non200 += !ok;
        }
        th_resp_free(&r);
    }
    *t_inv = now_s() - t0;
    wait_three(s);
    stop_three(s);
    return ok ? 0 : -1;
}

/* ---- many streams that wait ---- */

struct pinger {
    const char *url;
    volatile int stop;
    double lat[4096];
    int n;
};

static void *ping_loop(void *p)
{
    struct pinger *pg = p;
    CURL *h = curl_easy_init();
    struct timespec gap = {0, 20 * 1000000L};

    curl_easy_setopt(h, CURLOPT_URL, pg->url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    while (!pg->stop && pg->n < 4096) {
        double t0 = now_s();

        curl_easy_perform(h);
        pg->lat[pg->n++] = now_s() - t0;
        nanosleep(&gap, NULL); /* one ping every ~20 ms: a health checker's pace */
    }
    curl_easy_cleanup(h);
    return NULL;
}

static long long emu_stat(struct stack *s, const char *key)
{
    char url[96];
    struct th_resp r;
    long long v = -1;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/_emu/stats", s->emu.port);
    if (th_http("GET", url, NULL, NULL, 0, &r) == 0 && r.json)
        v = (long long)json_integer_value(json_object_get(r.json, key));
    th_resp_free(&r);
    return v;
}

/* The 2,000-stream burst with a client that costs next to nothing: every
 * request is a pre-built HTTP/1.1 POST on a non-blocking socket, and one
 * epoll thread reads the answers, noting when each chunked body ends. (curl
 * spent more CPU per stream than the runtime did, on the same two cores.) */
struct raw {
    int fd;
    double t0, t1;
    char tail[16]; /* the last bytes seen: a chunked body ends with 0\r\n\r\n */
    int ok, done;
};

/* With |ramp_ms| > 0 the connections open evenly over that time instead of
 * all at once (every stream is still in flight at the same time when the
 * wait is longer than the ramp). */
/* Opens connection |i| and sends its request as soon as the connection is
 * up, as independent clients do: at once when the loopback handshake is
 * already done, else from the epoll loop. (Sending none until all 2,000
 * connections were open held every request back by the time the client took
 * to open the rest, ~0.1 s.) */
static void raw_open(struct raw *r, int i, int ep, const struct sockaddr_in *sa, const char *req,
                     int reqlen, int *left)
{
    struct epoll_event ev = {EPOLLOUT, {.u32 = (uint32_t)i}};
    ssize_t n;

    r[i].fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    r[i].t0 = now_s();
    if (r[i].fd < 0 ||
        (connect(r[i].fd, (const struct sockaddr *)sa, sizeof(*sa)) && errno != EINPROGRESS)) {
        if (r[i].fd >= 0)
            close(r[i].fd);
        r[i].done = 1;
        (*left)--;
        return;
    }
    n = write(r[i].fd, req, (size_t)reqlen);
    if (n == reqlen) {
        ev.events = EPOLLIN;
    } else if (n >= 0 || (errno != EAGAIN && errno != ENOTCONN)) {
        close(r[i].fd); /* a part of the request, or a refusal: this stream failed */
        r[i].done = 1;
        (*left)--;
        return;
    }
    epoll_ctl(ep, EPOLL_CTL_ADD, r[i].fd, &ev);
}

static int raw_burst(int port, const char *body, int n, int ramp_ms, struct run *out)
{
    char req[512];
    int ep = epoll_create1(0), i, left = n, reqlen, opened = 0;
    struct raw *r = calloc((size_t)n, sizeof(*r));
    struct sockaddr_in sa;
    double t0 = now_s();

    memset(out, 0, sizeof(*out));
    out->lat = calloc((size_t)n, sizeof(double));
    reqlen = snprintf(req, sizeof(req),
                      "POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                      "application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                      strlen(body), body);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    while (left > 0 && now_s() - t0 < MAX_SECONDS) {
        struct epoll_event evs[256];
        int k, m, wait_ms = 1000;

        /* Open what is due: all at once, or evenly over the ramp. */
        while (opened < n && (ramp_ms <= 0 || (now_s() - t0) * 1e3 >= (double)opened * ramp_ms / n))
            raw_open(r, opened++, ep, &sa, req, reqlen, &left);
        if (opened < n)
            wait_ms = 1;
        m = epoll_wait(ep, evs, 256, wait_ms);
        for (k = 0; k < m; k++) {
            struct raw *x = &r[evs[k].data.u32];
            char buf[16384];
            ssize_t got;

            if (x->done)
                continue;
            if (evs[k].events & EPOLLOUT) {
                struct epoll_event in = {EPOLLIN, {.u32 = evs[k].data.u32}};

                if (write(x->fd, req, (size_t)reqlen) != reqlen) {
                    x->done = 1;
                    left--;
                    close(x->fd);
                    continue;
                }
                epoll_ctl(ep, EPOLL_CTL_MOD, x->fd, &in);
                continue;
            }
            while ((got = read(x->fd, buf, sizeof(buf))) > 0) {
                char joined[sizeof(x->tail) + 16];
                size_t have = strlen(x->tail), take = got > 15 ? 15 : (size_t)got, all;

                if (!x->ok)
                    x->ok = !strncmp(buf, "HTTP/1.1 200", 12);
                /* keep the last 15 bytes of everything read so far */
                memcpy(joined, x->tail, have);
                memcpy(joined + have, buf + got - take, take);
                all = have + take;
                if (all > 15) {
                    memmove(joined, joined + all - 15, 15);
                    all = 15;
                }
                memcpy(x->tail, joined, all);
                x->tail[all] = '\0';
            }
            if (got == 0 || (got < 0 && errno != EAGAIN) || strstr(x->tail, "0\r\n\r\n")) {
                x->t1 = now_s();
                x->done = 1;
                left--;
                epoll_ctl(ep, EPOLL_CTL_DEL, x->fd, NULL);
                close(x->fd);
                if (!x->ok || !strstr(x->tail, "0\r\n\r\n"))
                    out->errors++;
                else
                    out->lat[out->done++] = x->t1 - x->t0;
            }
        }
    }
    for (i = 0; i < opened; i++) {
        if (!r[i].done) {
            out->errors++;
            close(r[i].fd);
        }
    }
    out->elapsed = now_s() - t0;
    close(ep);
    free(r);
    qsort(out->lat, (size_t)out->done, sizeof(double), cmp_d);
    return 0;
}

struct bg_load {
    const char *url, *body;
    int n;
    struct run r;
    int raw_port; /* > 0: raw_burst on this port instead of curl */
    int ramp_ms;
};

static void *bg_load_main(void *p)
{
    struct bg_load *b = p;

    if (b->raw_port > 0)
        raw_burst(b->raw_port, b->body, b->n, b->ramp_ms, &b->r);
    else
        load(b->url, b->body, b->n, b->n, -1, &b->r);
    return NULL;
}

/* Waits (bounded) until the emulator holds |n| model calls more than |base|. */
static void wait_emulator(struct stack *s, long long base, int n)
{
    double t0 = now_s();

    while (emu_stat(s, "converse") - base < n && now_s() - t0 < 60) {
        struct timespec t = {0, 10 * 1000000L};

        nanosleep(&t, NULL); /* the bench's own wait; the runtime is not polled */
    }
}

/* |n| streaming invocations that each wait |wait_ms| on the model, all at
 * once. Prints success, latency, /ping meanwhile and RSS at the peak; with
 * |cpu_window|, also the CPU our processes spend while all of them wait. */
static void many_streams(struct stack *s, int n, int wait_ms, int ramp_ms, int cpu_window)
{
    double idle = cpu_window ? idle_cpu_per_s(s, 3.0) : 0;
    char body[160];
    struct pinger pg;
    pthread_t pt;
    double c0[3], c1[3], w0 = 0, w1 = 0, all;
    long rss[3];
    struct run r;
    long long base = emu_stat(s, "converse");
    int k;

    snprintf(body, sizeof(body), "{\"prompt\":\"[[sleep:%d]] wait for it\",\"stream\":true}",
             wait_ms);
    memset(&pg, 0, sizeof(pg));
    pg.url = s->ping;
    if (cpu_window) {
        /* Measure only while every stream waits on the model: start once the
         * emulator holds all of them, stop well before they are due. */
        struct bg_load bg = {s->url, body, n, {0, 0, NULL, 0}, 0, 0};
        pthread_t lt;

        pthread_create(&lt, NULL, bg_load_main, &bg);
        wait_emulator(s, base, n);
        {
            /* a second for the last requests' set-up to settle */
            struct timespec t = {1, 0};

            nanosleep(&t, NULL);
        }
        live_snap(s, c0);
        w0 = now_s();
        {
            struct timespec t = {(wait_ms - 3000) / 1000, 0};

            nanosleep(&t, NULL);
        }
        w1 = now_s();
        live_snap(s, c1);
        for (k = 0; k < 3; k++)
            rss[k] = rss_kb(ours(s, k)->pid);
        pthread_join(lt, NULL);
        all = (c1[0] - c0[0]) + (c1[1] - c0[1]) + (c1[2] - c0[2]);
        printf("waiting on the model: %d streams x %.1f s of pure waiting: CPU %.2f ms in all "
               "(gateway %.2f, agent-worker %.2f, tool-worker %.2f) = %.2f us per "
               "invocation-second%s\n",
               n, w1 - w0, all * 1e3, (c1[0] - c0[0]) * 1e3, (c1[1] - c0[1]) * 1e3,
               (c1[2] - c0[2]) * 1e3, all / (n * (w1 - w0)) * 1e6,
               bg.r.errors || bg.r.done < n ? "  (some streams FAILED)" : "");
        {
            double marginal = (all - idle * (w1 - w0)) / (n * (w1 - w0)) * 1e6;

            printf("  the same processes with nothing in flight: %.3f ms/s (gRPC's own timers); "
                   "the waiting itself: %s%.2f us per invocation-second\n",
                   idle * 1e3, marginal < 0 ? "below the noise, " : "",
                   marginal < 0 ? 0.0 : marginal);
        }
        printf("  RSS with them in flight:  gateway %ld KiB  agent-worker %ld KiB  tool-worker "
               "%ld KiB\n",
               rss[0], rss[1], rss[2]);
        free(bg.r.lat);
        return;
    }
    {
        double b0[3], b1[3], e0 = cpu_s(s->emu.pid), e1;
        struct rusage u0, u1;
        struct bg_load bg = {s->url, body, n, {0, 0, NULL, 0}, atoi(strrchr(s->ping, ':') + 1),
                             ramp_ms};
        pthread_t lt;
        long before[3];

        for (k = 0; k < 3; k++)
            before[k] = rss_kb(ours(s, k)->pid);
        cpu_snap(s, b0);
        getrusage(RUSAGE_SELF, &u0);
        pthread_create(&pt, NULL, ping_loop, &pg);
        pthread_create(&lt, NULL, bg_load_main, &bg);
        wait_emulator(s, base, n); /* every stream is in flight: the peak */
        for (k = 0; k < 3; k++)
            rss[k] = rss_kb(ours(s, k)->pid);
        pthread_join(lt, NULL);
        r = bg.r;
        getrusage(RUSAGE_SELF, &u1);
        cpu_snap(s, b1);
        e1 = cpu_s(s->emu.pid);
        printf("  CPU for the burst: gateway %.0f ms, agent-worker %.0f ms, tool-worker %.0f ms; "
               "emulator %.0f ms, this client %.0f ms\n",
               (b1[0] - b0[0]) * 1e3, (b1[1] - b0[1]) * 1e3, (b1[2] - b0[2]) * 1e3, (e1 - e0) * 1e3,
               ((u1.ru_utime.tv_sec - u0.ru_utime.tv_sec) +
                (u1.ru_stime.tv_sec - u0.ru_stime.tv_sec) +
                ((u1.ru_utime.tv_usec - u0.ru_utime.tv_usec) +
                 (u1.ru_stime.tv_usec - u0.ru_stime.tv_usec)) /
                    1e6) *
                   1e3);
        printf(
            "  RSS with all %d in flight: gateway %ld KiB, agent-worker %ld KiB, tool-worker %ld "
            "KiB = %.1f + %.1f KiB per stream\n",
            n, rss[0], rss[1], rss[2], (double)(rss[0] - before[0]) / n,
            (double)(rss[1] - before[1]) / n);
    }
    pg.stop = 1;
    pthread_join(pt, NULL);
    qsort(pg.lat, (size_t)pg.n, sizeof(double), cmp_d);
    printf("%d streams waiting %.1f s, %s: %d ok, %d failed  p50 %.2f s  p99 %.2f s  (%.1f s in "
           "all)\n",
           n, wait_ms / 1e3, ramp_ms ? "opened over 0.5 s" : "opened at the same moment", r.done,
           n - r.done, pct(r.lat, r.done, 0.5), pct(r.lat, r.done, 0.99), r.elapsed);
    printf("  /ping meanwhile: %d pings  p50 %.2f ms  p99 %.2f ms  max %.2f ms\n", pg.n,
           pct(pg.lat, pg.n, 0.5) * 1e3, pct(pg.lat, pg.n, 0.99) * 1e3,
           pg.n ? pg.lat[pg.n - 1] * 1e3 : 0);
    free(r.lat);
}

/* The tool-worker's CPU seconds including the children it reaped (the
 * sandbox processes): fields 14-17 of /proc/PID/stat. */
static double cpu_with_children_s(pid_t pid)
{
    char path[64], buf[1024], *p;
    unsigned long v[4] = {0, 0, 0, 0};
    FILE *f;
    int i;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if (!(f = fopen(path, "r")))
        return 0;
    if (!fgets(buf, sizeof(buf), f))
        buf[0] = '\0';
    fclose(f);
    p = strrchr(buf, ')');
    for (i = 0; p && i < 12; i++)
        p = strchr(p + 1, ' ');
    if (p)
        sscanf(p + 1, "%lu %lu %lu %lu", &v[0], &v[1], &v[2], &v[3]);
    return (double)(v[0] + v[1] + v[2] + v[3]) / (double)sysconf(_SC_CLK_TCK);
}

static const struct cm_rpc_method exec_method = {
    "/agentcore.v1.ToolService/Execute", &agentcore__v1__execute_request__descriptor,
    &agentcore__v1__execute_response__descriptor, CM_RPC_UNARY};

struct tool_run {
    struct cm_rpc_client *c;
    const char *tool, *input;
    const char *session; /* NULL: a new session for every call */
    int gap_ms;          /* pause before each call: the model's turn between two */
    int n, failed, id;
    double *lat;
};

static void *tool_calls(void *p)
{
    struct tool_run *r = p;
    int i;

    for (i = 0; i < r->n; i++) {
        Agentcore__V1__ExecuteRequest req = AGENTCORE__V1__EXECUTE_REQUEST__INIT;
        struct cm_rpc_call_opts o = {0};
        struct cm_rpc_status st;
        ProtobufCMessage *resp = NULL;
        struct cm_rpc_meta md;
        char session[64];
        double t0;

        if (r->session)
            snprintf(session, sizeof(session), "%s", r->session);
        else
            snprintf(session, sizeof(session), "bench-new-%d-%d-%d", (int)getpid(), r->id, i);
        if (r->gap_ms) {
            struct timespec ts = {0, r->gap_ms * 1000000L};

            nanosleep(&ts, NULL);
        }
        md.key = CM_RPC_MD_SESSION_ID;
        md.value = session;
        o.meta = &md;
        o.n_meta = 1;
        t0 = now_s();
        req.tool_use_id = "bench";
        req.name = (char *)r->tool;
        req.input_json = (char *)r->input;
        o.timeout_ms = 10000;
        if (cm_rpc_call(r->c, &exec_method, &req.base, &resp, &o, &st) ||
            ((Agentcore__V1__ExecuteResponse *)resp)->status !=
                AGENTCORE__V1__TOOL_STATUS__TOOL_STATUS_SUCCESS)
            r->failed++;
        r->lat[i] = now_s() - t0;
        if (resp)
            protobuf_c_message_free_unpacked(resp, NULL);
    }
    cm_rpc_thread_done();
    return NULL;
}

/* |conc| threads making |n| calls of |tool| in all, in |session| (NULL: a
 * new one each call), each |gap_ms| after the last answer; prints p50/p99. */
static void tool_latency(struct stack *s, struct cm_rpc_client *c, const char *title,
                         const char *tool, const char *input, const char *session, int gap_ms,
                         int n, int conc)
{
    struct tool_run r[8];
    pthread_t t[8];
    double *all = calloc((size_t)n, sizeof(double)), cpu0, wall0, cpu, wall;
    int k, m = 0, failed = 0, per = n / conc;

    cpu0 = cpu_with_children_s(s->tool.pid);
    wall0 = now_s();
    for (k = 0; k < conc; k++) {
        r[k] = (struct tool_run){c, tool, input, session, gap_ms, per, 0, k, all + k * per};
        pthread_create(&t[k], NULL, tool_calls, &r[k]);
    }
    for (k = 0; k < conc; k++) {
        pthread_join(t[k], NULL);
        failed += r[k].failed;
        m += r[k].n;
    }
    wall = now_s() - wall0 - (double)gap_ms * per / 1e3;
    cpu = cpu_with_children_s(s->tool.pid) - cpu0;
    qsort(all, (size_t)m, sizeof(double), cmp_d);
    printf("  %-34s %d calls, %d at once: p50 %.2f ms  p99 %.2f ms  max %.2f ms  (%.0f calls/s, "
           "tool-worker + sandbox CPU %.2f ms per call, %d failed)\n",
           title, m, conc, pct(all, m, 0.5) * 1e3, pct(all, m, 0.99) * 1e3, all[m - 1] * 1e3,
           m / wall, cpu * 1e3 / m, failed);
    free(all);
}

/* Launch to result of a sandboxed call, straight to the tool-worker over
 * gRPC (the agent-worker's side of a tool call). |warm|: the stack's
 * tool-worker sets sandboxes up ahead (the default), else every call sets up
 * its own (TOOL_SANDBOX_WARM=0). */
static void sandbox_overhead(struct stack *s, int n, int warm)
{
    char target[64], err[256];
    struct cm_rpc_client *c;

    snprintf(target, sizeof(target), "127.0.0.1:%d", s->tool.port);
    c = cm_rpc_client_new(target, &exec_method, 1, 1 << 24, err, sizeof(err));
    if (!c)
        return;
    if (!warm) {
        printf("sandboxed tool call, TOOL_SANDBOX_WARM=0 (every sandbox set up for its call):\n");
        tool_latency(s, c, "shell \"true\", one session (cold)", "shell", "{\"command\":\"true\"}",
                     "bench", 20, n / 2, 1);
        cm_rpc_client_free(c);
        return;
    }
    printf("sandboxed tool call, Execute to answer on loopback (goal p50 <= 5 ms, p99 <= 15 ms); "
           "warm: its sandbox was set up before the call came (TOOL_SANDBOX_WARM), for the "
           "session's next call or a new session's first; 20 ms between calls stand for the "
           "model's turn:\n");
    tool_latency(s, c, "warm-up", "shell", "{\"command\":\"true\"}", "bench", 0, 20, 1);
    tool_latency(s, c, "in-process calculator (baseline)", "calculator", "{\"expression\":\"6*7\"}",
                 "bench", 0, n, 1);
    tool_latency(s, c, "shell \"true\", one session (warm)", "shell", "{\"command\":\"true\"}",
                 "bench", 20, n / 2, 1);
    tool_latency(s, c, "  the same back to back", "shell", "{\"command\":\"true\"}", "bench", 0, n,
                 1);
    tool_latency(s, c, "shell \"true\", new sessions (warm)", "shell", "{\"command\":\"true\"}",
                 NULL, 20, n / 2, 1);
    tool_latency(s, c, "shell \"true\", one session", "shell", "{\"command\":\"true\"}", "bench", 0,
                 n, 8);
    tool_latency(s, c, "file_write, one session (warm)", "file_write",
                 "{\"path\":\"bench.txt\",\"content\":\"x\"}", "bench", 20, n / 2, 1);
    cm_rpc_client_free(c);
}

/* ---- large bodies: the gateway's body budget under concurrent 90 MB prompts ---- */

#define BIG_CLIENTS 20
#define BIG_BYTES (90u * 1024 * 1024)
#define BIG_ATTEMPTS 600

/* |BIG_CLIENTS| clients post a 90 MB prompt at the same moment, each trying
 * again after a 503's Retry-After (at most BIG_ATTEMPTS times): how many were
 * refused at first, how long until all were answered, and the gateway's peak
 * RSS against MAX_INFLIGHT_BODY_BYTES. */
static void big_bodies(struct stack *s, long budget_kb)
{
    static const char head[] = "{\"prompt\":\"[[max_tokens]] ", tail[] = "\"}";
    char *body = malloc(BIG_BYTES);
    CURLM *m = curl_multi_init();
    CURL *h[BIG_CLIENTS];
    double retry_at[BIG_CLIENTS], t0 = now_s();
    int tries[BIG_CLIENTS], done = 0, first503 = 0, n503 = 0, other = 0, i, running;
    long idle_kb = rss_kb(s->gw.pid);

    if (!body || !m) {
        free(body);
        curl_multi_cleanup(m);
        return;
    }
    memcpy(body, head, sizeof(head) - 1);
    memset(body + sizeof(head) - 1, 'a', BIG_BYTES - (sizeof(head) - 1) - (sizeof(tail) - 1));
    memcpy(body + BIG_BYTES - (sizeof(tail) - 1), tail, sizeof(tail) - 1);
    for (i = 0; i < BIG_CLIENTS; i++) {
        h[i] = curl_easy_init();
        curl_easy_setopt(h[i], CURLOPT_URL, s->url);
        curl_easy_setopt(h[i], CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h[i], CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)BIG_BYTES);
        curl_easy_setopt(h[i], CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(h[i], CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h[i], CURLOPT_TIMEOUT, (long)MAX_SECONDS);
        curl_easy_setopt(h[i], CURLOPT_PRIVATE, (void *)(intptr_t)i);
        curl_multi_add_handle(m, h[i]);
        tries[i] = 1;
        retry_at[i] = 0;
    }
    while (done < BIG_CLIENTS) {
        CURLMsg *msg;
        int left;

        curl_multi_perform(m, &running);
        while ((msg = curl_multi_info_read(m, &left))) {
            long st = 0;
            intptr_t k;

            if (msg->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&k);
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &st);
            curl_multi_remove_handle(m, msg->easy_handle);
            if (st == 503 && tries[k] < BIG_ATTEMPTS) {
                n503++;
                first503 += tries[k] == 1;
                tries[k]++;
                retry_at[k] = now_s() + 1.0; /* Retry-After: 1 */
            } else {
                other += st != 200;
                done++;
            }
        }
        for (i = 0; i < BIG_CLIENTS; i++) {
            if (retry_at[i] > 0 && now_s() >= retry_at[i]) {
                retry_at[i] = 0;
                curl_multi_add_handle(m, h[i]);
            }
        }
        curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    printf("bodies: %d clients x %u MiB prompt at once: all answered in %.1f s, %d refused with "
           "503 at first (%d 503s in all, each before its body was read), %d not 200; gateway RSS "
           "idle %.1f MiB, peak %.1f MiB (MAX_INFLIGHT_BODY_BYTES %.0f MiB)\n",
           BIG_CLIENTS, BIG_BYTES >> 20, now_s() - t0, first503, n503, other, idle_kb / 1024.0,
           proc_kb(s->gw.pid, "status", "VmHWM") / 1024.0, budget_kb / 1024.0);
    for (i = 0; i < BIG_CLIENTS; i++)
        curl_easy_cleanup(h[i]);
    curl_multi_cleanup(m);
    free(body);
}

/* BENCH_PHASES=cold,load,latency,tool,sandbox,sessions,streams,wait,stores,otel,bodies picks phases
 * (all by default), e.g. to profile one of them. */
static int phase(const char *name)
{
    const char *p = getenv("BENCH_PHASES");

    return !p || !*p || strstr(p, name) != NULL;
}

/* A new stack, started and warmed by one invocation, then left a second to
 * settle. */
static int fresh(struct stack *s, const char *tag)
{
    struct th_resp r;
    struct timespec settle = {1, 0};

    if (spawn_three(s, tag) || wait_three(s))
        return -1;
    th_http("POST", s->url, NULL, "{\"prompt\":\"hi\"}", 15, &r);
    th_resp_free(&r);
    nanosleep(&settle, NULL);
    return 0;
}

/* Each session store (SESSION_STORE): |n| new sessions, then the same
 * sessions again (a cached session is revalidated, then saved), on a fresh
 * stack each; the file store in a directory of its own, the S3 store on the
 * emulator's bucket (SigV4, conditional writes). */
static void session_stores(struct stack *s, int n, int conc)
{
    static const char *const kinds[] = {"memory", "file", "s3"};
    char dir[128], dir_env[160], endpoint[96], title[64], cmd[200];
    long before;
    int k;

    snprintf(dir, sizeof(dir), "/tmp/agentcore-bench-sessions-%ld", (long)getpid());
    snprintf(dir_env, sizeof(dir_env), "SESSION_DIR=%s", dir);
    snprintf(endpoint, sizeof(endpoint), "SESSION_S3_ENDPOINT=http://127.0.0.1:%d", s->emu.port);
    for (k = 0; k < 3; k++) {
        memset(agent_extra, 0, sizeof(agent_extra));
        if (k == 1) {
            mkdir(dir, 0700);
            agent_extra[0] = "SESSION_STORE=file";
            agent_extra[1] = dir_env;
        } else if (k == 2) {
            agent_extra[0] = "SESSION_STORE=s3";
            agent_extra[1] = "SESSION_S3_BUCKET=agentcore-sessions";
            agent_extra[2] = endpoint;
        }
        if (fresh(s, kinds[k]))
            break;
        before = rss_kb(s->agent.pid);
        snprintf(title, sizeof(title), "store %s: new sessions", kinds[k]);
        run_load(title, s, NULL, n, conc, 1000000 * (k + 1));
        printf("  %d sessions held: agent-worker RSS +%ld KiB = %.2f KiB per idle session\n", n,
               rss_kb(s->agent.pid) - before, (double)(rss_kb(s->agent.pid) - before) / n);
        snprintf(title, sizeof(title), "store %s: same again", kinds[k]);
        run_load(title, s, NULL, n, conc, 1000000 * (k + 1));
        stop_three(s);
    }
    memset(agent_extra, 0, sizeof(agent_extra));
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench: could not remove %s\n", dir);
}

/* The cost of tracing (OTLP export on, every trace sampled, OTLP metrics
 * every second): the same load on a fresh stack with tracing off, with a
 * collector that answers, one that takes 2 s per export, and none at all. */
static void tracing_cost(struct stack *s, int total, int conc)
{
    static const struct {
        const char *title;
        int receiver, delay_ms;
    } runs[] = {{"tracing off", 0, 0},
                {"tracing on, collector up", 1, 0},
                {"tracing on, collector slow (2 s)", 1, 2000},
                {"tracing on, collector down", -1, 0}};
    char dir[160], dir_env[200], delay[48], ep[96], log[220];
    struct th_proc rcv;
    size_t k;

    for (k = 0; k < sizeof(runs) / sizeof(runs[0]); k++) {
        memset(all_extra, 0, sizeof(all_extra));
        memset(&rcv, 0, sizeof(rcv));
        if (runs[k].receiver > 0) {
            snprintf(dir, sizeof(dir), "/tmp/agentcore-bench-otlp-%ld-%zu", (long)getpid(), k);
            mkdir(dir, 0700);
            snprintf(dir_env, sizeof(dir_env), "RECEIVER_DIR=%s", dir);
            snprintf(delay, sizeof(delay), "RECEIVER_DELAY_MS=%d", runs[k].delay_ms);
            if (th_proc_start(&rcv, "bench-otlp-receiver", AC_BIN_OTLP_RECEIVER,
                              (const char *[]){dir_env, delay, "LOG_LEVEL=WARN", NULL}, 30000))
                return;
            snprintf(ep, sizeof(ep), "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:%d", rcv.port);
        } else if (runs[k].receiver < 0) {
            snprintf(ep, sizeof(ep), "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:%d",
                     th_free_port());
        }
        if (runs[k].receiver) {
            all_extra[0] = ep;
            all_extra[1] = "OTEL_BSP_SCHEDULE_DELAY=200";
            all_extra[2] = "OTEL_METRIC_EXPORT_INTERVAL=1000";
        }
        if (fresh(s, "otel"))
            break;
        run_load(runs[k].title, s, "{\"prompt\":\"hello\"}", total, conc, -1);
        stop_three(s);
        if (runs[k].receiver > 0) {
            char *text, *p;
            int n = 0;

            snprintf(log, sizeof(log), "%s/requests.log", dir);
            text = th_read_file(log, NULL);
            for (p = text; p && (p = strstr(p, "POST /v1/traces")); p++)
                n++;
            printf("  the collector received %d span export requests", n);
            for (n = 0, p = text; p && (p = strstr(p, "POST /v1/metrics")); p++)
                n++;
            printf(" and %d metrics export requests\n", n);
            free(text);
            th_proc_stop(&rcv, SIGTERM);
            snprintf(log, sizeof(log), "rm -rf '%s'", dir);
            if (system(log) != 0)
                fprintf(stderr, "bench: could not remove %s\n", dir);
        }
    }
    memset(all_extra, 0, sizeof(all_extra));
}

int main(int argc, char **argv)
{
    int total = argc > 1 ? atoi(argv[1]) : 4000, conc = argc > 2 ? atoi(argv[2]) : 50;
    int sessions = argc > 3 ? atoi(argv[3]) : 2000, streams = argc > 4 ? atoi(argv[4]) : 2000;
    double tp[COLD_RUNS], ti[COLD_RUNS];
    int bad[COLD_RUNS], k, fails = 0, bad_total = 0;
    struct stack s;
    long rss_idle[3], pss_idle[3], before_sessions;

    if (conc < 1 || conc > 4096 || total < conc || sessions < 0 || streams < 1)
        return 2;
    cm_main_raise_nofile();
    cm_rpc_init();
    /* The processes require the internal token (th_proc hands it to
     * them); the sandbox phase calls the tool-worker itself. */
    if (th_use_token()) {
        fprintf(stderr, "bench: no internal token\n");
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    memset(&s, 0, sizeof(s));
    if (emu_start(&s.emu))
        return 1;
    printf("agentcore-bench (loopback, 2 cores shared by client, emulator and runtime)\n");

    for (k = 0; k < COLD_RUNS && phase("cold"); k++) {
        if (cold_start(&s, k, &tp[k], &ti[k], &bad[k]))
            fails++;
        bad_total += bad[k];
    }
    qsort(tp, COLD_RUNS, sizeof(double), cmp_d);
    qsort(ti, COLD_RUNS, sizeof(double), cmp_d);
    if (phase("cold"))
        printf("cold start, 3 processes spawned at once (median of %d): first /ping %.1f ms, first "
               "invocation %.1f ms; non-200 answers %d, failed runs %d\n",
               COLD_RUNS, tp[COLD_RUNS / 2] * 1e3, ti[COLD_RUNS / 2] * 1e3, bad_total, fails);

    if (spawn_three(&s, "main") || wait_three(&s))
        return 1;
    {
        struct th_resp r; /* one call so each process has done its lazy set-up */

        th_http("POST", s.url, NULL, "{\"prompt\":\"hi\"}", 15, &r);
        th_resp_free(&r);
    }
    {
        /* Idle means idle for a while: 2 s after the start, past
         * RESIDENT_TRIM_MS (1 s), when each process has given back the
         * pages only its start used (its log says so at INFO; the bench
         * runs them at WARN, so this waits out the time instead). */
        struct timespec ts = {2, 0};

        nanosleep(&ts, NULL);
    }
    for (k = 0; k < 3; k++) {
        rss_idle[k] = rss_kb(ours(&s, k)->pid);
        pss_idle[k] = pss_kb(ours(&s, k)->pid);
    }
    printf("RSS idle (2 s after start): %ld KiB in all = gateway %ld + agent-worker %ld + "
           "tool-worker %ld KiB\n",
           rss_idle[0] + rss_idle[1] + rss_idle[2], rss_idle[0], rss_idle[1], rss_idle[2]);
    printf("PSS idle (shared pages counted once): %ld KiB in all = gateway %ld + agent-worker %ld "
           "+ tool-worker %ld KiB\n",
           pss_idle[0] + pss_idle[1] + pss_idle[2], pss_idle[0], pss_idle[1], pss_idle[2]);

    if (phase("load")) {
        run_load("model latency 0", &s, "{\"prompt\":\"hello\"}", total, conc, -1);
        /* What serving keeps resident, next to the idle figure above. */
        for (k = 0; k < 3; k++) {
            rss_idle[k] = rss_kb(ours(&s, k)->pid);
            pss_idle[k] = pss_kb(ours(&s, k)->pid);
        }
        printf("  RSS after it: %ld KiB in all = gateway %ld + agent-worker %ld + tool-worker %ld "
               "KiB; PSS %ld KiB\n",
               rss_idle[0] + rss_idle[1] + rss_idle[2], rss_idle[0], rss_idle[1], rss_idle[2],
               pss_idle[0] + pss_idle[1] + pss_idle[2]);
    }
    if (phase("latency")) {
        run_load("model latency 200 ms", &s, "{\"prompt\":\"[[sleep:200]] hello\"}", conc * 50,
                 conc, -1);
        printf("  (ceiling for %d clients at 200 ms: %d req/s)\n", conc, conc * 5);
    }
    if (phase("tool"))
        run_load("tool invocation (2 calls)", &s,
                 "{\"prompt\":\"[[tool:calculator {\\\"expression\\\":\\\"6*7\\\"}]]\"}", total / 2,
                 conc, -1);
    if (phase("sandbox"))
        sandbox_overhead(&s, 400, 1);
    if (sessions >= conc && phase("sessions")) {
        before_sessions = rss_kb(s.agent.pid);
        run_load("new session each", &s, NULL, sessions, conc, 0);
        printf("sessions: %d held, agent-worker RSS +%ld KiB = %.2f KiB per session (one turn "
               "each)\n",
               sessions, rss_kb(s.agent.pid) - before_sessions,
               (double)(rss_kb(s.agent.pid) - before_sessions) / sessions);
    }
    stop_three(&s);
    if (phase("sandbox")) {
        /* the sandboxed call without warm sandboxes, on a stack of its own */
        all_extra[0] = "TOOL_SANDBOX_WARM=0";
        if (fresh(&s, "cold-sandbox"))
            return 1;
        sandbox_overhead(&s, 400, 0);
        stop_three(&s);
        all_extra[0] = NULL;
    }
    /* Each burst on a fresh stack: the threads and connections one leaves
     * behind must not be charged to the next. */
    for (k = 0; k < 2 && phase("streams"); k++) {
        if (fresh(&s, "burst"))
            return 1;
        many_streams(&s, streams, 2000, k ? 500 : 0, 0);
        stop_three(&s);
    }
    /* A fresh stack for the waiting figures: no thread of an earlier run may
     * end inside the window (its CPU would vanish from the sum). */
    if (fresh(&s, "wait"))
        return 1;
    if (phase("wait"))
        many_streams(&s, streams / 4 > 0 ? streams / 4 : 1, 10000, 0, 1);
    stop_three(&s);
    if (phase("stores"))
        session_stores(&s, sessions > 0 ? sessions * 5 : 10000, conc);
    if (phase("otel"))
        tracing_cost(&s, total / 2, conc);
    if (phase("bodies")) {
        if (fresh(&s, "bodies"))
            return 1;
        big_bodies(&s, 256 * 1024); /* the gateway's default budget */
        stop_three(&s);
    }
    th_proc_stop(&s.emu, SIGTERM);
    curl_global_cleanup();
    return 0;
}
