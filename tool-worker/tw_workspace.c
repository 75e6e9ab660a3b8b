#define _GNU_SOURCE /* nftw's FTW_ACTIONRETVAL-free flags, asprintf */
#include "tw_workspace.h"
#include "cm_sigv4.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct entry {
    char path[TW_WORKSPACE_PATH_MAX];
    uint64_t last_used; /* uv_now, ms */
    int refs;
    int anonymous; /* removed at release */
};

struct tw_workspaces {
    uv_loop_t *loop;
    uv_timer_t timer;
    char *root;
    uid_t uid;
    gid_t gid;
    int chown_to;
    uint64_t ttl_ms;
    struct entry *e;
    size_t n, max;
    unsigned long long anon_seq;
    int removing; /* removals on the work pool */
    int freed;    /* tw_workspaces_free ran while removals were pending */
};

struct removal {
    uv_work_t work;
    struct tw_workspaces *w;
    char path[TW_WORKSPACE_PATH_MAX];
};

/* Best effort: an entry that cannot go does not stop the rest. */
static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP || flag == FTW_D || flag == FTW_DNR)
        rmdir(p);
    else
        unlink(p);
    return 0;
}

static void remove_tree(uv_work_t *req)
{
    struct removal *r = req->data;
    struct stat st;

    if (lstat(r->path, &st) == 0)
        nftw(r->path, rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

static void removed(uv_work_t *req, int status)
{
    struct removal *r = req->data;
    struct tw_workspaces *w = r->w;

    (void)status;
    free(r);
    if (--w->removing == 0 && w->freed) {
        free(w->root);
        free(w->e);
        free(w);
    }
}

static void remove_at(struct tw_workspaces *w, size_t i)
{
    struct removal *r = calloc(1, sizeof(*r));

    if (r) {
        snprintf(r->path, sizeof(r->path), "%s", w->e[i].path);
        r->w = w;
        r->work.data = r;
        if (uv_queue_work(w->loop, &r->work, remove_tree, removed) == 0)
            w->removing++;
        else
            free(r);
    }
    w->e[i] = w->e[--w->n];
}

static void arm(struct tw_workspaces *w);

static void on_timer(uv_timer_t *t)
{
    struct tw_workspaces *w = t->data;
    uint64_t now = uv_now(w->loop);
    size_t i = 0;

    while (i < w->n) {
        if (!w->e[i].refs && now - w->e[i].last_used >= w->ttl_ms)
            remove_at(w, i); /* moves the last entry here: look at i again */
        else
            i++;
    }
    arm(w);
}

/* One timer for the earliest expiry of an idle workspace, none when all are
 * busy or there are none. */
static void arm(struct tw_workspaces *w)
{
    uint64_t next = UINT64_MAX, now = uv_now(w->loop);
    size_t i;

    for (i = 0; i < w->n; i++) {
        if (!w->e[i].refs && w->e[i].last_used + w->ttl_ms < next)
            next = w->e[i].last_used + w->ttl_ms;
    }
    if (next == UINT64_MAX)
        uv_timer_stop(&w->timer);
    else
        uv_timer_start(&w->timer, on_timer, next > now ? next - now : 0, 0);
}

struct tw_workspaces *tw_workspaces_new(uv_loop_t *loop, const char *root, uid_t uid, gid_t gid,
                                        int chown_to, int ttl_s, size_t max, char *err,
                                        size_t errlen)
{
    struct tw_workspaces *w = calloc(1, sizeof(*w));

    if (!w || !(w->root = strdup(root)) || !(w->e = calloc(max, sizeof(*w->e)))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (strlen(root) + 40 >= TW_WORKSPACE_PATH_MAX) {
        snprintf(err, errlen, "TOOL_WORKSPACE_DIR is too long");
        goto fail;
    }
    if (mkdir(root, 0711) && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", root, strerror(errno));
        goto fail;
    }
    w->loop = loop;
    w->uid = uid;
    w->gid = gid;
    w->chown_to = chown_to;
    w->ttl_ms = (uint64_t)ttl_s * 1000;
    w->max = max;
    uv_timer_init(loop, &w->timer);
    w->timer.data = w;
    return w;
fail:
    if (w) {
        free(w->root);
        free(w->e);
        free(w);
    }
    return NULL;
}

static void timer_closed(uv_handle_t *h)
{
    struct tw_workspaces *w = h->data;

    if (w->removing == 0) {
        free(w->root);
        free(w->e);
        free(w);
    } else {
        w->freed = 1;
    }
}

void tw_workspaces_free(struct tw_workspaces *w)
{
    if (!w)
        return;
    uv_close((uv_handle_t *)&w->timer, timer_closed);
}

size_t tw_workspaces_count(const struct tw_workspaces *w)
{
    return w->n;
}

static void session_path(const struct tw_workspaces *w, const char *session, char *path, size_t len)
{
    char hex[65];

    cm_sigv4_sha256_hex(session, strlen(session), hex);
    hex[32] = '\0';
    snprintf(path, len, "%s/%s", w->root, hex);
}

static size_t find_path(const struct tw_workspaces *w, const char *path)
{
    size_t i;

    for (i = 0; i < w->n && strcmp(w->e[i].path, path); i++)
        ;
    return i;
}

int tw_workspace_exists(const struct tw_workspaces *w, const char *session)
{
    char path[TW_WORKSPACE_PATH_MAX];
    struct stat st;

    session_path(w, session, path, sizeof(path));
    return find_path(w, path) < w->n || lstat(path, &st) == 0;
}

int tw_workspace_adopt(struct tw_workspaces *w, const char *session, char *path, size_t len)
{
    char to[TW_WORKSPACE_PATH_MAX];
    size_t i = find_path(w, path);

    if (!session || !*session || i == w->n || !w->e[i].anonymous || w->e[i].refs != 1 ||
        tw_workspace_exists(w, session))
        return -1;
    session_path(w, session, to, sizeof(to));
    if (strlen(to) >= len || rename(path, to))
        return -1;
    /* The directory keeps its inode: a sandbox that has it mounted sees the
     * same one under its new name. */
    snprintf(w->e[i].path, sizeof(w->e[i].path), "%s", to);
    w->e[i].anonymous = 0;
    w->e[i].last_used = uv_now(w->loop);
    memcpy(path, to, strlen(to) + 1);
    return 0;
}

int tw_workspace_acquire(struct tw_workspaces *w, const char *session, char *path, size_t len,
                         char *err, size_t errlen)
{
    size_t i, lru = 0;
    struct entry *e;

    if (session && *session) {
        session_path(w, session, path, len);
    } else {
        snprintf(path, len, "%s/call-%d-%llu", w->root, (int)getpid(), ++w->anon_seq);
    }
    i = find_path(w, path);
    if (i == w->n) {
        if (w->n == w->max) {
            /* Full: the least recently used idle workspace goes. */
            for (i = 0, lru = w->n; i < w->n; i++) {
                if (!w->e[i].refs && (lru == w->n || w->e[i].last_used < w->e[lru].last_used))
                    lru = i;
            }
            if (lru == w->n) {
                snprintf(err, errlen, "all %zu workspaces are in use (TOOL_WORKSPACE_MAX)", w->max);
                return -1;
            }
            remove_at(w, lru);
        }
        if (mkdir(path, 0700) && errno != EEXIST) {
            snprintf(err, errlen, "cannot create the workspace: %s", strerror(errno));
            return -1;
        }
        if (w->chown_to && chown(path, w->uid, w->gid)) {
            snprintf(err, errlen, "cannot hand the workspace to uid %d: %s", (int)w->uid,
                     strerror(errno));
            rmdir(path);
            return -1;
        }
        e = &w->e[w->n++];
        memset(e, 0, sizeof(*e));
        snprintf(e->path, sizeof(e->path), "%s", path);
        e->anonymous = !(session && *session);
    }
    e = &w->e[i];
    e->refs++;
    e->last_used = uv_now(w->loop);
    arm(w);
    return 0;
}

void tw_workspace_release(struct tw_workspaces *w, const char *path)
{
    size_t i = find_path(w, path);

    if (i == w->n)
        return;
    w->e[i].last_used = uv_now(w->loop);
    if (--w->e[i].refs == 0 && w->e[i].anonymous)
        remove_at(w, i);
    arm(w);
}
