/* Metric families, their series, the text format, and the /metrics server. */
#include "cm_metrics.h"
#include "cm_err.h"
#include "cm_pb.h"
#include "cm_util.h"

#include "otlp_metrics.pb-c.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* libmicrohttpd is loaded when an endpoint is asked for: a process without
 * METRICS_LISTEN does not map it (nor the GnuTLS it brings, ~2.5 MiB of RSS
 * in the tool-worker). */

static struct {
    pthread_once_t once;
    int ok;
    struct MHD_Daemon *(*start_daemon)(unsigned int flags, uint16_t port,
                                       MHD_AcceptPolicyCallback apc, void *apc_cls,
                                       MHD_AccessHandlerCallback dh, void *dh_cls, ...);
    void (*stop_daemon)(struct MHD_Daemon *d);
    const union MHD_DaemonInfo *(*get_daemon_info)(struct MHD_Daemon *d,
                                                   enum MHD_DaemonInfoType type, ...);
    struct MHD_Response *(*create_response_from_buffer)(size_t size, void *buffer,
                                                        enum MHD_ResponseMemoryMode mode);
    enum MHD_Result (*add_response_header)(struct MHD_Response *r, const char *header,
                                           const char *content);
    enum MHD_Result (*queue_response)(struct MHD_Connection *c, unsigned int status,
                                      struct MHD_Response *r);
    void (*destroy_response)(struct MHD_Response *r);
} mhd = {PTHREAD_ONCE_INIT};

#define MAX_FAMILIES 48
#define MAX_FN_GAUGES 16

/* Seconds: from a cheap tool call to a long model answer. */
static const double buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                 1,     2.5,  5,     10,   30,  60,   120};
#define NBUCKETS (sizeof(buckets) / sizeof(buckets[0]))

struct cm_series {
    char labels[512];                        /* rendered: a="x",b="y" */
    char values[CM_METRICS_MAX_LABELS][128]; /* the same, raw (OTLP attributes) */
    atomic_int_least64_t value;              /* counter / gauge */
    atomic_uint_least64_t count;             /* histogram */
    atomic_uint_least64_t sum_us;            /* histogram, microseconds */
    atomic_uint_least64_t bucket[NBUCKETS];
};

struct family {
    char name[96], help[256];
    enum cm_metric_type type;
    const char *labels[CM_METRICS_MAX_LABELS];
    int nlabels;
    pthread_mutex_t lock; /* the series array */
    struct cm_series *series[CM_METRICS_MAX_SERIES];
    int nseries;
};

struct fn_gauge {
    char name[96], help[256];
    int64_t (*fn)(void *ud);
    void *ud;
};

struct cm_metrics {
    pthread_mutex_t lock; /* the families array */
    struct family fam[MAX_FAMILIES];
    int nfam;
    struct fn_gauge fns[MAX_FN_GAUGES];
    int nfns;
    struct MHD_Daemon *daemon;
};

struct cm_metrics *cm_metrics_new(void)
{
    struct cm_metrics *m = calloc(1, sizeof(*m));

    if (m)
        pthread_mutex_init(&m->lock, NULL);
    return m;
}

void cm_metrics_free(struct cm_metrics *m)
{
    int f, i;

    if (!m)
        return;
    if (m->daemon)
        mhd.stop_daemon(m->daemon);
    for (f = 0; f < m->nfam; f++) {
        for (i = 0; i < m->fam[f].nseries; i++)
            free(m->fam[f].series[i]);
        pthread_mutex_destroy(&m->fam[f].lock);
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static int name_ok(const char *s)
{
    if (!s || !*s || (*s >= '0' && *s <= '9'))
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == ':'))
            return 0;
    return 1;
}

int cm_metrics_family(struct cm_metrics *m, const char *name, const char *help,
                      enum cm_metric_type type, const char *const *labels)
{
    struct family *f;
    int idx;

