/* tw_forward: inside a sandbox whose tool declared a network, relays
 * 127.0.0.1:TW_EGRESS_PORT (the sandbox's own loopback) to the egress
 * proxy's UNIX socket, bound into the sandbox. A child process accepts;
 * each connection is relayed by a process of its own (poll, no threads).
 * They die with the sandbox. Used by agentcore-tool-exec only. */
#ifndef TW_FORWARD_H
#define TW_FORWARD_H

#include <stddef.h>

/* Listens (so the tool finds the port open from its first instruction),
 * then forks the relay. 0, or -1 with |err|. */
int tw_forward_start(int port, const char *unix_path, char *err, size_t errlen);

#endif
