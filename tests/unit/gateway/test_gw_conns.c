/* gw_conns: deadlines cut slow requests (observed as the end of the stream on
 * the peer's side of a socketpair), a request read in full has none, and
 * connections beyond the cap are marked as the reserve. The peer's read
 * blocks until the cut: the deadline is the synchronisation, no sleeps. */
#include "gw_conns.h"

#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

/* 1 when |fd|'s peer was shut down within |ms|, 0 when it is still open. */
static int cut_within(int fd, int ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    char b;

    if (poll(&p, 1, ms) <= 0)
        return 0;
    return read(fd, &b, 1) == 0;
}

static void test_slow_request_is_cut_at_its_deadline(void **state)
{
    struct gw_conns_config cfg = {4, 100, 0, 50};
    struct gw_conns *cs = gw_conns_new(&cfg);
    struct gw_conn *c;
    size_t open, cut;
    int sv[2];

    (void)state;
    assert_non_null(cs);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    c = gw_conns_open(cs, sv[0]);
    assert_non_null(c);
    assert_false(gw_conn_is_reserve(c));
    assert_true(cut_within(sv[1], 5000));
    gw_conns_counts(cs, &open, &cut);
    assert_int_equal(cut, 1);
    gw_conns_close(cs, c);
    gw_conns_counts(cs, &open, &cut);
    assert_int_equal(open, 0);
    close(sv[0]);
    close(sv[1]);
    gw_conns_free(cs);
}

/* A request read in full has no deadline (an invocation may wait long);
 * once answered, the next request's deadline starts. */
static void test_read_request_has_no_deadline_until_answered(void **state)
{
    struct gw_conns_config cfg = {4, 100, 100, 50};
    struct gw_conns *cs = gw_conns_new(&cfg);
    struct gw_conn *c;
    int sv[2];

    (void)state;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    c = gw_conns_open(cs, sv[0]);
    gw_conns_request_read(cs, c);
    assert_false(cut_within(sv[1], 400)); /* four request timeouts: left alone */
    gw_conns_request_done(cs, c);
    assert_true(cut_within(sv[1], 5000));
    gw_conns_close(cs, c);
    close(sv[0]);
    close(sv[1]);
    gw_conns_free(cs);
}

/* Beyond the cap: marked reserve, and cut after the short reserve life even
 * once its request was read. */
static void test_reserve_beyond_the_cap(void **state)
{
    struct gw_conns_config cfg = {2, 60000, 0, 50};
    struct gw_conns *cs = gw_conns_new(&cfg);
    struct gw_conn *c[3];
    size_t open, cut;
    int sv[3][2], i;

    (void)state;
    for (i = 0; i < 3; i++) {
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv[i]), 0);
        c[i] = gw_conns_open(cs, sv[i][0]);
    }
    assert_false(gw_conn_is_reserve(c[0]));
    assert_false(gw_conn_is_reserve(c[1]));
    assert_true(gw_conn_is_reserve(c[2]));
    gw_conns_request_read(cs, c[2]);
    assert_true(cut_within(sv[2][1], 5000));
    assert_false(cut_within(sv[0][1], 0));
    gw_conns_counts(cs, &open, &cut);
    assert_int_equal(open, 3);
    /* A slot freed: the next one is a normal connection again. */
    gw_conns_close(cs, c[0]);
    gw_conns_close(cs, c[2]);
    c[0] = gw_conns_open(cs, sv[0][0]);
    assert_false(gw_conn_is_reserve(c[0]));
    gw_conns_close(cs, c[0]);
    gw_conns_close(cs, c[1]);
    for (i = 0; i < 3; i++) {
        close(sv[i][0]);
        close(sv[i][1]);
    }
    gw_conns_free(cs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slow_request_is_cut_at_its_deadline),
        cmocka_unit_test(test_read_request_has_no_deadline_until_answered),
        cmocka_unit_test(test_reserve_beyond_the_cap),
    };
    return cmocka_run_group_tests_name("gw_conns", tests, NULL, NULL);
}
