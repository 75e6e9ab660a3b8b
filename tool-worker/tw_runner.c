#define _GNU_SOURCE /* asprintf */
#include "tw_runner.h"
#include "cm_err.h"
#include "cm_log.h"
#include "tw_job.h"
#include "tw_proc.h"
#include "tw_warm.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tw_call {
    struct tw_call *next, *prev; /* the runner's list of live calls */
    struct tw_runner *r;
    const struct tw_tool *tool;
    struct tw_proc *proc;
    uv_timer_t *timer; /* test tools */
    char workspace[TW_WORKSPACE_PATH_MAX];
    char *refill; /* the session ("": none) whose next sandbox is set up when this call ends */
    int has_workspace, background, cancelled;
    int adopted; /* a session's first call took a sandbox made before it came */
    long long task_id;
    uint64_t ms; /* test tools: how long */
    tw_call_done done;
    void *ud;
};

struct tw_runner {
    struct tw_runner_config cfg;
    struct tw_warm *warm; /* NULL: every call sets up its own sandbox */
    struct tw_call *calls;
    int active, background, freeing;
    long long next_task;
};

struct tw_runner *tw_runner_new(const struct tw_runner_config *cfg)
{
    struct tw_runner *r = calloc(1, sizeof(*r));
    struct tw_warm_config wc;

    if (!r)
        return NULL;
    r->cfg = *cfg;
    if (cfg->warm_max > 0 && cfg->sandbox && cfg->workspaces) {
        wc.loop = cfg->loop;
        wc.sandbox = cfg->sandbox;
        wc.workspaces = cfg->workspaces;
        wc.max = cfg->warm_max;
        wc.idle_ms = cfg->warm_idle_ms;
        wc.prime_ms = cfg->warm_prime_ms;
        if (!(r->warm = tw_warm_new(&wc))) {
            free(r);
            return NULL;
        }
    }
    return r;
}

static void background_change(struct tw_runner *r, int delta)
{
    r->background += delta;
    if (r->cfg.on_background)
        r->cfg.on_background(r->background, r->cfg.background_ud);
}

static void link_call(struct tw_runner *r, struct tw_call *c)
{
    c->next = r->calls;
    if (r->calls)
        r->calls->prev = c;
    r->calls = c;
}

static void unlink_call(struct tw_runner *r, struct tw_call *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        r->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
}

static void maybe_free_runner(struct tw_runner *r)
{
    if (r->freeing && !r->calls)
        free(r);
}

static void finish(struct tw_call *c, struct tw_result *res)
{
    if (c->done)
        c->done(c->ud, res);
    c->done = NULL;
}

static void call_free(struct tw_call *c)
{
    struct tw_runner *r = c->r;

    /* After tw_runner_free() the workspace set may be gone already (it is
     * freed next, while killed processes still report): leave it alone. */
    if (c->has_workspace && !r->freeing)
        tw_workspace_release(r->cfg.workspaces, c->workspace);
    unlink_call(r, c);
    free(c->refill);
    free(c);
    maybe_free_runner(r);
}

/* Tool output goes into a protobuf string: it must be UTF-8. Bytes that are
 * not become '?', in place. */
static void make_utf8(char *s, size_t len)
{
    size_t i = 0;

    while (i < len) {
        unsigned char b = (unsigned char)s[i];
        size_t n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
        size_t k;

        if (b == 0)
            n = 0;
        for (k = 1; n && k < n; k++) {
            if (i + k >= len || ((unsigned char)s[i + k] & 0xc0) != 0x80)
                n = 0;
        }
        if (!n) {
            s[i++] = '?';
            continue;
        }
        i += n;
    }
}

static const char *signal_words(int sig, const struct tw_limits *l, char *buf, size_t len)
{
    if (sig == SIGXCPU)
        snprintf(buf, len, "it used its CPU time limit of %ld s (SIGXCPU)", l->cpu_s);
    else if (sig == SIGKILL)
        snprintf(buf, len, "it was killed (SIGKILL)");
    else if (sig == SIGSEGV)
        snprintf(buf, len, "it crashed (SIGSEGV)");
    else
        snprintf(buf, len, "it was ended by signal %d (%s)", sig, strsignal(sig));
    return buf;
}

/* The signal that ended the tool, 0 when it exited: bubblewrap reports a
 * child ended by a signal as its own exit status 128 + the signal. */
static int ended_by(const struct tw_proc_result *p)
{
    if (p->term_signal)
        return p->term_signal;
    return p->exit_status > 128 && p->exit_status < 128 + 65 ? p->exit_status - 128 : 0;
}

