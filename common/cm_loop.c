#include "cm_loop.h"
#include "cm_err.h"

#include <pthread.h>
#include <stdlib.h>

struct cm_loop {
    uv_loop_t uv;
    uv_async_t wake;
    pthread_t thread;
    pthread_mutex_t lock; /* the queue below */
    struct cm_task *head, *tail;
    int started, stopped, closing;
};

/* Runs what is queued now. Tasks posted meanwhile wait for the next turn of
 * the loop (their post sees an empty queue and wakes it again), so a steady
 * flow of completions cannot starve timers and sockets: a burst of 2,000
 * arriving calls must not hold back the model requests of the first ones. */
static void drain(uv_async_t *a)
{
    struct cm_loop *l = a->data;
    struct cm_task *t;

    pthread_mutex_lock(&l->lock);
    t = l->head;
    l->head = l->tail = NULL;
    pthread_mutex_unlock(&l->lock);
    while (t) {
        struct cm_task *next = t->next;

        t->next = NULL;
        t->run(t); /* may free t */
        t = next;
    }
}

struct cm_loop *cm_loop_new(void)
{
    struct cm_loop *l = calloc(1, sizeof(*l));

    if (!l)
        return NULL;
    if (uv_loop_init(&l->uv)) {
        free(l);
        return NULL;
    }
    if (uv_async_init(&l->uv, &l->wake, drain)) {
        uv_loop_close(&l->uv);
        free(l);
        return NULL;
    }
    l->wake.data = l;
    pthread_mutex_init(&l->lock, NULL);
    return l;
}

uv_loop_t *cm_loop_uv(struct cm_loop *l)
{
    return &l->uv;
}

static void *loop_main(void *p)
{
    struct cm_loop *l = p;

    uv_run(&l->uv, UV_RUN_DEFAULT);
    return NULL;
}

int cm_loop_start(struct cm_loop *l)
{
    if (pthread_create(&l->thread, NULL, loop_main, l))
        return CM_EIO;
    l->started = 1;
    return 0;
}

int cm_loop_is_loop_thread(const struct cm_loop *l)
{
    return l->started && pthread_equal(pthread_self(), l->thread);
}

void cm_loop_post(struct cm_loop *l, struct cm_task *t)
{
    int first;

    t->next = NULL;
    pthread_mutex_lock(&l->lock);
    if (l->closing) {
        /* The loop is ending: nobody would run it. */
        pthread_mutex_unlock(&l->lock);
        return;
    }
    first = !l->head;
    if (l->tail)
        l->tail->next = t;
    else
        l->head = t;
    l->tail = t;
    pthread_mutex_unlock(&l->lock);
    /* A non-empty queue already has a wake-up on its way. */
    if (first)
        uv_async_send(&l->wake);
}

struct sync_call {
    struct cm_task task;
    void (*fn)(void *);
    void *arg;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
};

static void run_sync(struct cm_task *t)
{
    struct sync_call *s = (struct sync_call *)t;

    s->fn(s->arg);
    pthread_mutex_lock(&s->lock);
    s->done = 1;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

void cm_loop_call(struct cm_loop *l, void (*fn)(void *arg), void *arg)
{
    struct sync_call s = {{NULL, run_sync, 0},      fn, arg, PTHREAD_MUTEX_INITIALIZER,
                          PTHREAD_COND_INITIALIZER, 0};

    if (!l->started || l->stopped || cm_loop_is_loop_thread(l)) {
        fn(arg);
        return;
    }
    cm_loop_post(l, &s.task);
    pthread_mutex_lock(&s.lock);
    while (!s.done)
        pthread_cond_wait(&s.cond, &s.lock);
    pthread_mutex_unlock(&s.lock);
    pthread_cond_destroy(&s.cond);
    pthread_mutex_destroy(&s.lock);
}

static void close_wake(void *arg)
{
    struct cm_loop *l = arg;

    /* Serve what is still queued, then let the loop end once the owners'
     * handles are gone too. */
    drain(&l->wake);
    pthread_mutex_lock(&l->lock);
    l->closing = 1;
    pthread_mutex_unlock(&l->lock);
    uv_close((uv_handle_t *)&l->wake, NULL);
}

void cm_loop_stop(struct cm_loop *l)
{
    if (!l || l->stopped)
        return;
    if (l->started) {
        cm_loop_call(l, close_wake, l);
        l->stopped = 1;
        pthread_join(l->thread, NULL);
    } else {
        l->stopped = 1;
        l->closing = 1;
        uv_close((uv_handle_t *)&l->wake, NULL);
        uv_run(&l->uv, UV_RUN_DEFAULT);
    }
}

void cm_loop_free(struct cm_loop *l)
{
    if (!l)
        return;
    cm_loop_stop(l);
    uv_loop_close(&l->uv);
    pthread_mutex_destroy(&l->lock);
    free(l);
}
