/* cm_trace: traceparent rows from the W3C Trace Context spec (valid and
 * invalid), the round trip, and the ids a hop makes. */
#include "cm_trace.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static const struct {
    const char *in;
    int ok;
    const char *why;
} rows[] = {
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 1, "the spec's example"},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", 1, "not sampled"},
    {"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next", 1,
     "a later version with more fields"},
    {"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 1, "a later version"},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", 0, "version 00 with more"},
    {"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 0, "version ff"},
    {"00-00000000000000000000000000000000-00f067aa0ba902b7-01", 0, "zero trace id"},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", 0, "zero parent id"},
    {"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", 0, "upper case"},
    {"00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01", 0, "a dash out of place"},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", 0, "short flags"},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", 0, "no flags"},
    {"", 0, "empty"},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bx-01", 0, "not hex"},
};

static void test_rows(void **state)
{
    struct cm_trace t;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        int ok = cm_trace_parse(rows[i].in, &t) == 0;

        if (ok != rows[i].ok)
            fail_msg("%s: '%s' %s", rows[i].why, rows[i].in, ok ? "accepted" : "refused");
    }
    assert_int_not_equal(cm_trace_parse(NULL, &t), 0);
}

static void test_round_trip_and_child(void **state)
{
    const char *in = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    char out[CM_TRACEPARENT_LEN + 1], th[33], sh[17];
    struct cm_trace t, c;

    (void)state;
    assert_int_equal(cm_trace_parse(in, &t), 0);
    cm_trace_format(&t, out);
    assert_string_equal(out, in);
    cm_trace_ids(&t, th, sh);
    assert_string_equal(th, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(sh, "00f067aa0ba902b7");

    /* A hop: same trace, a new span whose parent is the incoming one. */
    assert_int_equal(cm_trace_continue(in, &c), 0);
    assert_memory_equal(c.trace_id, t.trace_id, 16);
    assert_memory_equal(c.parent_id, t.span_id, 8);
    assert_memory_not_equal(c.span_id, t.span_id, 8);
    assert_int_equal(c.flags, 1);

    /* Nothing (or garbage) incoming: a new trace, a root span. */
    assert_int_equal(cm_trace_continue("garbage", &c), 0);
    assert_memory_not_equal(c.trace_id, t.trace_id, 16);
    cm_trace_format(&c, out);
    assert_int_equal(cm_trace_parse(out, &t), 0);
    assert_memory_equal(c.span_id, t.span_id, 8);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows),
        cmocka_unit_test(test_round_trip_and_child),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
