/* aw_retry: the AWS SDKs' retry rules, with no I/O.
 *
 * Standard mode (the default): a shared token bucket of 500; a retry costs 5
 * tokens (10 after a timeout) and is refused when the bucket cannot pay; a call
 * that succeeds first time puts 1 token back, a retried one gives back what
 * its retries took. Backoff is full jitter: uniform in [0, min(base * 2^(n-1),
 * 20 s)). Legacy mode retries without the bucket. (Adaptive mode's client-side
 * rate limiter is not implemented: "adaptive" behaves as standard.) */
#ifndef AW_RETRY_H
#define AW_RETRY_H

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

#endif
