/* cm_loop: tasks from many threads run on the loop thread, in order per
 * poster; cm_loop_call waits for its function; nothing runs after stop. */
#include "cm_loop.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define POSTERS 4
#define PER_POSTER 5000

struct item {
    struct cm_task task;
    int poster, seq;
};

/* Touched only on the loop thread. */
static int last_seq[POSTERS], ran, out_of_order, off_thread;
static struct cm_loop *the_loop;

static void run_item(struct cm_task *t)
{
    struct item *it = (struct item *)t;

    if (!cm_loop_is_loop_thread(the_loop))
        off_thread++;
    if (it->seq != last_seq[it->poster] + 1)
        out_of_order++;
    last_seq[it->poster] = it->seq;
    ran++;
    free(it);
}

static void *poster(void *p)
{
    int id = (int)(intptr_t)p, i;

    for (i = 1; i <= PER_POSTER; i++) {
        struct item *it = calloc(1, sizeof(*it));

        it->task.run = run_item;
        it->poster = id;
        it->seq = i;
        cm_loop_post(the_loop, &it->task);
    }
    return NULL;
}

static void read_ran(void *p)
{
    *(int *)p = ran;
}

static void test_posts_from_many_threads(void **state)
{
    pthread_t t[POSTERS];
    int i, seen = 0;

    (void)state;
    the_loop = cm_loop_new();
    assert_non_null(the_loop);
    assert_int_equal(cm_loop_start(the_loop), 0);
    for (i = 0; i < POSTERS; i++)
        pthread_create(&t[i], NULL, poster, (void *)(intptr_t)i);
    for (i = 0; i < POSTERS; i++)
        pthread_join(t[i], NULL);
    /* A call queued after every post runs after them: all have run by now. */
    cm_loop_call(the_loop, read_ran, &seen);
    assert_int_equal(seen, POSTERS * PER_POSTER);
    assert_int_equal(out_of_order, 0);
    assert_int_equal(off_thread, 0);
    cm_loop_free(the_loop);
}

static int never_ran;

static void must_not_run(struct cm_task *t)
{
    (void)t;
    never_ran++;
}

static void test_call_before_start_and_post_after_stop(void **state)
{
    struct cm_loop *l = cm_loop_new();
    struct cm_task late = {NULL, must_not_run, 0};
    int v = 0;

    (void)state;
    assert_non_null(l);
    cm_loop_call(l, read_ran, &v); /* not started: runs inline */
    assert_int_equal(v, ran);
    assert_int_equal(cm_loop_start(l), 0);
    cm_loop_stop(l);
    cm_loop_post(l, &late); /* dropped: nobody would run it */
    cm_loop_stop(l);        /* idempotent */
    cm_loop_free(l);
    cm_loop_free(NULL);
    assert_int_equal(never_ran, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_posts_from_many_threads),
        cmocka_unit_test(test_call_before_start_and_post_after_stop),
    };

    return cmocka_run_group_tests_name("cm_loop", tests, NULL, NULL);
}
