#include "gw_conns.h"
#include "cm_util.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

struct gw_conn {
    struct gw_conn *prev, *next;
    int fd;
    int reserve;
    uint64_t deadline_ms; /* monotonic; 0 = none */
};

struct gw_conns {
    struct gw_conns_config cfg;
    pthread_mutex_t lock; /* everything below */
    pthread_cond_t cond;  /* an earlier deadline, or stop */
    struct gw_conn *head;
    size_t n, cut;
    uint64_t sleeping_until; /* what the thread waits for; 0 = nothing */
    int stop;
    pthread_t thread;
};

/* Under the lock: sets |c|'s deadline and wakes the thread when it is now
 * the earliest. */
static void set_deadline(struct gw_conns *cs, struct gw_conn *c, uint64_t at)
{
    c->deadline_ms = at;
    if (at && (!cs->sleeping_until || at < cs->sleeping_until))
        pthread_cond_signal(&cs->cond);
}

static void *sweeper(void *arg)
{
    struct gw_conns *cs = arg;

    pthread_mutex_lock(&cs->lock);
    while (!cs->stop) {
        uint64_t now = cm_now_ms(), earliest = 0;
        struct gw_conn *c;

        for (c = cs->head; c; c = c->next) {
            if (!c->deadline_ms)
                continue;
            if (c->deadline_ms <= now) {
                /* The fd is open: it is closed only after gw_conns_close,
                 * which waits for this lock. */
                shutdown(c->fd, SHUT_RDWR);
                c->deadline_ms = 0;
                cs->cut++;
            } else if (!earliest || c->deadline_ms < earliest) {
                earliest = c->deadline_ms;
            }
        }
        cs->sleeping_until = earliest;
        if (!earliest) {
            pthread_cond_wait(&cs->cond, &cs->lock);
        } else {
            struct timespec until = cm_deadline_ms((int)(earliest - now));

            pthread_cond_timedwait(&cs->cond, &cs->lock, &until);
        }
    }
    pthread_mutex_unlock(&cs->lock);
    return NULL;
}

struct gw_conns *gw_conns_new(const struct gw_conns_config *cfg)
{
    struct gw_conns *cs = calloc(1, sizeof(*cs));

    if (!cs)
        return NULL;
    cs->cfg = *cfg;
    pthread_mutex_init(&cs->lock, NULL);
    pthread_cond_init(&cs->cond, NULL); /* deadlines are re-checked on the monotonic clock */
    if (pthread_create(&cs->thread, NULL, sweeper, cs)) {
        pthread_mutex_destroy(&cs->lock);
        pthread_cond_destroy(&cs->cond);
        free(cs);
        return NULL;
    }
    return cs;
}

void gw_conns_free(struct gw_conns *cs)
{
    struct gw_conn *c, *next;

    if (!cs)
        return;
    pthread_mutex_lock(&cs->lock);
    cs->stop = 1;
    pthread_cond_signal(&cs->cond);
    pthread_mutex_unlock(&cs->lock);
    pthread_join(cs->thread, NULL);
    for (c = cs->head; c; c = next) {
        next = c->next;
        free(c);
    }
    pthread_mutex_destroy(&cs->lock);
    pthread_cond_destroy(&cs->cond);
    free(cs);
}

struct gw_conn *gw_conns_open(struct gw_conns *cs, int fd)
{
    struct gw_conn *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->fd = fd;
    pthread_mutex_lock(&cs->lock);
    c->reserve = cs->n >= (size_t)cs->cfg.max_connections;
    c->next = cs->head;
    if (cs->head)
        cs->head->prev = c;
    cs->head = c;
    cs->n++;
    set_deadline(cs, c,
                 cm_now_ms() + (uint64_t)(c->reserve ? cs->cfg.reserve_timeout_ms
                                                     : cs->cfg.request_timeout_ms));
    pthread_mutex_unlock(&cs->lock);
    return c;
}

void gw_conns_close(struct gw_conns *cs, struct gw_conn *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&cs->lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        cs->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    cs->n--;
    pthread_mutex_unlock(&cs->lock);
    free(c);
}

int gw_conn_is_reserve(const struct gw_conn *c)
{
    return c && c->reserve;
}

void gw_conns_request_read(struct gw_conns *cs, struct gw_conn *c)
{
    if (!c || c->reserve) /* a reserve connection keeps its short life */
        return;
    pthread_mutex_lock(&cs->lock);
    c->deadline_ms = 0;
    pthread_mutex_unlock(&cs->lock);
}

void gw_conns_request_done(struct gw_conns *cs, struct gw_conn *c)
{
    if (!c || c->reserve || !cs->cfg.idle_timeout_ms) /* idle for ever is allowed */
        return;
    pthread_mutex_lock(&cs->lock);
    set_deadline(cs, c,
                 cm_now_ms() + (uint64_t)cs->cfg.idle_timeout_ms +
                     (uint64_t)cs->cfg.request_timeout_ms);
    pthread_mutex_unlock(&cs->lock);
}

void gw_conns_counts(struct gw_conns *cs, size_t *open, size_t *cut)
{
    pthread_mutex_lock(&cs->lock);
    *open = cs->n;
    *cut = cs->cut;
    pthread_mutex_unlock(&cs->lock);
}
