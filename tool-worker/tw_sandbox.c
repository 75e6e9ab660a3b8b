#define _GNU_SOURCE /* O_PATH, close_range, vasprintf */
#include "tw_sandbox.h"
#include "tw_job.h"
#include "tw_seccomp.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <time.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Where things appear inside the sandbox. */
#define IN_HELPER TW_SANDBOX_IN_HELPER
#define IN_HTTP "/.agentcore/tool-http"
#define IN_EGRESS "/.agentcore/egress.sock"
#define PROXY_URL "http://127.0.0.1:3128"
#define IN_WORKSPACE "/workspace"
#define IN_TOOL "/tool"
#define BASE_PATH "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"

struct tw_sandbox {
    char *bwrap, *helper, *http, *ro_paths, *allow_cidrs, *allow_hosts, *egress;
    int filter; /* sealed memfd with the BPF program */
    int usable, namespaces, probing;
    int no_proc;     /* tools get an empty /proc (TW_PROC_NONE, or a fresh one refused) */
    int userns_knob; /* bubblewrap may set max_user_namespaces (--disable-userns) */
    uid_t uid;
    gid_t gid;
    int set_ids;
    char describe[1024];
};

struct vec {
    char **v;
    size_t n, cap;
    int oom;
};

static void push(struct vec *a, const char *s)
{
    if (a->oom)
        return;
    if (a->n + 2 > a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 96;
        char **v = realloc(a->v, cap * sizeof(*v));

        if (!v) {
            a->oom = 1;
            return;
        }
        a->v = v;
        a->cap = cap;
    }
    if (!(a->v[a->n] = strdup(s))) {
        a->oom = 1;
        return;
    }
    a->v[++a->n] = NULL;
}

