/* libFuzzer: the event-stream decoder, fed in chunks chosen by the input. */
#include "cm_evstream.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int on_message(void *ud, const struct cm_evs_message *m)
{
    size_t i, *sum = ud;

    /* Touch everything the decoder hands out: an over-read shows up here. */
    for (i = 0; i < m->n_headers; i++) {
        *sum += m->headers[i].name[0] + m->headers[i].name[m->headers[i].name_len - 1];
        if (m->headers[i].bytes && m->headers[i].len)
            *sum += m->headers[i].bytes[m->headers[i].len - 1];
    }
    if (m->payload_len)
        *sum += m->payload[m->payload_len - 1];
    if (m->total_length != m->headers_length + m->payload_len + CM_EVS_MIN_FRAME)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cm_evs_decoder d;
    size_t sum = 0, pos = 0, chunk;

    if (size < 1)
        return 0;
    chunk = (size_t)data[0] % 17 + 1; /* the first byte picks the chunk size */
    data++;
    size--;
    cm_evs_decoder_init(&d, 1 << 20, on_message, &sum);
    while (pos < size) {
        size_t n = size - pos < chunk ? size - pos : chunk;

        if (cm_evs_decoder_feed(&d, data + pos, n))
            break;
        pos += n;
    }
    cm_evs_decoder_cleanup(&d);
    return (int)(sum & 0);
}
