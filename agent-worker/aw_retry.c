#include "aw_retry.h"

#include <string.h>

int aw_retry_mode_parse(const char *s)
{
    if (!strcmp(s, "standard"))
        return AW_RETRY_STANDARD;
    if (!strcmp(s, "legacy"))
        return AW_RETRY_LEGACY;
    if (!strcmp(s, "adaptive"))
        return AW_RETRY_ADAPTIVE;
    return -1;
}

void aw_retry_quota_init(struct aw_retry_quota *q, int capacity)
{
    atomic_init(&q->tokens, capacity);
    q->capacity = capacity;
}

int aw_retry_quota_acquire(struct aw_retry_quota *q, int cost)
{
    int have = atomic_load(&q->tokens);

    while (have >= cost) {
        if (atomic_compare_exchange_weak(&q->tokens, &have, have - cost))
            return 1;
    }
    return 0;
}

void aw_retry_quota_release(struct aw_retry_quota *q, int amount)
{
    int have = atomic_load(&q->tokens), want;

    do {
        want = have + amount > q->capacity ? q->capacity : have + amount;
    } while (!atomic_compare_exchange_weak(&q->tokens, &have, want));
}

int aw_retry_cost(const char *type)
{
    return !strcmp(type, "Timeout") ? AW_RETRY_TIMEOUT_COST : AW_RETRY_COST;
}

long long aw_retry_backoff_ms(int attempt, int base_ms, unsigned rnd)
{
    long long cap = base_ms;
    int i;

    for (i = 1; i < attempt && cap < AW_RETRY_MAX_BACKOFF_MS; i++)
        cap *= 2;
    if (cap > AW_RETRY_MAX_BACKOFF_MS)
        cap = AW_RETRY_MAX_BACKOFF_MS;
    return cap > 0 ? (long long)(rnd % (unsigned)cap) : 0;
}
