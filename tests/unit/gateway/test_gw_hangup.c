/* gw_hangup: a peer that closes its end wakes the callback once; a watch
 * that ended never calls back. Sockets are socketpairs: no network. */
#include "gw_hangup.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int calls[4], resets[4];

/* Watch 3 asks to go on after a FIN (a half-close), as a started stream does. */
static int on_hangup(void *ud, int reset)
{
    pthread_mutex_lock(&lock);
    calls[(intptr_t)ud]++;
    resets[(intptr_t)ud] += reset;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    return (intptr_t)ud == 3 && !reset;
}

/* Waits at most 5 s for calls[i] to reach |want|. */
static int wait_calls(int i, int want)
{
    struct timespec until;
    int ok;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&lock);
    while (calls[i] < want && pthread_cond_timedwait(&cond, &lock, &until) == 0)
        ;
    ok = calls[i] >= want;
    pthread_mutex_unlock(&lock);
    return ok;
}

static void test_close_wakes_only_its_watch(void **state)
{
    struct gw_hangup *w = gw_hangup_new();
    int a[2], b[2], c[2];
    uint64_t ia, ib, ic;

    (void)state;
    assert_non_null(w);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, b), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, c), 0);
    ia = gw_hangup_watch(w, a[0], on_hangup, (void *)(intptr_t)0);
    ib = gw_hangup_watch(w, b[0], on_hangup, (void *)(intptr_t)1);
    ic = gw_hangup_watch(w, c[0], on_hangup, (void *)(intptr_t)2);
    assert_true(ia && ib && ic && ia != ib);
    /* Data from a live peer is not a hangup. */
    assert_int_equal(write(a[1], "x", 1), 1);
    /* b's watch ends first: its peer leaving later must not call back. */
    gw_hangup_unwatch(w, ib);
    close(b[1]);
    close(a[1]);
    assert_true(wait_calls(0, 1));
    /* c's peer leaves; a's watch is gone after its one callback. */
    close(c[1]);
    assert_true(wait_calls(2, 1));
    gw_hangup_unwatch(w, ia); /* already gone: harmless */
    gw_hangup_unwatch(w, 0);
    assert_int_equal(calls[0], 1);
    assert_int_equal(calls[1], 0);
    assert_int_equal(calls[2], 1);
    gw_hangup_free(w);
    gw_hangup_free(NULL);
    close(a[0]);
    close(b[0]);
    close(c[0]);
}

/* A half-close is reported as such; asked to go on, the watch then reports
 * the peer's full close as a failure, once. */
static void test_half_close_then_close(void **state)
{
    struct gw_hangup *w = gw_hangup_new();
    int d[2];

    (void)state;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, d), 0);
    assert_true(gw_hangup_watch(w, d[0], on_hangup, (void *)(intptr_t)3) > 0);
    shutdown(d[1], SHUT_WR);
    assert_true(wait_calls(3, 1));
    assert_int_equal(resets[3], 0);
    close(d[1]);
    assert_true(wait_calls(3, 2));
    assert_int_equal(resets[3], 1);
    gw_hangup_free(w);
    close(d[0]);
}

static void test_bad_descriptor_is_refused(void **state)
{
    struct gw_hangup *w = gw_hangup_new();

    (void)state;
    assert_int_equal(gw_hangup_watch(w, -1, on_hangup, NULL), 0);
    gw_hangup_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_close_wakes_only_its_watch),
        cmocka_unit_test(test_half_close_then_close),
        cmocka_unit_test(test_bad_descriptor_is_refused),
    };

    return cmocka_run_group_tests_name("gw_hangup", tests, NULL, NULL);
}
