/* The span queue and the OTLP/HTTP exporter thread. A span is packed when it
 * is recorded; an export request is the resource and scope (packed once at
 * start) around the queued spans' bytes, so nothing is unpacked or copied
 * into protobuf-c structures a second time. */
#include "cm_otel.h"
#include "cm_buf.h"
#include "cm_err.h"
#include "cm_log.h"
#include "cm_pb.h"
#include "cm_util.h"

#include "otlp_metrics.pb-c.h"
#include "otlp_trace.pb-c.h"

#include <curl/curl.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_RESOURCE_ATTRS 64
#define SCOPE_NAME "agentcore-c"
/* Bytes queued at most: forwarded requests may be large (a gRPC message). */
#define MAX_QUEUE_BYTES (32u << 20)

/* A packed Span, or (|whole|) an export request of |signal| (another
 * process's, or this one's metrics), holding |spans| spans, sent on its own. */
struct queued {
    struct queued *next;
    size_t len;
    uint64_t at_ms; /* monotonic, when queued */
    int spans, whole, signal;
    uint8_t data[];
};

/* Where one signal goes. */
struct dest {
    char url[1024];               /* "" when this signal is not exported */
    char service[32], region[32]; /* SigV4 scope from the host ("" region: the hook's) */
};

struct cm_otel {
    struct dest dst[2]; /* by enum cm_otel_signal */
    int sigv4;          /* exports are signed (or relayed) */
    struct cm_otel_hooks hooks;
    int (*collect)(void *ud, uint64_t start_ns, uint64_t now_ns, struct cm_buf *out);
    void *collect_ud;
    int metric_interval_ms;
    uint64_t next_metrics_ms, start_ns; /* monotonic; unix ns (the sums' start) */
    struct curl_slist *headers;         /* NULL when this process never POSTs */
    uint8_t *resource, *scope;          /* packed once */
    size_t resource_len, scope_len;
    int sampler;  /* enum below */
    double ratio; /* traceidratio */
    int delay_ms, max_queue, batch, timeout_ms;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    struct queued *head, *tail;
    int queued, stopping, stopped; /* |queued| counts spans */
    size_t queued_bytes;
    uint64_t flush_until_ms; /* while stopping: retries end here */
    struct cm_otel_stats stats;
};

enum { S_ON, S_OFF, S_RATIO, S_PARENT_ON, S_PARENT_OFF, S_PARENT_RATIO };

/* libcurl, loaded when tracing is turned on: a process that exports nothing
 * does not map it (with its TLS, HTTP/2, IDN... libraries, a few MiB of RSS
 * in the gateway and the tool-worker, which need no HTTP client otherwise). */
static struct {
    pthread_once_t once;
    int ok;
    CURLcode (*global_init)(long flags);
    CURL *(*easy_init)(void);
    CURLcode (*easy_setopt)(CURL *h, CURLoption opt, ...);
    CURLcode (*easy_perform)(CURL *h);
    CURLcode (*easy_getinfo)(CURL *h, CURLINFO info, ...);
    void (*easy_reset)(CURL *h);
    void (*easy_cleanup)(CURL *h);
    struct curl_slist *(*slist_append)(struct curl_slist *l, const char *s);
    void (*slist_free_all)(struct curl_slist *l);
} cc = {PTHREAD_ONCE_INIT};

static void curl_load(void)
{
    void *lib = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);

    if (!lib)
        return;
    /* POSIX: a function pointer from dlsym, through a data pointer. */
    *(void **)&cc.global_init = dlsym(lib, "curl_global_init");
    *(void **)&cc.easy_init = dlsym(lib, "curl_easy_init");
    *(void **)&cc.easy_setopt = dlsym(lib, "curl_easy_setopt");
    *(void **)&cc.easy_perform = dlsym(lib, "curl_easy_perform");
    *(void **)&cc.easy_getinfo = dlsym(lib, "curl_easy_getinfo");
    *(void **)&cc.easy_reset = dlsym(lib, "curl_easy_reset");
    *(void **)&cc.easy_cleanup = dlsym(lib, "curl_easy_cleanup");
    *(void **)&cc.slist_append = dlsym(lib, "curl_slist_append");
    *(void **)&cc.slist_free_all = dlsym(lib, "curl_slist_free_all");
    cc.ok = cc.global_init && cc.easy_init && cc.easy_setopt && cc.easy_perform &&
            cc.easy_getinfo && cc.easy_reset && cc.easy_cleanup && cc.slist_append &&
            cc.slist_free_all;
    if (cc.ok)
        cc.global_init(CURL_GLOBAL_DEFAULT); /* once, before the exporter thread exists */
}

uint64_t cm_otel_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- "k=v,k=v" ---- */

static void trim(char *s)
{
    size_t n = strlen(s), i = 0;

    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    while (s[i] == ' ' || s[i] == '\t')
        i++;
    memmove(s, s + i, n - i + 1);
}

static void percent_decode(char *s)
{
    char *w = s;
    unsigned int v;

    for (; *s; s++) {
        if (s[0] == '%' && s[1] && s[2] && sscanf(s + 1, "%2x", &v) == 1) {
            *w++ = (char)v;
            s += 2;
        } else {
            *w++ = *s;
        }
    }
    *w = '\0';
}

