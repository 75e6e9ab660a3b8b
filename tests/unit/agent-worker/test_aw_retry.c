#include "aw_retry.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

static void test_quota(void **state)
{
    struct aw_retry_quota q;
    int i, n = 0;

    (void)state;
    aw_retry_quota_init(&q, AW_RETRY_CAPACITY);
    /* 500 tokens pay for 100 ordinary retries, then retries stop. */
    for (i = 0; i < 1000 && aw_retry_quota_acquire(&q, aw_retry_cost("ThrottlingException")); i++)
        n++;
    assert_int_equal(n, 100);
    assert_false(aw_retry_quota_acquire(&q, AW_RETRY_COST));
    aw_retry_quota_release(&q, 1); /* a first-time success */
    assert_false(aw_retry_quota_acquire(&q, AW_RETRY_COST));
    aw_retry_quota_release(&q, 4);
    assert_true(aw_retry_quota_acquire(&q, AW_RETRY_COST));
    aw_retry_quota_release(&q, 100000);
    assert_int_equal(atomic_load(&q.tokens), AW_RETRY_CAPACITY); /* never above capacity */
    assert_int_equal(aw_retry_cost("Timeout"), AW_RETRY_TIMEOUT_COST);
}

static void test_backoff_bounds(void **state)
{
    (void)state;
    /* attempt n waits < base * 2^(n-1), capped at 20 s. */
    assert_int_equal(aw_retry_backoff_ms(1, 1000, 999), 999);
    assert_int_equal(aw_retry_backoff_ms(1, 1000, 1000), 0);
    assert_int_equal(aw_retry_backoff_ms(2, 1000, 1999), 1999);
    assert_int_equal(aw_retry_backoff_ms(3, 1000, 3999), 3999);
    assert_int_equal(aw_retry_backoff_ms(20, 1000, 19999), 19999);
    assert_int_equal(aw_retry_backoff_ms(20, 1000, 20000), 0);
    assert_int_equal(aw_retry_backoff_ms(5, 0, 12345), 0);
}

static void test_modes(void **state)
{
    (void)state;
    assert_int_equal(aw_retry_mode_parse("standard"), AW_RETRY_STANDARD);
    assert_int_equal(aw_retry_mode_parse("legacy"), AW_RETRY_LEGACY);
    assert_int_equal(aw_retry_mode_parse("adaptive"), AW_RETRY_ADAPTIVE);
    assert_int_equal(aw_retry_mode_parse("eager"), -1);
}

static void test_throttle_codes(void **state)
{
    (void)state;
    assert_true(aw_retry_is_throttle("ThrottlingException"));
    assert_true(aw_retry_is_throttle("TooManyRequestsException"));
    assert_true(aw_retry_is_throttle("SlowDown"));
    assert_false(aw_retry_is_throttle("ValidationException"));
    assert_false(aw_retry_is_throttle("ModelNotReadyException")); /* transient, not throttling */
    assert_false(aw_retry_is_throttle(NULL));
}

/* |n| answers evenly spread over [from, to), none throttled. */
static void answers(struct aw_rate *r, double from, double to, int n)
{
    int i;

    for (i = 0; i < n; i++)
        aw_rate_update(r, 0, from + (to - from) * i / n);
}

static double rate_of(struct aw_rate *r, int *enabled)
{
    return aw_rate_send_rate(r, enabled);
}

static void test_rate_off_until_throttled(void **state)
{
    struct aw_rate r;
    int i, enabled = -1;

    (void)state;
    aw_rate_init(&r, 0);
    for (i = 0; i < 1000; i++)
        assert_true(aw_rate_acquire(&r, 0) == 0);
    answers(&r, 0, 3, 300);
    rate_of(&r, &enabled);
    assert_int_equal(enabled, 0);
    for (i = 0; i < 1000; i++)
        assert_true(aw_rate_acquire(&r, 3) == 0);
    aw_rate_cleanup(&r);
}

/* Ten answers in the first half second, the tenth throttled: the measured
 * rate is 0.8 * 10 / 0.5 = 16/s, so sends are paced at 70% of it, 11.2/s.
 * The bucket holds what accrued before (0.05 s at 1/s, then 0.4 s at the
 * 0.5/s floor: 0.275 tokens). */
