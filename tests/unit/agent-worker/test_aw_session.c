#include "aw_session.h"

#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static json_t *user_text(const char *t)
{
    return json_pack("{s:s,s:[{s:s}]}", "role", "user", "content", "text", t);
}

static json_t *assistant_tool(void)
{
    return json_pack("{s:s,s:[{s:{s:s,s:s,s:{}}}]}", "role", "assistant", "content", "toolUse",
                     "toolUseId", "a", "name", "t", "input");
}

static json_t *user_result(void)
{
    return json_pack("{s:s,s:[{s:{s:s,s:[]}}]}", "role", "user", "content", "toolResult",
                     "toolUseId", "a", "content");
}

static struct aw_sessions_stats stats_of(struct aw_sessions *s)
{
    struct aw_sessions_stats st;

    aw_sessions_stats(s, &st);
    return st;
}

static json_t *assistant_text(void)
{
    return json_pack("{s:s,s:[{s:s}]}", "role", "assistant", "content", "text", "ok");
}

static void test_memory_per_session(void **state)
{
    struct aw_sessions *s = aw_sessions_new(10, 100);
    struct aw_session *a = aw_sessions_acquire(s, "alpha");

    (void)state;
    json_array_append_new(aw_session_messages(a), user_text("hi"));
    aw_sessions_release(s, a);
    a = aw_sessions_acquire(s, "alpha");
    assert_int_equal(json_array_size(aw_session_messages(a)), 1);
    aw_sessions_release(s, a);
    a = aw_sessions_acquire(s, "beta");
    assert_int_equal(json_array_size(aw_session_messages(a)), 0);
    aw_sessions_release(s, a);
    assert_int_equal(stats_of(s).count, 2);
    aw_sessions_free(s);
}

static void test_invalid_ids(void **state)
{
    struct aw_sessions *s = aw_sessions_new(10, 100);
    char big[300];

    (void)state;
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_null(aw_sessions_acquire(s, ""));
    assert_null(aw_sessions_acquire(s, big));
    aw_sessions_free(s);
}

static void test_lru_eviction_spares_held_sessions(void **state)
{
    struct aw_sessions *s = aw_sessions_new(2, 100);
    struct aw_session *a, *b, *c;

    (void)state;
    a = aw_sessions_acquire(s, "a");
    json_array_append_new(aw_session_messages(a), user_text("a"));
    aw_sessions_release(s, a);
    b = aw_sessions_acquire(s, "b"); /* held */
    c = aw_sessions_acquire(s, "c"); /* evicts "a", the idle one */
    assert_non_null(c);
    assert_int_equal(stats_of(s).count, 2);
    aw_sessions_release(s, c);
    /* "a" comes back empty: it was evicted. */
    a = aw_sessions_acquire(s, "a"); /* evicts "c" (idle); "b" is held */
    assert_non_null(a);
    assert_int_equal(json_array_size(aw_session_messages(a)), 0);
    /* Both slots held: a new session cannot be made. */
    assert_null(aw_sessions_acquire(s, "d"));
    aw_sessions_release(s, a);
    aw_sessions_release(s, b);
    aw_sessions_free(s);
}

static void test_trim_keeps_tool_pairs(void **state)
{
    json_t *m = json_array();

    (void)state;
    json_array_append_new(m, user_text("q1"));
    json_array_append_new(m, assistant_tool());
    json_array_append_new(m, user_result());
    json_array_append_new(m, assistant_text());
    json_array_append_new(m, user_text("q2"));
    json_array_append_new(m, assistant_text());
    /* Cutting 3 would start at an assistant turn, 2 at a toolResult: the cut
     * moves to the next user text turn, "q2". */
    aw_session_trim(m, 3);
    assert_int_equal(json_array_size(m), 2);
    assert_string_equal(
        json_string_value(json_object_get(
            json_array_get(json_object_get(json_array_get(m, 0), "content"), 0), "text")),
        "q2");
    aw_session_trim(m, 10); /* under the cap: untouched */
    assert_int_equal(json_array_size(m), 2);
    json_decref(m);
}

static void test_trim_drops_all_when_no_safe_start(void **state)
{
    json_t *m = json_array();

    (void)state;
    json_array_append_new(m, user_text("q"));
    json_array_append_new(m, assistant_tool());
    json_array_append_new(m, user_result());
    aw_session_trim(m, 2);
    assert_int_equal(json_array_size(m), 0);
    json_decref(m);
}