int cm_otel_parse_pairs(const char *s, int (*fn)(void *ud, const char *k, const char *v), void *ud)
{
    char *copy, *pair, *save = NULL, *eq;
    int rc = 0;

    if (!s || !*s)
        return 0;
    if (!(copy = strdup(s)))
        return CM_ENOMEM;
    for (pair = strtok_r(copy, ",", &save); pair && !rc; pair = strtok_r(NULL, ",", &save)) {
        if (!(eq = strchr(pair, '='))) {
            trim(pair);
            rc = *pair ? CM_EINVAL : 0; /* "a=1,,b=2" is fine */
            continue;
        }
        *eq = '\0';
        trim(pair);
        trim(eq + 1);
        percent_decode(eq + 1);
        if (!*pair)
            rc = CM_EINVAL;
        else
            rc = fn(ud, pair, eq + 1);
    }
    free(copy);
    return rc;
}

/* ---- the resource and the scope, packed once ---- */

struct res_build {
    Agentcore__Otlp__V1__KeyValue kv[MAX_RESOURCE_ATTRS];
    Agentcore__Otlp__V1__AnyValue val[MAX_RESOURCE_ATTRS];
    Agentcore__Otlp__V1__KeyValue *ptr[MAX_RESOURCE_ATTRS];
    char *owned[MAX_RESOURCE_ATTRS * 2];
    size_t n, nowned;
    int has_service;
};

static int res_add(void *ud, const char *k, const char *v)
{
    struct res_build *b = ud;
    size_t i;
    char *kc, *vc;

    for (i = 0; i < b->n; i++) /* the first value of a key wins */
        if (!strcmp(b->kv[i].key, k))
            return 0;
    if (b->n == MAX_RESOURCE_ATTRS)
        return 0;
    if (!(kc = strdup(k)) || !(vc = strdup(v))) {
        free(kc);
        return CM_ENOMEM;
    }
    b->owned[b->nowned++] = kc;
    b->owned[b->nowned++] = vc;
    agentcore__otlp__v1__key_value__init(&b->kv[b->n]);
    agentcore__otlp__v1__any_value__init(&b->val[b->n]);
    b->val[b->n].value_case = AGENTCORE__OTLP__V1__ANY_VALUE__VALUE_STRING_VALUE;
    b->val[b->n].string_value = vc;
    b->kv[b->n].key = kc;
    b->kv[b->n].value = &b->val[b->n];
    b->ptr[b->n] = &b->kv[b->n];
    b->n++;
    b->has_service |= !strcmp(k, "service.name");
    return 0;
}

static uint8_t *pack_resource(const struct cm_cfg_value *v, const char *process, size_t *len,
                              char *err, size_t errlen)
{
    struct res_build b;
    Agentcore__Otlp__V1__Resource r = AGENTCORE__OTLP__V1__RESOURCE__INIT;
    uint8_t *out = NULL;
    size_t i;

    memset(&b, 0, sizeof(b));
    if (v[CM_OTEL_CFG_SERVICE_NAME].s && res_add(&b, "service.name", v[CM_OTEL_CFG_SERVICE_NAME].s))
        goto out;
    if (cm_otel_parse_pairs(v[CM_OTEL_CFG_RESOURCE].s, res_add, &b)) {
        snprintf(err, errlen, "OTEL_RESOURCE_ATTRIBUTES: expected k1=v1,k2=v2");
        goto out;
    }
    if ((!b.has_service && res_add(&b, "service.name", process)) ||
        res_add(&b, "telemetry.sdk.name", SCOPE_NAME) ||
        res_add(&b, "telemetry.sdk.language", "c") ||
        res_add(&b, "process.executable.name", process))
        goto out;
    r.n_attributes = b.n;
    r.attributes = b.ptr;
    *len = agentcore__otlp__v1__resource__get_packed_size(&r);
    if ((out = malloc(*len ? *len : 1)))
        agentcore__otlp__v1__resource__pack(&r, out);
out:
    for (i = 0; i < b.nowned; i++)
        free(b.owned[i]);
    if (!out && !err[0])
        snprintf(err, errlen, "out of memory");
    return out;
}

static int add_header(void *ud, const char *k, const char *v)
{
    struct curl_slist **l = ud, *n;
    char line[8400];

    snprintf(line, sizeof(line), "%s: %s", k, v);
    n = cc.slist_append(*l, line);
    if (!n)
        return CM_ENOMEM;
    *l = n;
    return 0;
}

static void *export_main(void *p);

/* "https://xray.us-east-1.amazonaws.com/v1/traces": the host's labels. */
int cm_otel_sigv4_for(const char *url, const char *mode, char service[32], char region[32])
{
    const char *h = strstr(url, "://"), *end, *d1, *d2;
    size_t n;
    int aws = 0;

    cm_strlcpy(service, "xray", 32);
    region[0] = '\0';
    if (h) {
        h += 3;
        end = h + strcspn(h, ":/?#");
        n = (size_t)(end - h);
        if (n > 14 && (!strncmp(end - 14, ".amazonaws.com", 14) ||
                       (n > 17 && !strncmp(end - 17, ".amazonaws.com.cn", 17)))) {
            d1 = memchr(h, '.', n);
            d2 = d1 ? memchr(d1 + 1, '.', (size_t)(end - d1 - 1)) : NULL;
            /* <service>.<region>.amazonaws.com: nothing shorter is an
             * endpoint we can name a scope for */
            if (d1 && d2 && d1 - h < 32 && d2 - d1 - 1 < 32 && d2 - d1 > 1 &&
                strncmp(d2, ".amazonaws.com", 14) == 0) {
                aws = 1;
                snprintf(service, 32, "%.*s", (int)(d1 - h), h);
                snprintf(region, 32, "%.*s", (int)(d2 - d1 - 1), d1 + 1);
            }
        }
    }
    if (!strcmp(mode, "auto"))
        return aws;
    if (!strcmp(mode, "true"))
        return 1;
    if (!strcmp(mode, "false"))
        return 0;
    return CM_EINVAL;
}

