/* libFuzzer: Bedrock Converse response and error parsing, and the Date header
 * and error text that clock-skew correction reads (what a peer controls). */
#include "aw_bedrock.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
    (void)aw_bedrock_clock_skewed(e.http_status, e.type, e.message);
    {
        char date[128];
        size_t n = size < sizeof(date) - 1 ? size : sizeof(date) - 1;

        memcpy(date, data, n);
        date[n] = '\0';
        (void)aw_bedrock_http_date(date);
    }
    return 0;
}