    if (!m || !name_ok(name))
        return -1;
    pthread_mutex_lock(&m->lock);
    if (m->nfam == MAX_FAMILIES) {
        pthread_mutex_unlock(&m->lock);
        return -1;
    }
    idx = m->nfam;
    f = &m->fam[idx];
    cm_strlcpy(f->name, name, sizeof(f->name));
    cm_strlcpy(f->help, help ? help : "", sizeof(f->help));
    f->type = type;
    for (f->nlabels = 0; labels && labels[f->nlabels] && f->nlabels < CM_METRICS_MAX_LABELS;
         f->nlabels++)
        f->labels[f->nlabels] = labels[f->nlabels]; /* static strings */
    pthread_mutex_init(&f->lock, NULL);
    m->nfam++;
    pthread_mutex_unlock(&m->lock);
    return idx;
}

/* Appends |v| escaped as a label value (\\, \", \n), cut to fit. */
static void put_value(char *out, size_t cap, size_t *pos, const char *v)
{
    for (; *v && *pos + 3 < cap; v++) {
        if (*v == '\\' || *v == '"') {
            out[(*pos)++] = '\\';
            out[(*pos)++] = *v;
        } else if (*v == '\n') {
            out[(*pos)++] = '\\';
            out[(*pos)++] = 'n';
        } else {
            out[(*pos)++] = *v;
        }
    }
    out[*pos] = '\0';
}

static void render_labels(const struct family *f, const char *const *values, char *out, size_t cap)
{
    size_t pos = 0;
    int i;

    out[0] = '\0';
    for (i = 0; i < f->nlabels; i++) {
        int n = snprintf(out + pos, cap - pos, "%s%s=\"", i ? "," : "", f->labels[i]);

        if (n < 0 || (size_t)n >= cap - pos)
            break;
        pos += (size_t)n;
        put_value(out, cap, &pos, values && values[i] ? values[i] : "");
        if (pos + 2 < cap) {
            out[pos++] = '"';
            out[pos] = '\0';
        }
    }
}

struct cm_series *cm_metrics_series(struct cm_metrics *m, int fi, const char *const *values)
{
    struct family *f;
    struct cm_series *s = NULL;
    char labels[512];
    int i;

    if (!m || fi < 0 || fi >= m->nfam)
        return NULL;
    f = &m->fam[fi];
    render_labels(f, values, labels, sizeof(labels));
    pthread_mutex_lock(&f->lock);
    for (i = 0; i < f->nseries && !s; i++)
        if (!strcmp(f->series[i]->labels, labels))
            s = f->series[i];
    if (!s && f->nseries >= CM_METRICS_MAX_SERIES - 1) {
        /* The last place is for everything past the cap. */
        static const char *const other[CM_METRICS_MAX_LABELS] = {"other", "other", "other"};

        values = other;
        render_labels(f, other, labels, sizeof(labels));
    }
    for (i = 0; i < f->nseries && !s; i++)
        if (!strcmp(f->series[i]->labels, labels))
            s = f->series[i];
    if (!s && f->nseries < CM_METRICS_MAX_SERIES && (s = calloc(1, sizeof(*s)))) {
        cm_strlcpy(s->labels, labels, sizeof(s->labels));
        for (i = 0; i < f->nlabels; i++)
            cm_strlcpy(s->values[i], values && values[i] ? values[i] : "", sizeof(s->values[i]));
        f->series[f->nseries++] = s;
    }
    pthread_mutex_unlock(&f->lock);
    return s;
}

void cm_series_add(struct cm_series *s, uint64_t n)
{
    if (s)
        atomic_fetch_add(&s->value, (int64_t)n);
}

void cm_series_set(struct cm_series *s, int64_t v)
{
    if (s)
        atomic_store(&s->value, v);
}

void cm_series_inc(struct cm_series *s, int64_t d)
{
    if (s)
        atomic_fetch_add(&s->value, d);
}

void cm_series_observe(struct cm_series *s, double seconds)
{
    size_t i;

    if (!s)
        return;
    if (seconds < 0)
        seconds = 0;
    atomic_fetch_add(&s->count, 1);
    atomic_fetch_add(&s->sum_us, (uint64_t)(seconds * 1e6));
    for (i = 0; i < NBUCKETS; i++)
        if (seconds <= buckets[i]) {
            atomic_fetch_add(&s->bucket[i], 1); /* cumulated when shown */
            break;
        }
}