struct cm_otel *cm_otel_new(const struct cm_cfg_value *v, const char *process,
                            const struct cm_otel_hooks *hooks, char *err, size_t errlen)
{
    const char *traces = v[CM_OTEL_CFG_TRACES_ENDPOINT].s, *base = v[CM_OTEL_CFG_ENDPOINT].s;
    const char *metrics = v[CM_OTEL_CFG_METRICS_ENDPOINT].s;
    const char *sampler = v[CM_OTEL_CFG_SAMPLER].s;
    int traces_on = !strcmp(v[CM_OTEL_CFG_TRACES_EXPORTER].s, "otlp");
    int metrics_on = !strcmp(v[CM_OTEL_CFG_METRICS_EXPORTER].s, "otlp");
    static const char *const samplers[] = {"always_on",
                                           "always_off",
                                           "traceidratio",
                                           "parentbased_always_on",
                                           "parentbased_always_off",
                                           "parentbased_traceidratio"};
    Agentcore__Otlp__V1__InstrumentationScope sc = AGENTCORE__OTLP__V1__INSTRUMENTATION_SCOPE__INIT;
    struct cm_otel *o;
    size_t i;

    err[0] = '\0';
    if (!traces_on && strcmp(v[CM_OTEL_CFG_TRACES_EXPORTER].s, "none")) {
        snprintf(err, errlen, "OTEL_TRACES_EXPORTER: '%.16s' is not otlp or none",
                 v[CM_OTEL_CFG_TRACES_EXPORTER].s);
        return NULL;
    }
    if (!metrics_on && strcmp(v[CM_OTEL_CFG_METRICS_EXPORTER].s, "none")) {
        snprintf(err, errlen, "OTEL_METRICS_EXPORTER: '%.16s' is not otlp or none",
                 v[CM_OTEL_CFG_METRICS_EXPORTER].s);
        return NULL;
    }
    traces_on &= traces || base;
    metrics_on &= metrics || base;
    if (v[CM_OTEL_CFG_SDK_DISABLED].i || !v[CM_OTEL_CFG_OBSERVABILITY].i ||
        (!traces_on && !metrics_on))
        return NULL;
    if (!(o = calloc(1, sizeof(*o)))) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (hooks)
        o->hooks = *hooks;
    for (i = 0; i < 2; i++) {
        const char *own = i == CM_OTEL_TRACES ? traces : metrics;
        struct dest *d = &o->dst[i];
        int sig;

        if (!(i == CM_OTEL_TRACES ? traces_on : metrics_on))
            continue;
        if (own) {
            cm_strlcpy(d->url, own, sizeof(d->url));
        } else {
            size_t n = strlen(base);

            snprintf(d->url, sizeof(d->url), "%.*s/v1/%s",
                     (int)(n && base[n - 1] == '/' ? n - 1 : n), base,
                     i == CM_OTEL_TRACES ? "traces" : "metrics");
        }
        if (strncmp(d->url, "http://", 7) && strncmp(d->url, "https://", 8)) {
            snprintf(err, errlen, "OTEL_EXPORTER_OTLP_ENDPOINT: '%.200s' is not an http(s) URL",
                     d->url);
            goto fail;
        }
        sig = cm_otel_sigv4_for(d->url, v[CM_OTEL_CFG_SIGV4].s, d->service, d->region);
        if (sig < 0) {
            snprintf(err, errlen, "OTEL_EXPORTER_OTLP_SIGV4: '%.16s' is not auto, true or false",
                     v[CM_OTEL_CFG_SIGV4].s);
            goto fail;
        }
        if (i == CM_OTEL_METRICS && !d->region[0])
            cm_strlcpy(d->service, "monitoring", sizeof(d->service)); /* CloudWatch's name */
        o->sigv4 |= sig;
    }
    o->metric_interval_ms = (int)v[CM_OTEL_CFG_METRIC_INTERVAL].i;
    o->start_ns = cm_otel_now_ns();
    o->sampler = -1;
    for (i = 0; i < sizeof(samplers) / sizeof(samplers[0]); i++)
        if (!strcmp(sampler, samplers[i]))
            o->sampler = (int)i;
    if (o->sampler < 0) {
        snprintf(err, errlen, "OTEL_TRACES_SAMPLER: '%.64s' is not one this runtime knows",
                 sampler);
        goto fail;
    }
    o->ratio = v[CM_OTEL_CFG_SAMPLER_ARG].d;
    o->delay_ms = (int)v[CM_OTEL_CFG_DELAY].i;
    o->max_queue = (int)v[CM_OTEL_CFG_QUEUE].i;
    o->batch = (int)v[CM_OTEL_CFG_BATCH].i;
    o->timeout_ms = (int)v[CM_OTEL_CFG_TIMEOUT].i;
    if (!o->sigv4 || o->hooks.sign) {
        /* This process POSTs: libcurl is loaded now (a process that relays
         * never maps it). With signing, the hook writes Content-Type. */
        pthread_once(&cc.once, curl_load);
        if (!cc.ok) {
            snprintf(err, errlen,
                     "OTLP export needs libcurl (libcurl.so.4), which cannot be loaded");
            goto fail;
        }
        o->headers =
            cc.slist_append(NULL, o->sigv4 ? "Expect:" : "Content-Type: application/x-protobuf");
        if (!o->headers || cm_otel_parse_pairs(v[CM_OTEL_CFG_HEADERS].s, add_header, &o->headers)) {
            snprintf(err, errlen, "OTEL_EXPORTER_OTLP_HEADERS: expected k1=v1,k2=v2");
            goto fail;
        }
        if (!o->sigv4)
            o->headers = cc.slist_append(o->headers, "Expect:");
    }
    if (!(o->resource = pack_resource(v, process, &o->resource_len, err, errlen)))
        goto fail;
    sc.name = SCOPE_NAME;
    sc.version = AC_VERSION;
    o->scope_len = agentcore__otlp__v1__instrumentation_scope__get_packed_size(&sc);
    if (!(o->scope = malloc(o->scope_len ? o->scope_len : 1))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    agentcore__otlp__v1__instrumentation_scope__pack(&sc, o->scope);
    pthread_mutex_init(&o->lock, NULL);
    {
        pthread_condattr_t ca;

        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&o->cond, &ca);
        pthread_condattr_destroy(&ca);
    }
    if (pthread_create(&o->thread, NULL, export_main, o)) {
        snprintf(err, errlen, "cannot start the span exporter thread");
        pthread_mutex_destroy(&o->lock);
        pthread_cond_destroy(&o->cond);
        goto fail;
    }
    return o;
fail:
    if (o->headers)
        cc.slist_free_all(o->headers);
    free(o->resource);
    free(o->scope);
    free(o);
    return NULL;
}

