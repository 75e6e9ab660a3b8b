/* aw_curl: transfers driven by a libuv loop finish through their callback,
 * a removed one never calls back, and freeing closes every handle so the
 * loop can end. file:// URLs keep it off the network. */
#include "aw_curl.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <sys/socket.h>
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

/* A loopback HTTP/1.1 server that answers only once |want| requests wait,
 * each on its own connection: the transfers are all in flight at once. */
#define HS_MAX 16
struct hsrv {
    int lfd, port, fds[HS_MAX], waiting[HS_MAX], n;
    atomic_int accepted, want, stop;
    pthread_t thread;
};

static void *hsrv_main(void *p)
{
    struct hsrv *h = p;

    while (!atomic_load(&h->stop)) {
        struct pollfd pf[HS_MAX + 1];
        int i, k, pending = 0, polled = h->n;

        pf[0] = (struct pollfd){h->lfd, POLLIN, 0};
        for (i = 0; i < h->n; i++)
            pf[i + 1] = (struct pollfd){h->fds[i], POLLIN, 0};
        if (poll(pf, (nfds_t)h->n + 1, 50) <= 0)
            continue;
        if ((pf[0].revents & POLLIN) && h->n < HS_MAX) {
            int fd = accept(h->lfd, NULL, NULL);

            if (fd >= 0) {
                h->waiting[h->n] = 0;
                h->fds[h->n++] = fd;
                atomic_fetch_add(&h->accepted, 1);
            }
        }
        for (i = 0; i < polled; i++) {
            char buf[2048];

            if ((pf[i + 1].revents & POLLIN) && read(h->fds[i], buf, sizeof(buf)) > 0)
                h->waiting[i] = 1; /* a request (GET, no body) fits one read */
        }
        for (i = 0; i < h->n; i++)
            pending += h->waiting[i];
        if (pending && pending >= atomic_load(&h->want)) {
            static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

            for (k = 0; k < h->n; k++) {
                if (h->waiting[k] && write(h->fds[k], ok, sizeof(ok) - 1) < 0)
                    break;
                h->waiting[k] = 0;
            }
        }
    }
    return NULL;
}

static void hsrv_start(struct hsrv *h)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);

    memset(h, 0, sizeof(*h));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    h->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(h->lfd >= 0);
    assert_int_equal(bind(h->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(h->lfd, 64), 0);
    assert_int_equal(getsockname(h->lfd, (struct sockaddr *)&sa, &len), 0);
    h->port = ntohs(sa.sin_port);
    assert_int_equal(pthread_create(&h->thread, NULL, hsrv_main, h), 0);
}

static void hsrv_stop(struct hsrv *h)
{
    int i;

    atomic_store(&h->stop, 1);
    pthread_join(h->thread, NULL);
    for (i = 0; i < h->n; i++)
        close(h->fds[i]);
    close(h->lfd);
}

/* |n| transfers at once, all answered together; returns when all are done. */
static void burst(uv_loop_t *loop, struct aw_curl *m, struct hsrv *h, int n)
{
    struct xfer x[HS_MAX];
    char url[64];
    int i;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", h->port);
    atomic_store(&h->want, n);
    for (i = 0; i < n; i++) {
        setup_xfer(&x[i], url);
        assert_int_equal(aw_curl_add(m, x[i].h, on_done, &x[i]), 0);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    for (i = 0; i < n; i++) {
        assert_int_equal(x[i].done, 1);
        assert_int_equal(x[i].rc, CURLE_OK);
        assert_memory_equal(x[i].data, "ok", 2);
        curl_easy_cleanup(x[i].h);
    }
}

/* Serial (HTTP/1.1): a transfer that finds every connection busy opens its
 * own without searching, and one that finds an idle one still reuses it. */
static void test_serial_connections_are_counted_and_reused(void **state)
{
    uv_loop_t loop;
    struct aw_curl *m;
    struct hsrv h;

    (void)state;
    hsrv_start(&h);
    assert_int_equal(uv_loop_init(&loop), 0);
    m = aw_curl_new(&loop, 64);
    assert_non_null(m);
    aw_curl_serial(m, 1);
    burst(&loop, m, &h, 5);
    assert_int_equal(atomic_load(&h.accepted), 5); /* one each: all were in flight */
    assert_int_equal(aw_curl_sockets(m), 5);       /* kept for the next ones */
    burst(&loop, m, &h, 5);
    assert_int_equal(atomic_load(&h.accepted), 5); /* every one reused */
    burst(&loop, m, &h, 7);
    assert_int_equal(atomic_load(&h.accepted), 7); /* five reused, two new */
    assert_int_equal(aw_curl_sockets(m), 7);
    aw_curl_free(m);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    hsrv_stop(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transfers_on_the_loop),
        cmocka_unit_test(test_serial_connections_are_counted_and_reused),
    };
    int rc;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = cmocka_run_group_tests_name("aw_curl", tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
