/* cm_addr: which replicas a target list stands for, with a scripted resolver
 * instead of DNS. */
#include "cm_addr.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

/* "tool-worker" has three replicas (one IPv6), "gone" none, "wide" 70. */
static int fake_resolve(const char *host, char (*out)[CM_ADDR_MAX], int cap, void *ud)
{
    int n = 0;

    (void)ud;
    if (!strcmp(host, "tool-worker")) {
        const char *ips[] = {"10.0.0.7", "10.0.0.8", "fd00::9"};

        for (; n < 3 && n < cap; n++)
            strcpy(out[n], ips[n]);
    } else if (!strcmp(host, "wide")) {
        for (; n < 70 && n < cap; n++)
            snprintf(out[n], CM_ADDR_MAX, "10.1.0.%d", n + 1);
    }
    return n;
}

static void test_forms(void **state)
{
    static const struct {
        const char *targets;
        const char *want; /* the replicas joined by '|' */
    } rows[] = {
        {"127.0.0.1:50061", "127.0.0.1:50061"},
        {"127.0.0.1:1, 127.0.0.2:2,127.0.0.1:1", "127.0.0.1:1|127.0.0.2:2"},
        {"tool-worker:50061", "10.0.0.7:50061|10.0.0.8:50061|ipv6:[fd00::9]:50061"},
        {"dns:///tool-worker:7", "10.0.0.7:7|10.0.0.8:7|ipv6:[fd00::9]:7"},
        {"dns:tool-worker:7,10.0.0.8:7", "10.0.0.7:7|10.0.0.8:7|ipv6:[fd00::9]:7"},
        {"[::1]:9,ipv4:127.0.0.3:4", "ipv6:[::1]:9|127.0.0.3:4"},
        {"ipv6:[::1]:9", "ipv6:[::1]:9"},
        {"unix:/run/tools.sock,127.0.0.1:5", "unix:/run/tools.sock|127.0.0.1:5"},
        {"gone:50061,127.0.0.1:5", "127.0.0.1:5"},
        {"noport,[::1],:5,127.0.0.1:", ""},
        {"", ""},
        {" , ,", ""},
    };
    char out[CM_ADDR_MAX_REPLICAS][CM_ADDR_MAX];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char got[2048] = "";
        int n = cm_addr_replicas(rows[i].targets, fake_resolve, NULL, out, CM_ADDR_MAX_REPLICAS);
        int k;

        for (k = 0; k < n; k++) {
            if (k)
                strcat(got, "|");
            strcat(got, out[k]);
        }
        if (strcmp(got, rows[i].want))
            fail_msg("'%s': got '%s', want '%s'", rows[i].targets, got, rows[i].want);
    }
}

/* More replicas than the cap: the first CM_ADDR_MAX_REPLICAS are asked. */
static void test_cap(void **state)
{
    char out[CM_ADDR_MAX_REPLICAS][CM_ADDR_MAX];

    (void)state;
    assert_int_equal(cm_addr_replicas("wide:1", fake_resolve, NULL, out, CM_ADDR_MAX_REPLICAS),
                     CM_ADDR_MAX_REPLICAS);
    assert_string_equal(out[CM_ADDR_MAX_REPLICAS - 1], "10.1.0.64:1");
    assert_int_equal(cm_addr_replicas("tool-worker:1", fake_resolve, NULL, out, 2), 2);
    /* Without a resolver names are skipped, addresses kept. */
    assert_int_equal(cm_addr_replicas("tool-worker:1,127.0.0.1:2", NULL, NULL, out, 8), 1);
    assert_string_equal(out[0], "127.0.0.1:2");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forms),
        cmocka_unit_test(test_cap),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
