#define _GNU_SOURCE
#include "tw_fileops.h"

#include <fcntl.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

static char dir[64], outside[64];
static int root;

static int setup(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/tw-fileops-XXXXXX");
    strcpy(outside, "/tmp/tw-outside-XXXXXX");
    assert_non_null(mkdtemp(dir));
    assert_non_null(mkdtemp(outside));
    root = open(dir, O_RDONLY | O_DIRECTORY);
    assert_true(root >= 0);
    return 0;
}

static int teardown(void **state)
{
    char cmd[200];

    (void)state;
    close(root);
    snprintf(cmd, sizeof(cmd), "rm -rf %s %s", dir, outside);
    return system(cmd);
}

typedef int (*op_fn)(int, json_t *, struct tw_fileres *);

/* Runs |op| on |input| and checks the outcome and a piece of the text. */
static void expect(op_fn op, const char *input, int is_error, const char *says)
{
    json_t *in = json_loads(input, 0, NULL);
    struct tw_fileres r = {0, NULL};

    assert_non_null(in);
    assert_int_equal(op(root, in, &r), 0);
    if (r.is_error != is_error || !strstr(r.text, says))
        fail_msg("%s -> error=%d '%s'; want error=%d '%s'", input, r.is_error, r.text, is_error,
                 says);
    free(r.text);
    json_decref(in);
}

static void test_write_read_list(void **state)
{
    (void)state;
    expect(tw_file_write, "{\"path\":\"notes/a/b.txt\",\"content\":\"hello\"}", 0, "wrote 5 bytes");
    expect(tw_file_write, "{\"path\":\"notes/a/b.txt\",\"content\":\" world\",\"append\":true}", 0,
           "wrote 6 bytes");
    expect(tw_file_read, "{\"path\":\"notes/a/b.txt\"}", 0, "hello world");
    expect(tw_file_read, "{\"path\":\"/workspace/notes/a/b.txt\"}", 0, "hello world");
    expect(tw_file_list, "{\"path\":\"notes\"}", 0, "dir\ta\t");
    expect(tw_file_list, "{}", 0, "dir\tnotes");
    expect(tw_file_write, "{\"path\":\"notes/a/b.txt\",\"content\":\"new\"}", 0, "wrote 3");
    expect(tw_file_read, "{\"path\":\"notes/a/b.txt\"}", 0, "new");
}

static void test_paths_that_leave_are_refused(void **state)
{
    char target[128];

    (void)state;
    expect(tw_file_read, "{\"path\":\"../etc/passwd\"}", 1, "'..' is not allowed");
    expect(tw_file_read, "{\"path\":\"a/../../x\"}", 1, "'..' is not allowed");
    expect(tw_file_read, "{\"path\":\"/etc/passwd\"}", 1, "absolute paths are not allowed");
    expect(tw_file_write, "{\"path\":\"/tmp/x\",\"content\":\"\"}", 1, "absolute");
    expect(tw_file_read, "{\"path\":\"\"}", 1, "empty");
    expect(tw_file_read, "{\"path\":7}", 1, "'path' must be a string");
    /* symbolic links out of the workspace: to a file, and through a directory */
    assert_int_equal(symlinkat("/etc/passwd", root, "passwd"), 0);
    assert_int_equal(symlinkat(outside, root, "out"), 0);
    expect(tw_file_read, "{\"path\":\"passwd\"}", 1, "leads outside the workspace");
    expect(tw_file_write, "{\"path\":\"out/planted\",\"content\":\"x\"}", 1,
           "leads outside the workspace");
    expect(tw_file_list, "{\"path\":\"out\"}", 1, "leads outside the workspace");
    snprintf(target, sizeof(target), "%s/planted", outside);
    assert_int_equal(access(target, F_OK), -1);
    /* a link that stays inside is fine */
    expect(tw_file_write, "{\"path\":\"real.txt\",\"content\":\"in\"}", 0, "wrote");
    assert_int_equal(symlinkat("real.txt", root, "alias"), 0);
    expect(tw_file_read, "{\"path\":\"alias\"}", 0, "in");
    /* writing through a final symlink is refused, not followed */
    expect(tw_file_write, "{\"path\":\"passwd\",\"content\":\"x\"}", 1, "passwd");
}

static void test_binary_and_large_files(void **state)
{
    static char big[TW_FILE_READ_MAX + 100];
    int fd;

    (void)state;
    fd = openat(root, "bin", O_WRONLY | O_CREAT, 0644);
    assert_int_equal(write(fd, "a\0b", 3), 3);
    close(fd);
    expect(tw_file_read, "{\"path\":\"bin\"}", 1, "binary file (3 bytes)");
    memset(big, 'x', sizeof(big));
    fd = openat(root, "big", O_WRONLY | O_CREAT, 0644);
    assert_int_equal(write(fd, big, sizeof(big)), (ssize_t)sizeof(big));
    close(fd);
    expect(tw_file_read, "{\"path\":\"big\"}", 0, "[truncated: showing the first 1048576 of");
    expect(tw_file_read, "{\"path\":\"missing\"}", 1, "No such file");
    expect(tw_file_read, "{\"path\":\".\"}", 1, "not a regular file");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_write_read_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_paths_that_leave_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_binary_and_large_files, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
