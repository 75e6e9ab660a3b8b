#include "tw_proc.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct tw_proc;

struct stream {
    uv_pipe_t pipe;
    struct tw_proc *owner;
    char *buf;
    size_t len, cap;
    int open;
};

struct tw_proc {
    uv_process_t proc;
    uv_pipe_t info; /* bubblewrap's --info-fd */
    char info_buf[256];
    size_t info_len;
    int info_open, pidfd, group;
    uv_pipe_t ready; /* the helper's --ready-fd (a waiting sandbox) */
    char ready_byte;
    int ready_open, is_ready;
    uv_timer_t timer;
    uv_pipe_t in;
    uv_write_t write;
    uv_shutdown_t shut;
    struct stream out, err;
    char *input; /* kept until the write completes */
    size_t input_len, cap;
    int exited, handles, in_open, discarded;
    uint64_t t0;
    struct tw_proc_result res;
    tw_proc_done done;
    void *ud;
};

static void handle_closed(uv_handle_t *h)
{
    struct tw_proc *p = h->data;

    if (--p->handles == 0) {
        free(p->out.buf);
        free(p->err.buf);
        free(p->input);
        free(p);
    }
}

static void close_handle(struct tw_proc *p, uv_handle_t *h)
{
    if (!uv_is_closing(h)) {
        h->data = p;
        uv_close(h, handle_closed);
    }
}

static void close_all(struct tw_proc *p);

static void maybe_finish(struct tw_proc *p)
{
    if (!p->exited || p->out.open || p->err.open || !p->done)
        return;
    p->res.out = p->out.buf ? p->out.buf : "";
    p->res.err = p->err.buf ? p->err.buf : "";
    p->res.out_len = p->out.len;
    p->res.err_len = p->err.len;
    p->res.elapsed_us = (long long)(uv_hrtime() - p->t0) / 1000;
    p->done(p->ud, &p->res);
    p->done = NULL;
    close_all(p);
}

/* Every handle closes; the last one frees |p|. */
static void close_all(struct tw_proc *p)
{
    struct stream *s[2] = {&p->out, &p->err};
    int i;

    for (i = 0; i < 2; i++) {
        if (s[i]->open) {
            s[i]->open = 0;
            close_handle(p, (uv_handle_t *)&s[i]->pipe);
        }
    }
    close_handle(p, (uv_handle_t *)&p->timer);
    close_handle(p, (uv_handle_t *)&p->proc);
    if (p->in_open)
        close_handle(p, (uv_handle_t *)&p->in);
    if (p->info_open)
        close_handle(p, (uv_handle_t *)&p->info);
    if (p->ready_open)
        close_handle(p, (uv_handle_t *)&p->ready);
    if (p->pidfd >= 0)
        close(p->pidfd);
    p->pidfd = -1;
}

static void kill_tree(struct tw_proc *p)
{
    if (p->exited)
        return;
    /* The sandbox's init: its death kills every process of its PID namespace,
     * and bubblewrap exits only once they are all gone, so the exit event
     * means the tree is gone. Before bubblewrap told us its PID (still
     * setting up), or without namespaces, the process group goes. */
    if (p->pidfd >= 0 && syscall(SYS_pidfd_send_signal, p->pidfd, SIGKILL, NULL, 0) == 0)
        return;
    if (p->group)
        kill(-p->proc.pid, SIGKILL);
    uv_process_kill(&p->proc, SIGKILL);
}

static void on_info(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct tw_proc *p = st->data;
    const char *at;

    (void)buf;
    if (n > 0) {
        p->info_len += (size_t)n;
        p->info_buf[p->info_len] = '\0';
        if ((at = strstr(p->info_buf, "\"child-pid\":")) && strchr(at, '}') && p->pidfd < 0) {
            long pid = strtol(at + 12, NULL, 10);

            if (pid > 0)
                p->pidfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
        }
    }
    if (n < 0 || p->info_len + 1 >= sizeof(p->info_buf)) {
        uv_read_stop(st);
        p->info_open = 0;
        close_handle(p, (uv_handle_t *)st);
    }
}

static void on_info_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct tw_proc *p = h->data;

    (void)hint;
    *buf =
        uv_buf_init(p->info_buf + p->info_len, (unsigned)(sizeof(p->info_buf) - 1 - p->info_len));
}

static void on_ready(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct tw_proc *p = st->data;

    (void)buf;
    if (n == 0)
        return;
    p->is_ready = n > 0; /* else it ended without a word: never */
    uv_read_stop(st);
    p->ready_open = 0;
    close_handle(p, (uv_handle_t *)st);
}

