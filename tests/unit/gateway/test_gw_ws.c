#include "gw_ws.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void test_accept_key_rfc_example(void **state)
{
    char out[GW_WS_ACCEPT_LEN + 1];

    (void)state;
    /* RFC 6455 section 1.3. */
    assert_int_equal(gw_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out), 0);
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static const struct {
    const char *upgrade, *connection, *version, *key, *why;
} rows[] = {
    {"websocket", "Upgrade", "13", "dGhlIHNhbXBsZSBub25jZQ==", NULL},
    {"WebSocket", "keep-alive, Upgrade", "13", "dGhlIHNhbXBsZSBub25jZQ==", NULL},
    {NULL, "Upgrade", "13", "dGhlIHNhbXBsZSBub25jZQ==", "Upgrade: websocket"},
    {"h2c", "Upgrade", "13", "dGhlIHNhbXBsZSBub25jZQ==", "Upgrade: websocket"},
    {"websocket", "keep-alive", "13", "dGhlIHNhbXBsZSBub25jZQ==", "Connection: Upgrade"},
    {"websocket", "Upgrade", "8", "dGhlIHNhbXBsZSBub25jZQ==", "Version 13"},
    {"websocket", "Upgrade", "13", NULL, "16 bytes in base64"},
    {"websocket", "Upgrade", "13", "short", "16 bytes in base64"},
    {"websocket", "Upgrade", "13", "dGhlIHNhbXBsZSBub25jZQ=!", "16 bytes in base64"},
};

static void test_handshake_rows(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char why[128] = "";
        int rc = gw_ws_check(rows[i].upgrade, rows[i].connection, rows[i].version, rows[i].key, why,
                             sizeof(why));

        if (!rows[i].why && rc)
            fail_msg("row %zu refused: %s", i, why);
        if (rows[i].why && (!rc || !strstr(why, rows[i].why)))
            fail_msg("row %zu: '%s' lacks '%s'", i, why, rows[i].why);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_key_rfc_example),
        cmocka_unit_test(test_handshake_rows),
    };
    return cmocka_run_group_tests_name("gw_ws", tests, NULL, NULL);
}