void cm_metrics_count(struct cm_metrics *m, int f, const char *const *values, uint64_t n)
{
    if (m)
        cm_series_add(cm_metrics_series(m, f, values), n);
}

void cm_metrics_observe(struct cm_metrics *m, int f, const char *const *values, double seconds)
{
    if (m)
        cm_series_observe(cm_metrics_series(m, f, values), seconds);
}

void cm_metrics_gauge(struct cm_metrics *m, int f, const char *const *values, int64_t d)
{
    if (m)
        cm_series_inc(cm_metrics_series(m, f, values), d);
}

int cm_metrics_gauge_fn(struct cm_metrics *m, const char *name, const char *help,
                        int64_t (*fn)(void *ud), void *ud)
{
    struct fn_gauge *g;

    if (!m || !name_ok(name) || !fn)
        return -1;
    pthread_mutex_lock(&m->lock);
    if (m->nfns == MAX_FN_GAUGES) {
        pthread_mutex_unlock(&m->lock);
        return -1;
    }
    g = &m->fns[m->nfns++];
    cm_strlcpy(g->name, name, sizeof(g->name));
    cm_strlcpy(g->help, help ? help : "", sizeof(g->help));
    g->fn = fn;
    g->ud = ud;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

static const char *type_name(enum cm_metric_type t)
{
    return t == CM_COUNTER ? "counter" : t == CM_GAUGE ? "gauge" : "histogram";
}

/* "name{labels}" or "name{labels,extra}" or "name{extra}" or "name". */
static int series_name(struct cm_buf *out, const char *name, const char *suffix, const char *labels,
                       const char *extra)
{
    int both = labels[0] && extra;

    if (!labels[0] && !extra)
        return cm_buf_printf(out, "%s%s", name, suffix);
    return cm_buf_printf(out, "%s%s{%s%s%s}", name, suffix, labels, both ? "," : "",
                         extra ? extra : "");
}

int cm_metrics_render(struct cm_metrics *m, struct cm_buf *out)
{
    int f, i, nfam, nfns, rc = 0;
    size_t b;

    pthread_mutex_lock(&m->lock);
    nfam = m->nfam;
    nfns = m->nfns;
    pthread_mutex_unlock(&m->lock);
    for (f = 0; f < nfam && !rc; f++) {
        struct family *fa = &m->fam[f];
        int n;

        pthread_mutex_lock(&fa->lock);
        n = fa->nseries;
        pthread_mutex_unlock(&fa->lock);
        rc = cm_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", fa->name, fa->help, fa->name,
                           type_name(fa->type));
        for (i = 0; i < n && !rc; i++) {
            struct cm_series *s = fa->series[i]; /* never moved or freed before the end */

            if (fa->type != CM_HISTOGRAM) {
                rc = series_name(out, fa->name, "", s->labels, NULL) ||
                     cm_buf_printf(out, " %lld\n", (long long)atomic_load(&s->value));
                continue;
            }
            {
                uint64_t cum = 0;
                char le[32];

                for (b = 0; b < NBUCKETS && !rc; b++) {
                    cum += atomic_load(&s->bucket[b]);
                    snprintf(le, sizeof(le), "le=\"%g\"", buckets[b]);
                    rc = series_name(out, fa->name, "_bucket", s->labels, le) ||
                         cm_buf_printf(out, " %llu\n", (unsigned long long)cum);
                }
                if (!rc)
                    rc = series_name(out, fa->name, "_bucket", s->labels, "le=\"+Inf\"") ||
                         cm_buf_printf(out, " %llu\n", (unsigned long long)atomic_load(&s->count));
                if (!rc)
                    rc = series_name(out, fa->name, "_sum", s->labels, NULL) ||
                         cm_buf_printf(out, " %.6f\n", (double)atomic_load(&s->sum_us) / 1e6);
                if (!rc)
                    rc = series_name(out, fa->name, "_count", s->labels, NULL) ||
                         cm_buf_printf(out, " %llu\n", (unsigned long long)atomic_load(&s->count));
            }
        }
    }
    for (f = 0; f < nfns && !rc; f++)
        rc = cm_buf_printf(out, "# HELP %s %s\n# TYPE %s gauge\n%s %lld\n", m->fns[f].name,
                           m->fns[f].help, m->fns[f].name, m->fns[f].name,
                           (long long)m->fns[f].fn(m->fns[f].ud));
    return rc;
}