/* ---- sampling ---- */

int cm_otel_sampled(const struct cm_otel *o, const struct cm_trace *t)
{
    return o && o->dst[CM_OTEL_TRACES].url[0] && t && (t->flags & 1);
}

void cm_otel_sample(const struct cm_otel *o, struct cm_trace *t)
{
    static const uint8_t zero[8];
    uint64_t x = 0;
    int i, on;

    if (!o) {
        t->flags &= (uint8_t)~1u;
        return;
    }
    if (o->sampler >= S_PARENT_ON && memcmp(t->parent_id, zero, 8))
        return; /* the caller decided */
    switch (o->sampler) {
    case S_OFF:
    case S_PARENT_OFF:
        on = 0;
        break;
    case S_RATIO:
    case S_PARENT_RATIO:
        /* The spec's rule: the trace id's last 8 bytes against the ratio,
         * so every process decides the same for one trace. */
        for (i = 8; i < 16; i++)
            x = x << 8 | t->trace_id[i];
        on = (double)(x >> 11) < o->ratio * (double)(1ull << 53);
        break;
    default:
        on = 1;
    }
    if (on)
        t->flags |= 1;
    else
        t->flags &= (uint8_t)~1u;
}

/* ---- recording ---- */

/* protobuf-c views of |n| attributes (at most |cap|), pointing into |a|. */
static size_t view_attrs(const struct cm_otel_attr *a, size_t n, size_t cap,
                         Agentcore__Otlp__V1__KeyValue *kv, Agentcore__Otlp__V1__AnyValue *val,
                         Agentcore__Otlp__V1__KeyValue **kvp)
{
    size_t i;

    for (i = 0; i < n && i < cap; i++) {
        agentcore__otlp__v1__key_value__init(&kv[i]);
        agentcore__otlp__v1__any_value__init(&val[i]);
        kv[i].key = (char *)a[i].key;
        if (a[i].s) {
            val[i].value_case = AGENTCORE__OTLP__V1__ANY_VALUE__VALUE_STRING_VALUE;
            val[i].string_value = (char *)a[i].s;
        } else {
            val[i].value_case = AGENTCORE__OTLP__V1__ANY_VALUE__VALUE_INT_VALUE;
            val[i].int_value = a[i].i;
        }
        kv[i].value = &val[i];
        kvp[i] = &kv[i];
    }
    return i;
}

#define EV_ATTRS 16

/* The protobuf-c view of one event; its attributes in |kv|, |val|, |kvp|. */
static void view_event(const struct cm_otel_event *e, Agentcore__Otlp__V1__Span__Event *ev,
                       Agentcore__Otlp__V1__KeyValue *kv, Agentcore__Otlp__V1__AnyValue *val,
                       Agentcore__Otlp__V1__KeyValue **kvp)
{
    agentcore__otlp__v1__span__event__init(ev);
    ev->name = (char *)e->name;
    ev->time_unix_nano = e->time_ns;
    ev->n_attributes = view_attrs(e->attrs, e->n_attrs, EV_ATTRS, kv, val, kvp);
    ev->attributes = kvp;
}

/* A queue entry with room for |len| bytes, its fields set, |data| not. */
static struct queued *queued_new(size_t len, int spans, int whole, int signal)
{
    struct queued *q = malloc(sizeof(*q) + len);

    if (q) {
        q->next = NULL;
        q->len = len;
        q->spans = spans;
        q->whole = whole;
        q->signal = signal;
    }
    return q;
}

/* Packs |s| into a malloc'd queue entry. Everything lives on the stack
 * until it is packed: recording allocates once. */
