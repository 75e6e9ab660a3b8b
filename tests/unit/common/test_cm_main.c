#define _GNU_SOURCE /* memmem */
#include "cm_main.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

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

static void test_keep_env(void **state)
{
    static const char *const keep[] = {"PATH", "TOOL_*", NULL};

    (void)state;
    setenv("TOOL_MANIFEST", "/m.json", 1);
    setenv("TOOL_", "edge", 1);
    setenv("PATHX", "not PATH", 1);
    setenv("UNRELATED", "x", 1);
    setenv("PATH", "/usr/bin", 1);
    assert_true(cm_main_keep_env(keep) >= 2);
    assert_string_equal(getenv("TOOL_MANIFEST"), "/m.json");
    assert_string_equal(getenv("TOOL_"), "edge");
    assert_string_equal(getenv("PATH"), "/usr/bin");
    assert_null(getenv("PATHX"));
    assert_null(getenv("UNRELATED"));
    assert_null(getenv("HOME"));
}

/* After cm_main_harden, the environment the kernel shows is empty of the
 * secret while getenv still finds it, no core is dumped, and the process is
 * not dumpable (no other process of the uid may ptrace it or read it). */
static void test_harden(void **state)
{
    struct rlimit rl;
    char buf[65536];
    size_t n;
    FILE *f;

    (void)state;
    assert_int_equal(setenv("CM_TEST_SECRET", "wJalrXUtnFEMI-harden", 1), 0);
    /* setenv copies to the heap: what the kernel shows is the block given at
     * exec, so the test re-executes itself with the secret in that block. */
    if (!getenv("CM_TEST_REEXEC")) {
        char self[512];
        ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
        pid_t pid;
        int status;

        assert_true(len > 0);
        self[len] = '\0';
        pid = fork();
        if (pid == 0) {
            char *argv[] = {self, NULL};
            char *envp[] = {"CM_TEST_REEXEC=1", "CM_TEST_SECRET=wJalrXUtnFEMI-harden", NULL};

            execve(self, argv, envp);
            _exit(127);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        return;
    }
    f = fopen("/proc/self/environ", "r");
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    assert_non_null(memmem(buf, n, "wJalrXUtnFEMI", 13)); /* there before */
    assert_int_equal(cm_main_harden(), 0);
    f = fopen("/proc/self/environ", "r");
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    assert_null(memmem(buf, n, "wJalrXUtnFEMI", 13));
    assert_string_equal(getenv("CM_TEST_SECRET"), "wJalrXUtnFEMI-harden");
    assert_int_equal(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
    assert_int_equal(getrlimit(RLIMIT_CORE, &rl), 0);
    assert_int_equal(rl.rlim_cur, 0);
}

static int add_one(int x)
{
    return x + 1;
}

static int twice(int x)
{
    return x * 2;
}

/* Relocated at start (RELRO in this PIE): were its copied-on-write pages
 * dropped, the pointers would revert to what the file holds. */
static const struct {
    const char *name;
    int (*fn)(int);
} table[] = {{"add_one", add_one}, {"twice", twice}};

/* Resident read-only file pages (those of this binary's code) and the
 * total, from /proc/self/smaps, in KiB. */
static long resident_text_kb(void)
{
    FILE *f = fopen("/proc/self/smaps", "re");
    char line[1024], perms[8] = "";
    long kb, total = 0;
    unsigned long a, b;

    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "%lx-%lx %7s", &a, &b, perms) == 3)
            continue;
        if (!strcmp(perms, "r-xp") && sscanf(line, "Rss: %ld kB", &kb) == 1)
            total += kb;
    }
    fclose(f);
    return total;
}

static void test_trim_resident(void **state)
{
    const char *names[2];
    int (*fns[2])(int);
    char buf[64];
    long before, freed, after;
    size_t i;

    (void)state;
    for (i = 0; i < 2; i++) {
        names[i] = table[i].name;
        fns[i] = table[i].fn;
    }
    before = resident_text_kb();
    assert_true(before > 0);
    freed = cm_main_trim_resident();
    after = resident_text_kb();
    assert_true(freed > 0);
    assert_true(after < before); /* code pages were given back */
    /* ... and everything still works: code faults back in, relocated data
     * is intact, libc and this binary run as before. */
    for (i = 0; i < 2; i++) {
        assert_ptr_equal(table[i].name, names[i]);
        assert_ptr_equal(table[i].fn, fns[i]);
        assert_string_equal(table[i].name, i ? "twice" : "add_one");
    }
    assert_int_equal(table[0].fn(41), 42);
    assert_int_equal(table[1].fn(21), 42);
    snprintf(buf, sizeof(buf), "%s-%d", "ok", 7);
    assert_string_equal(buf, "ok-7");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_drop_secrets), cmocka_unit_test(test_keep_env),
        cmocka_unit_test(test_harden), cmocka_unit_test(test_trim_resident)};
    const struct CMUnitTest reexec[] = {cmocka_unit_test(test_harden)};

    /* test_harden's second half runs in a re-executed copy: only it. */
    if (getenv("CM_TEST_REEXEC"))
        return cmocka_run_group_tests_name("cm_main_reexec", reexec, NULL, NULL);
    return cmocka_run_group_tests_name("cm_main", tests, NULL, NULL);
}