static void on_ready_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct tw_proc *p = h->data;

    (void)hint;
    *buf = uv_buf_init(&p->ready_byte, 1);
}

/* Reads a copy of |fd| on |h| with |alloc| and |read|; |*open| says it is
 * being read. A failure leaves it unread (and the handle closed). */
static void watch(struct tw_proc *p, uv_loop_t *loop, uv_pipe_t *h, int fd, uv_alloc_cb alloc,
                  uv_read_cb read, int *open)
{
    int dup = fcntl(fd, F_DUPFD_CLOEXEC, 3);

    uv_pipe_init(loop, h, 0);
    h->data = p;
    p->handles++;
    if (dup < 0 || uv_pipe_open(h, dup)) {
        if (dup >= 0)
            close(dup);
        close_handle(p, (uv_handle_t *)h);
    } else if (uv_read_start((uv_stream_t *)h, alloc, read)) {
        close_handle(p, (uv_handle_t *)h); /* closes |dup| too */
    } else {
        *open = 1;
    }
}

static void on_child_exit(uv_process_t *h, int64_t status, int sig)
{
    struct tw_proc *p = h->data;

    p->exited = 1;
    p->res.exit_status = (int)status;
    p->res.term_signal = sig;
    uv_timer_stop(&p->timer);
    if (p->discarded)
        close_all(p);
    else
        maybe_finish(p);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct stream *s = h->data;
    static char scratch[4096]; /* where bytes past the cap go (never read) */

    (void)hint;
    if (s->len == s->cap) {
        *buf = uv_buf_init(scratch, sizeof(scratch));
        return;
    }
    *buf = uv_buf_init(s->buf + s->len, (unsigned)(s->cap - s->len));
}

static void stream_end(struct tw_proc *p, struct stream *s)
{
    if (!s->open)
        return;
    s->open = 0;
    uv_read_stop((uv_stream_t *)&s->pipe);
    close_handle(p, (uv_handle_t *)&s->pipe);
    maybe_finish(p);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct stream *s = st->data;
    struct tw_proc *p = s->owner;

    if (n > 0) {
        if (buf->base != s->buf + s->len) {
            /* Past the cap: the flood is cut here and the tree killed. */
            p->res.out_truncated = 1;
            kill_tree(p);
            stream_end(p, s);
            return;
        }
        s->len += (size_t)n;
        s->buf[s->len] = '\0';
        return;
    }
    if (n < 0)
        stream_end(p, s);
}

static void on_timeout(uv_timer_t *t)
{
    struct tw_proc *p = t->data;

    p->res.timed_out = 1;
    kill_tree(p);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct tw_proc *p = req->data;

    (void)status;
    p->in_open = 0;
    close_handle(p, (uv_handle_t *)&p->in);
}

static void on_written(uv_write_t *req, int status)
{
    struct tw_proc *p = req->data;

    if (status == 0 && uv_shutdown(&p->shut, (uv_stream_t *)&p->in, on_shutdown) == 0)
        return;
    /* The child closed its stdin early (EPIPE): fine, it chose not to read. */
    p->in_open = 0;
    close_handle(p, (uv_handle_t *)&p->in);
}

struct tw_proc *tw_proc_spawn(uv_loop_t *loop, const struct tw_sandbox_cmd *cmd, int *err)
{
    struct tw_proc *p = calloc(1, sizeof(*p));
    uv_stdio_container_t stdio[3 + TW_SANDBOX_MAX_FDS];
    uv_process_options_t o;
    int i, rc;

