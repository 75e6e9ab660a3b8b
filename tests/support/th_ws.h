/* th_ws: a minimal WebSocket client for tests (RFC 6455; frames masked as a
 * client must). Enough to speak to /ws: handshake, send, receive one frame. */
#ifndef TH_WS_H
#define TH_WS_H

#include <stddef.h>
#include <stdint.h>

/* Connects to 127.0.0.1:|port|, upgrades |path|; |headers| is "" or lines
 * ending in "\r\n". Returns the socket, or -1 if the answer is not 101 with
 * the right Sec-WebSocket-Accept. */
int th_ws_connect(int port, const char *path, const char *headers);
/* Sends one final frame. 0 or -1. */
int th_ws_send(int fd, uint8_t opcode, const void *payload, size_t len);
/* Receives one frame into |buf| (NUL-terminated); returns its length and
 * opcode, or -1 on timeout/EOF/overflow. */
long th_ws_recv(int fd, uint8_t *opcode, char *buf, size_t cap, int timeout_ms);

#endif