/* The model's view of what a process did. */
static int describe(const struct tw_call *c, const struct tw_proc_result *p, struct tw_result *out)
{
    const struct tw_tool *t = c->tool;
    const struct tw_limits *l = &t->lim;
    char why[160];
    int status = p->exit_status, sig = ended_by(p);

    make_utf8(p->out, p->out_len);
    make_utf8(p->err, p->err_len);
    if (p->killed) {
        out->cancelled = 1;
        return tw_result_set(out, 1, "cancelled: the caller went away");
    }
    if (p->timed_out)
        return tw_result_set(out, 1,
                             "timed out after %d ms; the tool and every process it started were "
                             "stopped.%s%s%s%s",
                             l->timeout_ms, p->out_len ? "\nOutput so far:\n" : "", p->out,
                             p->err_len ? "\n[stderr]\n" : "", p->err);
    if (p->out_truncated)
        return tw_result_set(out, 1,
                             "the tool's output passed %zu bytes; it was stopped. The first "
                             "%zu bytes:\n%s",
                             l->output_bytes, p->out_len, p->out);
    if (status == 125 && strstr(p->err, "agentcore-tool-exec:"))
        return tw_result_set(out, 1, "the sandbox could not start the tool: %s", p->err);
    if (!t->shell && !sig && status == 0) {
        json_t *j = json_loadb(p->out, p->out_len, 0, NULL);
        json_t *st = json_object_get(j, "status"), *content = json_object_get(j, "content");

        if (json_is_string(st) && json_is_string(content)) {
            int rc = tw_result_set(out, strcmp(json_string_value(st), "success") != 0, "%s",
                                   json_string_value(content));

            json_decref(j);
            return rc;
        }
        json_decref(j);
        return tw_result_set(out, 0, "%s", p->out); /* plain text is a fine answer too */
    }
    if (sig)
        return tw_result_set(out, 1, "%s%s%s%s[the tool stopped: %s]", p->out,
                             p->out_len ? "\n" : "", p->err_len ? "[stderr]\n" : "", p->err,
                             signal_words(sig, l, why, sizeof(why)));
    if (t->shell)
        return tw_result_set(out, status != 0, "%s%s%s%s%s[exit status %d]", p->out,
                             p->out_len && p->out[p->out_len - 1] != '\n' ? "\n" : "",
                             p->err_len ? "[stderr]\n" : "", p->err,
                             p->err_len && p->err[p->err_len - 1] != '\n' ? "\n" : "", status);
    return tw_result_set(out, 1, "the tool failed with exit status %d%s%s%s%s", status,
                         p->out_len ? "\n" : "", p->out, p->err_len ? "\n[stderr]\n" : "", p->err);
}

/* Why the process was ended, when it did not end on its own (NULL). */
static const char *kill_reason(const struct tw_proc_result *p)
{
    int sig = ended_by(p);

    if (p->killed)
        return "cancelled";
    if (p->timed_out)
        return "timeout";
    if (p->out_truncated)
        return "output";
    return sig == SIGXCPU ? "cpu" : sig ? "signal" : NULL;
}

static void on_proc_done(void *ud, const struct tw_proc_result *p)
{
    struct tw_call *c = ud;
    struct tw_runner *r = c->r;
    struct tw_result res = {NULL, 1, 0};
    const char *killed = kill_reason(p);
    char ms[32], id[32];

    c->proc = NULL;
    r->active--;
    if (killed && r->cfg.on_kill)
        r->cfg.on_kill(killed, r->cfg.kill_ud);
    if (describe(c, p, &res))
        tw_result_set(&res, 1, "out of memory");
    if (c->background) {
        const char *kv[] = {"tool",       c->tool->name,
                            "taskId",     id,
                            "status",     res.is_error ? "error" : "success",
                            "durationMs", ms,
                            "result",     res.text ? res.text : "",
                            NULL};

        snprintf(ms, sizeof(ms), "%lld", p->elapsed_us / 1000);
        snprintf(id, sizeof(id), "%lld", c->task_id);
        CM_LOGF(res.is_error ? CM_LOG_WARN : CM_LOG_INFO, kv, "background tool finished");
        background_change(r, -1);
    } else {
        finish(c, &res);
    }
    tw_result_free(&res);
    if (c->refill && !r->freeing) {
        tw_warm_fill(r->warm, c->refill, c->tool->tool_dir);
        if (c->adopted) /* a new session came: the next may, too */
            tw_warm_fill(r->warm, "", c->tool->tool_dir);
    }
    call_free(c);
}

