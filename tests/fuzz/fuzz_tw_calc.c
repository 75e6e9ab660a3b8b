/* libFuzzer: the calculator's expression parser. */
#include "tw_calc.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256], out[64];
    double v;

    if (tw_calc_eval((const char *)data, size, &v, err, sizeof(err)) == 0) {
        if (!isfinite(v))
            abort(); /* the contract: a success is always a finite number */
        tw_calc_format(v, out, sizeof(out));
    }
    return 0;
}
