/* cm_pb: varints and field heads against the encoding guide's examples. */
#include "cm_pb.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static void test_varint(void **state)
{
    static const struct {
        uint64_t v;
        size_t n;
        uint8_t bytes[10];
    } rows[] = {
        {0, 1, {0x00}},
        {1, 1, {0x01}},
        {127, 1, {0x7f}},
        {128, 2, {0x80, 0x01}},
        {150, 2, {0x96, 0x01}}, /* the guide's example */
        {300, 2, {0xac, 0x02}},
        {16384, 3, {0x80, 0x80, 0x01}},
        {UINT64_MAX, 10, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
    };
    uint8_t out[10];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        memset(out, 0xee, sizeof(out));
        assert_int_equal(cm_pb_varint(out, rows[i].v), rows[i].n);
        assert_memory_equal(out, rows[i].bytes, rows[i].n);
    }
}

static void test_field_head(void **state)
{
    static const struct {
        unsigned field;
        size_t len, n;
        uint8_t bytes[4];
    } rows[] = {
        {1, 0, 2, {0x0a, 0x00}},
        {2, 3, 2, {0x12, 0x03}},
        {2, 300, 3, {0x12, 0xac, 0x02}},
        {16, 1, 3, {0x82, 0x01, 0x01}}, /* a key of two bytes */
    };
    uint8_t out[CM_PB_HEAD_MAX];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        assert_int_equal(cm_pb_field_head(out, rows[i].field, rows[i].len), rows[i].n);
        assert_memory_equal(out, rows[i].bytes, rows[i].n);
        assert_int_equal(cm_pb_field_len(rows[i].field, rows[i].len), rows[i].n + rows[i].len);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_varint),
        cmocka_unit_test(test_field_head),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