static struct queued *pack_span(const struct cm_otel_span *s)
{
    Agentcore__Otlp__V1__Span sp = AGENTCORE__OTLP__V1__SPAN__INIT;
    Agentcore__Otlp__V1__Status st = AGENTCORE__OTLP__V1__STATUS__INIT;
    Agentcore__Otlp__V1__KeyValue kv[32], *kvp[32];
    Agentcore__Otlp__V1__AnyValue val[32];
    Agentcore__Otlp__V1__Span__Event ev[CM_OTEL_MAX_EVENTS + 1], *evp[CM_OTEL_MAX_EVENTS + 1];
    Agentcore__Otlp__V1__KeyValue ekv[CM_OTEL_MAX_EVENTS + 1][EV_ATTRS];
    Agentcore__Otlp__V1__KeyValue *ekvp[CM_OTEL_MAX_EVENTS + 1][EV_ATTRS];
    Agentcore__Otlp__V1__AnyValue eval[CM_OTEL_MAX_EVENTS + 1][EV_ATTRS];
    struct cm_otel_attr exc[2];
    struct cm_otel_event exception;
    static const uint8_t zero[8];
    struct queued *q;
    size_t n, len;

    sp.trace_id.data = (uint8_t *)s->trace->trace_id;
    sp.trace_id.len = 16;
    sp.span_id.data = (uint8_t *)s->trace->span_id;
    sp.span_id.len = 8;
    if (memcmp(s->trace->parent_id, zero, 8)) {
        sp.parent_span_id.data = (uint8_t *)s->trace->parent_id;
        sp.parent_span_id.len = 8;
    }
    sp.name = (char *)s->name;
    sp.kind = (Agentcore__Otlp__V1__Span__SpanKind)s->kind;
    sp.start_time_unix_nano = s->start_ns;
    sp.end_time_unix_nano = s->end_ns > s->start_ns ? s->end_ns : s->start_ns;
    sp.flags = s->trace->flags;
    sp.n_attributes = view_attrs(s->attrs, s->n_attrs, 32, kv, val, kvp);
    sp.attributes = kvp;
    for (n = 0; n < s->n_events && n < CM_OTEL_MAX_EVENTS; n++) {
        view_event(&s->events[n], &ev[n], ekv[n], eval[n], ekvp[n]);
        evp[n] = &ev[n];
    }
    if (s->error) {
        const char *msg = s->message ? s->message : "";

        exc[0] = (struct cm_otel_attr){"exception.type", s->error_type ? s->error_type : msg, 0};
        exc[1] = (struct cm_otel_attr){"exception.message", msg, 0};
        exception = (struct cm_otel_event){"exception", sp.end_time_unix_nano, exc, 2};
        view_event(&exception, &ev[n], ekv[n], eval[n], ekvp[n]);
        evp[n] = &ev[n];
        n++;
    }
    sp.n_events = n;
    sp.events = evp;
    st.code = s->error ? AGENTCORE__OTLP__V1__STATUS__STATUS_CODE__STATUS_CODE_ERROR
                       : AGENTCORE__OTLP__V1__STATUS__STATUS_CODE__STATUS_CODE_UNSET;
    st.message = (char *)(s->error && s->message ? s->message : "");
    sp.status = &st;
    len = agentcore__otlp__v1__span__get_packed_size(&sp);
    if ((q = queued_new(len, 1, 0, CM_OTEL_TRACES)))
        agentcore__otlp__v1__span__pack(&sp, q->data);
    return q;
}

/* Appends |q| unless the queue is full (then frees it and counts it
 * dropped). 0 or CM_EBUSY. */
static int enqueue(struct cm_otel *o, struct queued *q)
{
    pthread_mutex_lock(&o->lock);
    if (o->queued + q->spans > o->max_queue || o->queued_bytes + q->len > MAX_QUEUE_BYTES ||
        o->stopping) {
        o->stats.dropped += (uint64_t)q->spans; /* a request is never slowed for a span */
        pthread_mutex_unlock(&o->lock);
        free(q);
        return CM_EBUSY;
    }
    q->at_ms = cm_now_ms();
    if (o->tail)
        o->tail->next = q;
    else
        o->head = q;
    o->tail = q;
    o->queued_bytes += q->len;
    o->queued += q->spans;
    if (o->queued >= o->batch || o->queued == q->spans)
        pthread_cond_signal(&o->cond); /* a full batch, or a first span to time */
    pthread_mutex_unlock(&o->lock);
    return 0;
}

void cm_otel_record(struct cm_otel *o, const struct cm_otel_span *s)
{
    struct queued *q;

    if (!cm_otel_sampled(o, s->trace))
        return;
    if (!(q = pack_span(s))) {
        pthread_mutex_lock(&o->lock);
        o->stats.recorded++;
        o->stats.dropped++;
        pthread_mutex_unlock(&o->lock);
        return;
    }
    pthread_mutex_lock(&o->lock);
    o->stats.recorded++;
    pthread_mutex_unlock(&o->lock);
    enqueue(o, q);
}

int cm_otel_relaying(const struct cm_otel *o)
{
    return o && o->sigv4 && !o->hooks.sign && !o->hooks.relay;
}

static uint8_t *envelope(const struct cm_otel *o, const struct queued *batch, size_t *out_len);

int cm_otel_pack(const struct cm_otel *o, const struct cm_otel_span *s, uint8_t **out, size_t *len)
{
    struct queued *q;

    *out = NULL;
    *len = 0;
    if (!cm_otel_sampled(o, s->trace))
        return 1;
    if (!(q = pack_span(s)))
        return CM_ENOMEM;
    *out = envelope(o, q, len);
    free(q);
    return *out ? 0 : CM_ENOMEM;
}

/* Spans (or metrics) in an export request of |signal|; -1 when it is not
 * one. Checked, not trusted: what we sign and send must be what it says. */
