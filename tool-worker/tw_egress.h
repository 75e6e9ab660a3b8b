/* tw_egress: the only way out for a sandboxed program that declared
 * "network": true.
 *
 * Such a program keeps its empty network namespace; the sandbox helper
 * relays 127.0.0.1:3128 inside it to this proxy's UNIX socket, and the
 * program finds the proxy in HTTP_PROXY/HTTPS_PROXY (curl, Python, Node and
 * most HTTP clients use them; anything else gets no network at all). The
 * proxy speaks HTTP/1.1 proxying: CONNECT host:port for TLS and other TCP,
 * absolute-URI requests for plain HTTP (one request per connection). Every
 * destination is resolved here and checked with tw_netpolicy, like
 * http_request: loopback, link-local (the metadata service), private and
 * reserved ranges are refused unless TOOL_HTTP_ALLOW_CIDRS opens them, and
 * the host must pass TOOL_HTTP_ALLOW_HOSTS. A refusal is a 403 whose body
 * says why. Caps: 16 KiB of request head, |max_conns| connections, 256 KiB
 * queued per direction (reading pauses beyond), 10 s to connect, 120 s
 * without a byte either way. Loop thread only. */
#ifndef TW_EGRESS_H
#define TW_EGRESS_H

#include "tw_netpolicy.h"

#include <stddef.h>
#include <uv.h>

#define TW_EGRESS_PORT 3128 /* where the program inside the sandbox finds it */

struct tw_egress;

/* Listens on the UNIX socket |path| (replaced if it exists; mode 0666: the
 * sandboxed uid connects to it through a bind mount). |policy| is copied.
 * NULL with |err|. */
struct tw_egress *tw_egress_new(uv_loop_t *loop, const char *path,
                                const struct tw_netpolicy *policy, int max_conns, char *err,
                                size_t errlen);
/* Closes the listener and every connection; frees once the handles closed
 * (the loop must run). NULL is fine. */
void tw_egress_free(struct tw_egress *e);

/* Connections open now (tests). */
int tw_egress_connections(const struct tw_egress *e);

/* ---- the request head, no I/O (unit-tested) ---- */
struct tw_egress_target {
    int tunnel;     /* CONNECT */
    char host[256]; /* without brackets */
    char port[8];
    char *head; /* forward: the head to send upstream (malloc'd), else NULL */
    size_t head_len;
};
/* Parses a complete request head (through the blank line). 0 with |t|
 * filled, or an HTTP status (400, 405) with a reason in |why|. */
int tw_egress_parse(const char *head, size_t len, struct tw_egress_target *t, char *why,
                    size_t whylen);

#endif
