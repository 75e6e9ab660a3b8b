#include "cm_buf.h"
#include "cm_err.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void test_cap_is_enforced_and_contents_kept(void **state)
{
    struct cm_buf b;

    (void)state;
    cm_buf_init(&b, 8);
    assert_int_equal(cm_buf_addstr(&b, "12345"), 0);
    assert_int_equal(cm_buf_addstr(&b, "6789"), CM_ETOOBIG);
    assert_string_equal(b.data, "12345");
    assert_int_equal(cm_buf_addstr(&b, "678"), 0);
    assert_int_equal(b.len, 8);
    assert_int_equal(cm_buf_add(&b, "x", 1), CM_ETOOBIG);
    cm_buf_free(&b);
}

static void test_printf_respects_cap(void **state)
{
    struct cm_buf b;

    (void)state;
    cm_buf_init(&b, 10);
    assert_int_equal(cm_buf_printf(&b, "%d-%s", 42, "abc"), 0);
    assert_string_equal(b.data, "42-abc");
    assert_int_equal(cm_buf_printf(&b, "%s", "too long"), CM_ETOOBIG);
    assert_string_equal(b.data, "42-abc");
    cm_buf_free(&b);
}

static void test_steal_and_reset(void **state)
{
    struct cm_buf b;
    char *s;

    (void)state;
    cm_buf_init(&b, 100);
    s = cm_buf_steal(&b);
    assert_string_equal(s, ""); /* empty, never NULL */
    free(s);
    cm_buf_addstr(&b, "hello");
    s = cm_buf_steal(&b);
    assert_string_equal(s, "hello");
    assert_null(b.data);
    assert_int_equal(b.cap, 100);
    free(s);
    cm_buf_addstr(&b, "x");
    cm_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    cm_buf_free(&b);
    cm_buf_free(NULL);
}

static void test_grows_past_first_allocation(void **state)
{
    struct cm_buf b;
    char chunk[1000];
    int i;

    (void)state;
    memset(chunk, 'a', sizeof(chunk));
    cm_buf_init(&b, 100000);
    for (i = 0; i < 100; i++)
        assert_int_equal(cm_buf_add(&b, chunk, sizeof(chunk)), 0);
    assert_int_equal(b.len, 100000);
    assert_int_equal(cm_buf_add(&b, "a", 1), CM_ETOOBIG);
    cm_buf_free(&b);
}

/* A known final size is allocated once: filling it never reallocates. */
static void test_reserve_exact(void **state)
{
    struct cm_buf b;
    char *first;

    (void)state;
    cm_buf_init(&b, 100);
    assert_int_equal(cm_buf_reserve(&b, 101), CM_ETOOBIG);
    assert_int_equal(cm_buf_reserve(&b, 50), 0);
    assert_int_equal(b.alloc, 51);
    assert_string_equal(b.data, "");
    first = b.data;
    assert_int_equal(cm_buf_add(&b, "0123456789012345678901234567890123456789012345678", 49), 0);
    assert_int_equal(cm_buf_add(&b, "9", 1), 0);
    assert_ptr_equal(b.data, first);
    assert_int_equal(b.len, 50);
    cm_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cap_is_enforced_and_contents_kept),
        cmocka_unit_test(test_printf_respects_cap),
        cmocka_unit_test(test_steal_and_reset),
        cmocka_unit_test(test_grows_past_first_allocation),
        cmocka_unit_test(test_reserve_exact),
    };
    return cmocka_run_group_tests_name("cm_buf", tests, NULL, NULL);
}
