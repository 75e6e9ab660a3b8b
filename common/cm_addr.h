/* cm_addr: the replicas a target list stands for. A list such as
 * "tool-worker:50061,10.0.0.8:1,unix:/run/x.sock" (the forms
 * cm_rpc_client_new takes) becomes one gRPC target per replica: numeric
 * addresses and unix sockets as listed, DNS names (plain or dns:) resolved,
 * since compose --scale gives one name an address per replica. The expansion
 * has no I/O (the resolver is passed in: unit-tested, fuzzed); the resolver
 * of production blocks, so it runs off any event loop. */
#ifndef CM_ADDR_H
#define CM_ADDR_H

#define CM_ADDR_MAX_REPLICAS 64
#define CM_ADDR_MAX 128

/* Resolves |host| into up to |cap| numeric addresses ("10.0.0.7", "::1");
 * returns how many. */
typedef int (*cm_addr_resolve_fn)(const char *host, char (*out)[CM_ADDR_MAX], int cap, void *ud);

/* The replicas behind |targets|, one gRPC target each ("10.0.0.7:50061",
 * "ipv6:[fd00::9]:50061", "unix:/run/x.sock"), names resolved with |resolve|
 * (NULL: names skipped). Duplicates are dropped; at most |cap|. Returns the
 * count. */
int cm_addr_replicas(const char *targets, cm_addr_resolve_fn resolve, void *ud,
                     char (*out)[CM_ADDR_MAX], int cap);

/* The cm_addr_resolve_fn of production: getaddrinfo (blocks). */
int cm_addr_resolve_host(const char *host, char (*out)[CM_ADDR_MAX], int cap, void *ud);

#endif