static void pushf(struct vec *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void pushf(struct vec *a, const char *fmt, ...)
{
    char buf[PATH_MAX + 64];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    push(a, buf);
}

static void free_strv(char **v)
{
    size_t i;

    for (i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/* Calls |fn| for every item of a comma-separated list. */
static void each_item(const char *list, void (*fn)(struct vec *a, const char *item), struct vec *a)
{
    char item[PATH_MAX];
    const char *p = list;

    while (p && *p) {
        size_t len = strcspn(p, ",");

        if (len && len < sizeof(item)) {
            memcpy(item, p, len);
            item[len] = '\0';
            fn(a, item);
        }
        p += len + (p[len] == ',');
    }
}

static void ro_bind(struct vec *a, const char *path)
{
    push(a, "--ro-bind-try");
    push(a, path);
    push(a, path);
}

static void allow_cidr(struct vec *a, const char *c)
{
    push(a, "--allow-cidr");
    push(a, c);
}

static void allow_host(struct vec *a, const char *h)
{
    push(a, "--allow-host");
    push(a, h);
}

/* Debian's merged /usr: /bin, /lib... are symbolic links into /usr; a system
 * without it gets them bound read-only instead. */
static void top_dirs(struct vec *a)
{
    static const char *const names[] = {"bin", "sbin", "lib", "lib32", "lib64", "libx32"};
    char path[32], target[PATH_MAX];
    struct stat st;
    size_t i;
    ssize_t n;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "/%s", names[i]);
        if (lstat(path, &st))
            continue;
        if (S_ISLNK(st.st_mode) && (n = readlink(path, target, sizeof(target) - 1)) > 0) {
            target[n] = '\0';
            push(a, "--symlink");
            push(a, target);
            push(a, path);
        } else if (S_ISDIR(st.st_mode)) {
            ro_bind(a, path);
        }
    }
}

enum net_mode { NET_NONE, NET_SHARED, NET_EGRESS };

/* http_request checks its own connections and shares the worker's network;
 * another tool that declared a network goes through the egress proxy, or
 * shares it unchecked when configuration said so (no proxy). Without
 * namespaces there is no proxy to relay to: no network. */
static enum net_mode net_mode(const struct tw_sandbox *sb, const struct tw_sandbox_job *job)
{
    if (!job->network)
        return NET_NONE;
    if (!strcmp(job->mode, "http_request"))
        return NET_SHARED;
    if (!sb->egress)
        return NET_SHARED;
    return sb->namespaces ? NET_EGRESS : NET_NONE;
}

static void helper_args(const struct tw_sandbox *sb, const struct tw_sandbox_job *job,
                        const char *workspace, struct vec *a)
{
    const struct tw_limits *l = job->lim;

    pushf(a, "--cpu");
    pushf(a, "%ld", l->cpu_s);
    pushf(a, "--as");
    pushf(a, "%lld", l->as_bytes);
    pushf(a, "--fsize");
    pushf(a, "%lld", l->fsize_bytes);
    pushf(a, "--nofile");
    pushf(a, "%ld", l->nofile);
    pushf(a, "--nproc");
    pushf(a, "%ld", l->nproc);
    push(a, "--rw");
    push(a, workspace);
    push(a, "--rw");
    push(a, "/tmp");
    push(a, "--workspace");
    push(a, workspace);
    push(a, "--seccomp-fd");
    push(a, "3");
    switch (net_mode(sb, job)) {
    case NET_SHARED:
        push(a, "--network");
        break;
    case NET_EGRESS:
        push(a, "--egress");
        push(a, IN_EGRESS);
        push(a, "--egress-port");
        push(a, "3128");
        break;
    default:
        break;
    }
    push(a, "--");
    if (!strcmp(job->mode, "http_request")) {
        push(a, "exec");
        push(a, sb->namespaces ? IN_HTTP : sb->http);
        push(a, "--timeout-ms");
        pushf(a, "%d", l->timeout_ms);
        each_item(sb->allow_cidrs, allow_cidr, a);
        each_item(sb->allow_hosts, allow_host, a);
        return;
    }
    push(a, job->mode);
    if (!strcmp(job->mode, "exec") || !strncmp(job->mode, "mcp_", 4)) {
        size_t i;

        for (i = 0; job->argv && job->argv[i]; i++)
            push(a, job->argv[i]);
    }
}

static void base_env(struct vec *e, const char *home)
{
    push(e, "PATH=" BASE_PATH);
    pushf(e, "HOME=%s", home);
    push(e, "TMPDIR=/tmp");
    push(e, "LANG=C.UTF-8");
}

/* Opens |path| for the child (its descriptor 3 + index) and has bubblewrap
 * mount it at |dest|: descriptors, so neither bubblewrap nor the tool's uid
 * needs the right to walk the host path. */
static int bind_fd(struct tw_sandbox_cmd *cmd, struct vec *a, const char *how, const char *path,
                   const char *dest, char *err, size_t errlen)
{
    int fd;

    if (cmd->n_fds == TW_SANDBOX_MAX_FDS) {
        snprintf(err, errlen, "too many descriptors for one sandbox");
        return -1;
    }
    if ((fd = open(path, O_PATH | O_CLOEXEC)) < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    cmd->fds[cmd->n_fds++] = fd;
    push(a, how);
    pushf(a, "%d", 2 + cmd->n_fds);
    push(a, dest);
    return 0;
}

/* A pipe whose write end the child gets, passed as |flag| <fd>; the read
 * end goes to |*keep|. Two use it: bubblewrap's --info-fd tells the PID of
 * the sandbox's init (killing that one process takes the whole PID
 * namespace down, and bubblewrap exits only after the kernel removed every
 * process in it); the helper's --ready-fd of a deferred job says it runs,
 * and only then has bubblewrap finished with the paths it was given (it
 * binds a descriptor by the path it resolves it to, so the workspace must
 * keep its name until then). */
static int pass_pipe(struct tw_sandbox_cmd *cmd, struct vec *a, const char *flag, int *keep,
                     char *err, size_t errlen)
{
    int p[2];

    if (cmd->n_fds == TW_SANDBOX_MAX_FDS || pipe2(p, O_CLOEXEC)) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return -1;
    }
    *keep = p[0];
    cmd->fds[cmd->n_fds++] = p[1];
    push(a, flag);
    pushf(a, "%d", 2 + cmd->n_fds);
    return 0;
}

int tw_sandbox_build(const struct tw_sandbox *sb, const struct tw_sandbox_job *job,
                     struct tw_sandbox_cmd *cmd, char *err, size_t errlen)
{
    struct vec a = {0}, e = {0};
    size_t i;

    memset(cmd, 0, sizeof(*cmd));
    cmd->info_fd = cmd->ready_fd = -1;
    if (!sb->usable && !sb->probing) {
        snprintf(err, errlen, "no sandbox: %s", sb->describe);
        return -1;
    }
    if (job->deferred && !tw_sandbox_warmable(sb, job)) {
        snprintf(err, errlen, "this job cannot wait in a sandbox set up before it");
        return -1;
    }
    cmd->uid = sb->uid;
    cmd->gid = sb->gid;
    cmd->set_ids = sb->set_ids;
    if ((cmd->fds[cmd->n_fds] = tw_seccomp_reopen(sb->filter)) < 0) {
        snprintf(err, errlen, "cannot open the seccomp filter: %s", strerror(errno));
        return -1;
    }
    cmd->n_fds++;
    if (!sb->namespaces) {
        /* Unconfined by configuration: the helper alone, in the workspace. */
        push(&a, sb->helper);
        helper_args(sb, job, job->workspace, &a);
        base_env(&e, job->workspace);
        cmd->cwd = job->workspace;
    } else {
        push(&a, sb->bwrap);
        push(&a, "--unshare-all");
        push(&a, "--unshare-user"); /* implied when not setuid; --disable-userns wants it said */
        if (net_mode(sb, job) == NET_SHARED)
            push(&a, "--share-net");
        if (sb->userns_knob)
            push(&a, "--disable-userns");
        push(&a, "--die-with-parent");
        push(&a, "--new-session");
        push(&a, "--cap-drop");
        push(&a, "ALL");
        push(&a, "--hostname");
        push(&a, "tool");
        ro_bind(&a, "/usr");
        ro_bind(&a, "/etc");
        each_item(sb->ro_paths, ro_bind, &a);
        top_dirs(&a);
        push(&a, sb->no_proc ? "--dir" : "--proc");
        push(&a, "/proc");
        push(&a, "--dev");
        push(&a, "/dev");
        push(&a, "--tmpfs");
        push(&a, "/tmp");
        if (bind_fd(cmd, &a, "--ro-bind-fd", sb->helper, IN_HELPER, err, errlen) ||
            bind_fd(cmd, &a, "--bind-fd", job->workspace, IN_WORKSPACE, err, errlen) ||
            (job->tool_dir &&
             bind_fd(cmd, &a, "--ro-bind-fd", job->tool_dir, IN_TOOL, err, errlen)) ||
            (!strcmp(job->mode, "http_request") &&
             bind_fd(cmd, &a, "--ro-bind-fd", sb->http, IN_HTTP, err, errlen)) ||
            (net_mode(sb, job) == NET_EGRESS &&
             bind_fd(cmd, &a, "--bind-fd", sb->egress, IN_EGRESS, err, errlen))) {
            free_strv(a.v);
            return -1;
        }
        if (pass_pipe(cmd, &a, "--info-fd", &cmd->info_fd, err, errlen)) {
            free_strv(a.v);
            return -1;
        }
        push(&a, "--chdir");
        push(&a, IN_WORKSPACE);
        push(&a, "--clearenv");
        base_env(&e, IN_WORKSPACE);
        if (net_mode(sb, job) == NET_EGRESS) {
            static const char *const proxy_vars[] = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                                                     "http_proxy", "https_proxy", "all_proxy"};

            for (i = 0; i < sizeof(proxy_vars) / sizeof(proxy_vars[0]); i++)
                pushf(&e, "%s=" PROXY_URL, proxy_vars[i]);
        }
        for (i = 0; !job->deferred && job->env && job->env[i]; i++)
            push(&e, job->env[i]);
        for (i = 0; i < e.n; i++) {
            const char *eq = strchr(e.v[i], '=');

            if (!eq)
                continue;
            push(&a, "--setenv");
            pushf(&a, "%.*s", (int)(eq - e.v[i]), e.v[i]);
            push(&a, eq + 1);
        }
        free_strv(e.v);
        memset(&e, 0, sizeof(e));
        push(&a, "--");
        push(&a, IN_HELPER);
        if (job->deferred) {
            push(&a, "--job-stdin");
            if (pass_pipe(cmd, &a, "--ready-fd", &cmd->ready_fd, err, errlen)) {
                free_strv(a.v);
                return -1;
            }
        } else {
            helper_args(sb, job, IN_WORKSPACE, &a);
        }
        push(&e, "PATH=" BASE_PATH); /* bubblewrap's own environment */
        cmd->cwd = "/";
    }
    if (!sb->namespaces) {
        for (i = 0; job->env && job->env[i]; i++)
            push(&e, job->env[i]);
    }
    cmd->argv = a.v;
    cmd->env = e.v;
    if (a.oom || e.oom) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

int tw_sandbox_warmable(const struct tw_sandbox *sb, const struct tw_sandbox_job *job)
{
    return sb->namespaces && net_mode(sb, job) == NET_NONE &&
           strcmp(job->mode, "http_request") != 0;
}

char *tw_sandbox_job_message(const struct tw_sandbox *sb, const struct tw_sandbox_job *job,
                             size_t *len)
{
    struct vec a = {0};
    char *m = NULL;

    helper_args(sb, job, IN_WORKSPACE, &a);
    if (!a.oom)
        m = tw_job_encode((const char *const *)a.v, job->env, len);
    free_strv(a.v);
    return m;
}

void tw_sandbox_cmd_cleanup(struct tw_sandbox_cmd *cmd)
{
    int i;

    if (!cmd)
        return;
    for (i = 0; i < cmd->n_fds; i++) {
        if (cmd->fds[i] >= 0)
            close(cmd->fds[i]);
    }
    if (cmd->info_fd >= 0)
        close(cmd->info_fd);
    if (cmd->ready_fd >= 0)
        close(cmd->ready_fd);
    free_strv(cmd->argv);
    free_strv(cmd->env);
    memset(cmd, 0, sizeof(*cmd));
}

/* Runs |cmd| to completion, synchronously (start-up only, before gRPC has
 * threads: fork is safe then), within |timeout_ms|. Returns the exit status,
 * 128+signal, or -1; stdout lands in |out| (malloc'd, capped), stderr in
 * |errtext|. */
static int run_sync(const struct tw_sandbox_cmd *cmd, int timeout_ms, char **out, size_t out_cap,
                    char *errtext, size_t errlen)
{
    int po[2] = {-1, -1}, pe[2] = {-1, -1}, status, i, open_n = 2, killed = 0;
    size_t got = 0, egot = 0;
    char *buf = malloc(out_cap + 1);
    struct timespec t0, now;
    pid_t pid = -1;

    errtext[0] = '\0';
    if (out)
        *out = NULL;
    if (!buf || pipe2(po, O_CLOEXEC) || pipe2(pe, O_CLOEXEC))
        goto fail;
    pid = fork();
    if (pid < 0)
        goto fail;
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);

        setpgid(0, 0);
        dup2(devnull, 0);
        dup2(po[1], 1);
        dup2(pe[1], 2);
        for (i = 0; i < cmd->n_fds; i++) {
            /* The targets 3.. may hold other fds of ours: move out of the way first. */
            int moved = fcntl(cmd->fds[i], F_DUPFD_CLOEXEC, 64);

            if (moved < 0 || dup2(moved, 3 + i) < 0)
                _exit(126);
        }
        if (cmd->set_ids && (setgroups(0, NULL) || setgid(cmd->gid) || setuid(cmd->uid)))
            _exit(126);
        if (chdir(cmd->cwd))
            _exit(126);
        execve(cmd->argv[0], cmd->argv, cmd->env);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    po[1] = pe[1] = -1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (open_n) {
        struct pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
        long left;
        ssize_t n;

        clock_gettime(CLOCK_MONOTONIC, &now);
        left =
            timeout_ms - ((now.tv_sec - t0.tv_sec) * 1000L + (now.tv_nsec - t0.tv_nsec) / 1000000L);
        if (left <= 0 || poll(fds, 2, (int)left) <= 0) {
            kill(-pid, SIGKILL);
            killed = 1;
            break;
        }
        if (fds[0].revents && po[0] >= 0) {
            char sink[4096];

            n = got < out_cap ? read(po[0], buf + got, out_cap - got)
                              : read(po[0], sink, sizeof(sink));
            if (n <= 0) {
                close(po[0]);
                po[0] = -1;
                open_n--;
            } else if (got < out_cap) {
                got += (size_t)n;
            }
        }
        if (fds[1].revents && pe[0] >= 0) {
            char sink[4096];

            n = egot + 1 < errlen ? read(pe[0], errtext + egot, errlen - 1 - egot)
                                  : read(pe[0], sink, sizeof(sink));
            if (n <= 0) {
                close(pe[0]);
                pe[0] = -1;
                open_n--;
            } else if (egot + 1 < errlen) {
                egot += (size_t)n;
            }
        }
    }
    errtext[egot] = '\0';
    while (egot && errtext[egot - 1] == '\n')
        errtext[--egot] = '\0';
    buf[got] = '\0';
    if (po[0] >= 0)
        close(po[0]);
    if (pe[0] >= 0)
        close(pe[0]);
    if (waitpid(pid, &status, 0) != pid)
        goto fail_waited;
    if (killed)
        snprintf(errtext, errlen, "no answer within %d ms", timeout_ms);
    if (out)
        *out = buf;
    else
        free(buf);
    return killed ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
fail:
    for (i = 0; i < 2; i++) {
        if (po[i] >= 0)
            close(po[i]);
        if (pe[i] >= 0)
            close(pe[i]);
    }
fail_waited:
    free(buf);
    return -1;
}

