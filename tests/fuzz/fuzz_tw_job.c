/* libFuzzer: the job message a warm sandbox's helper decodes. A decoded job
 * encodes back to the same bytes. */
#include "tw_job.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf, *again, **args, **env;
    size_t len = 0;

    if (size > TW_JOB_MAX || !(buf = malloc(size ? size : 1)))
        return 0;
    memcpy(buf, data, size);
    if (tw_job_decode(buf, size, &args, &env) == 0) {
        again = tw_job_encode((const char *const *)args, (const char *const *)env, &len);
        if (!again || len != size + 4 || memcmp(again + 4, data, size))
            abort();
        free(again);
        free(args);
        free(env);
    }
    free(buf);
    return 0;
}
