/* gw_conns: the gateway's open connections, with deadlines for slow clients
 * and a reserve that keeps /ping answering at the connection cap.
 *
 * libmicrohttpd's timeout is an idle timeout: a client that sends one byte a
 * minute keeps its connection, and a thousand of them hold the cap. Here a
 * connection that is still sending its request (headers and body) has an
 * absolute deadline: |request_timeout_ms| after it opened, or after its
 * previous answer plus |idle_timeout_ms| on a keep-alive connection. A
 * request fully read has none (an invocation waits on the model as long as it
 * needs). Past the deadline the socket is shut down (shutdown(2)): the thread
 * that serves the connection sees the end of the stream and closes it, so no
 * foreign thread touches libmicrohttpd's state.
 *
 * Beyond |max_connections| up to GW_CONNS_RESERVE more are let in, each for
 * |reserve_timeout_ms| at most: the caller answers /ping on them and refuses
 * the rest, so an orchestrator's health check still gets through while the
 * cap is held.
 *
 * One thread sleeps until the earliest deadline, and without deadlines
 * sleeps until woken: nothing runs while nothing is due. Every function is
 * thread-safe; an entry stays valid until gw_conns_close. */
#ifndef GW_CONNS_H
#define GW_CONNS_H

#include <stddef.h>

#define GW_CONNS_RESERVE 32

struct gw_conns_config {
    int max_connections;
    int request_timeout_ms; /* > 0 */
    int idle_timeout_ms;    /* between requests of a keep-alive connection; 0: none */
    int reserve_timeout_ms; /* a connection beyond the cap lives this long */
};

struct gw_conns;
struct gw_conn;

/* NULL when out of memory or the thread cannot start. */
struct gw_conns *gw_conns_new(const struct gw_conns_config *cfg);
/* Stops the thread and frees the registry (entries still open are freed:
 * call after the server closed every connection). NULL is fine. */
void gw_conns_free(struct gw_conns *cs);

/* A connection on socket |fd| opened; its request deadline starts now. NULL
 * when out of memory (the connection is then not tracked). */
struct gw_conn *gw_conns_open(struct gw_conns *cs, int fd);
/* The connection is closing: forget it before its socket is closed. NULL is fine. */
void gw_conns_close(struct gw_conns *cs, struct gw_conn *c);
/* 1 when |c| was opened beyond the cap (answer /ping, refuse anything else). */
int gw_conn_is_reserve(const struct gw_conn *c);
/* Its request is read in full: no deadline while it is answered. */
void gw_conns_request_read(struct gw_conns *cs, struct gw_conn *c);
/* Its answer is sent: the next request on it must arrive and be read by
 * now + idle + request timeout (no deadline when the idle timeout is 0:
 * keep-alive connections may then idle for ever). */
void gw_conns_request_done(struct gw_conns *cs, struct gw_conn *c);

/* Connections open now, and how many were shut down at their deadline. */
void gw_conns_counts(struct gw_conns *cs, size_t *open, size_t *cut);

#endif
