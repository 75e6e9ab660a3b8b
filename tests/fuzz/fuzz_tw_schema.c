/* libFuzzer: the JSON Schema checker, on a schema and an input from the
 * fuzzer (split at the first newline), and the MCP message classifier and
 * result-to-text conversion on the same bytes. */
#include "tw_mcp.h"
#include "tw_schema.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *nl = memchr(data, '\n', size);
    json_t *schema, *input, *msg, *result, *error;
    char err[1024];
    long long id;
    int is_error, n;

    if (nl) {
        size_t first = (size_t)(nl - (const char *)data);

        schema = json_loadb((const char *)data, first, 0, NULL);
        input = json_loadb(nl + 1, size - first - 1, 0, NULL);
        if (schema && input) {
            n = tw_schema_check(schema, input, err, sizeof(err));
            if (n < 0 || strlen(err) >= sizeof(err) || (n == 0) != (err[0] == '\0'))
                abort(); /* violations always come with a message, and fit */
        }
        json_decref(schema);
        json_decref(input);
    }
    if (tw_mcp_message((const char *)data, size, &msg, &id, &result, &error) == TW_MCP_RESPONSE &&
        result) {
        char *text = tw_mcp_result_text(result, &is_error);

        free(text);
    }
    json_decref(msg);
    return 0;
}
