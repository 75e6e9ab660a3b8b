/* libFuzzer: what another process hands the agent-worker to export signed
 * (cm_otel_forward: a gateway's ExportSpans request, a tool-worker's spans
 * or metrics in its answer), read as both signals. Anything may arrive; only OTLP export requests
 * holding spans are queued, the rest is refused, and nothing is read out of bounds. */
#include "cm_err.h"
#include "cm_otel.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct cm_otel *exporter(void)
{
    static struct cm_otel *o;
    struct cm_cfg_value v[CM_OTEL_CFG_COUNT];
    char err[256];

    if (o)
        return o;
    memset(v, 0, sizeof(v));
    v[CM_OTEL_CFG_OBSERVABILITY].i = 1;
    v[CM_OTEL_CFG_SAMPLER].s = "parentbased_always_on";
    v[CM_OTEL_CFG_SAMPLER_ARG].d = 1;
    v[CM_OTEL_CFG_DELAY].i = 3600000; /* nothing leaves: no network in a fuzz run */
    v[CM_OTEL_CFG_QUEUE].i = 64;
    v[CM_OTEL_CFG_BATCH].i = 512;
    v[CM_OTEL_CFG_TIMEOUT].i = 1000;
    v[CM_OTEL_CFG_ENDPOINT].s = "http://127.0.0.1:9";
    v[CM_OTEL_CFG_SIGV4].s = "true"; /* relaying: no HTTP client is loaded */
    v[CM_OTEL_CFG_TRACES_EXPORTER].s = "otlp";
    v[CM_OTEL_CFG_METRICS_EXPORTER].s = "otlp";
    v[CM_OTEL_CFG_METRIC_INTERVAL].i = 3600000;
    o = cm_otel_new(v, "fuzz", NULL, err, sizeof(err));
    if (!o)
        abort();
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int signal;

    for (signal = CM_OTEL_TRACES; signal <= CM_OTEL_METRICS; signal++) {
        int rc = cm_otel_forward(exporter(), signal, data, size);

        if (rc != 0 && rc != CM_EINVAL && rc != CM_EBUSY && rc != CM_ENOMEM)
            abort();
    }
    return 0;
}
