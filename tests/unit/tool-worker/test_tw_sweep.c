/* tw_sweep on real processes: an orphan whose group leader is gone is
 * killed with its group; a group whose leader lives, another uid and a
 * command line without the mark are left alone. */
#define _GNU_SOURCE
#include "tw_sweep.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

static char mark[64];

/* A process group of two: a leader that runs |leader_cmd| (NULL: exits at
 * once, leaving an orphan) and a member that runs "sh -c ... <mark>". Returns
 * the member's pid once it runs its command (its end of the pipe closes). */
static pid_t make_group(const char *leader_cmd, const char *member_mark, pid_t *leader)
{
    int p[2];
    pid_t a, b = 0;
    ssize_t n;
    char c;

    assert_int_equal(pipe(p), 0);
    a = fork();
    assert_true(a >= 0);
    if (a == 0) {
        setpgid(0, 0);
        close(p[0]);
        if ((b = fork()) == 0) {
            /* fd 3 is the pipe, which the command closes once it runs */
            if (p[1] != 3 && (dup2(p[1], 3) < 0 || close(p[1])))
                _exit(126);
            execl("/bin/sh", "sh", "-c", "exec 3>&-; sleep 30; true", member_mark, (char *)NULL);
            _exit(127);
        }
        if (write(p[1], &b, sizeof(b)) != sizeof(b))
            _exit(1);
        close(p[1]);
        if (leader_cmd)
            execl("/bin/sh", "sh", "-c", leader_cmd, (char *)NULL);
        _exit(0);
    }
    close(p[1]);
    assert_int_equal(read(p[0], &b, sizeof(b)), sizeof(b));
    while ((n = read(p[0], &c, 1)) > 0) /* EOF: the member's shell closed it */
        ;
    close(p[0]);
    *leader = a;
    return b;
}

static void test_orphans_go_the_living_stay(void **state)
{
    pid_t orphan, lead1, live, lead2, stranger, lead3, w;
    int status, seen = 0, i;

    (void)state;
    snprintf(mark, sizeof(mark), "/.agentcore-sweep-test-%d", (int)getpid());
    /* orphans come back to this process, so their end can be read */
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    orphan = make_group(NULL, mark, &lead1);
    assert_int_equal(waitpid(lead1, &status, 0), lead1); /* the leader is gone */
    live = make_group("sleep 30", mark, &lead2);
    stranger = make_group(NULL, "/no-mark-here", &lead3);
    assert_int_equal(waitpid(lead3, &status, 0), lead3);

    assert_int_equal(tw_sweep_orphans(getuid() + 1, mark), 0); /* another uid's */
    assert_int_equal(tw_sweep_orphans(getuid(), mark), 1);
    assert_int_equal(waitpid(orphan, &status, 0), orphan);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    /* the living group and the unmarked orphan are untouched */
    assert_int_equal(kill(live, 0), 0);
    assert_int_equal(kill(stranger, 0), 0);
    assert_int_equal(waitpid(stranger, &status, WNOHANG), 0); /* ours now, still running */
    assert_int_equal(tw_sweep_orphans(getuid(), mark), 0);    /* nothing left to sweep */

    assert_int_equal(kill(-lead2, SIGKILL), 0);
    assert_int_equal(kill(-lead3, SIGKILL), 0);
    /* reap everything: leaders, members and their sleeps (ours as subreaper) */
    for (i = 0; i < 16 && (w = waitpid(-1, &status, 0)) > 0; i++)
        seen++;
    assert_true(seen >= 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_orphans_go_the_living_stay),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
