#define _GNU_SOURCE /* memmem */
#include "th_proc.h"
#include "cm_rpc.h"
#include "cm_util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <time.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef TH_LOG_DIR
#define TH_LOG_DIR "test-logs"
#endif

const char *th_log_dir(void)
{
    mkdir(TH_LOG_DIR, 0755);
    return TH_LOG_DIR;
}

const char *th_token_path(void)
{
    static char path[600];
    static int made;

    if (!made) {
        unsigned char raw[24];
        char hex[sizeof(raw) * 2 + 2];
        int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC), out;
        size_t i;

        snprintf(path, sizeof(path), "%s/internal-token-%d", th_log_dir(), (int)getpid());
        if (fd < 0 || read(fd, raw, sizeof(raw)) != (ssize_t)sizeof(raw)) {
            if (fd >= 0)
                close(fd);
            return NULL;
        }
        close(fd);
        for (i = 0; i < sizeof(raw); i++)
            snprintf(hex + 2 * i, 3, "%02x", raw[i]);
        hex[2 * sizeof(raw)] = '\n';
        out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (out < 0 || write(out, hex, 2 * sizeof(raw) + 1) != (ssize_t)(2 * sizeof(raw) + 1)) {
            if (out >= 0)
                close(out);
            return NULL;
        }
        close(out);
        made = 1;
    }
    return path;
}

const char *th_token_env(void)
{
    static char env[640];

    if (!env[0] && th_token_path())
        snprintf(env, sizeof(env), "INTERNAL_TOKEN_FILE=%s", th_token_path());
    return env[0] ? env : NULL;
}

int th_use_token(void)
{
    char *t = th_token_path() ? cm_read_file(th_token_path(), 4096, NULL) : NULL;
    int rc;

    if (!t)
        return -1;
    t[strcspn(t, "\n")] = '\0';
    rc = cm_rpc_set_token(t) ? -1 : 0;
    free(t);
    return rc;
}

char *th_read_file(const char *path, size_t *len)
{
    return cm_read_file(path, (size_t)1 << 30, len);
}

static long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Counted over the whole file, NUL bytes included (a binary file, such as
 * a database's write-ahead log, may be watched too). */
static int occurrences(const char *text, size_t len, const char *needle)
{
    size_t nl = strlen(needle);
    const char *end = text + len;
    int n = 0;

    while (text && text < end && (text = memmem(text, (size_t)(end - text), needle, nl))) {
        n++;
        text += nl;
    }
    return n;
}

long th_wait_log(const char *path, const char *needle, int timeout_ms)
{
    return th_wait_log_count(path, needle, 1, timeout_ms);
}

long th_wait_log_count(const char *path, const char *needle, int count, int timeout_ms)
{
    long ms = -1;

    th_wait_logs(&path, 1, needle, count, timeout_ms, &ms);
    return ms;
}

int th_wait_logs(const char *const *paths, int n, const char *needle, int count, int timeout_ms,
                 long *waited_ms)
{
    int fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK), i, which = -1;
    long start = now_ms();

    if (fd < 0)
        return -1;
    for (i = 0; i < n; i++) {
        char dir[512], *slash;

        /* The file itself, and its directory: a file that appears later or
         * is replaced by a rename (a store's document) wakes us too. */
        inotify_add_watch(fd, paths[i], IN_MODIFY);
        cm_strlcpy(dir, paths[i], sizeof(dir));
        slash = strrchr(dir, '/');
        if (slash) {
            *slash = '\0';
            inotify_add_watch(fd, slash == dir ? "/" : dir, IN_CREATE | IN_MOVED_TO);
        }
    }
    for (;;) {
        char evbuf[4096];
        struct pollfd p = {fd, POLLIN, 0};
        long left;

        for (i = 0; i < n && which < 0; i++) {
            char *text;
            size_t len = 0;

            /* A file that did not exist at the start is watched once it does
             * (adding a watch twice is harmless). */
            inotify_add_watch(fd, paths[i], IN_MODIFY);
            text = th_read_file(paths[i], &len);

            if (occurrences(text, text ? len : 0, needle) >= count)
                which = i;
            free(text);
        }
        if (which >= 0) {
            if (waited_ms)
                *waited_ms = now_ms() - start;
            break;
        }
        left = timeout_ms - (now_ms() - start);
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            break;
        while (read(fd, evbuf, sizeof(evbuf)) > 0)
            ; /* drain: the next loop re-reads the files */
    }
    close(fd);
    return which;
}

int th_proc_start(struct th_proc *p, const char *name, const char *binary, const char *const *env,
                  int timeout_ms)
{
    if (th_proc_spawn(p, name, binary, env))
        return -1;
    return th_proc_wait_ready(p, timeout_ms);
}

