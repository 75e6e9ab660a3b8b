/* Varints and length-delimited field heads (protobuf's encoding guide). */
#include "cm_pb.h"

size_t cm_pb_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;

    do {
        p[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

size_t cm_pb_field_head(uint8_t *p, unsigned field, size_t len)
{
    size_t n = cm_pb_varint(p, (uint64_t)field << 3 | 2);

    return n + cm_pb_varint(p + n, len);
}

size_t cm_pb_field_len(unsigned field, size_t len)
{
    uint8_t tmp[CM_PB_HEAD_MAX];

    return cm_pb_field_head(tmp, field, len) + len;
}
