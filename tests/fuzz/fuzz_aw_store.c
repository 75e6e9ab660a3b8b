/* libFuzzer: a stored session document (aw_store_decode), as a file or an S3
 * object someone else may have written, and the file name of any session id.
 * A document that decodes must be one the encoder writes back to an equal
 * one; a file name never holds a '/' and never starts with a '.'. */
#include "aw_store.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256], name[256], id[257];
    size_t idlen = size < 256 ? size : 256, len;
    json_t *m = aw_store_decode("fuzz-session", (const char *)data, size, err, sizeof(err));

    if (m) {
        char *doc = aw_store_encode("fuzz-session", m, 0, &len);
        json_t *again = doc ? aw_store_decode("fuzz-session", doc, len, err, sizeof(err)) : NULL;

        if (doc && (!again || !json_equal(again, m)))
            abort();
        json_decref(again);
        free(doc);
        json_decref(m);
    }
    memcpy(id, data, idlen);
    id[idlen] = '\0';
    aw_store_file_name(id, name, sizeof(name));
    if (strchr(name, '/') || name[0] == '.' || strlen(name) < 6)
        abort();
    return 0;
}
