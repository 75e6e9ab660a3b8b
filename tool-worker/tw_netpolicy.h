/* tw_netpolicy: which addresses and hosts a tool may reach over the network.
 *
 * Pure functions, no I/O: http_request calls tw_netpolicy_addr() from curl's
 * socket-open hook, i.e. after DNS resolution and for every connection,
 * redirects included, so a name that resolves to 127.0.0.1 or to the metadata
 * service is refused however the URL spells it.
 *
 * Refused unless an allowed CIDR covers them: loopback, "this network",
 * link-local (169.254.0.0/16, where the metadata service lives, fe80::/10),
 * private ranges (10/8, 172.16/12, 192.168/16, fc00::/7), carrier-grade NAT,
 * multicast, broadcast and reserved ranges, and the same addresses hidden in
 * IPv4-mapped, NAT64 and 6to4 IPv6 forms. */
#ifndef TW_NETPOLICY_H
#define TW_NETPOLICY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define TW_NETPOLICY_MAX 32

struct tw_cidr {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    int prefix;
};

struct tw_netpolicy {
    struct tw_cidr allow[TW_NETPOLICY_MAX]; /* exceptions to the refused ranges */
    int n_allow;
    char *hosts[TW_NETPOLICY_MAX]; /* host allow-list ("*" or absent: any host) */
    int n_hosts;
};

/* Parses "10.0.0.0/8" or "::1" (a whole address) into |c|. 0 or -1. */
int tw_cidr_parse(const char *s, struct tw_cidr *c);

/* Adds an allowed CIDR / host pattern. Host patterns: "example.com" (exact),
 * ".example.com" or "*.example.com" (any subdomain), "*" (any). 0, or -1 when
 * malformed or the table is full. Hosts are copied. */
int tw_netpolicy_allow_cidr(struct tw_netpolicy *p, const char *cidr);
int tw_netpolicy_allow_host(struct tw_netpolicy *p, const char *host);
void tw_netpolicy_cleanup(struct tw_netpolicy *p);

/* 1 when |sa| may be connected to; 0 with a reason in |why| otherwise. */
int tw_netpolicy_addr(const struct tw_netpolicy *p, const struct sockaddr *sa, char *why,
                      size_t whylen);
/* 1 when |host| (a URL's host, case-insensitive) passes the host allow-list. */
int tw_netpolicy_host(const struct tw_netpolicy *p, const char *host);

#endif
