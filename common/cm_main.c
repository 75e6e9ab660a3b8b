#include "cm_main.h"
#include "cm_log.h"
#include "cm_metrics.h"
#include "cm_otel.h"
#include "cm_rpc.h"
#include "cm_util.h"

#include <openssl/crypto.h>

#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *value_of(const struct cm_cfg_entry *tab, int n, const struct cm_cfg_value *vals,
                            const char *name)
{
    int i;

    for (i = 0; i < n; i++)
        if (!strcmp(tab[i].env, name))
            return vals[i].s && *vals[i].s ? vals[i].s : NULL; /* "" is unset */
    return NULL;
}

/* Reads the file named by |name| (NULL when unset) into |*out|. */
static int read_named(const struct cm_cfg_entry *tab, int n, const struct cm_cfg_value *vals,
                      const char *name, char **out, char *err, size_t errlen)
{
    const char *path = value_of(tab, n, vals, name);

    *out = NULL;
    if (!path)
        return 0;
    *out = cm_read_file(path, 1 << 20, NULL);
    if (!*out) {
        snprintf(err, errlen, "%s: cannot read '%s'", name, path);
        return -1;
    }
    return 0;
}

static void free_secret(char *s)
{
    if (s)
        OPENSSL_cleanse(s, strlen(s));
    free(s);
}

/* INTERNAL_TOKEN_FILE and INTERNAL_TLS_* of the table, applied to cm_rpc. */
static int internal_auth(const struct cm_cfg_entry *tab, int n, const struct cm_cfg_value *vals,
                         char *err, size_t errlen)
{
    char *token = NULL, *ca = NULL, *cert = NULL, *key = NULL;
    int rc = -1;

    if (read_named(tab, n, vals, "INTERNAL_TOKEN_FILE", &token, err, errlen) ||
        read_named(tab, n, vals, "INTERNAL_TLS_CA", &ca, err, errlen) ||
        read_named(tab, n, vals, "INTERNAL_TLS_CERT", &cert, err, errlen) ||
        read_named(tab, n, vals, "INTERNAL_TLS_KEY", &key, err, errlen))
        goto out;
    if (token) {
        token[strcspn(token, "\r\n")] = '\0'; /* a trailing newline is not part of it */
        if (cm_rpc_set_token(token)) {
            snprintf(err, errlen,
                     "INTERNAL_TOKEN_FILE: the token must be 16-1024 printable ASCII bytes "
                     "without spaces");
            goto out;
        }
    }
    if (ca && (!cert || !key)) {
        snprintf(err, errlen, "INTERNAL_TLS_CA: needs INTERNAL_TLS_CERT and INTERNAL_TLS_KEY");
        goto out;
    }
    if (ca && cm_rpc_set_tls(ca, cert, key)) {
        snprintf(err, errlen, "INTERNAL_TLS_CA: out of memory");
        goto out;
    }
    rc = 0;
out:
    free_secret(token);
    free_secret(ca);
    free_secret(cert);
    free_secret(key);
    return rc;
}

int cm_main_has_flag(int argc, char **argv, const char *flag)
{
    int i;

    for (i = 1; i < argc; i++)
        if (!strcmp(argv[i], flag))
            return 1;
    return 0;
}

int cm_main_rpc_healthcheck(const char *listen)
{
    struct cm_rpc_client *c = NULL;
    struct cm_rpc_status st;
    char target[300], err[256];
    int ok = 0;

    /* A server bound to every address is asked on loopback. */
    if (!strncmp(listen, "0.0.0.0:", 8))
        snprintf(target, sizeof(target), "127.0.0.1:%s", listen + 8);
    else if (!strncmp(listen, "[::]:", 5))
        snprintf(target, sizeof(target), "[::1]:%s", listen + 5);
    else
        snprintf(target, sizeof(target), "%s", listen);
    cm_rpc_init();
    c = cm_rpc_client_new(target, NULL, 0, 1 << 16, err, sizeof(err));
    if (c)
        ok = cm_rpc_health(c, "", 2000, &st) == 1;
    cm_rpc_client_free(c);
    cm_rpc_shutdown();
    printf("%s\n", ok ? "healthy" : "unhealthy");
    return ok ? 0 : 1;
}

