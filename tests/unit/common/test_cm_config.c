#include "cm_config.h"
#include "cm_err.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

enum { PORT, REGION, DEBUG, NAME, SECRET, TEMP, FIELDS, N };

static const struct cm_cfg_entry tab[N] = {
    [PORT] = {"PORT", NULL, CM_CFG_INT, "8080", 0, 65535, "port", 0},
    [REGION] = {"AWS_REGION", "AWS_DEFAULT_REGION", CM_CFG_STR, "us-east-1", 0, 64, "region", 0},
    [DEBUG] = {"DEBUG", NULL, CM_CFG_BOOL, "false", 0, 1, "debug", 0},
    [NAME] = {"NAME", NULL, CM_CFG_STR, NULL, 0, 5, "optional", 0},
    [SECRET] = {"SECRET", NULL, CM_CFG_STR, "hunter2", 0, 64, "a secret", 1},
    [TEMP] = {"TEMPERATURE", NULL, CM_CFG_FLOAT, NULL, 0, 1, "sampling", 0},
    [FIELDS] = {"FIELDS", NULL, CM_CFG_JSON, NULL, 1, 0, "an object", 0},
};

/* |ud| is a NULL-terminated list of "KEY=VALUE". */
static const char *fake_env(const char *name, void *ud)
{
    const char *const *e = ud;
    size_t n = strlen(name);

    for (; *e; e++) {
        if (!strncmp(*e, name, n) && (*e)[n] == '=')
            return *e + n + 1;
    }
    return NULL;
}

struct row {
    const char *env[4];
    int rc;
    const char *err_has; /* substring of the error, or NULL */
};

static const struct row rows[] = {
    {{NULL}, 0, NULL},
    {{"PORT=9090", NULL}, 0, NULL},
    {{"PORT=70000", NULL}, CM_EINVAL, "PORT: 70000 is out of range [0, 65535]"},
    {{"PORT=80x", NULL}, CM_EINVAL, "PORT: '80x' is not an integer"},
    {{"PORT=", NULL}, 0, NULL}, /* empty = unset: default */
    {{"DEBUG=yes", NULL}, 0, NULL},
    {{"DEBUG=maybe", NULL}, CM_EINVAL, "DEBUG: 'maybe' is not a boolean"},
    {{"NAME=toolong", NULL}, CM_EINVAL, "NAME: longer than 5 bytes"},
    {{"TEMPERATURE=0.7", NULL}, 0, NULL},
    {{"TEMPERATURE=1.5", NULL}, CM_EINVAL, "TEMPERATURE: 1.5 is out of range [0, 1]"},
    {{"TEMPERATURE=warm", NULL}, CM_EINVAL, "TEMPERATURE: 'warm' is not a number"},
    {{"FIELDS={\"thinking\":{\"type\":\"enabled\"}}", NULL}, 0, NULL},
    {{"FIELDS=[1]", NULL}, CM_EINVAL, "FIELDS: not a JSON object"},
    {{"FIELDS={bad", NULL}, CM_EINVAL, "FIELDS: not a JSON object"},
};

static void test_rows(void **state)
{
    struct cm_cfg_value v[N];
    char err[256];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        err[0] = '\0';
        assert_int_equal(cm_config_load(tab, N, v, fake_env, (void *)rows[i].env, err, sizeof(err)),
                         rows[i].rc);
        if (rows[i].err_has)
            assert_non_null(strstr(err, rows[i].err_has));
        cm_config_free(v, N);
    }
}

static void test_values_and_fallback(void **state)
{
    const char *env[] = {"AWS_DEFAULT_REGION=eu-west-1", "DEBUG=on", "PORT=1", "TEMPERATURE=0.25",
                         NULL};
    const char *env2[] = {"AWS_REGION=ap-south-1", "AWS_DEFAULT_REGION=eu-west-1", NULL};
    struct cm_cfg_value v[N];
    char err[256];

    (void)state;
    assert_int_equal(cm_config_load(tab, N, v, fake_env, (void *)env, err, sizeof(err)), 0);
    assert_int_equal(v[PORT].i, 1);
    assert_true(v[PORT].is_set);
    assert_string_equal(v[REGION].s, "eu-west-1");
    assert_int_equal(v[DEBUG].i, 1);
    assert_null(v[NAME].s);
    assert_true(v[TEMP].d == 0.25);
    assert_true(v[TEMP].is_set);
    cm_config_free(v, N);
    assert_int_equal(cm_config_load(tab, N, v, fake_env, (void *)env2, err, sizeof(err)), 0);
    assert_string_equal(v[REGION].s, "ap-south-1"); /* the primary variable wins */
    assert_false(v[PORT].is_set);
    assert_int_equal(v[PORT].i, 8080);
    cm_config_free(v, N);
}

static void test_help_lists_every_variable_but_no_secret(void **state)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);

    (void)state;
    cm_config_help(f, "prog", "summary", tab, N);
    fclose(f);
    assert_non_null(strstr(out, "PORT"));
    assert_non_null(strstr(out, "default 8080, range 0..65535"));
    assert_non_null(strstr(out, "falls back to AWS_DEFAULT_REGION"));
    assert_non_null(strstr(out, "SECRET"));
    assert_null(strstr(out, "hunter2"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows),
        cmocka_unit_test(test_values_and_fallback),
        cmocka_unit_test(test_help_lists_every_variable_but_no_secret),
    };
    return cmocka_run_group_tests_name("cm_config", tests, NULL, NULL);
}
