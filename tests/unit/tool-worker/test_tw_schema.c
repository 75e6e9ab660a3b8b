#include "tw_schema.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

/* One row: a schema, an input, and the violations expected (0 = valid) with
 * a piece of text the first message must contain. */
static const struct row {
    const char *schema, *input;
    int violations;
    const char *says;
} rows[] = {
    {"{\"type\":\"object\"}", "{}", 0, ""},
    {"{\"type\":\"object\",\"required\":[\"a\"]}", "{}", 1, "input: 'a' is required"},
    {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}}}", "{\"a\":1}", 1,
     "input.a: must be a string (got integer)"},
    {"{\"properties\":{\"a\":{\"type\":\"integer\"}}}", "{\"a\":2.0}", 0, ""},
    {"{\"properties\":{\"a\":{\"type\":\"integer\"}}}", "{\"a\":2.5}", 1,
     "input.a: must be an integer (got number)"},
    {"{\"properties\":{\"a\":{\"type\":\"number\"}}}", "{\"a\":2}", 0, ""},
    {"{\"properties\":{\"a\":{\"type\":[\"string\",\"null\"]}}}", "{\"a\":null}", 0, ""},
    {"{\"properties\":{\"a\":{\"type\":[\"string\",\"null\"]}}}", "{\"a\":true}", 1,
     "must be a string or null (got boolean)"},
    {"{\"properties\":{\"a\":{\"enum\":[\"x\",\"y\"]}}}", "{\"a\":\"z\"}", 1,
     "input.a: must be one of [\"x\",\"y\"]"},
    {"{\"properties\":{\"a\":{\"const\":3}}}", "{\"a\":4}", 1, "must equal"},
    {"{\"properties\":{\"n\":{\"minimum\":1,\"maximum\":10}}}", "{\"n\":0}", 1,
     "input.n: must be at least 1 (got 0)"},
    {"{\"properties\":{\"n\":{\"minimum\":1,\"maximum\":10}}}", "{\"n\":11}", 1,
     "must be at most 10 (got 11)"},
    {"{\"properties\":{\"n\":{\"exclusiveMinimum\":0}}}", "{\"n\":0}", 1, "must be greater than 0"},
    {"{\"properties\":{\"n\":{\"exclusiveMaximum\":5}}}", "{\"n\":5}", 1, "must be less than 5"},
    {"{\"properties\":{\"s\":{\"minLength\":2}}}", "{\"s\":\"\\u00e9\"}", 1,
     "must be at least 2 characters long (is 1)"},
    {"{\"properties\":{\"s\":{\"maxLength\":2}}}", "{\"s\":\"\\u00e9\\u00e9\"}", 0, ""},
    {"{\"properties\":{\"s\":{\"maxLength\":2}}}", "{\"s\":\"abc\"}", 1,
     "must be at most 2 characters long (is 3)"},
    {"{\"additionalProperties\":false,\"properties\":{\"a\":{}}}", "{\"a\":1,\"b\":2}", 1,
     "input: 'b' is not allowed"},
    {"{\"additionalProperties\":{\"type\":\"string\"}}", "{\"h\":1}", 1,
     "input.h: must be a string"},
    {"{\"properties\":{\"l\":{\"type\":\"array\",\"items\":{\"type\":\"number\"}}}}",
     "{\"l\":[1,\"x\",3]}", 1, "input.l[1]: must be a number (got string)"},
    {"{\"properties\":{\"l\":{\"minItems\":2}}}", "{\"l\":[1]}", 1,
     "must have at least 2 items (has 1)"},
    {"{\"properties\":{\"l\":{\"maxItems\":1}}}", "{\"l\":[1,2]}", 1,
     "must have at most 1 items (has 2)"},
    {"{\"properties\":{\"o\":{\"type\":\"object\",\"properties\":{\"p\":{\"type\":\"object\","
     "\"required\":[\"q\"]}}}}}",
     "{\"o\":{\"p\":{}}}", 1, "input.o.p: 'q' is required"},
    {"{\"properties\":{\"l\":{\"items\":{\"properties\":{\"name\":{\"type\":\"string\"}}}}}}",
     "{\"l\":[{\"name\":\"a\"},{\"name\":2}]}", 1, "input.l[1].name: must be a string"},
    /* unknown keywords constrain nothing */
    {"{\"properties\":{\"s\":{\"format\":\"email\",\"pattern\":\"^x\"}}}", "{\"s\":\"y\"}", 0, ""},
    /* several violations are all counted, the messages capped */
    {"{\"required\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\"]}", "{}", 7, "'a' is required"},
};

static void test_rows(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        json_t *s = json_loads(rows[i].schema, 0, NULL), *in = json_loads(rows[i].input, 0, NULL);
        char err[2048];
        int n;

        assert_non_null(s);
        assert_non_null(in);
        n = tw_schema_check(s, in, err, sizeof(err));
        if (n != rows[i].violations || !strstr(err, rows[i].says))
            fail_msg("row %zu: %s on %s -> %d '%s'; want %d and '%s'", i, rows[i].schema,
                     rows[i].input, n, err, rows[i].violations, rows[i].says);
        json_decref(s);
        json_decref(in);
    }
}

static void test_messages_are_capped(void **state)
{
    json_t *s = json_loads("{\"required\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\"]}", 0, NULL);
    json_t *in = json_object();
    char err[2048], small[16];
    size_t lines = 1;
    const char *c;

    (void)state;
    assert_int_equal(tw_schema_check(s, in, err, sizeof(err)), 7);
    for (c = err; *c; c++)
        lines += *c == '\n';
    assert_int_equal(lines, TW_SCHEMA_MAX_ERRORS);
    /* a tiny buffer is filled, never overrun */
    assert_int_equal(tw_schema_check(s, in, small, sizeof(small)), 7);
    assert_int_equal(strlen(small), sizeof(small) - 1);
    json_decref(s);
    json_decref(in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows),
        cmocka_unit_test(test_messages_are_capped),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
