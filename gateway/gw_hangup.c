#include "gw_hangup.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct watch {
    uint64_t id;
    int fd; /* our dup */
    int (*cb)(void *ud, int reset);
    void *ud;
    struct watch *next;
};

#define BUCKETS 1024 /* ids are sequential: a plain modulo spreads them */

struct gw_hangup {
    int ep, wake;
    pthread_t thread;
    pthread_mutex_t lock; /* the table and next_id */
    struct watch *table[BUCKETS];
    uint64_t next_id;
    int stopping;
};

static struct watch **slot(struct gw_hangup *w, uint64_t id)
{
    struct watch **p = &w->table[id % BUCKETS];

    while (*p && (*p)->id != id)
        p = &(*p)->next;
    return p;
}

/* Under the lock: forgets |x| and closes our descriptor (which also takes it
 * out of the epoll set once EPOLL_CTL_DEL ran). */
static void drop(struct gw_hangup *w, struct watch **p)
{
    struct watch *x = *p;

    *p = x->next;
    epoll_ctl(w->ep, EPOLL_CTL_DEL, x->fd, NULL);
    close(x->fd);
    free(x);
}

static void *watch_main(void *p)
{
    struct gw_hangup *w = p;
    struct epoll_event evs[64];

    for (;;) {
        int n = epoll_wait(w->ep, evs, 64, -1), i;

        if (n < 0)
            continue; /* EINTR */
        pthread_mutex_lock(&w->lock);
        for (i = 0; i < n; i++) {
            struct watch **x;

            if (evs[i].data.u64 == 0)
                continue; /* the wake-up descriptor */
            x = slot(w, evs[i].data.u64);
            if (*x) {
                int reset = (evs[i].events & (EPOLLHUP | EPOLLERR)) != 0;
                struct epoll_event ev = {EPOLLONESHOT, {.u64 = (*x)->id}};

                /* Asked to go on: only a failure is reported from now on
                 * (HUP and ERR are always reported). */
                if (!(*x)->cb((*x)->ud, reset) || reset ||
                    epoll_ctl(w->ep, EPOLL_CTL_MOD, (*x)->fd, &ev))
                    drop(w, x);
            }
        }
        if (w->stopping) {
            pthread_mutex_unlock(&w->lock);
            break;
        }
        pthread_mutex_unlock(&w->lock);
    }
    return NULL;
}

struct gw_hangup *gw_hangup_new(void)
{
    struct gw_hangup *w = calloc(1, sizeof(*w));
    struct epoll_event ev = {EPOLLIN, {.u64 = 0}};

    if (!w)
        return NULL;
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    w->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_mutex_init(&w->lock, NULL);
    w->next_id = 1;
    if (w->ep < 0 || w->wake < 0 || epoll_ctl(w->ep, EPOLL_CTL_ADD, w->wake, &ev) ||
        pthread_create(&w->thread, NULL, watch_main, w)) {
        if (w->ep >= 0)
            close(w->ep);
        if (w->wake >= 0)
            close(w->wake);
        pthread_mutex_destroy(&w->lock);
        free(w);
        return NULL;
    }
    return w;
}

void gw_hangup_free(struct gw_hangup *w)
{
    uint64_t one = 1;
    int i;

    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = 1;
    pthread_mutex_unlock(&w->lock);
    if (write(w->wake, &one, sizeof(one)) < 0) {
        /* cannot fail on a fresh eventfd; the join below would hang if it did */
    }
    pthread_join(w->thread, NULL);
    for (i = 0; i < BUCKETS; i++) {
        while (w->table[i])
            drop(w, &w->table[i]);
    }
    close(w->ep);
    close(w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

uint64_t gw_hangup_watch(struct gw_hangup *w, int fd, int (*cb)(void *ud, int reset), void *ud)
{
    struct watch *x = calloc(1, sizeof(*x));
    struct epoll_event ev;

    if (!x)
        return 0;
    x->fd = dup(fd);
    if (x->fd < 0) {
        free(x);
        return 0;
    }
    x->cb = cb;
    x->ud = ud;
    pthread_mutex_lock(&w->lock);
    x->id = w->next_id++;
    ev.events = EPOLLRDHUP | EPOLLONESHOT; /* HUP and ERR are always reported */
    ev.data.u64 = x->id;
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, x->fd, &ev)) {
        pthread_mutex_unlock(&w->lock);
        close(x->fd);
        free(x);
        return 0;
    }
    x->next = w->table[x->id % BUCKETS];
    w->table[x->id % BUCKETS] = x;
    pthread_mutex_unlock(&w->lock);
    return x->id;
}

void gw_hangup_unwatch(struct gw_hangup *w, uint64_t id)
{
    struct watch **x;

    if (!id)
        return;
    pthread_mutex_lock(&w->lock);
    x = slot(w, id);
    if (*x)
        drop(w, x);
    pthread_mutex_unlock(&w->lock);
}