/* ---- OTLP ---- */

/* protobuf-c appends straight into the cm_buf: no copy of a packed Metric. */
struct sink {
    ProtobufCBuffer base;
    struct cm_buf *out;
    int rc;
};

static void sink_append(ProtobufCBuffer *b, size_t len, const uint8_t *data)
{
    struct sink *k = (struct sink *)b;

    if (!k->rc)
        k->rc = cm_buf_add(k->out, data, len);
}

/* Appends one Metric as field 2 of a ScopeMetrics: its key, length, bytes. */
static int put_metric(struct cm_buf *out, const Agentcore__Otlp__V1__Metric *mt)
{
    struct sink k = {{sink_append}, out, 0};
    uint8_t head[CM_PB_HEAD_MAX];

    k.rc = cm_buf_add(out, head,
                      cm_pb_field_head(head, 2, agentcore__otlp__v1__metric__get_packed_size(mt)));
    if (!k.rc)
        agentcore__otlp__v1__metric__pack_to_buffer(mt, &k.base);
    return k.rc;
}

int cm_metrics_otlp(void *mp, uint64_t start_ns, uint64_t now_ns, struct cm_buf *out)
{
    struct cm_metrics *m = mp;
    Agentcore__Otlp__V1__KeyValue kv[CM_METRICS_MAX_SERIES][CM_METRICS_MAX_LABELS];
    Agentcore__Otlp__V1__KeyValue *kvp[CM_METRICS_MAX_SERIES][CM_METRICS_MAX_LABELS];
    Agentcore__Otlp__V1__AnyValue av[CM_METRICS_MAX_SERIES][CM_METRICS_MAX_LABELS];
    Agentcore__Otlp__V1__NumberDataPoint np[CM_METRICS_MAX_SERIES], *npp[CM_METRICS_MAX_SERIES];
    Agentcore__Otlp__V1__HistogramDataPoint hp[CM_METRICS_MAX_SERIES], *hpp[CM_METRICS_MAX_SERIES];
    uint64_t counts[CM_METRICS_MAX_SERIES][NBUCKETS + 1];
    int f, i, j, nfam, nfns, rc = 0;

    if (!m)
        return 0;
    pthread_mutex_lock(&m->lock);
    nfam = m->nfam;
    nfns = m->nfns;
    pthread_mutex_unlock(&m->lock);
    for (f = 0; f < nfam && !rc; f++) {
        struct family *fa = &m->fam[f];
        Agentcore__Otlp__V1__Metric mt = AGENTCORE__OTLP__V1__METRIC__INIT;
        Agentcore__Otlp__V1__Sum sum = AGENTCORE__OTLP__V1__SUM__INIT;
        Agentcore__Otlp__V1__Gauge gauge = AGENTCORE__OTLP__V1__GAUGE__INIT;
        Agentcore__Otlp__V1__Histogram hist = AGENTCORE__OTLP__V1__HISTOGRAM__INIT;
        int n;

        pthread_mutex_lock(&fa->lock);
        n = fa->nseries;
        pthread_mutex_unlock(&fa->lock);
        if (!n)
            continue; /* nothing happened yet: no point to send */
        for (i = 0; i < n; i++) {
            struct cm_series *s = fa->series[i]; /* never moved or freed before the end */

            for (j = 0; j < fa->nlabels; j++) {
                agentcore__otlp__v1__key_value__init(&kv[i][j]);
                agentcore__otlp__v1__any_value__init(&av[i][j]);
                av[i][j].value_case = AGENTCORE__OTLP__V1__ANY_VALUE__VALUE_STRING_VALUE;
                av[i][j].string_value = s->values[j];
                kv[i][j].key = (char *)fa->labels[j];
                kv[i][j].value = &av[i][j];
                kvp[i][j] = &kv[i][j];
            }
            if (fa->type == CM_HISTOGRAM) {
                uint64_t total = atomic_load(&s->count), in_buckets = 0;
                size_t b;

                agentcore__otlp__v1__histogram_data_point__init(&hp[i]);
                hp[i].n_attributes = (size_t)fa->nlabels;
                hp[i].attributes = kvp[i];
                hp[i].start_time_unix_nano = start_ns;
                hp[i].time_unix_nano = now_ns;
                for (b = 0; b < NBUCKETS; b++)
                    in_buckets += counts[i][b] = atomic_load(&s->bucket[b]);
                /* the count is read first: an observation racing this read
                 * lands in +Inf rather than making the buckets outgrow it */
                counts[i][NBUCKETS] = total > in_buckets ? total - in_buckets : 0;
                hp[i].count = in_buckets + counts[i][NBUCKETS];
                hp[i].sum = (double)atomic_load(&s->sum_us) / 1e6;
                hp[i].n_bucket_counts = NBUCKETS + 1;
                hp[i].bucket_counts = counts[i];
                hp[i].n_explicit_bounds = NBUCKETS;
                hp[i].explicit_bounds = (double *)buckets;
                hpp[i] = &hp[i];
            } else {
                agentcore__otlp__v1__number_data_point__init(&np[i]);
                np[i].n_attributes = (size_t)fa->nlabels;
                np[i].attributes = kvp[i];
                np[i].start_time_unix_nano = start_ns;
                np[i].time_unix_nano = now_ns;
                np[i].value_case = AGENTCORE__OTLP__V1__NUMBER_DATA_POINT__VALUE_AS_INT;
                np[i].as_int = (int64_t)atomic_load(&s->value);
                npp[i] = &np[i];
            }
        }
        mt.name = fa->name;
        mt.description = fa->help;
        if (fa->type == CM_HISTOGRAM) {
            mt.unit = "s";
            mt.data_case = AGENTCORE__OTLP__V1__METRIC__DATA_HISTOGRAM;
            hist.n_data_points = (size_t)n;
            hist.data_points = hpp;
            hist.aggregation_temporality =
                AGENTCORE__OTLP__V1__AGGREGATION_TEMPORALITY__AGGREGATION_TEMPORALITY_CUMULATIVE;
            mt.histogram = &hist;
        } else if (fa->type == CM_COUNTER) {
            mt.data_case = AGENTCORE__OTLP__V1__METRIC__DATA_SUM;
            sum.n_data_points = (size_t)n;
            sum.data_points = npp;
            sum.aggregation_temporality =
                AGENTCORE__OTLP__V1__AGGREGATION_TEMPORALITY__AGGREGATION_TEMPORALITY_CUMULATIVE;
            sum.is_monotonic = 1;
            mt.sum = &sum;
        } else {
            mt.data_case = AGENTCORE__OTLP__V1__METRIC__DATA_GAUGE;
            gauge.n_data_points = (size_t)n;
            gauge.data_points = npp;
            mt.gauge = &gauge;
        }
        rc = put_metric(out, &mt);
    }
    for (f = 0; f < nfns && !rc; f++) {
        Agentcore__Otlp__V1__Metric mt = AGENTCORE__OTLP__V1__METRIC__INIT;
        Agentcore__Otlp__V1__Gauge gauge = AGENTCORE__OTLP__V1__GAUGE__INIT;

        agentcore__otlp__v1__number_data_point__init(&np[0]);
        np[0].start_time_unix_nano = start_ns;
        np[0].time_unix_nano = now_ns;
        np[0].value_case = AGENTCORE__OTLP__V1__NUMBER_DATA_POINT__VALUE_AS_INT;
        np[0].as_int = m->fns[f].fn(m->fns[f].ud);
        npp[0] = &np[0];
        gauge.n_data_points = 1;
        gauge.data_points = npp;
        mt.name = m->fns[f].name;
        mt.description = m->fns[f].help;
        mt.data_case = AGENTCORE__OTLP__V1__METRIC__DATA_GAUGE;
        mt.gauge = &gauge;
        rc = put_metric(out, &mt);
    }
    return rc;
}

