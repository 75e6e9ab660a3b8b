#include "aw_session.h"
#include "aw_history.h"
#include "cm_log.h"
#include "cm_util.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct aw_session {
    char id[AW_SESSION_ID_MAX + 1];
    json_t *messages;
    pthread_mutex_t turn; /* held for a whole invocation (blocking API) */
    int holders;          /* invocations holding or waiting; guarded by the map lock */
    int busy;             /* held (loop API) */
    struct aw_session_waiter *wait_head, *wait_tail; /* loop API, in arrival order */
    struct aw_session *hnext;
    struct aw_session *lru_prev, *lru_next; /* head = most recent */
    size_t bytes;                           /* compact JSON of |messages|, at last release */
    char *version;                          /* its version in the backing store; NULL: none */
    uint64_t last_used;
};

struct aw_sessions {
    pthread_mutex_t lock; /* map, LRU list, counts, holders */
    struct aw_session **buckets;
    size_t nbuckets, count, max_sessions, max_messages;
    struct aw_session *lru_head, *lru_tail;
    size_t bytes, max_bytes, evicted;
    uint64_t ttl_ms;
    uint64_t (*now)(void);
};

void aw_sessions_set_limits(struct aw_sessions *s, size_t max_bytes, uint64_t ttl_ms,
                            uint64_t (*now)(void))
{
    s->max_bytes = max_bytes;
    s->ttl_ms = ttl_ms;
    s->now = now ? now : cm_now_ms;
}

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */

    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

struct aw_sessions *aw_sessions_new(size_t max_sessions, size_t max_messages)
{
    struct aw_sessions *s = calloc(1, sizeof(*s));

    if (!s)
        return NULL;
    s->nbuckets = 16;
    while (s->nbuckets < max_sessions && s->nbuckets < ((size_t)1 << 24))
        s->nbuckets <<= 1;
    s->buckets = calloc(s->nbuckets, sizeof(*s->buckets));
    if (!s->buckets) {
        free(s);
        return NULL;
    }
    s->max_sessions = max_sessions ? max_sessions : 1;
    s->max_messages = max_messages ? max_messages : 2;
    s->now = cm_now_ms;
    pthread_mutex_init(&s->lock, NULL);
    return s;
}

static void session_free(struct aw_session *x)
{
    json_decref(x->messages);
    free(x->version);
    pthread_mutex_destroy(&x->turn);
    free(x);
}

void aw_sessions_free(struct aw_sessions *s)
{
    struct aw_session *x, *next;

    if (!s)
        return;
    for (x = s->lru_head; x; x = next) {
        next = x->lru_next;
        session_free(x);
    }
    pthread_mutex_destroy(&s->lock);
    free(s->buckets);
    free(s);
}

static void lru_unlink(struct aw_sessions *s, struct aw_session *x)
{
    if (x->lru_prev)
        x->lru_prev->lru_next = x->lru_next;
    else
        s->lru_head = x->lru_next;
    if (x->lru_next)
        x->lru_next->lru_prev = x->lru_prev;
    else
        s->lru_tail = x->lru_prev;
    x->lru_prev = x->lru_next = NULL;
}

static void lru_push_front(struct aw_sessions *s, struct aw_session *x)
{
    x->lru_next = s->lru_head;
    x->lru_prev = NULL;
    if (s->lru_head)
        s->lru_head->lru_prev = x;
    s->lru_head = x;
    if (!s->lru_tail)
        s->lru_tail = x;
}

static void map_remove(struct aw_sessions *s, struct aw_session *x)
{
    struct aw_session **pp = &s->buckets[hash(x->id) & (s->nbuckets - 1)];

    while (*pp && *pp != x)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = x->hnext;
}

static void evict(struct aw_sessions *s, struct aw_session *x)
{
    map_remove(s, x);
    lru_unlink(s, x);
    s->count--;
    s->bytes -= x->bytes;
    s->evicted++;
    session_free(x);
}

/* Evicts the least recently used idle session; 0 if none could go. */
static int evict_one(struct aw_sessions *s)
{
    struct aw_session *x;

    for (x = s->lru_tail; x; x = x->lru_prev) {
        if (x->holders == 0) {
            evict(s, x);
            return 1;
        }
    }
    return 0;
}

/* Under the map lock: the idle sessions past their lifetime (from the LRU
 * tail: the oldest first), then the least recently used idle ones while the
 * bytes are over the cap. Counts into |*expired| and |*over|. */
static void sweep(struct aw_sessions *s, size_t *expired, size_t *over)
{
    uint64_t now = s->now();
    struct aw_session *x, *prev;

    for (x = s->lru_tail; s->ttl_ms && x; x = prev) {
        prev = x->lru_prev;
        if (now - x->last_used < s->ttl_ms)
            break; /* the rest were used more recently */
        if (x->holders == 0) {
            evict(s, x);
            (*expired)++;
        }
    }
    while (s->max_bytes && s->bytes > s->max_bytes && evict_one(s))
        (*over)++;
}

/* Says what a sweep removed, outside the lock. */
static void sweep_log(size_t expired, size_t over)
{
    char a[24], b[24];
    const char *kv[] = {"expired", a, "overBytes", b, NULL};

    if (!expired && !over)
        return;
    snprintf(a, sizeof(a), "%zu", expired);
    snprintf(b, sizeof(b), "%zu", over);
    CM_LOGF(CM_LOG_INFO, kv, "sessions evicted");
}

/* After an invocation: the conversation's size (measured by the caller while
 * it still held the turn) and time, then a sweep. Unpins |x|. */
