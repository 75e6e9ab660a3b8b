#include "aw_curl.h"
#include "cm_err.h"

#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

struct aw_curl {
    CURLM *multi;
    uv_loop_t *loop;
    uv_timer_t timer;
    int running;
    struct sock *socks; /* every open poll handle */
    int serial;         /* aw_curl_serial() */
    long live;          /* transfers added and not yet done or removed */
    long sockets;       /* sockets curl opened and has not closed */
};

/* One watched socket. */
struct sock {
    uv_poll_t poll;
    curl_socket_t fd;
    struct aw_curl *m;
    struct sock *prev, *next;
};

static void sock_unlink(struct sock *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        s->m->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

/* What CURLOPT_PRIVATE points at while a transfer runs. */
struct slot {
    aw_curl_done done;
    void *ud;
};

static void check_done(struct aw_curl *m)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(m->multi, &left))) {
        struct slot *s = NULL;
        CURL *easy;
        CURLcode rc;

        if (msg->msg != CURLMSG_DONE)
            continue;
        easy = msg->easy_handle;
        rc = msg->data.result;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&s);
        curl_multi_remove_handle(m->multi, easy);
        curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
        if (s) {
            aw_curl_done done = s->done;
            void *ud = s->ud;

            free(s);
            m->live--;
            done(ud, rc); /* may add or remove transfers */
        }
    }
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    struct sock *s = p->data;
    int flags = 0;

    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(s->m->multi, s->fd, flags, &s->m->running);
    check_done(s->m);
}

static void on_timer(uv_timer_t *t)
{
    struct aw_curl *m = t->data;

    curl_multi_socket_action(m->multi, CURL_SOCKET_TIMEOUT, 0, &m->running);
    check_done(m);
}

static int timer_cb(CURLM *multi, long timeout_ms, void *ud)
{
    struct aw_curl *m = ud;

    (void)multi;
    if (timeout_ms < 0)
        uv_timer_stop(&m->timer);
    else /* 0 too: never call socket_action from inside curl */
        uv_timer_start(&m->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

static void sock_closed(uv_handle_t *h)
{
    free(h->data);
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *ud, void *sockp)
{
    struct aw_curl *m = ud;
    struct sock *s = sockp;
    int events = 0;

    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            uv_poll_stop(&s->poll);
            curl_multi_assign(m->multi, fd, NULL);
            sock_unlink(s);
            uv_close((uv_handle_t *)&s->poll, sock_closed);
        }
        return 0;
    }
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s)
            return -1;
        s->fd = fd;
        s->m = m;
        if (uv_poll_init_socket(m->loop, &s->poll, fd)) {
            free(s);
            return -1;
        }
        s->poll.data = s;
        s->next = m->socks;
        if (m->socks)
            m->socks->prev = s;
        m->socks = s;
        curl_multi_assign(m->multi, fd, s);
    }
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    uv_poll_start(&s->poll, events, on_poll);
    return 0;
}

struct aw_curl *aw_curl_new(uv_loop_t *loop, long max_connections)
{
    struct aw_curl *m = calloc(1, sizeof(*m));

    if (!m)
        return NULL;
    m->multi = curl_multi_init();
    if (!m->multi) {
        free(m);
        return NULL;
    }
    m->loop = loop;
    uv_timer_init(loop, &m->timer);
    m->timer.data = m;
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETDATA, m);
    curl_multi_setopt(m->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(m->multi, CURLMOPT_TIMERDATA, m);
    curl_multi_setopt(m->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    curl_multi_setopt(m->multi, CURLMOPT_MAXCONNECTS, max_connections);
    return m;
}

void aw_curl_serial(struct aw_curl *m, int on)
{
    m->serial = on;
}

/* Sockets are counted as curl opens and closes them (a connection remembers
 * the callbacks of the transfer that opened it, so a close long after that
 * transfer is counted too). */
static curl_socket_t open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct aw_curl *m = ud;
    curl_socket_t fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);

    (void)purpose;
    if (fd != CURL_SOCKET_BAD)
        m->sockets++;
    return fd;
}

static int close_socket(void *ud, curl_socket_t fd)
{
    struct aw_curl *m = ud;

    m->sockets--;
    return close(fd);
}

int aw_curl_add(struct aw_curl *m, CURL *easy, aw_curl_done done, void *ud)
{
    struct slot *s = malloc(sizeof(*s));

    if (!s)
        return CM_ENOMEM;
    s->done = done;
    s->ud = ud;
    curl_easy_setopt(easy, CURLOPT_PRIVATE, s);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, m);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, close_socket);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, m);
    /* Serial: each transfer running holds one socket, so with no more
     * sockets than transfers none is idle and looking for one is wasted.
     * A miscount costs a search or a connection, never a wrong reuse. */
    curl_easy_setopt(easy, CURLOPT_FRESH_CONNECT, (long)(m->serial && m->sockets <= m->live));
    if (curl_multi_add_handle(m->multi, easy) != CURLM_OK) {
        curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
        free(s);
        return CM_EIO;
    }
    m->live++;
    return 0;
}

void aw_curl_remove(struct aw_curl *m, CURL *easy)
{
    struct slot *s = NULL;

    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&s);
    curl_multi_remove_handle(m->multi, easy);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
    if (s)
        m->live--;
    free(s);
}

long aw_curl_sockets(const struct aw_curl *m)
{
    return m->sockets;
}

int aw_curl_running(const struct aw_curl *m)
{
    return m->running;
}

static void timer_closed(uv_handle_t *h)
{
    free(h->data);
}

void aw_curl_free(struct aw_curl *m)
{
    if (!m)
        return;
    /* Closing the multi handle closes its sockets: socket_cb closes their polls. */
    curl_multi_cleanup(m->multi);
    while (m->socks) {
        struct sock *s = m->socks;

        sock_unlink(s);
        uv_poll_stop(&s->poll);
        uv_close((uv_handle_t *)&s->poll, sock_closed);
    }
    uv_timer_stop(&m->timer);
    uv_close((uv_handle_t *)&m->timer, timer_closed);
}