    if (!p) {
        *err = UV_ENOMEM;
        return NULL;
    }
    p->pidfd = -1;
    p->out.owner = p->err.owner = p;
    uv_pipe_init(loop, &p->out.pipe, 0); /* cannot fail: it only fills the struct */
    uv_pipe_init(loop, &p->err.pipe, 0);
    uv_pipe_init(loop, &p->in, 0);
    uv_timer_init(loop, &p->timer);
    memset(&o, 0, sizeof(o));
    o.file = cmd->argv[0];
    o.args = cmd->argv;
    o.env = cmd->env;
    o.cwd = cmd->cwd;
    o.exit_cb = on_child_exit;
    o.flags = UV_PROCESS_DETACHED; /* its own process group: one kill reaches all */
    if (cmd->set_ids) {
        o.flags |= UV_PROCESS_SETUID | UV_PROCESS_SETGID;
        o.uid = cmd->uid;
        o.gid = cmd->gid;
    }
    stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    stdio[0].data.stream = (uv_stream_t *)&p->in;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&p->out.pipe;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&p->err.pipe;
    for (i = 0; i < cmd->n_fds; i++) {
        stdio[3 + i].flags = UV_INHERIT_FD;
        stdio[3 + i].data.fd = cmd->fds[i];
    }
    o.stdio = stdio;
    o.stdio_count = 3 + cmd->n_fds;
    p->proc.data = p;
    p->timer.data = p;
    p->in.data = p;
    p->shut.data = p;
    p->out.pipe.data = p;
    p->err.pipe.data = p;
    p->handles = 5;
    rc = uv_spawn(loop, &p->proc, &o);
    if (rc) {
        /* libuv closes nothing on failure: close every handle, freeing p at the end. */
        *err = rc;
        close_handle(p, (uv_handle_t *)&p->out.pipe);
        close_handle(p, (uv_handle_t *)&p->err.pipe);
        close_handle(p, (uv_handle_t *)&p->in);
        close_handle(p, (uv_handle_t *)&p->timer);
        close_handle(p, (uv_handle_t *)&p->proc);
        return NULL;
    }
    p->out.pipe.data = &p->out;
    p->err.pipe.data = &p->err;
    p->out.open = p->err.open = p->in_open = 1;
    p->group = 1;
    if (cmd->info_fd >= 0)
        watch(p, loop, &p->info, cmd->info_fd, on_info_alloc, on_info, &p->info_open);
    if (cmd->ready_fd >= 0)
        watch(p, loop, &p->ready, cmd->ready_fd, on_ready_alloc, on_ready, &p->ready_open);
    return p;
}

static void close_stdin(struct tw_proc *p)
{
    if (uv_shutdown(&p->shut, (uv_stream_t *)&p->in, on_shutdown)) {
        p->in_open = 0;
        close_handle(p, (uv_handle_t *)&p->in);
    }
}

int tw_proc_run(struct tw_proc *p, const char *prefix, size_t prefix_len, const char *input,
                size_t input_len, int timeout_ms, size_t output_cap, tw_proc_done done, void *ud)
{
    uv_buf_t b;

    if (p->done || p->discarded)
        return UV_EINVAL;
    p->out.cap = p->err.cap = output_cap;
    if (!(p->out.buf = malloc(output_cap + 1)) || !(p->err.buf = malloc(output_cap + 1)))
        return UV_ENOMEM; /* freed with p */
    p->out.buf[0] = p->err.buf[0] = '\0';
    p->done = done;
    p->ud = ud;
    p->t0 = uv_hrtime();
    uv_read_start((uv_stream_t *)&p->out.pipe, on_alloc, on_read);
    uv_read_start((uv_stream_t *)&p->err.pipe, on_alloc, on_read);
    if (timeout_ms > 0)
        uv_timer_start(&p->timer, on_timeout, (uint64_t)timeout_ms, 0);
    if (p->exited) {
        /* It died waiting (a sandbox that could not be set up): its pipes
         * hold why; nothing to write. */
        close_stdin(p);
        return 0;
    }
    p->input_len = prefix_len + input_len;
    if (p->input_len && (p->input = malloc(p->input_len))) {
        if (prefix_len)
            memcpy(p->input, prefix, prefix_len);
        if (input_len)
            memcpy(p->input + prefix_len, input, input_len);
        b = uv_buf_init(p->input, (unsigned)p->input_len);
        p->write.data = p;
        if (uv_write(&p->write, (uv_stream_t *)&p->in, &b, 1, on_written) == 0)
            return 0;
    }
    close_stdin(p);
    return 0;
}

struct tw_proc *tw_proc_start(uv_loop_t *loop, const struct tw_sandbox_cmd *cmd, const char *input,
                              size_t input_len, int timeout_ms, size_t output_cap,
                              tw_proc_done done, void *ud, int *err)
{
    struct tw_proc *p = tw_proc_spawn(loop, cmd, err);

    if (p && (*err = tw_proc_run(p, NULL, 0, input, input_len, timeout_ms, output_cap, done, ud))) {
        /* The process runs already: it has to go the long way. */
        tw_proc_discard(p);
        return NULL;
    }
    return p;
}

int tw_proc_exited(const struct tw_proc *p)
{
    return p->exited;
}

int tw_proc_ready(const struct tw_proc *p)
{
    return p->is_ready;
}

void tw_proc_discard(struct tw_proc *p)
{
    if (!p)
        return;
    p->done = NULL;
    p->discarded = 1;
    if (p->exited)
        close_all(p);
    else
        kill_tree(p);
}

void tw_proc_kill(struct tw_proc *p)
{
    if (!p || p->exited)
        return;
    p->res.killed = 1;
    kill_tree(p);
}