/* ---- GET /metrics ---- */

static void mhd_load(void)
{
    void *lib = dlopen("libmicrohttpd.so.12", RTLD_NOW | RTLD_LOCAL);

    if (!lib)
        return;
    *(void **)&mhd.start_daemon = dlsym(lib, "MHD_start_daemon");
    *(void **)&mhd.stop_daemon = dlsym(lib, "MHD_stop_daemon");
    *(void **)&mhd.get_daemon_info = dlsym(lib, "MHD_get_daemon_info");
    *(void **)&mhd.create_response_from_buffer = dlsym(lib, "MHD_create_response_from_buffer");
    *(void **)&mhd.add_response_header = dlsym(lib, "MHD_add_response_header");
    *(void **)&mhd.queue_response = dlsym(lib, "MHD_queue_response");
    *(void **)&mhd.destroy_response = dlsym(lib, "MHD_destroy_response");
    mhd.ok = mhd.start_daemon && mhd.stop_daemon && mhd.get_daemon_info &&
             mhd.create_response_from_buffer && mhd.add_response_header && mhd.queue_response &&
             mhd.destroy_response;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *size, void **con_cls)
{
    struct cm_metrics *m = cls;
    struct MHD_Response *r;
    struct cm_buf b;
    enum MHD_Result ret;
    int status = 200;

    (void)version, (void)data, (void)con_cls;
    if (*size)
        return MHD_NO; /* no body is expected */
    cm_buf_init(&b, 16u << 20);
    if (strcmp(url, "/metrics"))
        status = 404, cm_buf_addstr(&b, "{\"error\":\"Not found\"}\n");
    else if (strcmp(method, "GET"))
        status = 405, cm_buf_addstr(&b, "{\"error\":\"Method not allowed\"}\n");
    else if (cm_metrics_render(m, &b))
        status = 500, cm_buf_reset(&b), cm_buf_addstr(&b, "{\"error\":\"Internal error\"}\n");
    r = mhd.create_response_from_buffer(b.len, b.data ? b.data : (char *)"", MHD_RESPMEM_MUST_COPY);
    cm_buf_free(&b);
    if (!r)
        return MHD_NO;
    mhd.add_response_header(r, "Content-Type",
                            status == 200 ? "text/plain; version=0.0.4; charset=utf-8"
                                          : "application/json");
    ret = mhd.queue_response(c, (unsigned)status, r);
    mhd.destroy_response(r);
    return ret;
}

