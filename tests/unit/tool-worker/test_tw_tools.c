#include "cm_err.h"
#include "tw_tools.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

static void run(const char *name, const char *input, int want_error, const char *text_has)
{
    struct tw_result r;
    int rc = tw_execute(name, input, NULL, &r);

    assert_true(rc == 0 || rc == CM_ENOENT);
    assert_non_null(r.text);
    if (r.is_error != want_error || !strstr(r.text, text_has))
        fail_msg("%s(%s) -> error=%d '%s'; want error=%d and '%s'", name, input, r.is_error, r.text,
                 want_error, text_has);
    tw_result_free(&r);
}

static void test_list_has_valid_schemas(void **state)
{
    size_t n, i;
    const struct tw_tool *t = tw_tools_list(&n);

    (void)state;
    assert_true(n >= 2);
    for (i = 0; i < n; i++) {
        json_t *schema = json_loads(t[i].input_schema_json, 0, NULL);

        assert_true(json_is_object(schema));
        assert_string_equal(json_string_value(json_object_get(schema, "type")), "object");
        json_decref(schema);
    }
}

static void test_calculator(void **state)
{
    (void)state;
    run("calculator", "{\"expression\":\"(2+3)*4^2\"}", 0, "80");
    run("calculator", "{\"expression\":\"1/0\"}", 1, "division by zero");
    run("calculator", "{\"expression\":42}", 1, "must be a string");
    run("calculator", "{}", 1, "missing");
    run("calculator", "not json", 1, "not valid JSON");
    run("calculator", "[1,2]", 1, "must be a JSON object");
}

static void test_unknown_tool(void **state)
{
    struct tw_result r;

    (void)state;
    assert_int_equal(tw_execute("rm", "{}", NULL, &r), CM_ENOENT);
    assert_true(r.is_error);
    assert_non_null(strstr(r.text, "unknown tool 'rm'"));
    tw_result_free(&r);
}

static void test_current_time(void **state)
{
    struct tw_result r;
    json_t *o;
    long long now = (long long)time(NULL), unix_s;

    (void)state;
    assert_int_equal(tw_execute("current_time", "{}", NULL, &r), 0);
    assert_false(r.is_error);
    o = json_loads(r.text, 0, NULL);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "timezone")), "UTC");
    unix_s = json_integer_value(json_object_get(o, "unix"));
    assert_true(unix_s >= now - 5 && unix_s <= now + 5);
    assert_int_equal(json_string_value(json_object_get(o, "iso8601"))[19], 'Z');
    json_decref(o);
    tw_result_free(&r);

    assert_int_equal(tw_execute("current_time", "{\"timezone\":\"Asia/Kolkata\"}", NULL, &r), 0);
    assert_false(r.is_error);
    assert_non_null(strstr(r.text, "+05:30")); /* no DST there: always +05:30 */
    tw_result_free(&r);

    run("current_time", "{\"timezone\":\"Mars/Olympus\"}", 1, "unknown time zone");
    run("current_time", "{\"timezone\":\"../../etc/passwd\"}", 1, "unknown time zone");
}

static int cancel_now(void *ud)
{
    (void)ud;
    return 1;
}

static void test_slow_test_tool(void **state)
{
    struct tw_cancel stop = {cancel_now, NULL};
    struct tw_result r;

    (void)state;
    /* Not offered unless enabled. */
    assert_int_equal(tw_execute("slow", "{\"ms\":1}", NULL, &r), CM_ENOENT);
    tw_result_free(&r);
    tw_tools_enable_test_tools(1);
    assert_int_equal(tw_execute("slow", "{\"ms\":20}", NULL, &r), 0);
    assert_false(r.is_error);
    assert_string_equal(r.text, "waited 20 ms");
    tw_result_free(&r);
    assert_int_equal(tw_execute("slow", "{\"ms\":60000}", &stop, &r), 0);
    assert_true(r.cancelled);
    assert_string_equal(r.text, "cancelled after 0 ms");
    tw_result_free(&r);
    tw_tools_enable_test_tools(0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list_has_valid_schemas), cmocka_unit_test(test_calculator),
        cmocka_unit_test(test_unknown_tool),           cmocka_unit_test(test_current_time),
        cmocka_unit_test(test_slow_test_tool),
    };
    return cmocka_run_group_tests_name("tw_tools", tests, NULL, NULL);
}
