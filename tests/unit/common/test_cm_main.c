#include "cm_main.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void test_drop_secrets(void **state)
{
    static const char *const secret[] = {"AWS_SECRET_ACCESS_KEY",
                                         "AWS_REGION",
                                         "GITHUB_TOKEN",
                                         "db_password",
                                         "MY_API_KEY",
                                         "SERVICE_KEY_ID",
                                         "GOOGLE_APPLICATION_CREDENTIALS",
                                         "client_secret"};
    static const char *const kept[] = {"PATH_EXTRA", "TOOL_WORKER_LISTEN", "KEYBOARD", "TZ"};
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(secret) / sizeof(secret[0]); i++)
        setenv(secret[i], "x", 1);
    for (i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
        setenv(kept[i], "y", 1);
    assert_true(cm_main_drop_secrets() >= (int)(sizeof(secret) / sizeof(secret[0])));
    for (i = 0; i < sizeof(secret) / sizeof(secret[0]); i++)
        assert_null(getenv(secret[i]));
    for (i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
        assert_string_equal(getenv(kept[i]), "y");
    assert_int_equal(cm_main_drop_secrets(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_drop_secrets)};
    return cmocka_run_group_tests_name("cm_main", tests, NULL, NULL);
}
