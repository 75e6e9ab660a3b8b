#include "cm_err.h"
#include "cm_log.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static json_t *format(enum cm_log_level lvl, const char *const *kv, const char *msg, int cap)
{
    char line[16384];
    int n;

    assert_true(cap <= (int)sizeof(line));
    n = cm_log_format(line, cap, 1795531304123LL, lvl, kv, msg);
    assert_true(n > 0 && n <= cap);
    assert_int_equal(line[n - 1], '\n');
    assert_null(memchr(line, '\n', (size_t)n - 1)); /* exactly one line */
    return json_loadb(line, (size_t)n, 0, NULL);
}

static void test_python_sdk_shape(void **state)
{
    json_t *o;

    (void)state;
    cm_log_init("agentcore.test", CM_LOG_DEBUG);
    cm_log_set_context("req-1", "sess-1");
    o = format(CM_LOG_WARN, NULL, "hello", 8192);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "timestamp")),
                        "2026-11-24T14:41:44.123Z");
    assert_string_equal(json_string_value(json_object_get(o, "level")), "WARN");
    assert_string_equal(json_string_value(json_object_get(o, "message")), "hello");
    assert_string_equal(json_string_value(json_object_get(o, "logger")), "agentcore.test");
    assert_string_equal(json_string_value(json_object_get(o, "requestId")), "req-1");
    assert_string_equal(json_string_value(json_object_get(o, "sessionId")), "sess-1");
    json_decref(o);
    /* The trace ids join it to the invocation's trace. */
    cm_log_set_trace("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    o = format(CM_LOG_INFO, NULL, "traced", 8192);
    assert_string_equal(json_string_value(json_object_get(o, "traceId")),
                        "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(json_string_value(json_object_get(o, "spanId")), "00f067aa0ba902b7");
    json_decref(o);
    cm_log_set_context("req-2", "sess-2"); /* another request: not its trace */
    o = format(CM_LOG_INFO, NULL, "x", 8192);
    assert_null(json_object_get(o, "traceId"));
    json_decref(o);
    cm_log_clear_context();
    o = format(CM_LOG_INFO, NULL, "x", 8192);
    assert_null(json_object_get(o, "requestId"));
    assert_null(json_object_get(o, "sessionId"));
    json_decref(o);
}

static void test_escaping_and_extra_fields(void **state)
{
    const char *kv[] = {"a", "1", "skipped", NULL, "b", "quote\" back\\ tab\t nl\n ctl\x01 é",
                        NULL};
    json_t *o;

    (void)state;
    o = format(CM_LOG_ERROR, kv, "multi\nline \"msg\"", 8192);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "message")), "multi\nline \"msg\"");
    assert_string_equal(json_string_value(json_object_get(o, "a")), "1");
    assert_null(json_object_get(o, "skipped"));
    assert_string_equal(json_string_value(json_object_get(o, "b")),
                        "quote\" back\\ tab\t nl\n ctl\x01 é");
    json_decref(o);
}

/* A line longer than the buffer is truncated but stays one valid JSON object. */
static void test_truncation_keeps_valid_json(void **state)
{
    char big[6000];
    const char *kv[] = {"extra", big, "more", big, NULL};
    json_t *o;
    int cap;

    (void)state;
    memset(big, '"', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    for (cap = 64; cap <= 8192; cap += 997) {
        o = format(CM_LOG_INFO, kv, big, cap);
        assert_non_null(o);
        json_decref(o);
    }
}

static void test_level_parse(void **state)
{
    enum cm_log_level l;

    (void)state;
    assert_int_equal(cm_log_level_parse("debug", &l), 0);
    assert_int_equal(l, CM_LOG_DEBUG);
    assert_int_equal(cm_log_level_parse("WARNING", &l), 0);
    assert_int_equal(l, CM_LOG_WARN);
    assert_int_equal(cm_log_level_parse("Error", &l), 0);
    assert_int_equal(l, CM_LOG_ERROR);
    assert_int_equal(cm_log_level_parse("loud", &l), CM_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_python_sdk_shape),
        cmocka_unit_test(test_escaping_and_extra_fields),
        cmocka_unit_test(test_truncation_keeps_valid_json),
        cmocka_unit_test(test_level_parse),
    };
    return cmocka_run_group_tests_name("cm_log", tests, NULL, NULL);
}
