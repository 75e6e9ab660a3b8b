/* End to end: what a hostile or careless HTTP client can hold is bounded.
 * Real gateway, agent-worker, tool-worker and emulator on loopback; clients
 * are raw sockets so each byte's timing is the test's own. Shown:
 * - an invocation's caps are checked before its body is read: 413 for a
 *   Content-Length over MAX_BODY_BYTES, 503 + Retry-After when the body
 *   budget (MAX_INFLIGHT_BODY_BYTES, across connections) is taken, answered
 *   at once to a client that waits for "100 Continue"; the budget is given
 *   back when a body is done with, and a chunked body takes it as it comes;
 * - a request whose headers or body do not arrive within
 *   HTTP_REQUEST_TIMEOUT_S is cut;
 * - with every connection slot held by slow clients, /ping still answers
 *   (and only /ping);
 * - a WebSocket client that sends pings and never reads is closed (1008)
 *   and dropped, and SIGTERM still ends the gateway within
 *   SHUTDOWN_GRACE_MS while such a client is connected. */
#include "th_stack.h"
#include "th_ws.h"

#include <jansson.h>
#include <fcntl.h>
#include <poll.h>
#include <time.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define KEYS "AWS_ACCESS_KEY_ID=" TH_EMU_AKID, "AWS_SECRET_ACCESS_KEY=" TH_EMU_SECRET
#define MAX_CONN 8
#define BODY_1M 1000000

static struct th_proc emu, tool;
static struct th_stack budget_s, slow_s, cap_s, ws_s;

static int setup(void **state)
{
    (void)state;
    return th_emulator_start(&emu, "limits-emulator", NULL) ||
           th_tool_start(&tool, "limits-tool-worker") ||
           th_stack_start_gw(&budget_s, "limits-budget", &emu, &tool, (const char *[]){KEYS, NULL},
                             (const char *[]){"MAX_BODY_BYTES=1048576",
                                              "MAX_INFLIGHT_BODY_BYTES=2097152", NULL}) ||
           th_stack_start_gw(&slow_s, "limits-slow", &emu, &tool, (const char *[]){KEYS, NULL},
                             (const char *[]){"HTTP_REQUEST_TIMEOUT_S=1", NULL}) ||
           th_stack_start_gw(&cap_s, "limits-cap", &emu, &tool, (const char *[]){KEYS, NULL},
                             (const char *[]){"GATEWAY_MAX_CONNECTIONS=8", NULL}) ||
           th_stack_start_gw(&ws_s, "limits-ws", &emu, &tool, (const char *[]){KEYS, NULL},
                             (const char *[]){"SHUTDOWN_GRACE_MS=3000", NULL});
}

static int teardown(void **state)
{
    int bad;

    (void)state;
    bad = th_stack_stop(&budget_s) | th_stack_stop(&slow_s) | th_stack_stop(&cap_s) |
          th_stack_stop(&ws_s) | th_stop(&tool) | th_stop(&emu);
    return bad ? -1 : 0;
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);

        assert_true(w > 0);
        p += w;
        n -= (size_t)w;
    }
}

static void send_str(int fd, const char *s)
{
    send_all(fd, s, strlen(s));
}

/* Opens a connection and sends the headers of an invocation of |len| bytes. */
static int post_headers(const struct th_stack *s, size_t len, int expect_continue)
{
    char head[256];
    int fd = th_connect_loopback(s->gw.port);

    assert_true(fd >= 0);
    snprintf(head, sizeof(head),
             "POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n%s\r\n",
             len, expect_continue ? "Expect: 100-continue\r\n" : "");
    send_str(fd, head);
    return fd;
}

/* th_raw_read_until on an emptied |buf|: each answer read on its own. */
static int read_fresh(int fd, char *buf, size_t cap, const char *needle, int timeout_ms)
{
    buf[0] = '\0';
    return th_raw_read_until(fd, buf, cap, needle, timeout_ms);
}

/* A JSON invocation body of exactly |len| bytes. */
static char *body_of(size_t len)
{
    static const char head[] = "{\"prompt\":\"", tail[] = "\"}";
    static char b[BODY_1M + 1]; /* static: a failed assertion leaks nothing */

    assert_true(len <= BODY_1M);
    memcpy(b, head, sizeof(head) - 1);
    memset(b + sizeof(head) - 1, 'a', len - (sizeof(head) - 1) - (sizeof(tail) - 1));
    memcpy(b + len - (sizeof(tail) - 1), tail, sizeof(tail));
    return b;
}

