#include "tw_netpolicy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static int allowed(const struct tw_netpolicy *p, const char *addr, char *why, size_t len)
{
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof(ss));
    if (inet_pton(AF_INET, addr, &((struct sockaddr_in *)&ss)->sin_addr) == 1)
        ss.ss_family = AF_INET;
    else if (inet_pton(AF_INET6, addr, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1)
        ss.ss_family = AF_INET6;
    else
        fail_msg("bad test address %s", addr);
    return tw_netpolicy_addr(p, (struct sockaddr *)&ss, why, len);
}

static const struct {
    const char *addr;
    int ok;
    const char *why;
} rows[] = {
    {"93.184.216.34", 1, ""},
    {"2606:2800:220:1:248:1893:25c8:1946", 1, ""},
    {"127.0.0.1", 0, "127.0.0.1 is a loopback address"},
    {"127.255.0.9", 0, "loopback"},
    {"0.0.0.0", 0, "this network"},
    {"169.254.169.254", 0, "169.254.169.254 is the cloud metadata service"},
    {"169.254.1.1", 0, "link-local"},
    {"10.1.2.3", 0, "private"},
    {"172.16.0.1", 0, "private"},
    {"172.31.255.255", 0, "private"},
    {"172.32.0.1", 1, ""},
    {"192.168.1.1", 0, "private"},
    {"100.64.0.1", 0, "carrier-grade NAT"},
    {"224.0.0.1", 0, "multicast"},
    {"255.255.255.255", 0, "reserved"},
    {"::1", 0, "loopback"},
    {"::", 0, "unspecified"},
    {"fe80::1", 0, "link-local"},
    {"fd00:ec2::254", 0, "metadata"},
    {"fd12::1", 0, "unique local"},
    {"::ffff:127.0.0.1", 0, "127.0.0.1 is a loopback address"},
    {"::ffff:169.254.169.254", 0, "metadata"},
    {"64:ff9b::a9fe:a9fe", 0, "metadata"}, /* NAT64 of 169.254.169.254 */
    {"2002:7f00:1::1", 0, "loopback"},     /* 6to4 of 127.0.0.1 */
    {"::ffff:93.184.216.34", 1, ""},
};

static void test_refused_ranges(void **state)
{
    struct tw_netpolicy p;
    char why[128];
    size_t i;

    (void)state;
    memset(&p, 0, sizeof(p));
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        int ok;

        why[0] = '\0';
        ok = allowed(&p, rows[i].addr, why, sizeof(why));
        if (ok != rows[i].ok || !strstr(why, rows[i].why))
            fail_msg("%s -> %d '%s'; want %d '%s'", rows[i].addr, ok, why, rows[i].ok, rows[i].why);
    }
}

static void test_allow_list_opens_a_range(void **state)
{
    struct tw_netpolicy p;
    char why[128];

    (void)state;
    memset(&p, 0, sizeof(p));
    assert_int_equal(tw_netpolicy_allow_cidr(&p, "127.0.0.1/32"), 0);
    assert_int_equal(tw_netpolicy_allow_cidr(&p, "10.0.0.0/8"), 0);
    assert_true(allowed(&p, "127.0.0.1", why, sizeof(why)));
    assert_false(allowed(&p, "127.0.0.2", why, sizeof(why)));
    assert_true(allowed(&p, "10.200.0.1", why, sizeof(why)));
    assert_false(allowed(&p, "169.254.169.254", why, sizeof(why)));
    assert_int_equal(tw_netpolicy_allow_cidr(&p, "10.0.0.0/33"), -1);
    assert_int_equal(tw_netpolicy_allow_cidr(&p, "not-an-address"), -1);
    assert_int_equal(tw_netpolicy_allow_cidr(&p, "10.0.0.0/"), -1);
    tw_netpolicy_cleanup(&p);
}

static void test_hosts(void **state)
{
    struct tw_netpolicy p;

    (void)state;
    memset(&p, 0, sizeof(p));
    assert_true(tw_netpolicy_host(&p, "anything.example")); /* no list: any host */
    assert_int_equal(tw_netpolicy_allow_host(&p, "api.example.com"), 0);
    assert_int_equal(tw_netpolicy_allow_host(&p, "*.docs.example"), 0);
    assert_true(tw_netpolicy_host(&p, "API.example.com"));
    assert_false(tw_netpolicy_host(&p, "evil-api.example.com"));
    assert_true(tw_netpolicy_host(&p, "a.docs.example"));
    assert_false(tw_netpolicy_host(&p, "docs.example"));
    assert_false(tw_netpolicy_host(&p, "xdocs.example"));
    tw_netpolicy_cleanup(&p);
    assert_int_equal(tw_netpolicy_allow_host(&p, "*"), 0);
    assert_true(tw_netpolicy_host(&p, "whatever.test"));
    tw_netpolicy_cleanup(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refused_ranges),
        cmocka_unit_test(test_allow_list_opens_a_range),
        cmocka_unit_test(test_hosts),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
