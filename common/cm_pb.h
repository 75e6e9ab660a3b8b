/* cm_pb: the protobuf wire format the exporters write by hand, no I/O.
 *
 * protobuf-c packs whole messages; the OTLP exporters also splice bytes that
 * are already packed (a span queued earlier, a resource packed once, the
 * metrics of a registry) into an enclosing message, which needs only a
 * length-delimited field's key and length in front of them. */
#ifndef CM_PB_H
#define CM_PB_H

#include <stddef.h>
#include <stdint.h>

/* Room a field head needs at most: two varints of 10 bytes. */
#define CM_PB_HEAD_MAX 20

/* |v| as a base-128 varint into |p| (10 bytes at most); its length. */
size_t cm_pb_varint(uint8_t *p, uint64_t v);
/* The key (wire type 2) and length of field |field| holding |len| bytes,
 * into |p| (CM_PB_HEAD_MAX at most); their length. */
size_t cm_pb_field_head(uint8_t *p, unsigned field, size_t len);
/* The whole size of that field: head and |len| bytes. */
size_t cm_pb_field_len(unsigned field, size_t len);

#endif
