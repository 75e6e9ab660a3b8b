/* aw_tools without I/O: which replicas TOOL_WORKERS stands for (with a
 * scripted resolver instead of DNS), which replica a call goes to, and what a
 * failed call means for routing. */
#include "aw_tools.h"
#include "cm_rpc.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

/* "tool-worker" has three replicas (one IPv6), "gone" none, "wide" 70. */
static int fake_resolve(const char *host, char (*out)[AW_TOOLS_ADDR_MAX], int cap, void *ud)
{
    int n = 0;

    (void)ud;
    if (!strcmp(host, "tool-worker")) {
        const char *ips[] = {"10.0.0.7", "10.0.0.8", "fd00::9"};

        for (; n < 3 && n < cap; n++)
            strcpy(out[n], ips[n]);
    } else if (!strcmp(host, "wide")) {
        for (; n < 70 && n < cap; n++)
            snprintf(out[n], AW_TOOLS_ADDR_MAX, "10.1.0.%d", n + 1);
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
    char out[AW_TOOLS_MAX_REPLICAS][AW_TOOLS_ADDR_MAX];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char got[2048] = "";
        int n = aw_tools_replicas(rows[i].targets, fake_resolve, NULL, out, AW_TOOLS_MAX_REPLICAS);
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

/* More replicas than the cap: the first AW_TOOLS_MAX_REPLICAS are asked. */
static void test_cap(void **state)
{
    char out[AW_TOOLS_MAX_REPLICAS][AW_TOOLS_ADDR_MAX];

    (void)state;
    assert_int_equal(aw_tools_replicas("wide:1", fake_resolve, NULL, out, AW_TOOLS_MAX_REPLICAS),
                     AW_TOOLS_MAX_REPLICAS);
    assert_string_equal(out[AW_TOOLS_MAX_REPLICAS - 1], "10.1.0.64:1");
    assert_int_equal(aw_tools_replicas("tool-worker:1", fake_resolve, NULL, out, 2), 2);
    /* Without a resolver names are skipped, addresses kept. */
    assert_int_equal(aw_tools_replicas("tool-worker:1,127.0.0.1:2", NULL, NULL, out, 8), 1);
    assert_string_equal(out[0], "127.0.0.1:2");
}

/* Round-robin over the replicas that offer the tool, the reachable first. */
static void test_pick(void **state)
{
    struct aw_tools_candidate c[4] = {
        {1, 1, 0, 0}, /* serves, up */
        {0, 1, 0, 0}, /* does not offer the tool */
        {1, 1, 0, 0}, /* serves, up */
        {1, 0, 0, 0}, /* serves, down last time */
    };
    unsigned rr = 0;
    int seen[4] = {0}, i;

    (void)state;
    for (i = 0; i < 6; i++)
        seen[aw_tools_pick(c, 4, &rr)]++;
    assert_int_equal(seen[0], 3);
    assert_int_equal(seen[2], 3);
    assert_int_equal(seen[1] + seen[3], 0);
    /* once both are tried, the one that was down gets its chance */
    c[0].tried = c[2].tried = 1;
    assert_int_equal(aw_tools_pick(c, 4, &rr), 3);
    c[3].tried = 1;
    assert_int_equal(aw_tools_pick(c, 4, &rr), -1);
    /* a replica that is gone takes no new calls */
    memset(c, 0, sizeof(c));
    c[0] = (struct aw_tools_candidate){1, 1, 1, 0};
    assert_int_equal(aw_tools_pick(c, 1, &rr), -1);
    assert_int_equal(aw_tools_pick(c, 0, &rr), -1);
}

static void test_after(void **state)
{
    (void)state;
    assert_int_equal(aw_tools_after(CM_RPC_OK, "", 0), AW_TOOLS_DONE);
    assert_int_equal(aw_tools_after(CM_RPC_RESOURCE_EXHAUSTED, "busy", 0), AW_TOOLS_TRY_ANOTHER);
    /* never reached: any tool may go elsewhere */
    assert_int_equal(aw_tools_after(CM_RPC_UNAVAILABLE,
                                    "failed to connect to all addresses; last error: UNKNOWN: "
                                    "ipv4:127.0.0.1:1: Connection refused",
                                    0),
                     AW_TOOLS_TRY_ANOTHER);
    /* died mid-call: only an idempotent tool runs again */
    assert_int_equal(aw_tools_after(CM_RPC_UNAVAILABLE, "Socket closed", 1), AW_TOOLS_TRY_ANOTHER);
    assert_int_equal(aw_tools_after(CM_RPC_UNAVAILABLE, "Socket closed", 0), AW_TOOLS_LOST);
    assert_int_equal(aw_tools_after(CM_RPC_DEADLINE_EXCEEDED, "", 1), AW_TOOLS_DONE);
    assert_int_equal(aw_tools_after(CM_RPC_CANCELLED, "", 1), AW_TOOLS_DONE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forms),
        cmocka_unit_test(test_cap),
        cmocka_unit_test(test_pick),
        cmocka_unit_test(test_after),
    };
    return cmocka_run_group_tests_name("aw_tools", tests, NULL, NULL);
}