static int count_items(int signal, const uint8_t *req, size_t len)
{
    size_t i, j;
    int n = 0;

    if (signal == CM_OTEL_TRACES) {
        Agentcore__Otlp__V1__ExportTraceServiceRequest *r =
            agentcore__otlp__v1__export_trace_service_request__unpack(NULL, len, req);

        if (!r)
            return -1;
        for (i = 0; i < r->n_resource_spans; i++)
            for (j = 0; j < r->resource_spans[i]->n_scope_spans; j++)
                n += (int)r->resource_spans[i]->scope_spans[j]->n_spans;
        agentcore__otlp__v1__export_trace_service_request__free_unpacked(r, NULL);
    } else {
        Agentcore__Otlp__V1__ExportMetricsServiceRequest *r =
            agentcore__otlp__v1__export_metrics_service_request__unpack(NULL, len, req);

        if (!r)
            return -1;
        for (i = 0; i < r->n_resource_metrics; i++)
            for (j = 0; j < r->resource_metrics[i]->n_scope_metrics; j++)
                n += (int)r->resource_metrics[i]->scope_metrics[j]->n_metrics;
        agentcore__otlp__v1__export_metrics_service_request__free_unpacked(r, NULL);
    }
    return n;
}

/* A whole request of |signal| on the queue (spans counted for traces). */
static int enqueue_whole(struct cm_otel *o, int signal, const uint8_t *req, size_t len, int spans)
{
    struct queued *q = queued_new(len, signal == CM_OTEL_TRACES ? spans : 0, 1, signal);

    if (!q)
        return CM_ENOMEM;
    memcpy(q->data, req, len);
    if (signal == CM_OTEL_TRACES) {
        pthread_mutex_lock(&o->lock);
        o->stats.recorded += (uint64_t)spans;
        pthread_mutex_unlock(&o->lock);
    }
    return enqueue(o, q);
}

int cm_otel_forward(struct cm_otel *o, int signal, const uint8_t *req, size_t len)
{
    int n;

    if (!o || (signal != CM_OTEL_TRACES && signal != CM_OTEL_METRICS) || !o->dst[signal].url[0])
        return CM_ENOENT;
    if ((n = count_items(signal, req, len)) <= 0)
        return CM_EINVAL;
    return enqueue_whole(o, signal, req, len, n);
}

void cm_otel_stats(struct cm_otel *o, struct cm_otel_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!o)
        return;
    pthread_mutex_lock(&o->lock);
    *out = o->stats;
    pthread_mutex_unlock(&o->lock);
}

int64_t cm_otel_lost(void *o)
{
    struct cm_otel_stats st;

    cm_otel_stats(o, &st);
    return (int64_t)(st.dropped + st.failed);
}

/* ---- export ---- */

/* Export{[1] Resource{[1] resource, [2] Scope{[1] scope, [2] item...}}}:
 * the same field numbers for traces (ResourceSpans, ScopeSpans, spans) and
 * metrics (ResourceMetrics, ScopeMetrics, metrics). The items are |batch|'s
 * packed spans, or |inner| (|inner_len| bytes, already framed as field 2). */
static uint8_t *wrap(const struct cm_otel *o, const struct queued *batch, const uint8_t *inner,
                     size_t inner_len, size_t *out_len)
{
    const struct queued *q;
    size_t spans = inner_len, ss, rs, total, pos = 0;
    uint8_t *b;

    for (q = batch; q; q = q->next)
        spans += cm_pb_field_len(2, q->len);
    ss = cm_pb_field_len(1, o->scope_len) + spans;
    rs = cm_pb_field_len(1, o->resource_len) + cm_pb_field_len(2, ss);
    total = cm_pb_field_len(1, rs);
    if (!(b = malloc(total)))
        return NULL;
    pos += cm_pb_field_head(b + pos, 1, rs);
    pos += cm_pb_field_head(b + pos, 1, o->resource_len);
    memcpy(b + pos, o->resource, o->resource_len);
    pos += o->resource_len;
    pos += cm_pb_field_head(b + pos, 2, ss);
    pos += cm_pb_field_head(b + pos, 1, o->scope_len);
    memcpy(b + pos, o->scope, o->scope_len);
    pos += o->scope_len;
    for (q = batch; q; q = q->next) {
        pos += cm_pb_field_head(b + pos, 2, q->len);
        memcpy(b + pos, q->data, q->len);
        pos += q->len;
    }
    if (inner_len) {
        memcpy(b + pos, inner, inner_len);
        pos += inner_len;
    }
    *out_len = pos;
    return b;
}

static uint8_t *envelope(const struct cm_otel *o, const struct queued *batch, size_t *out_len)
{
    return wrap(o, batch, NULL, 0, out_len);
}

/* This process's metrics now, as an ExportMetricsServiceRequest; NULL when
 * nothing was measured yet (or out of memory). */
static uint8_t *metrics_request(struct cm_otel *o, size_t *len)
{
    struct cm_buf inner;
    uint8_t *req = NULL;

    cm_buf_init(&inner, 16u << 20);
    if (o->collect && o->collect(o->collect_ud, o->start_ns, cm_otel_now_ns(), &inner) == 0 &&
        inner.len)
        req = wrap(o, NULL, (const uint8_t *)inner.data, inner.len, len);
    cm_buf_free(&inner);
    return req;
}

void cm_otel_set_metrics(struct cm_otel *o,
                         int (*collect)(void *ud, uint64_t start_ns, uint64_t now_ns,
                                        struct cm_buf *out),
                         void *ud)
{
    if (!o)
        return;
    pthread_mutex_lock(&o->lock);
    o->collect = collect;
    o->collect_ud = ud;
    /* A process that sends its metrics with its answers sends them with the
     * first; the exporter thread waits one interval, as the SDKs do. */
    o->next_metrics_ms = cm_otel_relaying(o) ? 0 : cm_now_ms() + (uint64_t)o->metric_interval_ms;
    pthread_cond_signal(&o->cond); /* the thread now has a clock to keep */
    pthread_mutex_unlock(&o->lock);
}

