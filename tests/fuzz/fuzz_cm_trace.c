/* libFuzzer: traceparent values from callers (cm_trace_parse). What parses
 * must write back, as version 00, to a value that parses to the same ids. */
#include "cm_trace.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char in[256], out[CM_TRACEPARENT_LEN + 1];
    struct cm_trace a, b;
    size_t n = size < sizeof(in) - 1 ? size : sizeof(in) - 1;

    memcpy(in, data, n);
    in[n] = '\0';
    if (cm_trace_parse(in, &a) == 0) {
        cm_trace_format(&a, out);
        if (cm_trace_parse(out, &b) || memcmp(a.trace_id, b.trace_id, 16) ||
            memcmp(a.span_id, b.span_id, 8) || a.flags != b.flags)
            abort();
    }
    return 0;
}
