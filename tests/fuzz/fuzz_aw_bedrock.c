/* libFuzzer: Bedrock Converse response and error parsing (what a peer controls). */
#include "aw_bedrock.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct aw_turn t;
    struct aw_model_error e;
    char err[256];

    if (aw_bedrock_parse_response((const char *)data, size, &t, err, sizeof(err)) == 0) {
        if (!t.message)
            abort();
        aw_turn_clear(&t);
    }
    aw_bedrock_parse_error(size ? data[0] + 300 : 500, NULL, (const char *)data, size, &e);
    if (!e.type[0] || !e.message[0])
        abort();
    return 0;
}