int tw_sandbox_run(const struct tw_sandbox *sb, const struct tw_sandbox_job *job, int timeout_ms,
                   char **out, size_t out_cap, char *err, size_t errlen)
{
    struct tw_sandbox_job j = *job;
    struct tw_sandbox_cmd cmd;
    char dir[] = "/tmp/agentcore-scratch-XXXXXX";
    int rc = -1;

    if (out)
        *out = NULL;
    if (!j.workspace) {
        if (!mkdtemp(dir)) {
            snprintf(err, errlen, "cannot create a scratch directory: %s", strerror(errno));
            return -1;
        }
        if (sb->set_ids && chown(dir, sb->uid, sb->gid)) {
            snprintf(err, errlen, "cannot hand %s to uid %d: %s", dir, (int)sb->uid,
                     strerror(errno));
            rmdir(dir);
            return -1;
        }
        j.workspace = dir;
    }
    if (tw_sandbox_build(sb, &j, &cmd, err, errlen) == 0)
        rc = run_sync(&cmd, timeout_ms, out, out_cap, err, errlen);
    tw_sandbox_cmd_cleanup(&cmd);
    if (!job->workspace)
        rmdir(dir); /* best effort: what a listing left there stays */
    return rc;
}

static char *find_in_path(const char *name)
{
    char buf[PATH_MAX];
    const char *path = getenv("PATH"), *p;

    if (strchr(name, '/'))
        return access(name, X_OK) ? NULL : strdup(name);
    for (p = path ? path : "/usr/bin:/bin"; *p;) {
        size_t len = strcspn(p, ":");

        snprintf(buf, sizeof(buf), "%.*s/%s", (int)len, p, name);
        if (!access(buf, X_OK))
            return strdup(buf);
        p += len + (p[len] == ':');
    }
    return NULL;
}

