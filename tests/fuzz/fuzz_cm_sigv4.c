/* libFuzzer: SigV4 canonicalisation of peer-shaped paths, queries and headers
 * (the emulator verifies requests with it). Input: path \n query \n name:value... */
#include "cm_sigv4.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cm_sigv4_header h[CM_SIGV4_MAX_HEADERS + 2];
    struct cm_sigv4_params p = {"AKID", "secret", "us-east-1", "bedrock", "20150830T123600Z",
                                1,      NULL};
    struct cm_sigv4_request r;
    struct cm_sigv4_out out;
    char *s = malloc(size + 1), *line, *save = NULL, *path, *query;
    size_t n = 0;

    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    path = strtok_r(s, "\n", &save);
    query = path ? strtok_r(NULL, "\n", &save) : NULL;
    while ((line = strtok_r(NULL, "\n", &save)) && n < CM_SIGV4_MAX_HEADERS + 2) {
        char *colon = strchr(line, ':');

        if (!colon)
            continue;
        *colon = '\0';
        h[n].name = line;
        h[n].value = colon + 1;
        n++;
    }
    r = (struct cm_sigv4_request){"POST", path ? path : "/", query, h, n, data, size};
    p.normalize_path = size & 1;
    if (cm_sigv4_sign(&p, &r, &out) == 0 && strlen(out.signature) != 64)
        abort();
    cm_sigv4_out_free(&out);
    free(s);
    return 0;
}