static void test_rate_throttle_paces_at_70_percent(void **state)
{
    struct aw_rate r;
    double t, w;
    int i, n = 0, enabled = 0;

    (void)state;
    aw_rate_init(&r, 0);
    for (i = 1; i <= 9; i++)
        aw_rate_update(&r, 0, 0.05 * i);
    aw_rate_update(&r, 1, 0.5);
    assert_float_equal(rate_of(&r, &enabled), 11.2, 1e-9);
    assert_int_equal(enabled, 1);
    w = aw_rate_acquire(&r, 0.5);
    assert_float_equal(w, (1 - 0.275) / 11.2, 1e-9);
    /* A greedy sender gets about 11 sends in the next second, not 1000. */
    for (t = 0.5, i = 0; i < 1000 && t < 1.5; i++) {
        w = aw_rate_acquire(&r, t);
        if (w > 0)
            t += w + 1e-9;
        else
            n++;
    }
    assert_in_range(n, 11, 12);
    aw_rate_cleanup(&r);
}

/* After a throttle at measured rate M, answers without throttling raise the
 * rate along 0.4 * (t - K)^3 + M: back to exactly M at K seconds, above it
 * later; the way back never goes down. */
static void test_rate_cubic_recovery(void **state)
{
    struct aw_rate r;
    double m, k, prev, now;
    int i, n;

    (void)state;
    aw_rate_init(&r, 0);
    answers(&r, 0, 2, 80); /* 40/s */
    aw_rate_update(&r, 1, 2.0);
    m = rate_of(&r, NULL) / 0.7;
    assert_in_range((long)m, 30, 40); /* smoothed towards 40/s */
    k = cbrt(m * 0.3 / 0.4);
    prev = rate_of(&r, NULL);
    for (i = 1, n = (int)(k * 40); i < n; i++) { /* still 40 answers/s */
        now = 2.0 + k * i / n;
        aw_rate_update(&r, 0, now);
        assert_true(rate_of(&r, NULL) >= prev - 1e-9);
        prev = rate_of(&r, NULL);
    }
    assert_true(prev < m);
    aw_rate_update(&r, 0, 2.0 + k);
    assert_float_equal(rate_of(&r, NULL), m, 1e-6);
    answers(&r, 2.0 + k, 2.0 + k + 1, 40);
    aw_rate_update(&r, 0, 2.0 + k + 1);
    assert_float_equal(rate_of(&r, NULL), m + 0.4, 1e-6);
    aw_rate_cleanup(&r);
}

/* A throttle while paced starts from the allowed rate when the client was
 * measured sending faster than that, not from the measured rate. */
static void test_rate_second_throttle_uses_allowed_rate(void **state)
{
    struct aw_rate r;
    double allowed;

    (void)state;
    aw_rate_init(&r, 0);
    answers(&r, 0, 2, 80);
    aw_rate_update(&r, 1, 2.0);
    answers(&r, 2.0, 2.5, 40); /* 80/s */
    aw_rate_update(&r, 0, 2.5);
    allowed = rate_of(&r, NULL);
    assert_true(r.measured > allowed * 1.5);
    aw_rate_update(&r, 1, 2.5);
    assert_float_equal(rate_of(&r, NULL), 0.7 * allowed, 1e-9);
    aw_rate_cleanup(&r);
}

/* A throttle before anything was measured still leaves 0.5 sends/s. */
static void test_rate_floor(void **state)
{
    struct aw_rate r;

    (void)state;
    aw_rate_init(&r, 0);
    aw_rate_update(&r, 1, 0.1);
    assert_float_equal(rate_of(&r, NULL), 0.5, 1e-12);
    /* 0.1 token accrued at the initial 1/s; 0.9 more take 1.8 s. */
    assert_float_equal(aw_rate_acquire(&r, 0.1), 1.8, 1e-9);
    assert_true(aw_rate_acquire(&r, 1.9 + 1e-6) == 0);
    aw_rate_cleanup(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quota),
        cmocka_unit_test(test_backoff_bounds),
        cmocka_unit_test(test_modes),
        cmocka_unit_test(test_throttle_codes),
        cmocka_unit_test(test_rate_off_until_throttled),
        cmocka_unit_test(test_rate_throttle_paces_at_70_percent),
        cmocka_unit_test(test_rate_cubic_recovery),
        cmocka_unit_test(test_rate_second_throttle_uses_allowed_rate),
        cmocka_unit_test(test_rate_floor),
    };
    return cmocka_run_group_tests_name("aw_retry", tests, NULL, NULL);
}
