/* tw_calc, data-driven: each row is an expression and its value or error. */
#include "tw_calc.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const struct {
    const char *expr;
    double value;
} ok_rows[] = {
    {"1+2", 3},
    {"2 + 3 * 4", 14},
    {"(2 + 3) * 4", 20},
    {"(2+3)*4^2", 80},
    {"2^3^2", 512}, /* right-associative */
    {"-2^2", -4},   /* ^ binds tighter than unary minus */
    {"(-2)^2", 4},
    {"--3", 3},
    {"+4", 4},
    {"7 % 3", 1},
    {"-7 % 3", -1},
    {"10 / 4", 2.5},
    {"1.5e3 + .5", 1500.5},
    {"2E-2", 0.02},
    {"  \t42\n", 42},
    {"((((1))))", 1},
    {"3 - 2 - 1", 0}, /* left-associative */
    {"100 / 10 / 5", 2},
    {"2 ^ -1", 0.5},
    {"0.1 + 0.2", 0.30000000000000004},
};

static const struct {
    const char *expr;
    const char *error_has;
} err_rows[] = {
    {"1/0", "division by zero"},
    {"5 % 0", "modulo by zero"},
    {"", "empty expression"},
    {"   ", "empty expression"},
    {"1 +", "unexpected end"},
    {"(1 + 2", "expected ')'"},
    {"1 + 2)", "unexpected character"},
    {"2 * x", "unexpected character"},
    {"rm -rf /", "unexpected character"},
    {"1..2", "unexpected character"},
    {"10^400", "not a finite number"},
    {"0 ^ -1", "zero raised to a negative power"},
    {"(-8) ^ 0.5", "fractional power"},
    {"2e", "unexpected character"},
    {"1 2", "unexpected character"},
};

static void test_values(void **state)
{
    char err[256];
    double v;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(ok_rows) / sizeof(ok_rows[0]); i++) {
        int rc = tw_calc_eval(ok_rows[i].expr, strlen(ok_rows[i].expr), &v, err, sizeof(err));

        if (rc)
            fail_msg("'%s' failed: %s", ok_rows[i].expr, err);
        if (fabs(v - ok_rows[i].value) > 1e-12)
            fail_msg("'%s' = %.17g, want %.17g", ok_rows[i].expr, v, ok_rows[i].value);
    }
}

static void test_errors(void **state)
{
    char err[256];
    double v;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(err_rows) / sizeof(err_rows[0]); i++) {
        err[0] = '\0';
        if (!tw_calc_eval(err_rows[i].expr, strlen(err_rows[i].expr), &v, err, sizeof(err)))
            fail_msg("'%s' should fail", err_rows[i].expr);
        if (!strstr(err, err_rows[i].error_has))
            fail_msg("'%s': error '%s' lacks '%s'", err_rows[i].expr, err, err_rows[i].error_has);
    }
}

static void test_caps(void **state)
{
    char deep[300], err[256], *big;
    double v;
    int i;

    (void)state;
    for (i = 0; i < 100; i++)
        deep[i] = '(';
    deep[100] = '1';
    for (i = 101; i < 201; i++)
        deep[i] = ')';
    deep[201] = '\0';
    assert_int_not_equal(tw_calc_eval(deep, strlen(deep), &v, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "nested too deeply"));
    memset(deep, '-', 200);
    strcpy(deep + 200, "1");
    assert_int_not_equal(tw_calc_eval(deep, strlen(deep), &v, err, sizeof(err)), 0);
    big = malloc(TW_CALC_MAX_LEN + 2);
    memset(big, '1', TW_CALC_MAX_LEN + 1);
    big[TW_CALC_MAX_LEN + 1] = '\0';
    assert_int_not_equal(tw_calc_eval(big, strlen(big), &v, err, sizeof(err)), 0);
    free(big);
    /* Not NUL-terminated input is read only within |len|. */
    assert_int_equal(tw_calc_eval("12+3garbage", 4, &v, err, sizeof(err)), 0);
    assert_true(v == 15);
}

static void test_format(void **state)
{
    char out[64];

    (void)state;
    tw_calc_format(80, out, sizeof(out));
    assert_string_equal(out, "80");
    tw_calc_format(-0.0, out, sizeof(out));
    assert_string_equal(out, "0");
    tw_calc_format(2.5, out, sizeof(out));
    assert_string_equal(out, "2.5");
    tw_calc_format(1e20, out, sizeof(out));
    assert_string_equal(out, "1e+20");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_caps),
        cmocka_unit_test(test_format),
    };
    return cmocka_run_group_tests_name("tw_calc", tests, NULL, NULL);
}