int th_proc_spawn(struct th_proc *p, const char *name, const char *binary, const char *const *env)
{
    return th_proc_spawn_args(p, name, binary, NULL, env);
}

int th_proc_spawn_args(struct th_proc *p, const char *name, const char *binary,
                       const char *const *args, const char *const *env)
{
    const char *argv[32];
    static const char *const sanitizer_vars[] = {"ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"};
    const char *envp[64];
    char sanitizer[sizeof(sanitizer_vars) / sizeof(sanitizer_vars[0])][1024];
    int fds[2], n = 0, i, logfd;

    memset(p, 0, sizeof(*p));
    p->notify_fd = -1;
    snprintf(p->name, sizeof(p->name), "%s", name);
    snprintf(p->log_path, sizeof(p->log_path), "%s/%s.log", th_log_dir(), name);
    /* getenv() returns the first match: the caller's settings go first, the
     * defaults after them. */
    for (i = 0; env && env[i] && n < 56; i++)
        envp[n++] = env[i];
    envp[n++] = "NOTIFY_FD=3";
    envp[n++] = "PATH=/usr/local/bin:/usr/bin:/bin";
    /* Internal gRPC authenticated as deployed over TCP: every process of a
     * test shares one token (a test that wants otherwise says so first). */
    {
        int own = 0; /* a caller that sets it (even to "") wins, also through a shell */

        for (i = 0; env && env[i]; i++)
            own |= !strncmp(env[i], "INTERNAL_TOKEN_FILE=", 20);
        if (!own && th_token_env())
            envp[n++] = th_token_env();
    }
    envp[n++] = "LOG_LEVEL=DEBUG";
    /* Sanitizer settings must reach the children, or their reports are lost. */
    for (i = 0; i < (int)(sizeof(sanitizer_vars) / sizeof(sanitizer_vars[0])); i++) {
        if (getenv(sanitizer_vars[i])) {
            snprintf(sanitizer[i], sizeof(sanitizer[i]), "%s=%s", sanitizer_vars[i],
                     getenv(sanitizer_vars[i]));
            envp[n++] = sanitizer[i];
        }
    }
    envp[n] = NULL;
    if (pipe(fds))
        return -1;
    /* A fresh log per run: tests wait for lines in it and must not find old ones. */
    logfd = open(p->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    p->pid = fork();
    if (p->pid == 0) {
        dup2(fds[1], 3);
        if (fds[0] != 3)
            close(fds[0]);
        if (fds[1] != 3)
            close(fds[1]);
        if (logfd >= 0)
            dup2(logfd, 2);
        argv[0] = binary;
        for (i = 0; args && args[i] && i < 30; i++)
            argv[i + 1] = args[i];
        argv[i + 1] = NULL;
        execve(binary, (char *const *)argv, (char *const *)envp);
        _exit(127);
    }
    close(fds[1]);
    if (logfd >= 0)
        close(logfd);
    if (p->pid < 0) {
        close(fds[0]);
        return -1;
    }
    p->notify_fd = fds[0];
    return 0;
}

int th_proc_wait_ready(struct th_proc *p, int timeout_ms)
{
    char line[32];
    size_t got = 0;
    struct pollfd pfd;
    int fd = p->notify_fd;

    if (fd < 0)
        return -1;
    p->notify_fd = -1;
    pfd.fd = fd;
    pfd.events = POLLIN;
    while (got < sizeof(line) - 1) {
        ssize_t r;

        if (poll(&pfd, 1, timeout_ms) <= 0)
            break; /* timed out */
        r = read(fd, line + got, sizeof(line) - 1 - got);
        if (r <= 0)
            break; /* the child died before it was ready */
        got += (size_t)r;
        if (memchr(line, '\n', got))
            break;
    }
    close(fd);
    line[got] = '\0';
    if (!strchr(line, '\n') || (p->port = atoi(line)) <= 0) {
        fprintf(stderr, "th_proc: %s did not become ready (see %s)\n", p->name, p->log_path);
        th_proc_stop(p, SIGKILL);
        return -1;
    }
    return 0;
}

int th_proc_stop(struct th_proc *p, int sig)
{
    int status;

    if (p->notify_fd >= 0) {
        close(p->notify_fd);
        p->notify_fd = -1;
    }
    if (p->pid <= 0)
        return -1;
    kill(p->pid, sig);
    while (waitpid(p->pid, &status, 0) < 0 && errno == EINTR)
        ;
    p->pid = 0;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

int th_free_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (!bind(fd, (struct sockaddr *)&sa, sizeof(sa)) &&
        !getsockname(fd, (struct sockaddr *)&sa, &len))
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}
