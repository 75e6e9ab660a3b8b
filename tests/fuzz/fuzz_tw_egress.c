/* libFuzzer: the egress proxy's request-head parser. */
#include "tw_egress.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tw_egress_target t;
    char why[256];
    int st = tw_egress_parse((const char *)data, size, &t, why, sizeof(why));

    if (st == 0 && (!t.host[0] || !t.port[0] || (!t.tunnel && !t.head)))
        abort(); /* a success names where to go, and what to send for plain HTTP */
    if (t.head && t.head_len > 2 * size + 64) /* the bound its buffer was sized for */
        abort();
    free(t.head);
    return 0;
}
