#include "tw_netpolicy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The ranges a tool never reaches unless allowed, with the words the model
 * and the operator read in the refusal. */
static const struct {
    const char *cidr;
    const char *what;
} refused[] = {
    {"0.0.0.0/8", "a \"this network\" address"},
    {"127.0.0.0/8", "a loopback address"},
    {"169.254.169.254/32", "the cloud metadata service"},
    {"169.254.0.0/16", "a link-local address"},
    {"10.0.0.0/8", "a private address"},
    {"172.16.0.0/12", "a private address"},
    {"192.168.0.0/16", "a private address"},
    {"100.64.0.0/10", "a carrier-grade NAT address"},
    {"192.0.0.0/24", "a reserved address"},
    {"192.0.2.0/24", "a documentation address"},
    {"198.18.0.0/15", "a benchmarking address"},
    {"198.51.100.0/24", "a documentation address"},
    {"203.0.113.0/24", "a documentation address"},
    {"224.0.0.0/4", "a multicast address"},
    {"240.0.0.0/4", "a reserved address"},
    {"::/128", "the unspecified address"},
    {"::1/128", "a loopback address"},
    {"fd00:ec2::254/128", "the cloud metadata service"},
    {"fe80::/10", "a link-local address"},
    {"fc00::/7", "a private (unique local) address"},
    {"ff00::/8", "a multicast address"},
    {"2001:db8::/32", "a documentation address"},
};

int tw_cidr_parse(const char *s, struct tw_cidr *c)
{
    char buf[64], *slash, *end;
    long prefix;

    if (!s || strlen(s) >= sizeof(buf))
        return -1;
    strcpy(buf, s);
    slash = strchr(buf, '/');
    if (slash)
        *slash++ = '\0';
    memset(c, 0, sizeof(*c));
    if (inet_pton(AF_INET, buf, c->addr) == 1) {
        c->family = AF_INET;
        c->prefix = 32;
    } else if (inet_pton(AF_INET6, buf, c->addr) == 1) {
        c->family = AF_INET6;
        c->prefix = 128;
    } else {
        return -1;
    }
    if (slash) {
        prefix = strtol(slash, &end, 10);
        if (!*slash || *end || prefix < 0 || prefix > c->prefix)
            return -1;
        c->prefix = (int)prefix;
    }
    return 0;
}

static int in_cidr(const struct tw_cidr *c, int family, const uint8_t *addr)
{
    int full = c->prefix / 8, rest = c->prefix % 8;

    if (c->family != family || memcmp(c->addr, addr, (size_t)full))
        return 0;
    return !rest || ((c->addr[full] ^ addr[full]) & (0xff << (8 - rest))) == 0;
}

int tw_netpolicy_allow_cidr(struct tw_netpolicy *p, const char *cidr)
{
    if (p->n_allow >= TW_NETPOLICY_MAX || tw_cidr_parse(cidr, &p->allow[p->n_allow]))
        return -1;
    p->n_allow++;
    return 0;
}

int tw_netpolicy_allow_host(struct tw_netpolicy *p, const char *host)
{
    const char *h = host;

    if (!strncmp(h, "*.", 2))
        h++; /* "*.example.com" and ".example.com" mean the same */
    if (!*h || strlen(h) > 253 || p->n_hosts >= TW_NETPOLICY_MAX)
        return -1;
    if (!(p->hosts[p->n_hosts] = strdup(h)))
        return -1;
    p->n_hosts++;
    return 0;
}

void tw_netpolicy_cleanup(struct tw_netpolicy *p)
{
    int i;

    if (!p)
        return;
    for (i = 0; i < p->n_hosts; i++)
        free(p->hosts[i]);
    p->n_hosts = 0;
    p->n_allow = 0;
}

int tw_netpolicy_host(const struct tw_netpolicy *p, const char *host)
{
    size_t hl = strlen(host), pl;
    int i;

    if (!p->n_hosts)
        return 1;
    for (i = 0; i < p->n_hosts; i++) {
        const char *pat = p->hosts[i];

        pl = strlen(pat);
        if (!strcmp(pat, "*") || !strcasecmp(pat, host))
            return 1;
        /* ".example.com" matches every name below example.com */
        if (pat[0] == '.' && hl > pl && !strcasecmp(host + hl - pl, pat))
            return 1;
    }
    return 0;
}

/* The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4), if any. */
static int embedded_v4(const uint8_t *a, uint8_t *v4)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const uint8_t nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    static const uint8_t compat[12] = {0};

    if (!memcmp(a, mapped, 12) || !memcmp(a, nat64, 12) ||
        (!memcmp(a, compat, 12) && (a[12] | a[13]))) {
        memcpy(v4, a + 12, 4);
        return 1;
    }
    if (a[0] == 0x20 && a[1] == 0x02) { /* 6to4: 2002:AABB:CCDD::/48 */
        memcpy(v4, a + 2, 4);
        return 1;
    }
    return 0;
}

static int check(const struct tw_netpolicy *p, int family, const uint8_t *addr, char *why,
                 size_t whylen)
{
    char text[INET6_ADDRSTRLEN];
    size_t i;
    int j;

    for (j = 0; j < p->n_allow; j++) {
        if (in_cidr(&p->allow[j], family, addr))
            return 1;
    }
    for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        struct tw_cidr c;

        if (tw_cidr_parse(refused[i].cidr, &c) == 0 && in_cidr(&c, family, addr)) {
            inet_ntop(family, addr, text, sizeof(text));
            snprintf(why, whylen, "%s is %s", text, refused[i].what);
            return 0;
        }
    }
    return 1;
}

int tw_netpolicy_addr(const struct tw_netpolicy *p, const struct sockaddr *sa, char *why,
                      size_t whylen)
{
    uint8_t v4[4];

    if (sa->sa_family == AF_INET)
        return check(p, AF_INET, (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr, why,
                     whylen);
    if (sa->sa_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;

        if (!check(p, AF_INET6, a, why, whylen))
            return 0;
        return embedded_v4(a, v4) ? check(p, AF_INET, v4, why, whylen) : 1;
    }
    snprintf(why, whylen, "address family %d is not allowed", sa->sa_family);
    return 0;
}
