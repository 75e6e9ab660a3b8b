/* aw_idem: answers kept by request id, for one session, bounded by count,
 * bytes and age. */
#include "aw_idem.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static const char *get(struct aw_idem *d, const char *key, const char *session, uint64_t now)
{
    size_t len;
    const char *v = aw_idem_get(d, key, session, &len, now);

    return v ? (len == strlen(v) + 1 ? v : "bad length") : NULL;
}

static void put(struct aw_idem *d, const char *key, const char *session, const char *v,
                uint64_t now)
{
    assert_int_equal(aw_idem_put(d, key, session, v, strlen(v) + 1, now), 0);
}

static void test_window_and_session(void **state)
{
    struct aw_idem *d = aw_idem_new(10, 1000, 5000);

    (void)state;
    put(d, "req-1", "s1", "answer one", 1000);
    assert_string_equal(get(d, "req-1", "s1", 1001), "answer one");
    assert_null(get(d, "req-1", "s2", 1001)); /* another session's id: not its answer */
    assert_null(get(d, "req-2", "s1", 1001));
    put(d, "req-1", "s1", "answer two", 2000); /* replaced */
    assert_string_equal(get(d, "req-1", "s1", 2001), "answer two");
    assert_int_equal(aw_idem_count(d), 1);
    assert_string_equal(get(d, "req-1", "s1", 6999), "answer two");
    assert_null(get(d, "req-1", "s1", 7000)); /* the window is over */
    assert_int_equal(aw_idem_count(d), 0);
    aw_idem_free(d);
}

static void test_caps(void **state)
{
    struct aw_idem *d = aw_idem_new(3, 40, 60000);
    char big[64];

    (void)state;
    put(d, "a", "s", "0123456789", 1);
    put(d, "b", "s", "0123456789", 2);
    put(d, "c", "s", "0123456789", 3);
    assert_int_equal(aw_idem_count(d), 3); /* 33 bytes */
    put(d, "d", "s", "0123456789", 4);     /* 4 entries > 3: "a" goes */
    assert_null(get(d, "a", "s", 5));
    assert_non_null(get(d, "d", "s", 5));
    put(d, "e", "s", "0123456789012345678", 6); /* 20 bytes: 42 > 40, "b" goes, then "c" */
    assert_null(get(d, "b", "s", 7));
    assert_non_null(get(d, "e", "s", 7));
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(aw_idem_put(d, "f", "s", big, sizeof(big), 8), -1); /* never fits */
    assert_null(get(d, "f", "s", 9));
    aw_idem_free(d);
    aw_idem_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_and_session),
        cmocka_unit_test(test_caps),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
