#include "aw_watch.h"
#include "aw_tools.h"
#include "cm_err.h"
#include "cm_log.h"
#include "cm_rpc.h"
#include "cm_util.h"

#include "agentcore.pb-c.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

static const struct cm_rpc_method watch_method = {
    "/agentcore.v1.ToolService/WatchStatus", &agentcore__v1__status_request__descriptor,
    &agentcore__v1__status_response__descriptor, CM_RPC_SERVER_STREAM};

struct peer {
    struct aw_watch *w;
    char addr[CM_ADDR_MAX];
    struct cm_rpc_client *client;
    struct cm_rpc_astream *stream; /* NULL while not watching */
    int count;
    int missed;  /* resolutions in a row that did not list it */
    int dropped; /* no longer a replica: freed when its stream ends */
};

/* Replicas found by one resolution, handed from the work pool to the loop. */
struct found {
    char addrs[CM_ADDR_MAX_REPLICAS][CM_ADDR_MAX];
    int n, names;
};

struct aw_watch {
    char *targets;
    int interval_ms, max_msg;
    struct cm_rpc_events *ev;
    uv_loop_t *loop;
    void (*on_sum)(int sum, void *ud);
    void *ud;
    struct peer *peers[CM_ADDR_MAX_REPLICAS];
    int npeers;
    int sum;
    int names;          /* TOOL_WORKERS holds names: resolve again every interval */
    uv_timer_t tick;    /* re-resolution, and re-opening watches that ended */
    uv_work_t work;     /* a resolution in flight */
    struct found found; /* its result */
    int resolving, stopping, timer_closed, streams;
};

static void maybe_free(struct aw_watch *w);
static void open_watch(struct peer *p);

static void report(struct aw_watch *w)
{
    int i, sum = 0;

    for (i = 0; i < w->npeers; i++) {
        int k = w->peers[i]->count > 0 ? w->peers[i]->count : 0;

        sum = k > INT_MAX - sum ? INT_MAX : sum + k; /* a peer's count is not trusted */
    }
    if (sum != w->sum) {
        w->sum = sum;
        w->on_sum(sum, w->ud);
    }
}

static void peer_free(struct peer *p)
{
    cm_rpc_client_free(p->client);
    free(p);
}

static void on_msg(void *ud, ProtobufCMessage *msg)
{
    struct peer *p = ud;

    p->count = ((Agentcore__V1__StatusResponse *)msg)->active_background_tasks;
    protobuf_c_message_free_unpacked(msg, NULL);
    if (CM_LOG_ENABLED(CM_LOG_DEBUG)) {
        const char *kv[] = {"toolWorker", p->addr, NULL};

        CM_LOGF(CM_LOG_DEBUG, kv, "tool-worker reports %d background task(s)", p->count);
    }
    if (!p->dropped)
        report(p->w);
}

static void on_tick(uv_timer_t *t);

static void arm_tick(struct aw_watch *w)
{
    if (!w->stopping && !uv_is_active((uv_handle_t *)&w->tick))
        uv_timer_start(&w->tick, on_tick, (uint64_t)w->interval_ms, 0);
}

static void on_end(void *ud, const struct cm_rpc_status *st)
{
    struct peer *p = ud;
    struct aw_watch *w = p->w;

    (void)st;
    p->stream = NULL;
    w->streams--;
    if (p->dropped) { /* no longer in the list */
        peer_free(p);
        maybe_free(w);
        return;
    }
    if (w->stopping) { /* still in the list: maybe_free frees it */
        maybe_free(w);
        return;
    }
    /* The replica went away (or restarts): its work is not running any more.
     * Watch again after the interval; the call then waits for it. */
    p->count = 0;
    report(w);
    arm_tick(w);
}

static void open_watch(struct peer *p)
{
    Agentcore__V1__StatusRequest req = AGENTCORE__V1__STATUS_REQUEST__INIT;
    struct cm_rpc_call_opts o = {0};
    struct cm_rpc_status st;

    o.wait_for_ready = 1; /* no deadline: a replica that is down is waited for */
    p->stream = cm_rpc_astream_open(p->client, p->w->ev, &watch_method, &req.base, &o, on_msg,
                                    on_end, p, &st);
    if (p->stream)
        p->w->streams++;
}

/* Brings the peers in line with |f|: keeps the ones still there, watches new
 * ones, lets the rest go. */