struct racer {
    struct aw_sessions *s;
    int rounds;
};

static void *race(void *p)
{
    struct racer *r = p;
    int i;

    for (i = 0; i < r->rounds; i++) {
        struct aw_session *x = aw_sessions_acquire(r->s, "shared");
        json_t *m = aw_session_messages(x);
        size_t n = json_array_size(m);

        /* Held exclusively: nobody else appends between these two lines. */
        json_array_append_new(m, json_integer((json_int_t)n));
        aw_sessions_release(r->s, x);
    }
    return NULL;
}

static void test_one_invocation_per_session_at_a_time(void **state)
{
    struct aw_sessions *s = aw_sessions_new(10, 100000);
    struct racer r = {s, 500};
    pthread_t t[4];
    struct aw_session *x;
    size_t i;
    int k;

    (void)state;
    for (k = 0; k < 4; k++)
        pthread_create(&t[k], NULL, race, &r);
    for (k = 0; k < 4; k++)
        pthread_join(t[k], NULL);
    x = aw_sessions_acquire(s, "shared");
    assert_int_equal(json_array_size(aw_session_messages(x)), 2000);
    for (i = 0; i < 2000; i++)
        assert_int_equal(json_integer_value(json_array_get(aw_session_messages(x), i)), i);
    aw_sessions_release(s, x);
    aw_sessions_free(s);
}

/* ---- the loop API: waiting in line without a thread ---- */

struct waiter {
    struct aw_session_waiter w;
    struct aw_session *got;
    int order;
};

static int next_order;

static void on_ready(struct aw_session_waiter *w, struct aw_session *sess)
{
    struct waiter *x = (struct waiter *)w;

    x->got = sess;
    x->order = ++next_order;
}

static void test_async_turns_in_arrival_order(void **state)
{
    struct aw_sessions *s = aw_sessions_new(4, 100);
    struct waiter b = {{NULL, NULL, NULL, on_ready}, NULL, 0};
    struct waiter c = {{NULL, NULL, NULL, on_ready}, NULL, 0};
    struct waiter d = {{NULL, NULL, NULL, on_ready}, NULL, 0};
    struct aw_session *first, *out;

    (void)state;
    assert_int_equal(aw_sessions_acquire_async(s, "one", &b.w, &first), 0);
    assert_non_null(first);
    /* Three more for the same session: they queue. */
    assert_int_equal(aw_sessions_acquire_async(s, "one", &b.w, &out), 1);
    assert_int_equal(aw_sessions_acquire_async(s, "one", &c.w, &out), 1);
    assert_int_equal(aw_sessions_acquire_async(s, "one", &d.w, &out), 1);
    assert_null(out);
    /* Another session is not held up. */
    assert_int_equal(aw_sessions_acquire_async(s, "two", &d.w, &out), 0);
    aw_sessions_release_async(s, out);
    /* c gives up (its wait timed out); b then d get the turn, in order. */
    aw_sessions_cancel_wait(s, &c.w);
    aw_sessions_cancel_wait(s, &c.w); /* no longer queued: harmless */
    json_array_append_new(aw_session_messages(first), json_string("kept"));
    aw_sessions_release_async(s, first);
    assert_ptr_equal(b.got, first);
    assert_null(d.got);
    aw_sessions_release_async(s, b.got);
    assert_ptr_equal(d.got, first);
    assert_null(c.got);
    assert_true(b.order < d.order);
    assert_int_equal(json_array_size(aw_session_messages(d.got)), 1);
    aw_sessions_release_async(s, d.got);
    /* Free again: taken at once. */
    assert_int_equal(aw_sessions_acquire_async(s, "one", &b.w, &out), 0);
    aw_sessions_release_async(s, out);
    assert_int_equal(aw_sessions_acquire_async(s, "", &b.w, &out), -1);
    aw_sessions_free(s);
}

