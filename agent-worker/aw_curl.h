/* aw_curl: one curl multi handle driven by a libuv loop (the multi_socket API).
 *
 * curl says which sockets to watch (CURLMOPT_SOCKETFUNCTION: a uv_poll_t each)
 * and when to call it back (CURLMOPT_TIMERFUNCTION: one uv_timer_t); readiness
 * and the timer drive curl_multi_socket_action, so a transfer waiting on a
 * silent model costs no CPU. curl's own example docs/examples/multi-uv.c is
 * the pattern. One multi handle per loop: HTTP/2 multiplexes concurrent model
 * calls over one TLS connection (CURLPIPE_MULTIPLEX; transfers set
 * CURLOPT_PIPEWAIT), and no connection cache is shared across threads.
 *
 * Everything here runs on the loop thread. */
#ifndef AW_CURL_H
#define AW_CURL_H

#include <curl/curl.h>
#include <uv.h>

struct aw_curl;

/* Called once per finished transfer, after curl let go of |easy|. */
typedef void (*aw_curl_done)(void *ud, CURLcode result);

/* |max_connections|: connections kept in the cache. NULL on failure. */
struct aw_curl *aw_curl_new(uv_loop_t *loop, long max_connections);
/* Says every transfer on |m| holds a connection of its own while it runs
 * (plain HTTP/1.1, nothing to multiplex). A transfer then asks for a new
 * connection outright when every open one is busy: before each transfer
 * libcurl 7.88 walks all connections to the host for a reusable one, which
 * with thousands in flight made starting them quadratic. */
void aw_curl_serial(struct aw_curl *m, int on);
/* Starts |easy| (borrowed until |done| runs or aw_curl_remove). 0 or CM_EIO. */
int aw_curl_add(struct aw_curl *m, CURL *easy, aw_curl_done done, void *ud);
/* Stops |easy| at once; |done| will not run. On HTTP/2 only its stream is
 * reset; the connection stays for the others. */
void aw_curl_remove(struct aw_curl *m, CURL *easy);
/* Sockets libcurl holds open now (connections in use or kept), for tests. */
long aw_curl_sockets(const struct aw_curl *m);
/* Transfers running now (for tests and the status log). */
int aw_curl_running(const struct aw_curl *m);
/* Closes the multi handle and the loop handles; every transfer must have been
 * removed. Frees once libuv has closed the handles. NULL is fine. */
void aw_curl_free(struct aw_curl *m);

#endif
