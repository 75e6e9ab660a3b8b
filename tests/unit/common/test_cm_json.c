#include "cm_err.h"
#include "cm_json.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void test_typed_getters(void **state)
{
    json_t *o =
        json_loads("{\"s\":\"x\",\"i\":5,\"b\":true,\"n\":null,\"o\":{},\"a\":[]}", 0, NULL);
    const char *s;
    long long i;
    int b = 0;
    json_t *v;
    char err[128];

    (void)state;
    assert_int_equal(cm_json_str(o, "s", &s, err, sizeof(err)), 0);
    assert_string_equal(s, "x");
    assert_int_equal(cm_json_str(o, "i", &s, err, sizeof(err)), CM_ETYPE);
    assert_string_equal(err, "field 'i': must be a string");
    assert_int_equal(cm_json_str(o, "zz", &s, err, sizeof(err)), CM_ENOENT);
    assert_string_equal(err, "field 'zz': missing");
    assert_int_equal(cm_json_opt_str(o, "zz", &s, err, sizeof(err)), 0);
    assert_null(s);
    assert_int_equal(cm_json_opt_str(o, "n", &s, err, sizeof(err)), 0);
    assert_null(s);
    assert_int_equal(cm_json_int(o, "i", &i, err, sizeof(err)), 0);
    assert_int_equal(i, 5);
    assert_int_equal(cm_json_opt_bool(o, "b", &b, err, sizeof(err)), 0);
    assert_int_equal(b, 1);
    assert_int_equal(cm_json_opt_bool(o, "s", &b, err, sizeof(err)), CM_ETYPE);
    assert_int_equal(cm_json_obj(o, "o", &v, err, sizeof(err)), 0);
    assert_int_equal(cm_json_arr(o, "o", &v, err, sizeof(err)), CM_ETYPE);
    assert_int_equal(cm_json_arr(o, "a", &v, err, sizeof(err)), 0);
    /* A non-object parent is an error, not a crash. */
    assert_int_equal(cm_json_str(json_array_get(json_object_get(o, "a"), 0), "s", &s, NULL, 0),
                     CM_ETYPE);
    json_decref(o);
}

static void test_dump_is_compact_utf8(void **state)
{
    json_t *o = json_pack("{s:s}", "k", "h\xc3\xa9llo");
    char *s = cm_json_dump(o);

    (void)state;
    assert_string_equal(s, "{\"k\":\"h\xc3\xa9llo\"}");
    free(s);
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_typed_getters),
        cmocka_unit_test(test_dump_is_compact_utf8),
    };
    return cmocka_run_group_tests_name("cm_json", tests, NULL, NULL);
}