/* 1 when the gateway closed |fd| within |ms| (whatever it sent first). */
static int closed_within(int fd, int ms)
{
    char buf[4096];
    struct pollfd p = {fd, POLLIN, 0};

    for (;;) {
        ssize_t n;

        if (poll(&p, 1, ms) <= 0)
            return 0;
        n = read(fd, buf, sizeof(buf));
        if (n <= 0)
            return 1;
    }
}

static void test_too_large_is_refused_before_the_body(void **state)
{
    char buf[4096];
    int fd;

    (void)state;
    fd = post_headers(&budget_s, 2 * BODY_1M, 1);
    assert_int_equal(read_fresh(fd, buf, sizeof(buf), "}", 5000), 0);
    assert_non_null(strstr(buf, "HTTP/1.1 413"));
    assert_non_null(strstr(buf, "\"error\":\"Payload Too Large\""));
    assert_null(strstr(buf, "100 Continue"));
    assert_true(closed_within(fd, 5000));
    close(fd);
}

static void test_body_budget_across_connections(void **state)
{
    char buf[4096];
    char *body = body_of(BODY_1M);
    int a, b, c;
    struct th_resp r;

    (void)state;
    /* Two 1 MB bodies hold the 2 MiB budget while they arrive. */
    a = post_headers(&budget_s, BODY_1M, 1);
    assert_int_equal(read_fresh(a, buf, sizeof(buf), "100 Continue", 5000), 0);
    b = post_headers(&budget_s, BODY_1M, 1);
    assert_int_equal(read_fresh(b, buf, sizeof(buf), "100 Continue", 5000), 0);
    send_all(a, body, 1000);
    /* A third is refused before it sends a byte of its body. */
    c = post_headers(&budget_s, BODY_1M, 1);
    assert_int_equal(read_fresh(c, buf, sizeof(buf), "}", 5000), 0);
    if (!strstr(buf, "HTTP/1.1 503"))
        fail_msg("the third body was not refused: %s", buf);
    assert_non_null(strstr(buf, "Retry-After: 1"));
    assert_non_null(strstr(buf, "Too many request bytes in flight"));
    close(c);
    /* A chunked body takes budget as it comes: 100,000 bytes do not fit in
     * the 97,152 left, and are refused once read (and dropped). */
    c = th_connect_loopback(budget_s.gw.port);
    send_str(c, "POST /invocations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                "186A0\r\n");
    send_all(c, body, 100000);
    send_str(c, "\r\n0\r\n\r\n");
    assert_int_equal(read_fresh(c, buf, sizeof(buf), "}", 5000), 0);
    if (!strstr(buf, "HTTP/1.1 503"))
        fail_msg("the chunked body was not refused: %s", buf);
    close(c);
    /* The first body completes and is answered; its budget comes back. */
    send_all(a, body + 1000, BODY_1M - 1000);
    assert_int_equal(read_fresh(a, buf, sizeof(buf), "HTTP/1.1 200", 30000), 0);
    close(a);
    close(b); /* gives its budget back as the gateway sees it go */
    assert_int_equal(th_invoke(&budget_s, "{\"prompt\":\"room again\"}", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
}

/* A client that does not wait for 100 Continue gets its answer after the
 * body, which is read and dropped, never buffered. */
static void test_too_large_without_expect_reads_the_answer(void **state)
{
    char *big = malloc(2 * BODY_1M);
    struct th_resp r;

    (void)state;
    assert_non_null(big);
    memset(big, 'a', 2 * BODY_1M);
    {
        char url[96];

        snprintf(url, sizeof(url), "%s/invocations", budget_s.url);
        assert_int_equal(
            th_http("POST", url, (const char *[]){"Expect:", NULL}, big, 2 * BODY_1M, &r), 0);
    }
    assert_int_equal(r.status, 413);
    th_resp_free(&r);
    free(big);
}

static void test_slow_headers_and_body_are_cut(void **state)
{
    int fd;

    (void)state;
    /* Headers that never end. */
    fd = th_connect_loopback(slow_s.gw.port);
    send_str(fd, "POST /invocations HTTP/1.1\r\nHost: x\r\n");
    assert_true(closed_within(fd, 10000));
    close(fd);
    /* A body that stops half way. */
    fd = post_headers(&slow_s, 100, 0);
    send_str(fd, "{\"prompt\":");
    assert_true(closed_within(fd, 10000));
    close(fd);
}

static void test_ping_answers_at_the_connection_cap(void **state)
{
    int hold[MAX_CONN], i, tries, refused = 0;
    char buf[4096];
    struct th_resp r;
    char url[96];

    (void)state;
    for (i = 0; i < MAX_CONN; i++) {
        hold[i] = th_connect_loopback(cap_s.gw.port);
        assert_true(hold[i] >= 0);
        send_str(hold[i], "POST /invocations HTTP/1.1\r\nHost: x\r\n"); /* and nothing more */
    }
    /* Once the gateway has taken them all, another invocation is refused
     * with JSON... (bounded: each try is answered, at most 50 tries). */
    for (tries = 0; tries < 50 && !refused; tries++) {
        int fd = th_connect_loopback(cap_s.gw.port);

        send_str(fd, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
        if (read_fresh(fd, buf, sizeof(buf), "}", 5000) == 0)
            refused = strstr(buf, "HTTP/1.1 503") && strstr(buf, "Too many connections");
        close(fd);
    }
    assert_true(refused);
    /* ...and /ping still answers. */
    snprintf(url, sizeof(url), "%s/ping", cap_s.url);
    assert_int_equal(th_http("GET", url, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    for (i = 0; i < MAX_CONN; i++)
        close(hold[i]);
}

/* Sends pings (masked, as a client must) without ever reading, until the
 * gateway's log says |needle| or |max_bytes| were sent. The gateway stops
 * reading once it closes, so writes are non-blocking and resumed where they
 * stopped. Returns 0 when the log said it. */
static int flood_pings(int fd, const char *log, const char *needle, size_t max_bytes)
{
    static const uint8_t ping[] = {0x89, 0x80 | 4, 1, 2, 3, 4, 'p' ^ 1, 'i' ^ 2, 'n' ^ 3, 'g' ^ 4};
    uint8_t buf[sizeof(ping) * 512];
    size_t sent = 0, off = 0, i;

    for (i = 0; i < sizeof(buf); i += sizeof(ping))
        memcpy(buf + i, ping, sizeof(ping));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    while (sent < max_bytes) {
        struct pollfd p = {fd, POLLOUT, 0};
        ssize_t w;

        if (th_wait_log(log, needle, 0) >= 0)
            return 0;
        if (poll(&p, 1, 200) <= 0)
            continue; /* not taking more: look at the log again */
        w = write(fd, buf + off, sizeof(buf) - off);
        if (w <= 0)
            break;
        off = (off + (size_t)w) % sizeof(buf);
        sent += (size_t)w;
    }
    return th_wait_log(log, needle, 15000) >= 0 ? 0 : -1;
}

static void test_websocket_that_never_reads_is_closed(void **state)
{
    int fd;

    (void)state;
    fd = th_ws_connect(budget_s.gw.port, "/ws", "");
    assert_true(fd >= 0);
    assert_int_equal(flood_pings(fd, budget_s.gw.log_path, "is not reading", 64u << 20), 0);
    /* Its session ends: dropped after the write timeout when its close
     * cannot reach the client ("took nothing"), or closed, when the
     * kernel's buffers (which TCP may grow meanwhile) still took the close. */
    assert_true(th_wait_log(budget_s.gw.log_path, "WebSocket session ended", 20000) >= 0);
    close(fd);
}

static void test_sigterm_ends_with_a_websocket_that_never_reads(void **state)
{
    struct timespec t0, t1;
    double ms;
    int fd;

    (void)state;
    fd = th_ws_connect(ws_s.gw.port, "/ws", "");
    assert_true(fd >= 0);
    /* Fill the socket both ways without reading (stop well before the queue
     * cap: the gateway is still serving the socket when it is told to stop). */
    flood_pings(fd, ws_s.gw.log_path, "never-said", 2u << 20);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(th_stop(&ws_s.gw), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    if (ms > 3000)
        fail_msg("the gateway took %.0f ms to stop, SHUTDOWN_GRACE_MS is 3000", ms);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_too_large_is_refused_before_the_body),
        cmocka_unit_test(test_body_budget_across_connections),
        cmocka_unit_test(test_too_large_without_expect_reads_the_answer),
        cmocka_unit_test(test_slow_headers_and_body_are_cut),
        cmocka_unit_test(test_ping_answers_at_the_connection_cap),
        cmocka_unit_test(test_websocket_that_never_reads_is_closed),
        cmocka_unit_test(test_sigterm_ends_with_a_websocket_that_never_reads),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
