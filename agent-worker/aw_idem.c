/* A jansson object is the index (its hashtable: O(1) per invocation, which
 * every invocation pays); entries also sit on a list in insertion order,
 * which is age order, so expiry and eviction take from its head. */
#include "aw_idem.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    struct entry *prev, *next;
    char *key, *session;
    void *data;
    size_t len;
    uint64_t at;
};

struct aw_idem {
    json_t *index; /* key -> the entry's address */
    struct entry *head, *tail;
    size_t count, bytes, max_entries, max_bytes;
    uint64_t window_ms;
};

struct aw_idem *aw_idem_new(size_t max_entries, size_t max_bytes, uint64_t window_ms)
{
    struct aw_idem *d = calloc(1, sizeof(*d));

    if (!d || !(d->index = json_object())) {
        free(d);
        return NULL;
    }
    d->max_entries = max_entries;
    d->max_bytes = max_bytes;
    d->window_ms = window_ms;
    return d;
}

static void drop(struct aw_idem *d, struct entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        d->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        d->tail = e->prev;
    json_object_del(d->index, e->key);
    d->count--;
    d->bytes -= e->len;
    free(e->key);
    free(e->session);
    free(e->data);
    free(e);
}

void aw_idem_free(struct aw_idem *d)
{
    if (!d)
        return;
    while (d->head)
        drop(d, d->head);
    json_decref(d->index);
    free(d);
}

static void expire(struct aw_idem *d, uint64_t now)
{
    while (d->head && now - d->head->at >= d->window_ms)
        drop(d, d->head);
}

static struct entry *find(struct aw_idem *d, const char *key)
{
    json_t *v = json_object_get(d->index, key);

    return v ? (struct entry *)(uintptr_t)json_integer_value(v) : NULL;
}

int aw_idem_put(struct aw_idem *d, const char *key, const char *session, const void *data,
                size_t len, uint64_t now_ms)
{
    struct entry *e, *old;

    expire(d, now_ms);
    if ((old = find(d, key)))
        drop(d, old);
    if (!d->window_ms || !d->max_entries || len > d->max_bytes)
        return -1;
    e = calloc(1, sizeof(*e));
    if (!e || !(e->key = strdup(key)) || !(e->session = strdup(session)) ||
        !(e->data = malloc(len ? len : 1)))
        goto oom;
    memcpy(e->data, data, len);
    e->len = len;
    e->at = now_ms;
    if (json_object_set_new(d->index, key, json_integer((json_int_t)(uintptr_t)e)))
        goto oom;
    e->prev = d->tail;
    if (d->tail)
        d->tail->next = e;
    else
        d->head = e;
    d->tail = e;
    d->count++;
    d->bytes += len;
    while (d->count > d->max_entries || d->bytes > d->max_bytes)
        drop(d, d->head); /* never the new one: it fits alone */
    return 0;
oom:
    if (e) {
        free(e->key);
        free(e->session);
        free(e->data);
        free(e);
    }
    return -1;
}

const void *aw_idem_get(struct aw_idem *d, const char *key, const char *session, size_t *len,
                        uint64_t now_ms)
{
    struct entry *e;

    expire(d, now_ms);
    e = find(d, key);
    if (!e || strcmp(e->session, session))
        return NULL;
    *len = e->len;
    return e->data;
}

size_t aw_idem_count(const struct aw_idem *d)
{
    return d->count;
}
