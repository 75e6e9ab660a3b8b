/* libFuzzer: the conversation repair (aw_history), fed stored conversations
 * (a restored session is data someone else wrote). Besides not crashing or
 * leaking, a repaired conversation must be a fixed point: repairing it again
 * changes nothing. */
#include "aw_history.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *m = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
    char what[128];

    if (m && aw_history_repair(m, what, sizeof(what)) >= 0 && aw_history_repair(m, NULL, 0) != 0)
        abort();
    json_decref(m);
    return 0;
}