static const char *prog_name(const char *argv0)
{
    const char *slash = strrchr(argv0, '/');

    return slash ? slash + 1 : argv0;
}

/* 0 when every argument is known, else prints the usage line and returns 2. */
static int check_args(int argc, char **argv, const struct cm_main_flag *flags)
{
    int i, k, known;

    for (i = 1; i < argc; i++) {
        known =
            !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h") || !strcmp(argv[i], "--version");
        for (k = 0; flags && flags[k].name && !known; k++)
            known = !strcmp(argv[i], flags[k].name);
        if (known)
            continue;
        fprintf(stderr, "%s: unknown argument '%s'\nusage: %s [--help] [--version]",
                prog_name(argv[0]), argv[i], prog_name(argv[0]));
        for (k = 0; flags && flags[k].name; k++)
            fprintf(stderr, " [%s]", flags[k].name);
        fprintf(stderr, "\n");
        return 2;
    }
    return 0;
}

int cm_main_boot(int argc, char **argv, const char *logger, const char *summary,
                 const struct cm_main_flag *flags, const struct cm_cfg_entry *tab, int n,
                 struct cm_cfg_value *vals)
{
    char err[512];
    enum cm_log_level level = CM_LOG_INFO;
    int i;

    memset(vals, 0, sizeof(*vals) * (size_t)n); /* main frees them whatever happens */
    cm_log_init(logger, CM_LOG_INFO);
    if (check_args(argc, argv, flags))
        return 2;
    if (cm_config_wants_help(argc, argv)) {
        cm_config_help(stdout, argv[0], summary, tab, n);
        for (i = 0; flags && flags[i].name; i++)
            printf("%s  %-32s %s\n", i ? "" : "\nFlags:\n", flags[i].name, flags[i].help);
        return 0;
    }
    if (cm_main_has_flag(argc, argv, "--version")) {
        printf("%s %s\n", prog_name(argv[0]), AC_VERSION);
        return 0;
    }
    if (cm_config_load(tab, n, vals, NULL, NULL, err, sizeof(err))) {
        cm_error("invalid configuration: %s", err);
        return 2;
    }
    for (i = 0; i < n; i++) {
        if (!strcmp(tab[i].env, "LOG_LEVEL") && vals[i].s &&
            cm_log_level_parse(vals[i].s, &level)) {
            cm_error("invalid configuration: LOG_LEVEL: '%s' is not DEBUG, INFO, WARN or ERROR",
                     vals[i].s);
            return 2;
        }
    }
    cm_log_init(logger, level);
    if (cm_main_harden())
        cm_warn("the environment could not be moved off /proc/self/environ: out of memory");
    if (internal_auth(tab, n, vals, err, sizeof(err))) {
        cm_error("invalid configuration: %s", err);
        return 2;
    }
    return -1;
}

/* env_start and env_end of this process: fields 50 and 51 of /proc/self/stat. */
static void env_block(uintptr_t *start, uintptr_t *end)
{
    char buf[4096], *p;
    unsigned long long a = 0, b = 0;
    FILE *f = fopen("/proc/self/stat", "r");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    int field;

    *start = *end = 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    p = strrchr(buf, ')'); /* the command name may hold spaces */
    for (field = 2; p && field < 50; field++)
        p = strchr(p + 1, ' ');
    if (p && sscanf(p + 1, "%llu %llu", &a, &b) == 2) {
        *start = (uintptr_t)a;
        *end = (uintptr_t)b;
    }
}