int cm_otel_metrics_on(const struct cm_otel *o)
{
    return o && o->dst[CM_OTEL_METRICS].url[0];
}

int cm_otel_pack_metrics(struct cm_otel *o, uint8_t **out, size_t *len)
{
    uint64_t now = cm_now_ms();
    int due;

    *out = NULL;
    *len = 0;
    if (!cm_otel_metrics_on(o))
        return 1;
    pthread_mutex_lock(&o->lock);
    due = o->collect && !o->stopped && now >= o->next_metrics_ms;
    if (due)
        o->next_metrics_ms = now + (uint64_t)o->metric_interval_ms;
    pthread_mutex_unlock(&o->lock);
    if (!due)
        return 1;
    *out = metrics_request(o, len);
    return *out ? 0 : 1;
}

static size_t discard(char *p, size_t sz, size_t n, void *ud)
{
    (void)p, (void)ud;
    return sz * n;
}

/* One POST: the HTTP status, or 0 when the collector could not be reached
 * (or, signing, -1 when there was nothing to sign with). */
static long post(struct cm_otel *o, CURL *h, int signal, const uint8_t *body, size_t len)
{
    const struct dest *d = &o->dst[signal];
    long status = 0, timeout = o->timeout_ms;
    struct curl_slist *hdrs = o->headers, *signed_hdrs = NULL, *l;

    pthread_mutex_lock(&o->lock);
    if (o->stopping) { /* the flush has a deadline of its own */
        uint64_t now = cm_now_ms(), left = o->flush_until_ms > now ? o->flush_until_ms - now : 1;

        if ((uint64_t)timeout > left)
            timeout = (long)left;
    }
    pthread_mutex_unlock(&o->lock);
    if (o->sigv4) {
        /* Signed anew for each try: the signature dates the request. The
         * configured headers follow, unsigned (AWS checks only what the
         * signature names). */
        signed_hdrs = o->hooks.sign(o->hooks.ud, d->url, d->service,
                                    d->region[0] ? d->region : NULL, body, len);
        if (!signed_hdrs)
            return -1;
        for (l = o->headers; l; l = l->next) {
            struct curl_slist *n = cc.slist_append(signed_hdrs, l->data);

            if (!n) {
                o->hooks.sign_free(signed_hdrs);
                return -1;
            }
            signed_hdrs = n;
        }
        hdrs = signed_hdrs;
    }
    cc.easy_reset(h);
    cc.easy_setopt(h, CURLOPT_URL, d->url);
    cc.easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    cc.easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    cc.easy_setopt(h, CURLOPT_POSTFIELDS, body);
    cc.easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    cc.easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout);
    cc.easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout < 2000 ? timeout : 2000L);
    cc.easy_setopt(h, CURLOPT_USERAGENT, "agentcore-c/" AC_VERSION);
    cc.easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    if (cc.easy_perform(h) == CURLE_OK)
        cc.easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (signed_hdrs) {
        cc.easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
        o->hooks.sign_free(signed_hdrs);
    }
    return status;
}

/* One try at sending |body| where this process sends: an HTTP-like status
 * (2xx sent; 503 try again; 4xx never) or 0 (unreachable, try again). */
static long send_once(struct cm_otel *o, CURL *h, int signal, const uint8_t *body, size_t len,
                      const char **why)
{
    long status;

    if (o->sigv4 && !o->hooks.sign) {
        int rc = o->hooks.relay ? o->hooks.relay(o->hooks.ud, signal, body, len) : -1;

        *why = o->hooks.relay ? "the agent-worker did not take them"
                              : "this process cannot sign and has no agent-worker to relay to";
        return rc == 0 ? 200 : rc > 0 ? 503 : 400;
    }
    if (!h) {
        *why = "no HTTP handle";
        return 400;
    }
    status = post(o, h, signal, body, len);
    *why = status < 0   ? "no credentials to sign them with"
           : status > 0 ? "the collector refused them"
                        : "the collector could not be reached";
    return status < 0 ? 400 : status;
}

/* Waits |ms| on the condition (stop wakes it). Under the lock. */
static void nap_locked(struct cm_otel *o, uint64_t ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&o->cond, &o->lock, &ts);
}

/* Sends |batch| (3 tries on 429, 5xx or no answer), then frees it. A
 * forwarded request (|whole|) is a batch of its own, sent as it is. */
