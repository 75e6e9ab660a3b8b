/* The expansion takes its resolver as an argument so that tests and the
 * fuzzer run every path without DNS; the tool-workers' list (aw_tools,
 * aw_watch) and the gateway's agent-workers (cm_rpc) share it. */
#include "cm_addr.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static int add_replica(char (*out)[CM_ADDR_MAX], int n, int cap, const char *addr)
{
    size_t len;
    int i;

    for (i = 0; i < n; i++) {
        if (!strcmp(out[i], addr))
            return n;
    }
    len = strlen(addr);
    if (n < cap && len < CM_ADDR_MAX) /* a longer one would not be the same address */
        memcpy(out[n++], addr, len + 1);
    return n;
}

/* "host:port" or "[v6]:port" -> host and port; 0 or -1. */
static int split_hostport(const char *s, char *host, size_t hcap, const char **port)
{
    const char *end, *colon;
    size_t len;

    if (*s == '[') {
        end = strchr(s, ']');
        if (!end || end[1] != ':')
            return -1;
        s++;
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return -1;
        end = colon;
    }
    len = (size_t)(end - s);
    if (!len || len >= hcap || !colon[1])
        return -1;
    memcpy(host, s, len);
    host[len] = '\0';
    *port = colon + 1;
    return 0;
}

/* A numeric address and port as a gRPC target; -1 when it does not fit. */
static int numeric_target(char *buf, size_t cap, const char *ip, const char *port)
{
    int w = strchr(ip, ':') ? snprintf(buf, cap, "ipv6:[%s]:%s", ip, port)
                            : snprintf(buf, cap, "%s:%s", ip, port);

    return w < 0 || (size_t)w >= cap ? -1 : 0;
}

int cm_addr_replicas(const char *targets, cm_addr_resolve_fn resolve, void *ud,
                     char (*out)[CM_ADDR_MAX], int cap)
{
    const char *p = targets;
    int n = 0;

    while (p && *p && n < cap) {
        char item[512], host[256], addr[CM_ADDR_MAX];
        char ips[CM_ADDR_MAX_REPLICAS][CM_ADDR_MAX];
        const char *end = strchr(p, ','), *it, *port;
        unsigned char bin[16];
        size_t len = end ? (size_t)(end - p) : strlen(p);
        int k, nips;

        while (len && *p == ' ')
            p++, len--;
        if (!len || len >= sizeof(item)) {
            p = end ? end + 1 : NULL;
            continue;
        }
        memcpy(item, p, len);
        item[len] = '\0';
        p = end ? end + 1 : NULL;
        it = item;
        if (!strncmp(it, "unix:", 5) || !strncmp(it, "unix-abstract:", 14)) {
            n = add_replica(out, n, cap, it);
            continue;
        }
        if (!strncmp(it, "dns:///", 7))
            it += 7;
        else if (!strncmp(it, "dns:", 4))
            it += 4;
        else if (!strncmp(it, "ipv4:", 5) || !strncmp(it, "ipv6:", 5))
            it += 5;
        if (split_hostport(it, host, sizeof(host), &port))
            continue;
        if (inet_pton(AF_INET, host, bin) == 1 || inet_pton(AF_INET6, host, bin) == 1) {
            if (!numeric_target(addr, sizeof(addr), host, port))
                n = add_replica(out, n, cap, addr);
            continue;
        }
        nips = resolve ? resolve(host, ips, CM_ADDR_MAX_REPLICAS, ud) : 0;
        for (k = 0; k < nips && n < cap; k++) {
            if (!numeric_target(addr, sizeof(addr), ips[k], port))
                n = add_replica(out, n, cap, addr);
        }
    }
    return n;
}

int cm_addr_resolve_host(const char *host, char (*out)[CM_ADDR_MAX], int cap, void *ud)
{
    struct addrinfo hints, *res = NULL, *ai;
    int n = 0;

    (void)ud;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, NULL, &hints, &res))
        return 0;
    for (ai = res; ai && n < cap; ai = ai->ai_next) {
        const void *a = ai->ai_family == AF_INET
                            ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                            : (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;

        if ((ai->ai_family == AF_INET || ai->ai_family == AF_INET6) &&
            inet_ntop(ai->ai_family, a, out[n], CM_ADDR_MAX))
            n++;
    }
    freeaddrinfo(res);
    return n;
}
