#include "aw_retry.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quota),
        cmocka_unit_test(test_backoff_bounds),
        cmocka_unit_test(test_modes),
    };
    return cmocka_run_group_tests_name("aw_retry", tests, NULL, NULL);
}