static void export_batch(struct cm_otel *o, CURL *h, struct queued *batch, int n)
{
    size_t len = batch->whole ? batch->len : 0;
    uint8_t *body = batch->whole ? NULL : envelope(o, batch, &len);
    const uint8_t *send = batch->whole ? batch->data : body;
    const char *why = "out of memory";
    int signal = batch->whole ? batch->signal : CM_OTEL_TRACES;
    long status = 0;
    int attempt, ok = 0;
    char st[24];

    for (attempt = 1; send && attempt <= 3; attempt++) {
        status = send_once(o, h, signal, send, len, &why);
        ok = status >= 200 && status < 300;
        if (ok || (status && status != 429 && status < 500))
            break; /* done, or refused for good (4xx) */
        pthread_mutex_lock(&o->lock);
        if (o->stopping && cm_now_ms() >= o->flush_until_ms) {
            pthread_mutex_unlock(&o->lock);
            break;
        }
        if (attempt < 3)
            nap_locked(o, (uint64_t)500 << attempt); /* 1 s, then 2 s */
        pthread_mutex_unlock(&o->lock);
    }
    free(body);
    while (batch) {
        struct queued *next = batch->next;

        free(batch);
        batch = next;
    }
    pthread_mutex_lock(&o->lock);
    if (signal == CM_OTEL_METRICS) {
        if (ok)
            o->stats.metric_exports++;
        else
            o->stats.metric_failures++;
    } else if (ok) {
        o->stats.exported += (uint64_t)n;
        o->stats.exports++;
    } else {
        o->stats.failed += (uint64_t)n;
    }
    pthread_mutex_unlock(&o->lock);
    if (!ok) {
        const char *kv[] = {"status", st, NULL};

        snprintf(st, sizeof(st), "%ld", status);
        if (signal == CM_OTEL_METRICS)
            CM_LOGF(CM_LOG_WARN, kv, "metrics export failed (%s)", why);
        else
            CM_LOGF(CM_LOG_WARN, kv, "span export failed: %d spans dropped (%s)", n, why);
    }
}

/* This thread collects and sends the metrics (not a process that hands
 * them back with its answers). Under the lock. */
static int collects_locked(const struct cm_otel *o)
{
    return o->collect && o->dst[CM_OTEL_METRICS].url[0] &&
           (!o->sigv4 || o->hooks.sign || o->hooks.relay);
}

/* Collects the metrics and sends them at once (not queued behind spans). */
static void export_metrics(struct cm_otel *o, CURL *h)
{
    size_t len = 0;
    uint8_t *req = metrics_request(o, &len);
    struct queued *q = req ? queued_new(len, 0, 1, CM_OTEL_METRICS) : NULL;

    if (q) {
        memcpy(q->data, req, len);
        export_batch(o, h, q, 0); /* frees |q| */
    }
    free(req);
}

static void *export_main(void *p)
{
    struct cm_otel *o = p;
    CURL *h = o->headers ? cc.easy_init() : NULL; /* NULL when this process relays */
    int last_metrics_sent = 0;

    pthread_mutex_lock(&o->lock);
    for (;;) {
        struct queued *batch, *last;
        int n, metrics_due = 0;

        /* Sleep until a batch is full, the oldest span has waited long
         * enough, the metrics are due, or we stop; with nothing queued and
         * no metrics to send, without a timeout. */
        while (!o->stopping) {
            uint64_t now = cm_now_ms(), wake = UINT64_MAX;

            if (o->queued >= o->batch || (o->head && now >= o->head->at_ms + (uint64_t)o->delay_ms))
                break;
            if (collects_locked(o) && now >= o->next_metrics_ms) {
                metrics_due = 1;
                break;
            }
            if (o->head)
                wake = o->head->at_ms + (uint64_t)o->delay_ms;
            if (collects_locked(o) && o->next_metrics_ms < wake)
                wake = o->next_metrics_ms;
            if (wake == UINT64_MAX)
                pthread_cond_wait(&o->cond, &o->lock);
            else
                nap_locked(o, wake - now);
        }
        if (o->stopping && !last_metrics_sent) {
            /* What was measured last, before the process goes. */
            last_metrics_sent = 1;
            metrics_due = collects_locked(o);
        }
        if (metrics_due) {
            o->next_metrics_ms = cm_now_ms() + (uint64_t)o->metric_interval_ms;
            pthread_mutex_unlock(&o->lock);
            export_metrics(o, h);
            pthread_mutex_lock(&o->lock);
            continue;
        }
        if (!o->head)
            break; /* stopping, everything sent */
        if (o->stopping && cm_now_ms() >= o->flush_until_ms) {
            for (batch = o->head; batch; batch = last) {
                last = batch->next;
                o->stats.dropped += (uint64_t)batch->spans;
                free(batch);
            }
            o->head = o->tail = NULL;
            o->queued = 0;
            o->queued_bytes = 0;
            break;
        }
        batch = last = o->head;
        n = batch->spans;
        o->queued_bytes -= batch->len;
        if (!batch->whole)
            while (n < o->batch && last->next && !last->next->whole) {
                last = last->next;
                o->queued_bytes -= last->len;
                n++;
            }
        o->head = last->next;
        if (!o->head)
            o->tail = NULL;
        last->next = NULL;
        o->queued -= n;
        pthread_mutex_unlock(&o->lock);
        export_batch(o, h, batch, n);
        pthread_mutex_lock(&o->lock);
    }
    pthread_mutex_unlock(&o->lock);
    if (h)
        cc.easy_cleanup(h);
    if (o->hooks.thread_done)
        o->hooks.thread_done();
    return NULL;
}

void cm_otel_stop(struct cm_otel *o, int flush_ms)
{
    int joined;

    if (!o)
        return;
    pthread_mutex_lock(&o->lock);
    joined = o->stopped;
    o->stopping = o->stopped = 1;
    o->flush_until_ms = cm_now_ms() + (uint64_t)(flush_ms > 0 ? flush_ms : 0);
    pthread_cond_signal(&o->cond);
    pthread_mutex_unlock(&o->lock);
    if (!joined)
        pthread_join(o->thread, NULL);
}

void cm_otel_free(struct cm_otel *o, int flush_ms)
{
    if (!o)
        return;
    cm_otel_stop(o, flush_ms);
    pthread_mutex_destroy(&o->lock);
    pthread_cond_destroy(&o->cond);
    if (o->headers)
        cc.slist_free_all(o->headers);
    free(o->resource);
    free(o->scope);
    free(o);
}
