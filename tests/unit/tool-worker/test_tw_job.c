/* tw_job: the message a warm sandbox's helper waits for, both ways, and
 * every malformed form refused. */
#include "tw_job.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void test_round_trip(void **state)
{
    static const char *const args[] = {"--cpu", "3", "--", "exec", "/bin/sh", "-c", "", NULL};
    static const char *const env[] = {"A=1", "EMPTY=", NULL};
    char *m, **a, **e;
    size_t len = 0, i;

    (void)state;
    m = tw_job_encode(args, env, &len);
    assert_non_null(m);
    assert_int_equal(tw_job_length((unsigned char *)m), len - 4);
    assert_int_equal(tw_job_decode(m + 4, len - 4, &a, &e), 0);
    for (i = 0; args[i]; i++)
        assert_string_equal(a[i], args[i]);
    assert_null(a[i]);
    assert_string_equal(e[0], "A=1");
    assert_string_equal(e[1], "EMPTY=");
    assert_null(e[2]);
    free(a);
    free(e);
    free(m);

    /* no environment, no arguments */
    m = tw_job_encode(args, NULL, &len);
    assert_int_equal(tw_job_decode(m + 4, len - 4, &a, &e), 0);
    assert_null(e[0]);
    free(a);
    free(e);
    free(m);
    m = tw_job_encode(NULL, NULL, &len);
    assert_int_equal(len, 12);
    assert_int_equal(tw_job_decode(m + 4, len - 4, &a, &e), 0);
    assert_null(a[0]);
    free(a);
    free(e);
    free(m);
}

/* Each row: payload bytes (after the length prefix) that are not a job. */
static void test_malformed(void **state)
{
    static const struct {
        const char *bytes;
        size_t len;
        const char *why;
    } rows[] = {
        {"\1\0\0\0", 4, "shorter than the counts"},
        {"\1\0\0\0\0\0\0\0", 8, "one argument announced, none there"},
        {"\1\0\0\0\0\0\0\0ab", 10, "an argument without its NUL"},
        {"\1\0\0\0\0\0\0\0a\0b\0", 12, "bytes after the last string"},
        {"\0\0\0\0\1\0\0\0NAME\0", 13, "an environment entry without '='"},
        {"\0\0\0\0\1\0\0\0=x\0", 11, "an environment entry without a name"},
        {"\377\377\377\377\0\0\0\0a\0", 10, "a count past the bytes"},
        {"\1\0\0\0\377\377\377\377a\0", 10, "counts that overflow"},
    };
    char buf[32], **a, **e;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        memcpy(buf, rows[i].bytes, rows[i].len);
        if (tw_job_decode(buf, rows[i].len, &a, &e) != -1)
            fail_msg("accepted: %s", rows[i].why);
    }
    assert_int_equal(tw_job_decode(buf, TW_JOB_MAX + 1, &a, &e), -1);
}

static void test_too_large(void **state)
{
    size_t big = TW_JOB_MAX, len = 0;
    char *s = malloc(big);
    const char *args[] = {s, NULL};

    (void)state;
    assert_non_null(s);
    memset(s, 'x', big - 1);
    s[big - 1] = '\0';
    assert_null(tw_job_encode(args, NULL, &len)); /* the counts push it past */
    s[big - 16] = '\0';
    {
        char *m = tw_job_encode(args, NULL, &len);

        assert_non_null(m);
        assert_true(len - 4 <= TW_JOB_MAX);
        free(m);
    }
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_too_large),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