static int probe(struct tw_sandbox *sb, char *why, size_t whylen)
{
    static const char *const argv[] = {"/bin/true", NULL};
    struct tw_limits lim = {10, 0, 0, 64, 64, 10000, 0};
    struct tw_sandbox_job job;
    char out[320];
    int rc;

    memset(&job, 0, sizeof(job));
    job.mode = "exec";
    job.argv = argv;
    job.lim = &lim;
    rc = tw_sandbox_run(sb, &job, 10000, NULL, 0, out, sizeof(out));
    if (rc != 0)
        snprintf(why, whylen, "%s (exit %d)", out[0] ? out : "the sandbox did not start", rc);
    return rc ? -1 : 0;
}

struct tw_sandbox *tw_sandbox_new(const struct tw_sandbox_config *cfg, char *err, size_t errlen)
{
    struct tw_sandbox *sb = calloc(1, sizeof(*sb));
    char why[400] = "";
    int abi;

    if (!sb)
        goto oom;
    sb->filter = -1;
    sb->helper = cfg->helper ? strdup(cfg->helper) : NULL;
    sb->http = cfg->http ? strdup(cfg->http) : NULL;
    sb->ro_paths = cfg->ro_paths ? strdup(cfg->ro_paths) : NULL;
    sb->allow_cidrs = cfg->allow_cidrs ? strdup(cfg->allow_cidrs) : NULL;
    sb->allow_hosts = cfg->allow_hosts ? strdup(cfg->allow_hosts) : NULL;
    sb->egress = cfg->egress ? strdup(cfg->egress) : NULL;
    if (!sb->helper || access(sb->helper, X_OK)) {
        snprintf(err, errlen, "the sandbox helper %s is missing or not executable",
                 cfg->helper ? cfg->helper : "(none)");
        goto fail;
    }
    if (!sb->http || access(sb->http, X_OK)) {
        snprintf(err, errlen, "the http_request program %s is missing or not executable",
                 cfg->http ? cfg->http : "(none)");
        goto fail;
    }
    if ((sb->filter = tw_seccomp_build(err, errlen)) < 0)
        goto fail;
    sb->uid = geteuid();
    sb->gid = getegid();
    if (sb->uid == 0) {
        /* Tools never run as root: not even root inside a user namespace
         * mapped onto the real root, which owns the files of the image. */
        sb->uid = cfg->uid;
        sb->gid = cfg->gid;
        sb->set_ids = 1;
    }
    abi = tw_confine_landlock_abi();
    sb->bwrap = find_in_path(cfg->bwrap ? cfg->bwrap : "bwrap");
    if (!sb->bwrap) {
        snprintf(why, sizeof(why), "bubblewrap (%s) is not installed",
                 cfg->bwrap ? cfg->bwrap : "bwrap");
    } else {
        sb->namespaces = sb->probing = 1;
        sb->no_proc = cfg->proc == TW_PROC_NONE;
        sb->userns_knob = 1;
        /* A container may refuse parts of it (Docker's masked /proc and
         * read-only /proc/sys, which compose cannot lift): try without
         * those, once each. Nested user namespaces stay refused by the
         * seccomp filter either way. */
        while (probe(sb, why, sizeof(why))) {
            if (cfg->proc == TW_PROC_AUTO && !sb->no_proc && strstr(why, "mount proc")) {
                sb->no_proc = 1;
            } else if (sb->userns_knob && strstr(why, "max_user_namespaces")) {
                sb->userns_knob = 0;
            } else {
                sb->namespaces = 0;
                break;
            }
        }
        sb->probing = 0;
    }
    if (sb->namespaces) {
        sb->usable = 1;
        snprintf(sb->describe, sizeof(sb->describe),
                 "namespaces (user, pid, mount, ipc, uts, cgroup, net) by bubblewrap; seccomp "
                 "filter; Landlock %s%d; rlimits; tools run as uid %d%s%s",
                 abi ? "ABI " : "unavailable, ABI ", abi, (int)sb->uid,
                 sb->userns_knob ? ""
                                 : "; nested user namespaces refused by the seccomp filter "
                                   "alone (the container's /proc/sys is read-only)",
                 !sb->no_proc ? ""
                 : cfg->proc == TW_PROC_NONE
                     ? "; no /proc for tools (TOOL_SANDBOX_PROC=none)"
                     : "; no /proc for tools: the container refuses a fresh one (Docker masks "
                       "/proc: docker run --security-opt systempaths=unconfined lifts it)");
    } else if (cfg->allow_unconfined) {
        sb->usable = 1;
        snprintf(sb->describe, sizeof(sb->describe),
                 "NONE: no namespaces (%s); TOOL_SANDBOX=none runs tools with only rlimits, "
                 "seccomp and Landlock (ABI %d), sharing the worker's network, processes and "
                 "file system view",
                 why, abi);
    } else {
        snprintf(sb->describe, sizeof(sb->describe),
                 "unavailable: %s; tools that need a sandbox are refused (TOOL_SANDBOX=none "
                 "would run them without namespaces)",
                 why);
    }
    return sb;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    tw_sandbox_free(sb);
    return NULL;
}

void tw_sandbox_free(struct tw_sandbox *sb)
{
    if (!sb)
        return;
    if (sb->filter >= 0)
        close(sb->filter);
    free(sb->bwrap);
    free(sb->helper);
    free(sb->http);
    free(sb->ro_paths);
    free(sb->allow_cidrs);
    free(sb->allow_hosts);
    free(sb->egress);
    free(sb);
}

const char *tw_sandbox_isolation(const struct tw_sandbox *sb)
{
    return sb->namespaces ? "namespaces" : sb->usable ? "none" : "unavailable";
}

const char *tw_sandbox_describe(const struct tw_sandbox *sb)
{
    return sb->describe;
}

int tw_sandbox_usable(const struct tw_sandbox *sb)
{
    return sb->usable;
}

uid_t tw_sandbox_uid(const struct tw_sandbox *sb)
{
    return sb->uid;
}

gid_t tw_sandbox_gid(const struct tw_sandbox *sb)
{
    return sb->gid;
}