static int start_process(struct tw_call *c, json_t *input, const char *session)
{
    struct tw_runner *r = c->r;
    const struct tw_tool *t = c->tool;
    struct tw_sandbox_job job;
    struct tw_sandbox_cmd cmd;
    const char *sh[4] = {"/bin/sh", "-c", NULL, NULL};
    char err[256], *text = NULL;
    struct tw_result res = {NULL, 1, 0};
    struct tw_proc *p = NULL;
    int uverr = 0, warm;

    if (!r->cfg.sandbox || !tw_sandbox_usable(r->cfg.sandbox)) {
        tw_result_set(&res, 1, "tool '%s' needs a sandbox and this tool-worker has none: %s",
                      t->name,
                      r->cfg.sandbox ? tw_sandbox_describe(r->cfg.sandbox) : "not configured");
        goto fail;
    }
    memset(&job, 0, sizeof(job));
    job.tool_dir = t->tool_dir;
    job.network = t->network;
    job.env = (const char *const *)t->env;
    job.mode = t->mode;
    job.lim = &t->lim;
    if (t->shell) {
        sh[2] = json_string_value(json_object_get(input, "command"));
        job.argv = sh;
    } else {
        job.argv = (const char *const *)t->argv;
        text = json_dumps(input, JSON_COMPACT);
    }
    warm = r->warm && tw_sandbox_warmable(r->cfg.sandbox, &job);
    if (warm && (p = tw_warm_take(r->warm, session, t->tool_dir, c->workspace, sizeof(c->workspace),
                                  &c->adopted))) {
        char *msg;
        size_t len = 0;

        c->has_workspace = 1;
        job.workspace = c->workspace;
        if (!(msg = tw_sandbox_job_message(r->cfg.sandbox, &job, &len)) ||
            tw_proc_run(p, msg, len, text, text ? strlen(text) : 0, t->lim.timeout_ms,
                        t->lim.output_bytes, on_proc_done, c)) {
            tw_proc_discard(p);
            tw_result_set(&res, 1,
                          "tool '%s' cannot start: out of memory, or its command passes %u bytes",
                          t->name, TW_JOB_MAX);
        } else {
            c->proc = p;
        }
        free(msg);
    } else if (tw_workspace_acquire(r->cfg.workspaces, session, c->workspace, sizeof(c->workspace),
                                    err, sizeof(err))) {
        tw_result_set(&res, 1, "tool '%s' cannot run: %s", t->name, err);
    } else {
        c->has_workspace = 1;
        job.workspace = c->workspace;
        if (tw_sandbox_build(r->cfg.sandbox, &job, &cmd, err, sizeof(err))) {
            tw_result_set(&res, 1, "tool '%s' cannot start: %s", t->name, err);
        } else {
            c->proc =
                tw_proc_start(r->cfg.loop, &cmd, text, text ? strlen(text) : 0, t->lim.timeout_ms,
                              t->lim.output_bytes, on_proc_done, c, &uverr);
            if (!c->proc)
                tw_result_set(&res, 1, "tool '%s' cannot start: %s", t->name, uv_strerror(uverr));
        }
        tw_sandbox_cmd_cleanup(&cmd);
    }
    free(text);
    if (c->proc && r->cfg.on_start)
        r->cfg.on_start(p ? "warm" : "cold", r->cfg.start_ud);
    /* The next call like this one finds its sandbox ready: set up once this
     * one has answered, so that forking and bubblewrap's work never delay it. */
    if (warm && c->proc)
        c->refill = strdup(session ? session : "");
    if (!c->proc)
        goto fail;
    r->active++;
    if (t->background) {
        c->background = 1;
        c->task_id = ++r->next_task;
        background_change(r, 1);
        tw_result_set(&res, 0,
                      "started in the background as task %lld; it runs on after this answer "
                      "(at most %d ms) and its outcome goes to the logs",
                      c->task_id, t->lim.timeout_ms);
        finish(c, &res);
        tw_result_free(&res);
    }
    return 0;
fail:
    finish(c, &res);
    tw_result_free(&res);
    call_free(c);
    return 0;
}

static void timer_closed(uv_handle_t *h)
{
    struct tw_call *c = h->data;

    free(h);
    call_free(c);
}