int cm_metrics_serve(struct cm_metrics *m, const char *listen, char *err, size_t errlen)
{
    struct sockaddr_in sa;
    const union MHD_DaemonInfo *info;
    char host[64];
    const char *colon = strrchr(listen, ':');
    int port;

    if (!colon || (size_t)(colon - listen) >= sizeof(host) || (port = atoi(colon + 1)) < 0 ||
        port > 65535) {
        snprintf(err, errlen, "METRICS_LISTEN: '%.100s' is not host:port", listen);
        return -1;
    }
    pthread_once(&mhd.once, mhd_load);
    if (!mhd.ok) {
        snprintf(err, errlen,
                 "METRICS_LISTEN needs libmicrohttpd (libmicrohttpd.so.12), which "
                 "cannot be loaded");
        return -1;
    }
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        snprintf(err, errlen, "METRICS_LISTEN: '%.64s' is not an IPv4 address", host);
        return -1;
    }
    m->daemon =
        mhd.start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, 0, NULL, NULL, on_request,
                         m, MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_CONNECTION_LIMIT, 16u,
                         MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    if (!m->daemon) {
        snprintf(err, errlen, "METRICS_LISTEN: cannot listen on %.100s", listen);
        return -1;
    }
    info = mhd.get_daemon_info(m->daemon, MHD_DAEMON_INFO_BIND_PORT);
    return info ? info->port : port;
}
