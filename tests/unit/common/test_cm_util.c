#include "cm_util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void test_uuid4_format_and_uniqueness(void **state)
{
    char a[CM_UUID_LEN + 1], b[CM_UUID_LEN + 1];
    int i;

    (void)state;
    assert_int_equal(cm_uuid4(a), 0);
    assert_int_equal(cm_uuid4(b), 0);
    assert_int_equal(strlen(a), 36);
    for (i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            assert_int_equal(a[i], '-');
        else
            assert_non_null(strchr("0123456789abcdef", a[i]));
    }
    assert_int_equal(a[14], '4');
    assert_non_null(strchr("89ab", a[19]));
    assert_string_not_equal(a, b);
}

static const struct {
    const char *s;
    int valid;
} utf8_rows[] = {
    {"plain ascii", 1},
    {"h\xc3\xa9llo", 1},
    {"\xe2\x82\xac", 1},     /* euro sign */
    {"\xf0\x9f\x98\x80", 1}, /* emoji */
    {"\xc3", 0},             /* truncated */
    {"\xc0\xaf", 0},         /* overlong '/' */
    {"\xed\xa0\x80", 0},     /* surrogate */
    {"\xf4\x90\x80\x80", 0}, /* past U+10FFFF */
    {"\xff", 0},
    {"ok\x80", 0}, /* stray continuation */
};

/* Whole buffers, past getrandom's 256-byte unit too, and never the same. */
static void test_random(void **state)
{
    static unsigned char a[4096], b[4096];
    size_t i, zeros = 0;

    (void)state;
    assert_int_equal(cm_random(a, sizeof(a)), 0);
    assert_int_equal(cm_random(b, sizeof(b)), 0);
    assert_memory_not_equal(a, b, sizeof(a));
    for (i = 0; i < sizeof(a); i++)
        zeros += a[i] == 0;
    assert_true(zeros < 64); /* ~16 expected: the whole buffer was written */
    assert_int_equal(cm_random(a, 0), 0);
}

static void test_utf8_rows(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(utf8_rows) / sizeof(utf8_rows[0]); i++)
        assert_int_equal(cm_utf8_valid(utf8_rows[i].s, strlen(utf8_rows[i].s)), utf8_rows[i].valid);
}

static void test_strlcpy_truncates(void **state)
{
    char buf[4];

    (void)state;
    assert_int_equal(cm_strlcpy(buf, "abcdef", sizeof(buf)), 3);
    assert_string_equal(buf, "abc");
}

static long long ns(struct timespec t)
{
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* The deadline lies |ms| after some instant between the two clock reads
 * around the call, and is normalised (the 999 ms case carries). */
static void test_deadline(void **state)
{
    static const long rows[] = {0, 1, 999, 1000, 1999, 86400000};
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct timespec before, d, after;

        clock_gettime(CLOCK_REALTIME, &before);
        d = cm_deadline_ms(rows[i]);
        clock_gettime(CLOCK_REALTIME, &after);
        assert_in_range(d.tv_nsec, 0, 999999999);
        assert_true(ns(d) - ns(before) >= rows[i] * 1000000LL);
        assert_true(ns(d) - ns(after) <= rows[i] * 1000000LL);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uuid4_format_and_uniqueness),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_utf8_rows),
        cmocka_unit_test(test_strlcpy_truncates),
        cmocka_unit_test(test_deadline),
    };
    return cmocka_run_group_tests_name("cm_util", tests, NULL, NULL);
}
