/* libFuzzer: target list expansion into replicas (cm_addr_replicas: TOOL_WORKERS,
 * AGENT_WORKER_ADDR). The scripted resolver answers with as many addresses as the name is long,
 * some of them IPv6, so every path runs without DNS. */
#include "cm_addr.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int resolve(const char *host, char (*out)[CM_ADDR_MAX], int cap, void *ud)
{
    int n = (int)strlen(host) % 80, i;

    (void)ud;
    for (i = 0; i < n && i < cap; i++)
        snprintf(out[i], CM_ADDR_MAX, i % 3 ? "10.0.%d.%d" : "fd00::%d:%d", i, n);
    return i;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char out[CM_ADDR_MAX_REPLICAS][CM_ADDR_MAX];
    char *s = malloc(size + 1);
    int n, i, j;

    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    n = cm_addr_replicas(s, resolve, NULL, out, CM_ADDR_MAX_REPLICAS);
    if (n < 0 || n > CM_ADDR_MAX_REPLICAS)
        abort();
    for (i = 0; i < n; i++) {
        if (!memchr(out[i], '\0', CM_ADDR_MAX) || !out[i][0])
            abort();
        for (j = 0; j < i; j++) {
            if (!strcmp(out[i], out[j]))
                abort(); /* duplicates are dropped */
        }
    }
    free(s);
    return 0;
}
