/* gw_ws: the WebSocket handshake of GET /ws (RFC 6455), with no I/O.
 * Framing, masking, fragmentation, ping/pong and the close handshake are
 * wslay's (Debian libwslay); the session loop lives in gw_http. */
#ifndef GW_WS_H
#define GW_WS_H

#include <stddef.h>

#define GW_WS_ACCEPT_LEN 28

/* Checks an upgrade request's headers (any may be NULL). Returns 0, or -1
 * with a reason in |why| for a 400 answer. */
int gw_ws_check(const char *upgrade, const char *connection, const char *version, const char *key,
                char *why, size_t whylen);

/* Sec-WebSocket-Accept for |key|: base64(SHA-1(key + the RFC's GUID)) into
 * |out| (GW_WS_ACCEPT_LEN + 1 bytes). 0 or -1. */
int gw_ws_accept_key(const char *key, char *out);

#endif
