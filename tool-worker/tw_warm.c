#include "tw_warm.h"

#include <stdlib.h>
#include <string.h>

struct entry {
    char *session, *tool_dir;
    char workspace[TW_WORKSPACE_PATH_MAX];
    struct tw_proc *proc;
    uint64_t made; /* uv_now() when started */
};

struct tw_warm {
    struct tw_warm_config cfg;
    uv_timer_t timer;  /* the next expiry, or the first fill */
    uint64_t prime_at; /* when the first fill is due (0: done or none) */
    struct entry e[TW_WARM_MAX];
    int n;
};

static void on_expiry(uv_timer_t *t);

struct tw_warm *tw_warm_new(const struct tw_warm_config *cfg)
{
    struct tw_warm *w = calloc(1, sizeof(*w));

    if (!w)
        return NULL;
    w->cfg = *cfg;
    if (w->cfg.max > TW_WARM_MAX)
        w->cfg.max = TW_WARM_MAX;
    if (w->cfg.max < 0)
        w->cfg.max = 0;
    uv_timer_init(cfg->loop, &w->timer);
    w->timer.data = w;
    if (w->cfg.max && cfg->prime_ms > 0) {
        w->prime_at = uv_now(cfg->loop) + (uint64_t)cfg->prime_ms;
        uv_timer_start(&w->timer, on_expiry, (uint64_t)cfg->prime_ms, 0);
    }
    return w;
}

static int same(const char *a, const char *b)
{
    return a == b || (a && b && !strcmp(a, b));
}

static int find(const struct tw_warm *w, const char *session, const char *tool_dir)
{
    int i;

    for (i = 0; i < w->n; i++) {
        if (!strcmp(w->e[i].session, session) && same(w->e[i].tool_dir, tool_dir))
            return i;
    }
    return -1;
}

/* Takes entry |i| out of the array; its strings are the caller's to free. */
static struct entry unlink_entry(struct tw_warm *w, int i)
{
    struct entry e = w->e[i];

    memmove(&w->e[i], &w->e[i + 1], (size_t)(w->n - i - 1) * sizeof(w->e[0]));
    w->n--;
    return e;
}

static void drop(struct tw_warm *w, int i)
{
    struct entry e = unlink_entry(w, i);

    tw_proc_discard(e.proc);
    tw_workspace_release(w->cfg.workspaces, e.workspace);
    free(e.session);
    free(e.tool_dir);
}

static void arm(struct tw_warm *w)
{
    uint64_t now = uv_now(w->cfg.loop), due = w->prime_at ? w->prime_at : UINT64_MAX;
    int i;

    for (i = 0; i < w->n; i++) {
        if (w->e[i].made + (uint64_t)w->cfg.idle_ms < due)
            due = w->e[i].made + (uint64_t)w->cfg.idle_ms;
    }
    if (due == UINT64_MAX)
        uv_timer_stop(&w->timer);
    else
        uv_timer_start(&w->timer, on_expiry, due > now ? due - now : 0, 0);
}

static void on_expiry(uv_timer_t *t)
{
    struct tw_warm *w = t->data;
    uint64_t now = uv_now(w->cfg.loop);
    int i = 0;

    while (i < w->n) {
        if (w->e[i].made + (uint64_t)w->cfg.idle_ms <= now)
            drop(w, i);
        else
            i++;
    }
    if (w->prime_at && w->prime_at <= now) {
        w->prime_at = 0;
        tw_warm_fill(w, "", NULL); /* arms the timer */
        return;
    }
    arm(w);
}

/* Entry |i| out of the pool, its workspace into |workspace|. */
static struct tw_proc *take_at(struct tw_warm *w, int i, char *workspace, size_t len)
{
    struct entry e;

    if (tw_proc_exited(w->e[i].proc) || strlen(w->e[i].workspace) >= len) {
        drop(w, i);
        arm(w);
        return NULL;
    }
    e = unlink_entry(w, i);
    memcpy(workspace, e.workspace, strlen(e.workspace) + 1);
    free(e.session);
    free(e.tool_dir);
    arm(w);
    return e.proc;
}

struct tw_proc *tw_warm_take(struct tw_warm *w, const char *session, const char *tool_dir,
                             char *workspace, size_t len, int *adopted)
{
    struct tw_proc *p;
    int i;

    *adopted = 0;
    if (!w)
        return NULL;
    session = session ? session : "";
    if ((i = find(w, session, tool_dir)) >= 0)
        return take_at(w, i, workspace, len);
    /* A session's first call: one made around a fresh workspace becomes
     * the session's, if the session has none yet. */
    if (!*session || (i = find(w, "", tool_dir)) < 0 || !tw_proc_ready(w->e[i].proc) ||
        tw_workspace_exists(w->cfg.workspaces, session))
        return NULL; /* not built yet: renaming its workspace would pull it away from it */
    if (!(p = take_at(w, i, workspace, len)))
        return NULL;
    if (tw_workspace_adopt(w->cfg.workspaces, session, workspace, len)) {
        tw_proc_discard(p);
        tw_workspace_release(w->cfg.workspaces, workspace);
        return NULL;
    }
    *adopted = 1;
    return p;
}

void tw_warm_fill(struct tw_warm *w, const char *session, const char *tool_dir)
{
    struct tw_sandbox_job job;
    struct tw_sandbox_cmd cmd;
    struct entry *e;
    char err[256];
    int uverr;

    if (!w || !w->cfg.max)
        return;
    session = session ? session : "";
    if (find(w, session, tool_dir) >= 0)
        return;
    if (w->n == w->cfg.max)
        drop(w, 0); /* the array is in the order they were made */
    e = &w->e[w->n];
    memset(e, 0, sizeof(*e));
    if (!(e->session = strdup(session)) || (tool_dir && !(e->tool_dir = strdup(tool_dir))))
        goto fail;
    if (tw_workspace_acquire(w->cfg.workspaces, session, e->workspace, sizeof(e->workspace), err,
                             sizeof(err)))
        goto fail;
    memset(&job, 0, sizeof(job));
    job.workspace = e->workspace;
    job.tool_dir = tool_dir;
    job.mode = "exec";
    job.deferred = 1;
    if (tw_sandbox_build(w->cfg.sandbox, &job, &cmd, err, sizeof(err)) == 0)
        e->proc = tw_proc_spawn(w->cfg.loop, &cmd, &uverr);
    tw_sandbox_cmd_cleanup(&cmd);
    if (!e->proc) {
        tw_workspace_release(w->cfg.workspaces, e->workspace);
        goto fail;
    }
    e->made = uv_now(w->cfg.loop);
    w->n++;
    arm(w);
    return;
fail:
    free(e->session);
    free(e->tool_dir);
}

int tw_warm_waiting(const struct tw_warm *w)
{
    return w ? w->n : 0;
}

int tw_warm_ready(const struct tw_warm *w)
{
    int i, n = 0;

    for (i = 0; w && i < w->n; i++)
        n += tw_proc_ready(w->e[i].proc);
    return n;
}

static void free_warm(uv_handle_t *h)
{
    free(h->data);
}

void tw_warm_free(struct tw_warm *w)
{
    if (!w)
        return;
    while (w->n)
        drop(w, w->n - 1);
    uv_close((uv_handle_t *)&w->timer, free_warm);
}
