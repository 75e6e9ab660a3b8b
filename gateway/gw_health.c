#include "gw_health.h"
#include "cm_log.h"
#include "cm_rpc.h"
#include "cm_util.h"

#include "agentcore.pb-c.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct gw_health {
    struct cm_rpc_client *agent;
    const struct cm_rpc_method *watch_method;
    int interval_ms, timeout_ms;
    pthread_t thread;
    pthread_mutex_t lock; /* everything below */
    pthread_cond_t cond;  /* stopping */
    const char *status;
    long long since;
    int failures, stopping;
    struct cm_rpc_stream *watch; /* while open, so stop can cancel it */
};

/* Under the lock. */
static void set_status(struct gw_health *h, const char *status)
{
    if (strcmp(h->status, status)) {
        /* A value that moved on every ping would keep idle sessions alive
         * for hours. */
        h->status = status;
        h->since = (long long)time(NULL);
        cm_info("ping status is now %s", status);
    }
}

static void *watch_main(void *p)
{
    Agentcore__V1__StatusRequest req = AGENTCORE__V1__STATUS_REQUEST__INIT;
    struct gw_health *h = p;
    struct timespec until;

    pthread_mutex_lock(&h->lock);
    while (!h->stopping) {
        struct cm_rpc_stream *s = NULL;
        struct cm_rpc_status st;
        ProtobufCMessage *m;

        pthread_mutex_unlock(&h->lock);
        /* Bounded: gRPC's own wait-for-ready has no deadline. */
        if (cm_rpc_client_wait_ready(h->agent, h->timeout_ms) == 0)
            s = cm_rpc_stream_open(h->agent, h->watch_method, &req.base, NULL, &st);
        pthread_mutex_lock(&h->lock);
        h->watch = s;
        while (s && !h->stopping) {
            int rc;

            pthread_mutex_unlock(&h->lock);
            rc = cm_rpc_stream_next(s, &m);
            pthread_mutex_lock(&h->lock);
            if (rc != 1)
                break;
            h->failures = 0;
            set_status(h, ((Agentcore__V1__StatusResponse *)m)->active_background_tasks > 0
                              ? "HealthyBusy"
                              : "Healthy");
            protobuf_c_message_free_unpacked(m, NULL);
        }
        h->watch = NULL;
        pthread_mutex_unlock(&h->lock);
        cm_rpc_stream_close(s, &st);
        pthread_mutex_lock(&h->lock);
        if (h->stopping)
            break;
        if (++h->failures >= GW_HEALTH_DOWN_CHECKS)
            set_status(h, "Unhealthy");
        if (h->failures > 1) {
            /* Not the first failure: wait before the next check. */
            until = cm_deadline_ms(h->interval_ms);
            while (!h->stopping && pthread_cond_timedwait(&h->cond, &h->lock, &until) == 0)
                ;
        }
    }
    pthread_mutex_unlock(&h->lock);
    cm_rpc_thread_done();
    return NULL;
}

struct gw_health *gw_health_start(struct cm_rpc_client *agent, const struct cm_rpc_method *watch,
                                  int interval_ms, int timeout_ms)
{
    struct gw_health *h = calloc(1, sizeof(*h));

    if (!h)
        return NULL;
    h->agent = agent;
    h->watch_method = watch;
    h->interval_ms = interval_ms;
    h->timeout_ms = timeout_ms;
    h->status = "Healthy";
    h->since = (long long)time(NULL);
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->cond, NULL);
    if (pthread_create(&h->thread, NULL, watch_main, h)) {
        pthread_mutex_destroy(&h->lock);
        pthread_cond_destroy(&h->cond);
        free(h);
        return NULL;
    }
    return h;
}

const char *gw_health_status(struct gw_health *h, long long *since)
{
    const char *s;

    pthread_mutex_lock(&h->lock);
    s = h->status;
    *since = h->since;
    pthread_mutex_unlock(&h->lock);
    return s;
}

void gw_health_stop(struct gw_health *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->lock);
    h->stopping = 1;
    pthread_cond_broadcast(&h->cond);
    if (h->watch)
        cm_rpc_stream_cancel(h->watch); /* wakes the thread */
    pthread_mutex_unlock(&h->lock);
    pthread_join(h->thread, NULL);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->cond);
    free(h);
}