static void on_test_timer(uv_timer_t *t)
{
    struct tw_call *c = t->data;
    struct tw_result res = {NULL, 1, 0};

    if (c->background) {
        background_change(c->r, -1);
    } else {
        tw_result_set(&res, 0, "waited %llu ms", (unsigned long long)c->ms);
        finish(c, &res);
        tw_result_free(&res);
    }
    t->data = c;
    uv_close((uv_handle_t *)t, timer_closed);
}

static int start_timer(struct tw_call *c, json_t *input)
{
    json_t *jms = json_object_get(input, "ms");
    uint64_t ms = json_is_integer(jms) ? (uint64_t)json_integer_value(jms) : 1000;
    struct tw_result res = {NULL, 1, 0};

    if (!(c->timer = malloc(sizeof(*c->timer)))) {
        call_free(c);
        return CM_ENOMEM;
    }
    uv_timer_init(c->r->cfg.loop, c->timer);
    c->timer->data = c;
    c->ms = ms;
    uv_timer_start(c->timer, on_test_timer, ms, 0);
    if (c->tool->kind == TW_TEST_BACKGROUND) {
        c->background = 1;
        background_change(c->r, 1);
        tw_result_set(&res, 0, "background task started for %llu ms", (unsigned long long)ms);
        finish(c, &res);
        tw_result_free(&res);
    }
    return 0;
}

int tw_runner_start(struct tw_runner *r, const char *name, const char *input_json,
                    const char *session_id, tw_call_done done, void *ud, struct tw_call **call)
{
    const struct tw_tool *t = tw_catalog_find(r->cfg.catalog, name);
    struct tw_result res = {NULL, 1, 0};
    struct tw_call *c;
    json_t *input;
    int rc;

    if (call)
        *call = NULL;
    if (!t) {
        if (tw_result_set(&res, 1, "unknown tool '%.64s'", name))
            return CM_ENOMEM;
        done(ud, &res);
        tw_result_free(&res);
        return 0;
    }
    if (t->kind == TW_SANDBOXED && r->active >= r->cfg.max_calls)
        return CM_EBUSY;
    if (!(input = tw_tool_input(t, input_json, &res))) {
        if (!res.text)
            return CM_ENOMEM;
        done(ud, &res);
        tw_result_free(&res);
        return 0;
    }
    if (t->kind == TW_INPROC) {
        rc = t->fn(input, &res);
        json_decref(input);
        if (rc)
            return CM_ENOMEM;
        done(ud, &res);
        tw_result_free(&res);
        return 0;
    }
    if (!(c = calloc(1, sizeof(*c)))) {
        json_decref(input);
        return CM_ENOMEM;
    }
    c->r = r;
    c->tool = t;
    c->done = done;
    c->ud = ud;
    link_call(r, c);
    if (call && !t->background && t->kind != TW_TEST_BACKGROUND)
        *call = c;
    rc = t->kind == TW_SANDBOXED ? start_process(c, input, session_id) : start_timer(c, input);
    json_decref(input);
    return rc;
}

void tw_call_cancel(struct tw_call *c)
{
    struct tw_result res = {NULL, 1, 1};

    if (!c || c->cancelled)
        return;
    c->cancelled = 1;
    if (c->proc) {
        tw_proc_kill(c->proc); /* on_proc_done reports the cancellation */
    } else if (c->timer && !c->background) {
        uv_timer_stop(c->timer);
        tw_result_set(&res, 1, "cancelled: the caller went away");
        res.cancelled = 1;
        finish(c, &res);
        tw_result_free(&res);
        c->timer->data = c;
        uv_close((uv_handle_t *)c->timer, timer_closed);
    }
}

void tw_runner_free(struct tw_runner *r)
{
    struct tw_call *c;

    if (!r)
        return;
    r->freeing = 1;
    tw_warm_free(r->warm);
    r->warm = NULL;
    for (c = r->calls; c; c = c->next) {
        c->done = NULL;
        if (c->proc)
            tw_proc_kill(c->proc);
        else if (c->timer && !uv_is_closing((uv_handle_t *)c->timer)) {
            if (c->background)
                background_change(r, -1);
            uv_close((uv_handle_t *)c->timer, timer_closed);
        }
    }
    maybe_free_runner(r);
}

int tw_runner_background(const struct tw_runner *r)
{
    return r->background;
}

int tw_runner_active(const struct tw_runner *r)
{
    return r->active;
}

int tw_runner_warm(const struct tw_runner *r)
{
    return tw_warm_waiting(r->warm);
}

int tw_runner_warm_ready(const struct tw_runner *r)
{
    return tw_warm_ready(r->warm);
}
