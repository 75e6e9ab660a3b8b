#include "cm_status.h"
#include "cm_err.h"
#include "cm_loop.h"
#include "cm_rpc.h"

#include "agentcore.pb-c.h"

#include <stdatomic.h>
#include <stdlib.h>

/* A watcher that stops reading gets no more than this queued. */
#define WATCH_OUTBOX_CAP (64u * 1024)

struct watcher {
    struct cm_status *s;
    struct cm_rpc_acall *call;
    int last; /* the count it was last sent */
    struct watcher *prev, *next;
};

struct cm_status {
    struct cm_loop *loop;
    struct cm_task notify; /* posted by cm_status_set, at most one queued */
    atomic_int value;
    atomic_int queued;
    struct watcher *watchers; /* loop thread only */
    int closed;
};

static void unlink_watcher(struct watcher *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        w->s->watchers = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
}

static int send_value(struct watcher *w, int v)
{
    Agentcore__V1__StatusResponse resp = AGENTCORE__V1__STATUS_RESPONSE__INIT;

    resp.active_background_tasks = v;
    w->last = v;
    return cm_rpc_acall_send(w->call, &resp.base, WATCH_OUTBOX_CAP);
}

static void on_watch_cancel(void *ud)
{
    struct watcher *w = ud;

    unlink_watcher(w);
    cm_rpc_acall_finish(w->call, CM_RPC_CANCELLED, NULL, "watch ended");
    free(w);
}

static void on_watch(struct cm_rpc_acall *call, ProtobufCMessage *req, void *ud)
{
    struct cm_status *s = ud;
    struct watcher *w;

    protobuf_c_message_free_unpacked(req, NULL);
    if (s->closed) {
        cm_rpc_acall_finish(call, CM_RPC_UNAVAILABLE, NULL, "shutting down");
        return;
    }
    w = calloc(1, sizeof(*w));
    if (!w) {
        cm_rpc_acall_finish(call, CM_RPC_RESOURCE_EXHAUSTED, NULL, "out of memory");
        return;
    }
    w->s = s;
    w->call = call;
    w->next = s->watchers;
    if (s->watchers)
        s->watchers->prev = w;
    s->watchers = w;
    cm_rpc_acall_on_cancel(call, on_watch_cancel, w);
    send_value(w, atomic_load(&s->value));
}

/* On the loop: every watcher hears the latest value once. */
static void notify(struct cm_task *t)
{
    struct cm_status *s = (struct cm_status *)((char *)t - offsetof(struct cm_status, notify));
    struct watcher *w;
    int v;

    atomic_store(&s->queued, 0);
    v = atomic_load(&s->value);
    for (w = s->watchers; w; w = w->next) {
        if (w->last != v)
            send_value(w, v); /* a failure ends the call: on_watch_cancel cleans up */
    }
}

struct cm_status *cm_status_new(struct cm_loop *loop)
{
    struct cm_status *s = calloc(1, sizeof(*s));

    if (!s)
        return NULL;
    s->loop = loop;
    s->notify.run = notify;
    atomic_init(&s->value, 0);
    atomic_init(&s->queued, 0);
    return s;
}

void cm_status_free(struct cm_status *s)
{
    free(s);
}

int cm_status_serve(struct cm_status *s, struct cm_rpc_server *srv, struct cm_rpc_events *ev,
                    const struct cm_rpc_method *m)
{
    return cm_rpc_server_add_async(srv, ev, m, on_watch, s);
}

void cm_status_set(struct cm_status *s, int active_background_tasks)
{
    if (!s)
        return;
    if (atomic_exchange(&s->value, active_background_tasks) == active_background_tasks)
        return;
    if (!atomic_exchange(&s->queued, 1))
        cm_loop_post(s->loop, &s->notify);
}

int cm_status_get(const struct cm_status *s)
{
    return s ? atomic_load(&s->value) : 0;
}

static void close_all(void *p)
{
    struct cm_status *s = p;

    s->closed = 1;
    while (s->watchers) {
        struct watcher *w = s->watchers;

        unlink_watcher(w);
        cm_rpc_acall_finish(w->call, CM_RPC_UNAVAILABLE, NULL, "shutting down");
        free(w);
    }
}

void cm_status_close(struct cm_status *s)
{
    if (s)
        cm_loop_call(s->loop, close_all, s);
}
