/* aw_curl: transfers driven by a libuv loop finish through their callback,
 * a removed one never calls back, and freeing closes every handle so the
 * loop can end. file:// URLs keep it off the network. */
#include "aw_curl.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

struct xfer {
    CURL *h;
    char data[256];
    size_t len;
    int done;
    CURLcode rc;
};

static size_t on_data(char *p, size_t sz, size_t n, void *ud)
{
    struct xfer *x = ud;
    size_t k = sz * n;

    if (x->len + k >= sizeof(x->data))
        return 0;
    memcpy(x->data + x->len, p, k);
    x->len += k;
    return k;
}

static void on_done(void *ud, CURLcode rc)
{
    struct xfer *x = ud;

    x->done++;
    x->rc = rc;
}

static void setup_xfer(struct xfer *x, const char *url)
{
    memset(x, 0, sizeof(*x));
    x->h = curl_easy_init();
    curl_easy_setopt(x->h, CURLOPT_URL, url);
    curl_easy_setopt(x->h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(x->h, CURLOPT_WRITEDATA, x);
}

static void test_transfers_on_the_loop(void **state)
{
    char path[] = "/tmp/aw_curl_testXXXXXX", url[64];
    int fd = mkstemp(path);
    uv_loop_t loop;
    struct aw_curl *m;
    struct xfer a, b, gone, missing;

    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "model answer", 12), 12);
    close(fd);
    snprintf(url, sizeof(url), "file://%s", path);
    assert_int_equal(uv_loop_init(&loop), 0);
    m = aw_curl_new(&loop, 8);
    assert_non_null(m);
    setup_xfer(&a, url);
    setup_xfer(&b, url);
    setup_xfer(&gone, url);
    setup_xfer(&missing, "file:///nonexistent/agentcore-test");
    assert_int_equal(aw_curl_add(m, a.h, on_done, &a), 0);
    assert_int_equal(aw_curl_add(m, b.h, on_done, &b), 0);
    assert_int_equal(aw_curl_add(m, gone.h, on_done, &gone), 0);
    assert_int_equal(aw_curl_add(m, missing.h, on_done, &missing), 0);
    aw_curl_remove(m, gone.h);     /* cancelled before it ran: no callback */
    uv_run(&loop, UV_RUN_DEFAULT); /* returns once nothing is left to do */
    assert_int_equal(a.done, 1);
    assert_int_equal(a.rc, CURLE_OK);
    assert_int_equal(a.len, 12);
    assert_memory_equal(a.data, "model answer", 12);
    assert_int_equal(b.done, 1);
    assert_int_equal(gone.done, 0);
    assert_int_equal(missing.done, 1);
    assert_int_equal(missing.rc, CURLE_FILE_COULDNT_READ_FILE);
    assert_int_equal(aw_curl_running(m), 0);
    aw_curl_free(m);
    aw_curl_free(NULL);
    uv_run(&loop, UV_RUN_DEFAULT); /* the close callbacks */
    assert_int_equal(uv_loop_close(&loop), 0);
    curl_easy_cleanup(a.h);
    curl_easy_cleanup(b.h);
    curl_easy_cleanup(gone.h);
    curl_easy_cleanup(missing.h);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transfers_on_the_loop),
    };
    int rc;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = cmocka_run_group_tests_name("aw_curl", tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