int cm_main_harden(void)
{
    extern char **environ;
    uintptr_t start, end;
    struct rlimit none = {0, 0};
    size_t i;

    setrlimit(RLIMIT_CORE, &none);
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    /* setenv of each variable puts a copy of it on the heap, in place in
     * environ (glibc keeps the strings it made, so a later unsetenv loses
     * nothing that leak checkers count). */
    for (i = 0; environ && environ[i]; i++) {
        const char *eq = strchr(environ[i], '=');
        char *name;
        int rc;

        if (!eq)
            continue;
        if (!(name = strndup(environ[i], (size_t)(eq - environ[i]))))
            return -1;
        rc = setenv(name, eq + 1, 1);
        free(name);
        if (rc)
            return -1;
    }
    /* The block the kernel put on the stack at exec is what
     * /proc/<pid>/environ shows, whatever environ points to now: zeroed (the
     * copies are on the heap, which a non-dumpable process keeps to itself). */
    env_block(&start, &end);
    if (!start || end <= start)
        return -1;
    explicit_bzero((void *)start, end - start);
    return 0;
}

void cm_main_block_signals(void)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    cm_main_raise_nofile();
    /* glibc gives threads their own malloc arenas (up to 8 per core), each
     * keeping freed memory: with a thread per connection that is most of the
     * gateway's RSS after a burst, for no speed the runtime needs. Two arenas
     * serve our few busy threads. MALLOC_ARENA_MAX in the environment wins. */
    if (!getenv("MALLOC_ARENA_MAX"))
        mallopt(M_ARENA_MAX, 2);
}

void cm_main_raise_nofile(void)
{
    struct rlimit rl;

    /* Thousands of waiting streams are thousands of sockets: the soft limit
     * (often 1024) goes up to the hard one, as servers like nginx do. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int cm_main_wait_signal(int trim_after_ms)
{
    sigset_t set;
    int sig = 0;

    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    if (trim_after_ms > 0) {
        struct timespec ts = {trim_after_ms / 1000, (long)(trim_after_ms % 1000) * 1000000L};
        uint64_t until = cm_now_ms() + (uint64_t)trim_after_ms;

        for (;;) {
            uint64_t now;

            if ((sig = sigtimedwait(&set, NULL, &ts)) > 0)
                return sig;
            if ((now = cm_now_ms()) >= until)
                break;
            ts.tv_sec = (time_t)((until - now) / 1000); /* EINTR: wait out the rest */
            ts.tv_nsec = (long)((until - now) % 1000) * 1000000L;
        }
        {
            char kb[24];
            const char *kv[] = {"kib", kb, NULL};

            snprintf(kb, sizeof(kb), "%ld", cm_main_trim_resident());
            CM_LOGF(CM_LOG_INFO, kv, "start-up pages given back");
        }
    }
    while (sigwait(&set, &sig))
        ;
    return sig;
}

extern char **environ;

static int looks_secret(const char *name, size_t n)
{
    static const char *const words[] = {"SECRET", "TOKEN", "PASSWORD", "CREDENTIAL"};
    char up[256];
    size_t i;

    if (n >= sizeof(up))
        return 1; /* an absurd name is not worth the risk */
    for (i = 0; i < n; i++)
        up[i] = (char)((name[i] >= 'a' && name[i] <= 'z') ? name[i] - 32 : name[i]);
    up[n] = '\0';
    if (!strncmp(up, "AWS_", 4))
        return 1;
    for (i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        if (strstr(up, words[i]))
            return 1;
    }
    return (n >= 4 && !strcmp(up + n - 4, "_KEY")) || (n >= 7 && !strcmp(up + n - 7, "_KEY_ID"));
}

static int kept(const char *name, size_t n, const char *const *keep)
{
    size_t i, k;

    for (i = 0; keep[i]; i++) {
        k = strlen(keep[i]);
        if (k && keep[i][k - 1] == '*' ? n >= k - 1 && !strncmp(name, keep[i], k - 1)
                                       : n == k && !strncmp(name, keep[i], n))
            return 1;
    }
    return 0;
}

/* Removes every variable |drop| says yes to; returns how many. unsetenv
 * reshuffles environ, so the scan starts again after each removal. */