static void account(struct aw_sessions *s, struct aw_session *x, size_t bytes)
{
    size_t expired = 0, over = 0;

    pthread_mutex_lock(&s->lock);
    s->bytes = s->bytes - x->bytes + bytes;
    x->bytes = bytes;
    x->last_used = s->now();
    lru_unlink(s, x); /* most recently used: the last to go */
    lru_push_front(s, x);
    x->holders--;
    sweep(s, &expired, &over);
    pthread_mutex_unlock(&s->lock);
    sweep_log(expired, over);
}

/* Under the map lock: finds or creates |id|, most recent in the LRU, pinned. */
static struct aw_session *find_pin(struct aw_sessions *s, const char *id, size_t *expired,
                                   size_t *over)
{
    size_t len = strlen(id);
    struct aw_session *x;
    size_t b;

    if (len == 0 || len > AW_SESSION_ID_MAX)
        return NULL;
    sweep(s, expired, over);
    b = hash(id) & (s->nbuckets - 1);
    for (x = s->buckets[b]; x && strcmp(x->id, id); x = x->hnext)
        ;
    if (!x) {
        if (s->count >= s->max_sessions && !evict_one(s))
            return NULL;
        x = calloc(1, sizeof(*x));
        if (x)
            x->messages = json_array();
        if (!x || !x->messages) {
            free(x);
            return NULL;
        }
        memcpy(x->id, id, len + 1);
        pthread_mutex_init(&x->turn, NULL);
        x->hnext = s->buckets[b];
        s->buckets[b] = x;
        s->count++;
    } else {
        lru_unlink(s, x);
    }
    lru_push_front(s, x);
    x->last_used = s->now();
    x->holders++; /* pins it against eviction while it is held or waited for */
    return x;
}

struct aw_session *aw_sessions_acquire(struct aw_sessions *s, const char *id)
{
    struct aw_session *x;
    size_t expired = 0, over = 0;

    pthread_mutex_lock(&s->lock);
    x = find_pin(s, id, &expired, &over);
    pthread_mutex_unlock(&s->lock);
    sweep_log(expired, over);
    if (x)
        pthread_mutex_lock(&x->turn);
    return x;
}

int aw_sessions_acquire_async(struct aw_sessions *s, const char *id, struct aw_session_waiter *w,
                              struct aw_session **out)
{
    struct aw_session *x;
    size_t expired = 0, over = 0;

    *out = NULL;
    pthread_mutex_lock(&s->lock);
    x = find_pin(s, id, &expired, &over);
    pthread_mutex_unlock(&s->lock);
    sweep_log(expired, over);
    if (!x)
        return -1;
    if (!x->busy) {
        x->busy = 1;
        *out = x;
        return 0;
    }
    w->sess = x;
    w->next = NULL;
    w->prev = x->wait_tail;
    if (x->wait_tail)
        x->wait_tail->next = w;
    else
        x->wait_head = w;
    x->wait_tail = w;
    return 1;
}

static void unpin(struct aw_sessions *s, struct aw_session *x)
{
    pthread_mutex_lock(&s->lock);
    x->holders--;
    pthread_mutex_unlock(&s->lock);
}

void aw_sessions_cancel_wait(struct aw_sessions *s, struct aw_session_waiter *w)
{
    struct aw_session *x = w->sess;

    if (!x)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        x->wait_head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        x->wait_tail = w->prev;
    w->sess = NULL;
    unpin(s, x);
}

void aw_sessions_release_async(struct aw_sessions *s, struct aw_session *sess)
{
    struct aw_session_waiter *w = sess->wait_head;

    aw_session_trim(sess->messages, s->max_messages);
    if (!w)
        sess->busy = 0; /* idle before the sweep, so it may go when it is the oldest */
    account(s, sess, json_dumpb(sess->messages, NULL, 0, JSON_COMPACT));
    if (!w)
        return;
    /* The turn passes to the longest waiter; it stays busy. */
    sess->wait_head = w->next;
    if (w->next)
        w->next->prev = NULL;
    else
        sess->wait_tail = NULL;
    w->sess = NULL;
    w->ready(w, sess);
}

json_t *aw_session_messages(struct aw_session *sess)
{
    return sess->messages;
}

const char *aw_session_id(const struct aw_session *sess)
{
    return sess->id;
}

const char *aw_session_version(const struct aw_session *sess)
{
    return sess->version ? sess->version : "";
}

int aw_session_set_version(struct aw_session *sess, const char *version)
{
    char *v = version && *version ? strdup(version) : NULL;

    if (version && *version && !v)
        return -1;
    free(sess->version);
    sess->version = v;
    return 0;
}

size_t aw_sessions_window(const struct aw_sessions *s)
{
    return s->max_messages;
}

void aw_session_trim(json_t *messages, size_t max)
{
    size_t drop = aw_history_cut(messages, max);

    while (drop--)
        json_array_remove(messages, 0);
}

void aw_sessions_release(struct aw_sessions *s, struct aw_session *sess)
{
    size_t bytes;

    aw_session_trim(sess->messages, s->max_messages);
    bytes = json_dumpb(sess->messages, NULL, 0, JSON_COMPACT); /* before the next holder runs */
    pthread_mutex_unlock(&sess->turn);
    account(s, sess, bytes);
}

void aw_sessions_stats(struct aw_sessions *s, struct aw_sessions_stats *out)
{
    pthread_mutex_lock(&s->lock);
    out->count = s->count;
    out->bytes = s->bytes;
    out->evicted = s->evicted;
    pthread_mutex_unlock(&s->lock);
}
