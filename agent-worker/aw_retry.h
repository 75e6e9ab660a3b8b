/* aw_retry: the AWS SDKs' retry rules, with no I/O.
 *
 * Standard mode (the default): a shared token bucket of 500; a retry costs 5
 * tokens (10 after a timeout) and is refused when the bucket cannot pay; a call
 * that succeeds first time puts 1 token back, a retried one gives back what
 * its retries took. Backoff is full jitter: uniform in [0, min(base * 2^(n-1),
 * 20 s)). Legacy mode retries without the bucket. Adaptive mode is standard
 * mode plus the client-side rate limiter below. */
#ifndef AW_RETRY_H
#define AW_RETRY_H

#include <pthread.h>
#include <stdatomic.h>

#define AW_RETRY_CAPACITY 500
#define AW_RETRY_COST 5
#define AW_RETRY_TIMEOUT_COST 10
#define AW_RETRY_MAX_BACKOFF_MS 20000

enum aw_retry_mode { AW_RETRY_STANDARD, AW_RETRY_LEGACY, AW_RETRY_ADAPTIVE };

/* "standard", "legacy" or "adaptive" -> mode; -1 for anything else. */
int aw_retry_mode_parse(const char *s);

struct aw_retry_quota {
    atomic_int tokens;
    int capacity;
};

void aw_retry_quota_init(struct aw_retry_quota *q, int capacity);
/* Takes |cost| tokens if the bucket holds them: 1 taken, 0 refused. */
int aw_retry_quota_acquire(struct aw_retry_quota *q, int cost);
/* Gives |amount| back, never above capacity. */
void aw_retry_quota_release(struct aw_retry_quota *q, int amount);
/* What a retry after an error of |type| costs. */
int aw_retry_cost(const char *type);
/* Full-jitter delay before attempt |attempt| + 1, from a uniform |rnd|. */
long long aw_retry_backoff_ms(int attempt, int base_ms, unsigned rnd);
/* 1 for the error codes the SDKs count as throttling. */
int aw_retry_is_throttle(const char *type);

/* Adaptive mode's client-side rate limiter, as the AWS SDKs build it: off
 * until the first throttling answer; from then on every attempt takes a token
 * from a bucket that fills at the allowed send rate. A throttle sets that
 * rate to 70% of the rate the client was measured sending at; answers without
 * throttling grow it back along a cubic curve (CUBIC, as TCP), which returns
 * to the rate that was throttled after K = cbrt(W * 0.3 / 0.4) seconds and
 * then probes above it, never above twice the measured rate. The fill rate
 * never drops below 0.5/s.
 *
 * No I/O and no clock of its own: |now| is seconds on a monotonic clock, so
 * tests drive time. Thread-safe (one mutex, touched only in adaptive mode). */
struct aw_rate {
    pthread_mutex_t lock;
    int enabled;
    /* token bucket */
    double fill_rate, max_capacity, capacity, last_refill;
    int refilled;
    /* measured send rate: answers counted in half-second buckets, smoothed */
    double measured, last_bucket;
    long count;
    /* cubic */
    double w_max, k, last_throttle;
};

void aw_rate_init(struct aw_rate *r, double now);
void aw_rate_cleanup(struct aw_rate *r);
/* Before each attempt: 0 when a token was taken (always, while disabled),
 * else the seconds to wait before asking again. */
double aw_rate_acquire(struct aw_rate *r, double now);
/* After each attempt that got an answer or a transport error. */
void aw_rate_update(struct aw_rate *r, int throttled, double now);
/* The allowed send rate (tokens per second) and whether pacing is on. */
double aw_rate_send_rate(struct aw_rate *r, int *enabled);

#endif