static int remove_env(int (*drop)(const char *name, size_t n, const void *ud), const void *ud)
{
    char name[256];
    int removed = 0, again = 1;

    while (again) {
        char **e;

        again = 0;
        for (e = environ; e && *e; e++) {
            const char *eq = strchr(*e, '=');
            size_t n = eq ? (size_t)(eq - *e) : strlen(*e);

            if (!drop(*e, n, ud))
                continue;
            if (n >= sizeof(name))
                n = sizeof(name) - 1;
            memcpy(name, *e, n);
            name[n] = '\0';
            if (unsetenv(name))
                continue;
            removed++;
            again = 1;
            break;
        }
    }
    return removed;
}

static int not_kept(const char *name, size_t n, const void *keep)
{
    return !kept(name, n, keep);
}

static int secret(const char *name, size_t n, const void *ud)
{
    (void)ud;
    return looks_secret(name, n);
}

int cm_main_keep_env(const char *const *keep)
{
    return remove_env(not_kept, keep);
}

int cm_main_drop_secrets(void)
{
    return remove_env(secret, NULL);
}

/* A mapping from /proc/self/smaps and whether it may be given back. */
struct trim_map {
    unsigned long start, end;
    int eligible; /* read-only, private, backed by a file */
    long rss_kb, anon_kb;
};

static long trim_one(const struct trim_map *m)
{
    /* Only clean file pages: no write permission (nothing can dirty it)
     * and no anonymous page (a copy-on-write page would be lost). */
    if (!m->eligible || m->anon_kb != 0 || m->rss_kb == 0)
        return 0;
    if (madvise((void *)m->start, m->end - m->start, MADV_DONTNEED))
        return 0;
    return m->rss_kb;
}

long cm_main_trim_resident(void)
{
    FILE *f = fopen("/proc/self/smaps", "re");
    struct trim_map cur = {0, 0, 0, 0, 0};
    char line[1024];
    long freed = 0;

    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f)) {
        unsigned long a, b;
        char perms[8], path[512];
        long kb;
        int n;

        path[0] = '\0';
        n = sscanf(line, "%lx-%lx %7s %*s %*s %*s %511s", &a, &b, perms, path);
        if (n >= 3) { /* "start-end perms ...": a mapping begins */
            freed += trim_one(&cur);
            cur = (struct trim_map){
                a, b, perms[0] == 'r' && perms[1] == '-' && perms[3] == 'p' && path[0] == '/', 0,
                0};
        } else if (sscanf(line, "Rss: %ld kB", &kb) == 1) {
            cur.rss_kb = kb;
        } else if (sscanf(line, "Anonymous: %ld kB", &kb) == 1) {
            cur.anon_kb = kb;
        }
    }
    fclose(f);
    /* Each mapping is given back once its block is read (at the next
     * header); the last one here. */
    freed += trim_one(&cur);
    return freed;
}

int cm_main_observe(const struct cm_cfg_value *otel_values, const char *metrics_listen,
                    const char *process, const struct cm_otel_hooks *hooks, struct cm_otel **otel,
                    struct cm_metrics **metrics)
{
    char err[512];

    *metrics = NULL;
    *otel = cm_otel_new(otel_values, process, hooks, err, sizeof(err));
    if (!*otel && err[0]) {
        cm_error("invalid configuration: %s", err);
        return 2;
    }
    if (!metrics_listen && !cm_otel_metrics_on(*otel))
        return 0; /* counters cost nothing when nobody can look */
    if (!(*metrics = cm_metrics_new())) {
        cm_error("out of memory at start-up");
        return 1;
    }
    cm_metrics_gauge_fn(*metrics, "agentcore_spans_lost",
                        "Spans dropped (queue full, or the collector refused them)", cm_otel_lost,
                        *otel);
    if (metrics_listen && cm_metrics_serve(*metrics, metrics_listen, err, sizeof(err)) < 0) {
        cm_error("invalid configuration: %s", err);
        return 2;
    }
    if (cm_otel_metrics_on(*otel))
        cm_otel_set_metrics(*otel, cm_metrics_otlp, *metrics);
    return 0;
}
