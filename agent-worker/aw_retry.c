#include "aw_retry.h"

#include <math.h>
#include <string.h>

/* The SDKs' constants (botocore retries/{bucket,throttling,adaptive}.py). */
#define RATE_MIN_FILL 0.5
#define RATE_SMOOTHING 0.8
#define RATE_BUCKET_S 0.5
#define RATE_MAX_SCALE 2.0
#define CUBIC_SCALE 0.4
#define CUBIC_BETA 0.7

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

int aw_retry_is_throttle(const char *type)
{
    static const char *const codes[] = {"Throttling",
                                        "ThrottlingException",
                                        "ThrottledException",
                                        "RequestThrottledException",
                                        "TooManyRequestsException",
                                        "ProvisionedThroughputExceededException",
                                        "TransactionInProgressException",
                                        "RequestLimitExceeded",
                                        "BandwidthLimitExceeded",
                                        "LimitExceededException",
                                        "RequestThrottled",
                                        "SlowDown",
                                        "PriorRequestNotComplete",
                                        "EC2ThrottledException"};
    size_t i;

    for (i = 0; type && i < sizeof(codes) / sizeof(codes[0]); i++) {
        if (!strcmp(type, codes[i]))
            return 1;
    }
    return 0;
}

/* ---- adaptive rate limiter ---- */

static void refill(struct aw_rate *r, double now)
{
    if (!r->refilled) {
        r->refilled = 1;
        r->last_refill = now;
        return;
    }
    if (now > r->last_refill) {
        r->capacity = fmin(r->max_capacity, r->capacity + (now - r->last_refill) * r->fill_rate);
        r->last_refill = now;
    }
}

/* Tokens that accrued at the old rate are credited before the rate changes. */
static void set_rate(struct aw_rate *r, double rate, double now)
{
    refill(r, now);
    r->fill_rate = fmax(rate, RATE_MIN_FILL);
    r->max_capacity = rate >= 1 ? rate : 1;
    r->capacity = fmin(r->capacity, r->max_capacity);
}

/* Counts an answer; the rate is recomputed when a half-second bucket ends. */
static double measure(struct aw_rate *r, double now)
{
    double bucket = floor(now / RATE_BUCKET_S) * RATE_BUCKET_S;

    r->count++;
    if (bucket > r->last_bucket) {
        double current = (double)r->count / (bucket - r->last_bucket);

        r->measured = current * RATE_SMOOTHING + r->measured * (1 - RATE_SMOOTHING);
        r->count = 0;
        r->last_bucket = bucket;
    }
    return r->measured;
}

static double zero_point(double w_max)
{
    return cbrt(w_max * (1 - CUBIC_BETA) / CUBIC_SCALE);
}

void aw_rate_init(struct aw_rate *r, double now)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->lock, NULL);
    r->last_bucket = floor(now);
    r->last_throttle = now;
    set_rate(r, 1, now);
}

void aw_rate_cleanup(struct aw_rate *r)
{
    if (r)
        pthread_mutex_destroy(&r->lock);
}

double aw_rate_acquire(struct aw_rate *r, double now)
{
    double wait = 0;

    pthread_mutex_lock(&r->lock);
    if (r->enabled) {
        refill(r, now);
        if (r->capacity >= 1)
            r->capacity -= 1;
        else
            wait = (1 - r->capacity) / r->fill_rate;
    }
    pthread_mutex_unlock(&r->lock);
    return wait;
}

void aw_rate_update(struct aw_rate *r, int throttled, double now)
{
    double measured, rate;

    pthread_mutex_lock(&r->lock);
    measured = measure(r, now);
    if (throttled) {
        /* The rate we were throttled at: what we sent, or what we were
         * allowed to send if that was lower. */
        double at = r->enabled ? fmin(measured, r->fill_rate) : measured;

        r->w_max = at;
        r->k = zero_point(at);
        r->last_throttle = now;
        rate = at * CUBIC_BETA;
        r->enabled = 1;
    } else {
        double t = now - r->last_throttle - r->k;

        rate = CUBIC_SCALE * t * t * t + r->w_max;
    }
    set_rate(r, fmin(rate, RATE_MAX_SCALE * measured), now);
    pthread_mutex_unlock(&r->lock);
}

double aw_rate_send_rate(struct aw_rate *r, int *enabled)
{
    double rate;

    pthread_mutex_lock(&r->lock);
    rate = r->fill_rate;
    if (enabled)
        *enabled = r->enabled;
    pthread_mutex_unlock(&r->lock);
    return rate;
}
