/* aw_tools without I/O: which replica a call goes to, and what a failed call
 * means for routing (which replicas TOOL_WORKERS stands for: test_cm_addr). */
#include "aw_tools.h"
#include "cm_rpc.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

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
        cmocka_unit_test(test_pick),
        cmocka_unit_test(test_after),
    };
    return cmocka_run_group_tests_name("aw_tools", tests, NULL, NULL);
}