static void apply(struct aw_watch *w, const struct found *f)
{
    struct peer *next[CM_ADDR_MAX_REPLICAS];
    int i, j, m = 0;

    for (i = 0; i < f->n; i++) {
        struct peer *p = NULL;
        char err[256];

        for (j = 0; j < w->npeers; j++) {
            if (w->peers[j] && !strcmp(w->peers[j]->addr, f->addrs[i])) {
                p = w->peers[j];
                w->peers[j] = NULL;
                break;
            }
        }
        if (!p && (p = calloc(1, sizeof(*p)))) {
            p->w = w;
            cm_strlcpy(p->addr, f->addrs[i], sizeof(p->addr));
            p->client = cm_rpc_client_new(p->addr, &watch_method, 1, w->max_msg, err, sizeof(err));
            if (!p->client) {
                free(p);
                p = NULL;
            }
        }
        if (p) {
            p->missed = 0;
            next[m++] = p;
        }
    }
    for (j = 0; j < w->npeers; j++) {
        struct peer *p = w->peers[j];

        if (!p)
            continue;
        /* One resolution that misses a replica may be a DNS hiccup: it goes
         * only when the next one misses it too (its work would otherwise
         * vanish from /ping for a round). */
        if (++p->missed < 2 && m < CM_ADDR_MAX_REPLICAS) {
            next[m++] = p;
            continue;
        }
        if (p->stream) {
            p->dropped = 1;
            cm_rpc_astream_cancel(p->stream); /* freed in on_end */
        } else {
            peer_free(p);
        }
    }
    memcpy(w->peers, next, sizeof(next[0]) * (size_t)m);
    w->npeers = m;
    for (i = 0; i < m; i++) {
        if (!w->peers[i]->stream)
            open_watch(w->peers[i]);
    }
    report(w);
}

/* The production resolver, noting that TOOL_WORKERS holds names (then the
 * resolution is repeated every interval). */
static int count_names(const char *host, char (*out)[CM_ADDR_MAX], int cap, void *ud)
{
    ((struct found *)ud)->names = 1;
    return cm_addr_resolve_host(host, out, cap, NULL);
}

/* On libuv's work pool: getaddrinfo blocks. */
static void resolve_work(uv_work_t *req)
{
    struct aw_watch *w = req->data;

    w->found.names = 0;
    w->found.n =
        cm_addr_replicas(w->targets, count_names, &w->found, w->found.addrs, CM_ADDR_MAX_REPLICAS);
}

static void resolve_done(uv_work_t *req, int status)
{
    struct aw_watch *w = req->data;

    w->resolving = 0;
    if (w->stopping || status) {
        maybe_free(w);
        return;
    }
    w->names = w->found.names;
    apply(w, &w->found);
    if (w->names)
        uv_timer_start(&w->tick, on_tick, (uint64_t)w->interval_ms, 0);
}

static void resolve(struct aw_watch *w)
{
    if (w->resolving || w->stopping)
        return;
    w->work.data = w;
    if (uv_queue_work(w->loop, &w->work, resolve_work, resolve_done) == 0)
        w->resolving = 1;
}

static void on_tick(uv_timer_t *t)
{
    struct aw_watch *w = t->data;
    int i;

    if (w->names) {
        resolve(w); /* re-opens ended watches too, through apply() */
        return;
    }
    for (i = 0; i < w->npeers; i++) {
        if (!w->peers[i]->stream)
            open_watch(w->peers[i]);
    }
    for (i = 0; i < w->npeers; i++) {
        if (!w->peers[i]->stream)
            arm_tick(w); /* could not even start: try again later */
    }
}

static void tick_closed(uv_handle_t *h)
{
    struct aw_watch *w = h->data;

    w->timer_closed = 1;
    maybe_free(w);
}

static void maybe_free(struct aw_watch *w)
{
    int i;

    if (!w->stopping || w->streams || w->resolving || !w->timer_closed)
        return;
    for (i = 0; i < w->npeers; i++)
        peer_free(w->peers[i]);
    free(w->targets);
    free(w);
}

struct aw_watch *aw_watch_start(const char *targets, int interval_ms, int max_msg_bytes,
                                struct cm_rpc_events *ev, uv_loop_t *loop,
                                void (*on_sum)(int sum, void *ud), void *ud)
{
    struct aw_watch *w = calloc(1, sizeof(*w));

    if (!w || !(w->targets = strdup(targets))) {
        free(w);
        return NULL;
    }
    w->interval_ms = interval_ms;
    w->max_msg = max_msg_bytes;
    w->ev = ev;
    w->loop = loop;
    w->on_sum = on_sum;
    w->ud = ud;
    uv_timer_init(loop, &w->tick);
    w->tick.data = w;
    resolve(w);
    return w;
}

void aw_watch_stop(struct aw_watch *w)
{
    int i;

    if (!w)
        return;
    w->stopping = 1;
    for (i = 0; i < w->npeers; i++)
        cm_rpc_astream_cancel(w->peers[i]->stream);
    uv_timer_stop(&w->tick);
    uv_close((uv_handle_t *)&w->tick, tick_closed);
}