static void test_async_waiters_pin_the_session(void **state)
{
    struct aw_sessions *s = aw_sessions_new(1, 100);
    struct waiter b = {{NULL, NULL, NULL, on_ready}, NULL, 0};
    struct aw_session *held, *out;

    (void)state;
    assert_int_equal(aw_sessions_acquire_async(s, "only", &b.w, &held), 0);
    /* The one slot is held: a new session cannot evict it. */
    assert_int_equal(aw_sessions_acquire_async(s, "other", &b.w, &out), -1);
    aw_sessions_release_async(s, held);
    /* Idle now: a new session evicts it. */
    assert_int_equal(aw_sessions_acquire_async(s, "other", &b.w, &out), 0);
    aw_sessions_release_async(s, out);
    assert_int_equal(stats_of(s).count, 1);
    aw_sessions_free(s);
}

static uint64_t fake_ms;

static uint64_t fake_now(void)
{
    return fake_ms;
}

static void use(struct aw_sessions *s, const char *id, const char *text)
{
    struct aw_session *x = aw_sessions_acquire(s, id);

    assert_non_null(x);
    if (text)
        json_array_append_new(aw_session_messages(x), user_text(text));
    aw_sessions_release(s, x);
}

/* Idle sessions go after their lifetime, found at the next use of the store;
 * a held one never goes. */
static void test_idle_sessions_expire(void **state)
{
    struct aw_sessions *s = aw_sessions_new(100, 100);
    struct aw_session *held;

    (void)state;
    fake_ms = 1000;
    aw_sessions_set_limits(s, 0, 60000, fake_now);
    use(s, "old", "a");
    held = aw_sessions_acquire(s, "held");
    fake_ms += 30000;
    use(s, "young", "b");
    assert_int_equal(stats_of(s).count, 3);
    fake_ms += 30001; /* "old" idle 60.001 s, "young" 30.001 s, "held" held */
    use(s, "other", NULL);
    assert_int_equal(stats_of(s).count, 3); /* old went, other came */
    assert_int_equal(stats_of(s).evicted, 1);
    aw_sessions_release(s, held);
    fake_ms += 60000; /* everything idle a minute */
    use(s, "last", NULL);
    assert_int_equal(stats_of(s).count, 1);
    assert_int_equal(stats_of(s).evicted, 4);
    aw_sessions_free(s);
}

/* Past the byte cap, the least recently used idle sessions go. */
static void test_byte_cap(void **state)
{
    struct aw_sessions *s = aw_sessions_new(100, 100);
    char text[1100];
    size_t one;

    (void)state;
    memset(text, 'x', sizeof(text) - 1);
    text[sizeof(text) - 1] = '\0';
    aw_sessions_set_limits(s, 5000, 0, NULL);
    use(s, "s1", text);
    one = stats_of(s).bytes;
    assert_true(one > 1100 && one < 1200);
    use(s, "s2", text);
    use(s, "s3", text);
    use(s, "s4", text);
    assert_int_equal(stats_of(s).count, 4);
    use(s, "s1", NULL); /* s1 most recent again: s2 is now the oldest */
    use(s, "s5", text); /* 5 x ~1.1 KB > 5000: s2 goes */
    assert_int_equal(stats_of(s).count, 4);
    assert_true(stats_of(s).bytes <= 5000);
    assert_int_equal(stats_of(s).evicted, 1);
    {
        struct aw_session *x = aw_sessions_acquire(s, "s2"); /* comes back empty */

        assert_int_equal(json_array_size(aw_session_messages(x)), 0);
        x = (aw_sessions_release(s, x), aw_sessions_acquire(s, "s1"));
        assert_int_equal(json_array_size(aw_session_messages(x)), 1); /* kept */
        aw_sessions_release(s, x);
    }
    aw_sessions_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_memory_per_session),
        cmocka_unit_test(test_invalid_ids),
        cmocka_unit_test(test_lru_eviction_spares_held_sessions),
        cmocka_unit_test(test_trim_keeps_tool_pairs),
        cmocka_unit_test(test_trim_drops_all_when_no_safe_start),
        cmocka_unit_test(test_one_invocation_per_session_at_a_time),
        cmocka_unit_test(test_async_turns_in_arrival_order),
        cmocka_unit_test(test_async_waiters_pin_the_session),
        cmocka_unit_test(test_idle_sessions_expire),
        cmocka_unit_test(test_byte_cap),
    };
    return cmocka_run_group_tests_name("aw_session", tests, NULL, NULL);
}
