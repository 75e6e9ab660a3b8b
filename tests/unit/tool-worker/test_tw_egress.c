/* tw_egress_parse: what the egress proxy makes of a request head. The proxy
 * itself is exercised with real sandboxed programs in test_tw_runner. */
#include "tw_egress.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const struct {
    const char *head;
    int status, tunnel;
    const char *host, *port, *upstream_head; /* the head sent on, for plain HTTP */
} rows[] = {
    {"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 0, 1, "example.com",
     "443", NULL},
    {"CONNECT [2001:db8::1]:8443 HTTP/1.1\r\n\r\n", 0, 1, "2001:db8::1", "8443", NULL},
    {"GET http://example.com/a/b?c=1 HTTP/1.1\r\nHost: example.com\r\nProxy-Connection: "
     "keep-alive\r\nProxy-Authorization: Basic eA==\r\nAccept: */*\r\n\r\n",
     0, 0, "example.com", "80",
     "GET /a/b?c=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nConnection: close\r\n\r\n"},
    {"POST http://api.example:8080 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0, 0, "api.example",
     "8080", "POST / HTTP/1.0\r\nConnection: close\r\n\r\n"},
    {"CONNECT example.com HTTP/1.1\r\n\r\n", 400, 0, NULL, NULL, NULL},
    {"CONNECT example.com:99999 HTTP/1.1\r\n\r\n", 400, 0, NULL, NULL, NULL},
    {"GET /relative HTTP/1.1\r\n\r\n", 400, 0, NULL, NULL, NULL},
    {"GET https://example.com/ HTTP/1.1\r\n\r\n", 400, 0, NULL, NULL, NULL},
    {"GET http://user@evil@example.com/ HTTP/1.1\r\n\r\n", 400, 0, NULL, NULL, NULL},
    {"GET http://example.com/ SPDY/3\r\n\r\n", 400, 0, NULL, NULL, NULL},
    {"garbage", 400, 0, NULL, NULL, NULL},
    {"CONNECT ex ample.com:443 HTTP/1.1\r\n\r\n", 400, 0, NULL, NULL, NULL},
    {"GET http://exa%00mple.com/ HTTP/1.1\r\n\r\n", 400, 0, NULL, NULL, NULL},
};

static void test_heads(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct tw_egress_target t;
        char why[200] = "";
        int st = tw_egress_parse(rows[i].head, strlen(rows[i].head), &t, why, sizeof(why));

        if (st != rows[i].status)
            fail_msg("row %zu: status %d (%s), want %d", i, st, why, rows[i].status);
        if (st) {
            assert_true(why[0] != '\0');
            free(t.head);
            continue;
        }
        assert_int_equal(t.tunnel, rows[i].tunnel);
        assert_string_equal(t.host, rows[i].host);
        assert_string_equal(t.port, rows[i].port);
        if (rows[i].upstream_head) {
            assert_non_null(t.head);
            if (t.head_len != strlen(rows[i].upstream_head) ||
                memcmp(t.head, rows[i].upstream_head, t.head_len))
                fail_msg("row %zu: sent on '%.*s'", i, (int)t.head_len, t.head);
        } else {
            assert_null(t.head);
        }
        free(t.head);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heads),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
