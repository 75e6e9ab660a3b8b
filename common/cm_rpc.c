/* The gRPC adapter. Everything that touches grpc_* lives here; see cm_rpc.h
 * for the model. Comments explain the gRPC rules the code obeys, with the
 * section of ../shared/research/grpc-core-c.md that records them. */
#include "cm_rpc.h"
#include "cm_addr.h"
#include "cm_err.h"
#include "cm_log.h"
#include "cm_loop.h"
#include "cm_util.h"

#include "health.pb-c.h"

#include <dlfcn.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_METHODS 16
#define MAX_CHANNELS 16
#define MAX_RESOLVED 32
/* How old the addresses of a DNS name may be when a session call uses them;
 * an address that stopped answering has them looked up again at once (at
 * most every RESOLVE_RETRY_MS). */
#define RESOLVE_MAX_AGE_MS 5000
#define RESOLVE_RETRY_MS 500
#define MAX_META 32
#define MAX_META_VALUE 4096

const struct cm_rpc_method cm_rpc_health_check_method = {
    "/grpc.health.v1.Health/Check", &grpc__health__v1__health_check_request__descriptor,
    &grpc__health__v1__health_check_response__descriptor, CM_RPC_UNARY};

const char *cm_rpc_code_name(int code)
{
    static const char *const names[] = {"OK",
                                        "CANCELLED",
                                        "UNKNOWN",
                                        "INVALID_ARGUMENT",
                                        "DEADLINE_EXCEEDED",
                                        "NOT_FOUND",
                                        "ALREADY_EXISTS",
                                        "PERMISSION_DENIED",
                                        "RESOURCE_EXHAUSTED",
                                        "FAILED_PRECONDITION",
                                        "ABORTED",
                                        "OUT_OF_RANGE",
                                        "UNIMPLEMENTED",
                                        "INTERNAL",
                                        "UNAVAILABLE",
                                        "DATA_LOSS",
                                        "UNAUTHENTICATED"};

    if (code < 0 || code >= (int)(sizeof(names) / sizeof(names[0])))
        return "UNKNOWN";
    return names[code];
}

/* ---- internal authentication (see the header) ---- */

static int slice_eq(grpc_slice s, const char *str);

static char *auth_token; /* set once before any server or client exists */
static size_t auth_token_len;
static char *tls_ca, *tls_cert, *tls_key;

int cm_rpc_set_token(const char *token)
{
    size_t i, n = token ? strlen(token) : 0;
    char *copy = NULL;

    if (n && (n < 16 || n > 1024))
        return CM_EINVAL;
    for (i = 0; i < n; i++)
        if (token[i] < 0x21 || token[i] > 0x7e)
            return CM_EINVAL; /* it travels as a metadata value */
    if (n && !(copy = strdup(token)))
        return CM_ENOMEM;
    if (auth_token)
        OPENSSL_cleanse(auth_token, auth_token_len);
    free(auth_token);
    auth_token = copy;
    auth_token_len = n;
    return 0;
}

static char *dup_secret(char **slot, const char *s)
{
    if (*slot)
        OPENSSL_cleanse(*slot, strlen(*slot));
    free(*slot);
    *slot = s ? strdup(s) : NULL;
    return *slot;
}

int cm_rpc_set_tls(const char *ca_pem, const char *cert_pem, const char *key_pem)
{
    if (!ca_pem) {
        dup_secret(&tls_ca, NULL);
        dup_secret(&tls_cert, NULL);
        dup_secret(&tls_key, NULL);
        return 0;
    }
    if (!dup_secret(&tls_ca, ca_pem) || (cert_pem && !dup_secret(&tls_cert, cert_pem)) ||
        (key_pem && !dup_secret(&tls_key, key_pem)))
        return CM_ENOMEM;
    return 0;
}

/* 1 when |md| carries the token (or none is required). Every entry is
 * looked at, whatever the caps of meta_copy. */
static int token_ok(const grpc_metadata_array *md)
{
    size_t i;

    if (!auth_token)
        return 1;
    for (i = 0; i < md->count; i++) {
        if (!slice_eq(md->metadata[i].key, CM_RPC_MD_INTERNAL_TOKEN))
            continue;
        return GRPC_SLICE_LENGTH(md->metadata[i].value) == auth_token_len &&
               CRYPTO_memcmp(GRPC_SLICE_START_PTR(md->metadata[i].value), auth_token,
                             auth_token_len) == 0;
    }
    return 0;
}

/* The refusal's log line: method and peer, never a value. */
static void log_refused(grpc_call *call, const char *method)
{
    char *peer = grpc_call_get_peer(call);
    const char *kv[] = {"method", method, "peer", peer ? peer : "?", NULL};

    CM_LOGF(CM_LOG_WARN, kv, "internal call refused: missing or wrong internal token");
    gpr_free(peer);
}

#define REFUSED_TEXT "internal credential missing or wrong (INTERNAL_TOKEN_FILE)"

/* gRPC's locks are abseil Mutexes. Debian builds abseil without NDEBUG, so
 * every lock acquisition also maintains a global lock-order graph for
 * deadlock detection (GraphCycles, its own global lock): a debugging aid
 * that showed in every profile of the request path. Turned off here, before
 * gRPC starts a thread, through the C++ entry point (its mangled name; any
 * other abseil build simply keeps its default). */
static void absl_deadlock_detection_off(void)
{
    static const char *const names[] = {
        "_ZN4absl7debian329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE",
        "_ZN4absl29SetMutexDeadlockDetectionModeENS_15OnDeadlockCycleE",
    };
    void (*set)(int) = NULL;
    size_t i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]) && !set; i++)
        *(void **)&set = dlsym(RTLD_DEFAULT, names[i]);
    if (set)
        set(0); /* absl::OnDeadlockCycle::kIgnore */
}

void cm_rpc_init(void)
{
    absl_deadlock_detection_off();
    grpc_init();
}

void cm_rpc_shutdown(void)
{
    grpc_shutdown();
}

/* ---- codec ---- */

static grpc_byte_buffer *pack(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    grpc_slice s = grpc_slice_malloc(n);
    grpc_byte_buffer *bb;

    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
    bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s); /* the buffer took its own ref (§6.4) */
    return bb;
}

static ProtobufCMessage *unpack(const ProtobufCMessageDescriptor *d, grpc_byte_buffer *bb)
{
    grpc_byte_buffer_reader r;
    grpc_slice s;
    ProtobufCMessage *m;

    if (!bb || !grpc_byte_buffer_reader_init(&r, bb))
        return NULL;
    s = grpc_byte_buffer_reader_readall(&r); /* one slice, decompressed (§6.6) */
    grpc_byte_buffer_reader_destroy(&r);
    m = protobuf_c_message_unpack(d, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    return m;
}

static int slice_eq(grpc_slice s, const char *str)
{
    size_t n = strlen(str);

    return GRPC_SLICE_LENGTH(s) == n && memcmp(GRPC_SLICE_START_PTR(s), str, n) == 0;
}

static void slice_copy(grpc_slice s, char *out, size_t cap)
{
    size_t n = GRPC_SLICE_LENGTH(s);

    if (n >= cap)
        n = cap - 1;
    memcpy(out, GRPC_SLICE_START_PTR(s), n);
    out[n] = '\0';
}

/* ---- server ---- */

struct reg {
    struct cm_rpc_method m;
    cm_rpc_handler handler;
    cm_rpc_async_handler async_handler; /* set: served on |events|' loop instead */
    struct cm_rpc_events *events;
    void *ud;
    int aux; /* served by the health pool */
    void *handle;
    grpc_completion_queue *notify; /* the pool that serves it */
};

struct cm_rpc_server {
    grpc_server *server;
    grpc_completion_queue *work_cq; /* NEXT queue of the worker pool */
    grpc_completion_queue *aux_cq;  /* NEXT queue of the health/unknown-method pool */
    grpc_completion_queue *shutdown_cq;
    struct reg regs[MAX_METHODS];
    int nregs;
    struct reg health;
    pthread_t *threads;
    int nthreads;
    pthread_t aux_thread;
    int started, stopped, aux_started;
    atomic_int serving;
    char listen[256];
    int max_msg;
};

struct slot {
    struct cm_rpc_server *srv;
    struct reg *reg; /* NULL: the generic slot that answers unknown methods */
    grpc_completion_queue *cq;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_call_details details;
};

/* Incoming metadata of a server call, copied: gRPC's slices belong to the
 * call and the values must outlive it (§6.5). */
struct meta {
    int n;
    char *keys[MAX_META];
    char *vals[MAX_META];
};

static void meta_copy(struct meta *m, const grpc_metadata_array *md)
{
    size_t i;

    for (i = 0; i < md->count && m->n < MAX_META; i++) {
        char key[128], *val;
        size_t vn = GRPC_SLICE_LENGTH(md->metadata[i].value);

        if (vn >= MAX_META_VALUE || slice_eq(md->metadata[i].key, CM_RPC_MD_INTERNAL_TOKEN))
            continue; /* checked by token_ok; a handler never sees or forwards it */
        slice_copy(md->metadata[i].key, key, sizeof(key));
        val = malloc(vn + 1);
        if (!val)
            return;
        slice_copy(md->metadata[i].value, val, vn + 1);
        m->keys[m->n] = strdup(key);
        if (!m->keys[m->n]) {
            free(val);
            return;
        }
        m->vals[m->n++] = val;
    }
}

static const char *meta_get(const struct meta *m, const char *key)
{
    int i;

    for (i = 0; i < m->n; i++) {
        if (!strcmp(m->keys[i], key))
            return m->vals[i];
    }
    return NULL;
}

static int meta_at(const struct meta *m, int i, const char **key, const char **value)
{
    if (i < 0 || i >= m->n)
        return 0;
    *key = m->keys[i];
    *value = m->vals[i];
    return 1;
}

static void meta_free(struct meta *m)
{
    int i;

    for (i = 0; i < m->n; i++) {
        free(m->keys[i]);
        free(m->vals[i]);
    }
    m->n = 0;
}

/* Milliseconds left before |deadline| (LLONG_MAX when none). */
static long long left_ms(gpr_timespec deadline)
{
    gpr_timespec now, d = gpr_convert_clock_type(deadline, GPR_CLOCK_MONOTONIC);

    if (gpr_time_cmp(d, gpr_inf_future(GPR_CLOCK_MONOTONIC)) == 0)
        return LLONG_MAX;
    now = gpr_now(GPR_CLOCK_MONOTONIC);
    if (gpr_time_cmp(d, now) <= 0)
        return 0;
    return (long long)gpr_time_to_millis(gpr_time_sub(d, now));
}

struct cm_rpc_ctx {
    grpc_call *call;
    grpc_completion_queue *cq;
    gpr_timespec deadline;
    enum cm_rpc_kind kind;
    int close_tag; /* address is the tag of RECV_CLOSE_ON_SERVER */
    int cancelled_flag;
    int closed, initial_sent, status_sent, replied, peer_gone;
    int code;
    char details[512];
    char error_type[64];
    struct meta meta;
};

struct cm_rpc_server *cm_rpc_server_new(const struct cm_rpc_server_config *cfg)
{
    struct cm_rpc_server *srv = calloc(1, sizeof(*srv));

    if (!srv)
        return NULL;
    cm_strlcpy(srv->listen, cfg->listen, sizeof(srv->listen));
    srv->nthreads = cfg->threads > 0 ? cfg->threads : 4;
    srv->max_msg = cfg->max_msg_bytes > 0 ? cfg->max_msg_bytes : 4 * 1024 * 1024;
    atomic_init(&srv->serving, 1);
    return srv;
}

static int add(struct cm_rpc_server *srv, const struct cm_rpc_method *m, cm_rpc_handler h, void *ud,
               int aux)
{
    struct reg *r;

    if (srv->started || srv->nregs == MAX_METHODS || !h)
        return CM_EINVAL;
    r = &srv->regs[srv->nregs++];
    r->m = *m;
    r->handler = h;
    r->ud = ud;
    r->aux = aux;
    return 0;
}

int cm_rpc_server_add(struct cm_rpc_server *srv, const struct cm_rpc_method *m, cm_rpc_handler h,
                      void *ud)
{
    return add(srv, m, h, ud, 0);
}

int cm_rpc_server_add_aux(struct cm_rpc_server *srv, const struct cm_rpc_method *m,
                          cm_rpc_handler h, void *ud)
{
    return add(srv, m, h, ud, 1);
}

int cm_rpc_server_add_async(struct cm_rpc_server *srv, struct cm_rpc_events *ev,
                            const struct cm_rpc_method *m, cm_rpc_async_handler h, void *ud)
{
    struct reg *r;

    if (srv->started || srv->nregs == MAX_METHODS || !h || !ev)
        return CM_EINVAL;
    r = &srv->regs[srv->nregs++];
    r->m = *m;
    r->async_handler = h;
    r->events = ev;
    r->ud = ud;
    return 0;
}

void cm_rpc_server_set_serving(struct cm_rpc_server *srv, int serving)
{
    atomic_store(&srv->serving, serving ? 1 : 0);
}

static struct slot *slot_new(struct cm_rpc_server *srv, struct reg *reg)
{
    struct slot *s = calloc(1, sizeof(*s));

    if (!s)
        return NULL;
    s->srv = srv;
    s->reg = reg;
    s->cq = grpc_completion_queue_create_for_pluck(NULL);
    return s;
}

static void slot_free(struct slot *s)
{
    if (!s)
        return;
    /* Every tag on this queue has been reaped, so it drains at once (§6.3). */
    grpc_completion_queue_shutdown(s->cq);
    grpc_completion_queue_destroy(s->cq);
    free(s);
}

/* Posts a request for the next call of |s->reg| (or of any unknown method). */
static int slot_arm(struct slot *s)
{
    grpc_call_error e;

    s->call = NULL;
    s->payload = NULL;
    grpc_metadata_array_init(&s->md);
    if (!s->reg) {
        grpc_call_details_init(&s->details);
        e = grpc_server_request_call(s->srv->server, &s->call, &s->details, &s->md, s->cq,
                                     s->srv->aux_cq, s);
    } else {
        e = grpc_server_request_registered_call(s->srv->server, s->reg->handle, &s->call,
                                                &s->deadline, &s->md, &s->payload, s->cq,
                                                s->reg->notify, s);
    }
    if (e != GRPC_CALL_OK) {
        grpc_metadata_array_destroy(&s->md);
        if (!s->reg)
            grpc_call_details_destroy(&s->details);
        return CM_EIO;
    }
    return 0;
}

/* Releases what one served call held, so the slot can be re-armed. */
static void slot_release_call(struct slot *s)
{
    grpc_metadata_array_destroy(&s->md);
    if (!s->reg)
        grpc_call_details_destroy(&s->details);
    if (s->payload)
        grpc_byte_buffer_destroy(s->payload);
    s->payload = NULL;
    if (s->call)
        grpc_call_unref(s->call);
    s->call = NULL;
}

static int run_batch(struct cm_rpc_ctx *ctx, const grpc_op *ops, size_t n)
{
    int tag;
    grpc_event ev;

    if (grpc_call_start_batch(ctx->call, ops, n, &tag, NULL) != GRPC_CALL_OK)
        return -1;
    ev = grpc_completion_queue_pluck(ctx->cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    return ev.type == GRPC_OP_COMPLETE && ev.success ? 0 : -1;
}

static void send_status(struct cm_rpc_ctx *ctx)
{
    grpc_op ops[2];
    grpc_metadata trailer;
    grpc_slice details;
    size_t n = 0;

    memset(ops, 0, sizeof(ops));
    if (!ctx->initial_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
    }
    details = grpc_slice_from_copied_string(ctx->details);
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = (grpc_status_code)ctx->code;
    ops[n].data.send_status_from_server.status_details = &details;
    if (ctx->error_type[0]) {
        trailer.key = grpc_slice_from_static_string(CM_RPC_MD_ERROR_TYPE);
        trailer.value = grpc_slice_from_copied_string(ctx->error_type);
        ops[n].data.send_status_from_server.trailing_metadata_count = 1;
        ops[n].data.send_status_from_server.trailing_metadata = &trailer;
    }
    n++;
    if (run_batch(ctx, ops, n))
        ctx->peer_gone = 1;
    ctx->initial_sent = 1;
    ctx->status_sent = 1;
    grpc_slice_unref(details);
    if (ctx->error_type[0])
        grpc_slice_unref(trailer.value);
}

static void serve_health(struct cm_rpc_ctx *ctx, const ProtobufCMessage *req, void *ud)
{
    struct cm_rpc_server *srv = ud;
    const Grpc__Health__V1__HealthCheckRequest *hreq = (const void *)req;
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;

    if (hreq->service && hreq->service[0]) {
        int i, known = 0;

        /* A service is known when one of its methods is registered. */
        for (i = 0; i < srv->nregs; i++) {
            size_t n = strlen(hreq->service);
            const char *p = srv->regs[i].m.path;

            if (!strncmp(p + 1, hreq->service, n) && p[n + 1] == '/')
                known = 1;
        }
        if (!known) {
            cm_rpc_ctx_fail(ctx, CM_RPC_NOT_FOUND, NULL, "unknown service");
            return;
        }
    }
    resp.status = atomic_load(&srv->serving)
                      ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                      : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    cm_rpc_ctx_reply(ctx, &resp.base);
}

static void handle_call(struct slot *s)
{
    struct cm_rpc_ctx ctx;
    grpc_op op;
    ProtobufCMessage *req = NULL;

    memset(&ctx, 0, sizeof(ctx));
    ctx.call = s->call;
    ctx.cq = s->cq;
    ctx.deadline = s->reg ? s->deadline : s->details.deadline;
    ctx.kind = s->reg ? s->reg->m.kind : CM_RPC_UNARY;

    /* Posted first: it completes early when the client cancels or the deadline
     * passes, which is what cm_rpc_ctx_cancelled() polls for (§2.11). */
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &ctx.cancelled_flag;
    if (grpc_call_start_batch(ctx.call, &op, 1, &ctx.close_tag, NULL) != GRPC_CALL_OK)
        return;

    if (s->reg != &s->srv->health && !token_ok(&s->md)) {
        char method[256];

        if (s->reg)
            cm_strlcpy(method, s->reg->m.path, sizeof(method));
        else
            slice_copy(s->details.method, method, sizeof(method));
        log_refused(ctx.call, method);
        cm_rpc_ctx_fail(&ctx, CM_RPC_UNAUTHENTICATED, NULL, REFUSED_TEXT);
        goto out;
    }
    if (!s->reg) {
        char method[256];

        slice_copy(s->details.method, method, sizeof(method));
        cm_rpc_ctx_fail(&ctx, CM_RPC_UNIMPLEMENTED, NULL, "unknown method %s", method);
        goto out;
    }
    meta_copy(&ctx.meta, &s->md);
    if (!s->payload) {
        /* READ_INITIAL_BYTE_BUFFER methods expect exactly one message (§6.8). */
        cm_rpc_ctx_fail(&ctx, CM_RPC_INVALID_ARGUMENT, NULL, "request message missing");
        goto out;
    }
    req = unpack(s->reg->m.in, s->payload);
    if (!req) {
        cm_rpc_ctx_fail(&ctx, CM_RPC_INVALID_ARGUMENT, NULL, "request message is malformed");
        goto out;
    }
    s->reg->handler(&ctx, req, s->reg->ud);
    if (!ctx.status_sent && !ctx.replied && ctx.kind == CM_RPC_UNARY && !ctx.code) {
        ctx.code = CM_RPC_INTERNAL;
        cm_strlcpy(ctx.details, "handler sent no reply", sizeof(ctx.details));
    }
out:
    if (!ctx.status_sent)
        send_status(&ctx);
    /* Always reap the close tag before the call goes (§6.7). */
    if (!ctx.closed)
        grpc_completion_queue_pluck(ctx.cq, &ctx.close_tag, gpr_inf_future(GPR_CLOCK_REALTIME),
                                    NULL);
    if (req)
        protobuf_c_message_free_unpacked(req, NULL);
    meta_free(&ctx.meta);
}

struct pool_arg {
    struct cm_rpc_server *srv;
    grpc_completion_queue *cq;
};

static void *pool_main(void *p)
{
    struct cm_rpc_server *srv = ((struct pool_arg *)p)->srv;
    grpc_completion_queue *cq = ((struct pool_arg *)p)->cq;
    struct slot *spare = NULL;

    free(p);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        struct slot *s, *next;

        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        s = ev.tag;
        if (!ev.success) {
            /* The server is shutting down and this request will never match. */
            slot_release_call(s);
            slot_free(s);
            continue;
        }
        /* Re-arm before handling: the live call keeps the server from finishing
         * shutdown, so the server handle is still valid here (§3). */
        next = spare ? spare : slot_new(srv, s->reg);
        spare = NULL;
        if (next) {
            next->reg = s->reg;
            if (slot_arm(next))
                slot_free(next);
        }
        handle_call(s);
        slot_release_call(s);
        spare = s; /* keeps its pluck queue: nothing is allocated in steady state */
    }
    slot_free(spare);
    cm_rpc_thread_done();
    return NULL;
}

static int start_pool(struct cm_rpc_server *srv, grpc_completion_queue *cq, pthread_t *t)
{
    struct pool_arg *a = malloc(sizeof(*a));

    if (!a)
        return CM_ENOMEM;
    a->srv = srv;
    a->cq = cq;
    if (pthread_create(t, NULL, pool_main, a)) {
        free(a);
        return CM_EIO;
    }
    return 0;
}

#define ASYNC_BACKLOG 16 /* requests kept posted per asynchronous method */

static grpc_completion_queue *events_cq(struct cm_rpc_events *ev);
static int async_arm(struct cm_rpc_server *srv, struct reg *reg);

/* 1 when a method before |i| already registered the same event queue. */
static int async_cq_registered(const struct cm_rpc_server *srv, int i)
{
    int j;

    for (j = 0; j < i; j++) {
        if (srv->regs[j].events == srv->regs[i].events)
            return 1;
    }
    return 0;
}

int cm_rpc_server_start(struct cm_rpc_server *srv)
{
    grpc_arg args[2];
    grpc_channel_args chargs;
    grpc_server_credentials *creds;
    int port, i, k, rc;

    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_ALLOW_REUSEPORT; /* a taken port must fail, not be shared (§6.12) */
    args[0].value.integer = 0;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[1].value.integer = srv->max_msg;
    chargs.num_args = 2;
    chargs.args = args;

    srv->server = grpc_server_create(&chargs, NULL);
    srv->work_cq = grpc_completion_queue_create_for_next(NULL);
    srv->aux_cq = grpc_completion_queue_create_for_next(NULL);
    srv->shutdown_cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->work_cq, NULL);
    grpc_server_register_completion_queue(srv->server, srv->aux_cq, NULL);
    grpc_server_register_completion_queue(srv->server, srv->shutdown_cq, NULL);

    srv->health.m = cm_rpc_health_check_method;
    srv->health.handler = serve_health;
    srv->health.ud = srv;
    srv->health.notify = srv->aux_cq;
    srv->health.handle = grpc_server_register_method(srv->server, srv->health.m.path, NULL,
                                                     GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    for (i = 0; i < srv->nregs; i++) {
        if (srv->regs[i].events && !async_cq_registered(srv, i))
            grpc_server_register_completion_queue(srv->server, events_cq(srv->regs[i].events),
                                                  NULL);
        srv->regs[i].notify = srv->regs[i].aux ? srv->aux_cq : srv->work_cq;
        srv->regs[i].handle = grpc_server_register_method(
            srv->server, srv->regs[i].m.path, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    }

    if (tls_ca) {
        grpc_ssl_pem_key_cert_pair pair = {tls_key, tls_cert};

        creds = grpc_ssl_server_credentials_create_ex(
            tls_ca, &pair, 1, GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY, NULL);
    } else {
        creds = grpc_insecure_server_credentials_create();
    }
    if (!creds)
        return CM_EIO;
    port = grpc_server_add_http2_port(srv->server, srv->listen, creds);
    grpc_server_credentials_release(creds);
    if (port <= 0)
        return CM_EIO;
    /* A unix socket is for this uid alone (see the header). */
    if (!strncmp(srv->listen, "unix:", 5) &&
        chmod(srv->listen + (strncmp(srv->listen, "unix://", 7) ? 5 : 7), 0600))
        return CM_EIO;
    grpc_server_start(srv->server);
    srv->started = 1;

    /* One outstanding request per method per worker, so a burst of calls never
     * waits for a re-arm; the generic slot catches unknown methods. */
    for (i = 0; i < srv->nregs; i++) {
        if (srv->regs[i].async_handler) {
            for (k = 0; k < ASYNC_BACKLOG; k++) {
                if (async_arm(srv, &srv->regs[i]))
                    return CM_ENOMEM;
            }
            continue;
        }
        for (k = 0; k < (srv->regs[i].aux ? 2 : srv->nthreads); k++) {
            struct slot *s = slot_new(srv, &srv->regs[i]);

            if (!s || slot_arm(s)) {
                slot_free(s);
                return CM_ENOMEM;
            }
        }
    }
    for (k = 0; k < 2; k++) {
        struct slot *hs = slot_new(srv, &srv->health);
        struct slot *gs = slot_new(srv, NULL);

        if (!hs || !gs || slot_arm(hs) || slot_arm(gs)) {
            slot_free(hs);
            slot_free(gs);
            return CM_ENOMEM;
        }
    }
    /* A server whose work is all asynchronous needs no worker pool. */
    for (i = 0, k = 0; i < srv->nregs; i++)
        k += !srv->regs[i].aux && !srv->regs[i].async_handler;
    if (!k)
        srv->nthreads = 0;
    srv->threads = calloc((size_t)srv->nthreads + 1, sizeof(pthread_t));
    if (!srv->threads)
        return CM_ENOMEM;
    for (i = 0; i < srv->nthreads; i++) {
        rc = start_pool(srv, srv->work_cq, &srv->threads[i]);
        if (rc) {
            srv->nthreads = i;
            return rc;
        }
    }
    rc = start_pool(srv, srv->aux_cq, &srv->aux_thread);
    if (rc)
        return rc;
    srv->aux_started = 1;
    return port;
}

void cm_rpc_server_shutdown(struct cm_rpc_server *srv, int grace_ms)
{
    int tag, i;
    grpc_event ev;

    if (!srv || !srv->server || srv->stopped)
        return;
    srv->stopped = 1;
    atomic_store(&srv->serving, 0);
    if (!srv->started) {
        grpc_server_destroy(srv->server);
        srv->server = NULL;
        return;
    }
    /* Order from §2.13: shutdown_and_notify, wait out the grace, cancel the rest;
     * the notification comes once no call is alive, so no pool thread touches the
     * server after it (they re-arm only while holding a live call). Then destroy
     * the server and shut the queues so the pools drain and exit. */
    grpc_server_shutdown_and_notify(srv->server, srv->shutdown_cq, &tag);
    ev = grpc_completion_queue_next(
        srv->shutdown_cq,
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(grace_ms, GPR_TIMESPAN)),
        NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT) {
        grpc_server_cancel_all_calls(srv->server);
        grpc_completion_queue_next(srv->shutdown_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    }
    grpc_server_destroy(srv->server);
    srv->server = NULL;
    grpc_completion_queue_shutdown(srv->work_cq);
    grpc_completion_queue_shutdown(srv->aux_cq);
    for (i = 0; i < srv->nthreads; i++)
        pthread_join(srv->threads[i], NULL);
    if (srv->aux_started)
        pthread_join(srv->aux_thread, NULL);
}

static void drain_destroy(grpc_completion_queue *cq)
{
    if (!cq)
        return;
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
}

void cm_rpc_server_free(struct cm_rpc_server *srv)
{
    if (!srv)
        return;
    cm_rpc_server_shutdown(srv, 0);
    drain_destroy(srv->work_cq);
    drain_destroy(srv->aux_cq);
    drain_destroy(srv->shutdown_cq);
    free(srv->threads);
    free(srv);
}

const char *cm_rpc_ctx_meta(const struct cm_rpc_ctx *ctx, const char *key)
{
    return meta_get(&ctx->meta, key);
}

int cm_rpc_ctx_meta_at(const struct cm_rpc_ctx *ctx, int i, const char **key, const char **value)
{
    return meta_at(&ctx->meta, i, key, value);
}

int cm_rpc_ctx_cancelled(struct cm_rpc_ctx *ctx)
{
    grpc_event ev;

    if (ctx->closed)
        return ctx->cancelled_flag || ctx->peer_gone;
    ev = grpc_completion_queue_pluck(ctx->cq, &ctx->close_tag, gpr_inf_past(GPR_CLOCK_REALTIME),
                                     NULL);
    if (ev.type == GRPC_OP_COMPLETE) {
        ctx->closed = 1;
        /* Closed before we sent a status: the client went away or the deadline passed. */
        return ctx->cancelled_flag || !ctx->status_sent;
    }
    return ctx->peer_gone;
}

long long cm_rpc_ctx_remaining_ms(const struct cm_rpc_ctx *ctx)
{
    return left_ms(ctx->deadline);
}

int cm_rpc_ctx_reply(struct cm_rpc_ctx *ctx, const ProtobufCMessage *msg)
{
    grpc_op ops[3];
    grpc_slice details = grpc_empty_slice();
    grpc_byte_buffer *bb;
    int rc;

    if (ctx->status_sent || ctx->replied)
        return -1;
    bb = pack(msg);
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[2].data.send_status_from_server.status = GRPC_STATUS_OK;
    ops[2].data.send_status_from_server.status_details = &details;
    rc = run_batch(ctx, ops, 3);
    grpc_byte_buffer_destroy(bb);
    ctx->initial_sent = ctx->status_sent = ctx->replied = 1;
    if (rc)
        ctx->peer_gone = 1;
    return rc;
}

int cm_rpc_ctx_send(struct cm_rpc_ctx *ctx, const ProtobufCMessage *msg)
{
    grpc_op ops[2];
    grpc_byte_buffer *bb;
    size_t n = 0;
    int rc;

    if (ctx->status_sent || ctx->peer_gone)
        return -1;
    bb = pack(msg);
    memset(ops, 0, sizeof(ops));
    if (!ctx->initial_sent)
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = bb;
    n++;
    rc = run_batch(ctx, ops, n);
    grpc_byte_buffer_destroy(bb);
    ctx->initial_sent = 1;
    if (rc)
        ctx->peer_gone = 1; /* SEND_MESSAGE fails once the peer is gone (§6.7) */
    return rc;
}

void cm_rpc_ctx_fail(struct cm_rpc_ctx *ctx, int code, const char *error_type, const char *fmt, ...)
{
    va_list ap;

    if (ctx->status_sent)
        return;
    ctx->code = code ? code : CM_RPC_UNKNOWN;
    va_start(ap, fmt);
    vsnprintf(ctx->details, sizeof(ctx->details), fmt, ap);
    va_end(ap);
    cm_strlcpy(ctx->error_type, error_type ? error_type : "", sizeof(ctx->error_type));
    send_status(ctx);
}

/* ---- client ---- */

/* One address of a DNS name (compose --scale gives a name several), with a
 * channel of its own so a session's calls can go to that one replica. */
struct resolved {
    char key[CM_ADDR_MAX]; /* "10.0.3.5:50051", "ipv6:[fd00::5]:50051": what affinity hashes */
    int origin;            /* the listed target it came from */
    grpc_channel *ch;
    void *handles[MAX_METHODS];
};

struct cm_rpc_client {
    grpc_channel *ch[MAX_CHANNELS];
    char target[MAX_CHANNELS][128];      /* as given: what affinity hashes */
    unsigned char is_name[MAX_CHANNELS]; /* a DNS name: its addresses get channels */
    int nch, nnames;
    atomic_uint rr;
    struct cm_rpc_method methods[MAX_METHODS]; /* copies: the caller's may not outlive us */
    void *handles[MAX_CHANNELS][MAX_METHODS];
    size_t nmethods;
    int max_msg;
    /* Session affinity over the addresses of DNS names. getaddrinfo blocks,
     * so a short-lived thread looks them up when a session call finds them
     * old; calls meanwhile use the addresses known (the name's own channel,
     * balanced by gRPC, before the first answer). */
    pthread_mutex_t lock;         /* everything below */
    pthread_cond_t resolved_cond; /* a lookup ended */
    struct resolved res[MAX_RESOLVED];
    int nres, resolving, resolver_started;
    uint64_t resolved_at, resolve_asked;
    pthread_t resolver;
};

static pthread_key_t cq_key;
static pthread_once_t cq_once = PTHREAD_ONCE_INIT;

static void cq_destroy(void *p)
{
    grpc_completion_queue_shutdown(p);
    grpc_completion_queue_destroy(p);
}

static void cq_key_make(void)
{
    pthread_key_create(&cq_key, cq_destroy);
}

/* One pluck queue per thread, reused for every call the thread makes (§2.3);
 * the key's destructor frees it when a thread (e.g. an HTTP connection's) ends. */
static grpc_completion_queue *thread_cq(void)
{
    grpc_completion_queue *cq;

    pthread_once(&cq_once, cq_key_make);
    cq = pthread_getspecific(cq_key);
    if (!cq) {
        cq = grpc_completion_queue_create_for_pluck(NULL);
        pthread_setspecific(cq_key, cq);
    }
    return cq;
}

void cm_rpc_thread_done(void)
{
    grpc_completion_queue *cq;

    pthread_once(&cq_once, cq_key_make);
    cq = pthread_getspecific(cq_key);
    if (cq) {
        pthread_setspecific(cq_key, NULL);
        cq_destroy(cq);
    }
}

static int is_ipv4_hostport(const char *s)
{
    int a, b, c, d, port;
    char tail;

    return sscanf(s, "%d.%d.%d.%d:%d%c", &a, &b, &c, &d, &port, &tail) == 5;
}

static grpc_channel *channel_new(const char *target, int max_msg)
{
    grpc_arg args[5];
    grpc_channel_args chargs;
    grpc_channel_credentials *creds;
    grpc_channel *ch;

    args[0].type = GRPC_ARG_STRING;
    args[0].key = GRPC_ARG_SERVICE_CONFIG;
    args[0].value.string = "{\"loadBalancingConfig\":[{\"round_robin\":{}}]}";
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[1].value.integer = max_msg;
    /* A worker that starts a few milliseconds after us (s6 starts all at
     * once), or restarts, is found again within milliseconds, not after gRPC's
     * default backoff of 1 s growing to two minutes. */
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
    args[2].value.integer = 10;
    args[3].type = GRPC_ARG_INTEGER;
    args[3].key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
    args[3].value.integer = 1000;
    args[4].type = GRPC_ARG_INTEGER;
    args[4].key = GRPC_ARG_MIN_RECONNECT_BACKOFF_MS;
    args[4].value.integer = 10;
    chargs.num_args = 5;
    chargs.args = args;
    if (tls_ca) {
        grpc_ssl_pem_key_cert_pair pair = {tls_key, tls_cert};

        creds = grpc_ssl_credentials_create(tls_ca, tls_cert ? &pair : NULL, NULL, NULL);
    } else {
        creds = grpc_insecure_credentials_create();
    }
    if (!creds)
        return NULL;
    ch = grpc_channel_create(target, creds, &chargs);
    grpc_channel_credentials_release(creds);
    return ch;
}

static void resolved_handles(struct cm_rpc_client *c, struct resolved *r)
{
    size_t k;

    for (k = 0; k < c->nmethods; k++)
        r->handles[k] = grpc_channel_register_call(r->ch, c->methods[k].path, NULL, NULL);
}

/* The resolver thread: looks every DNS name up, then swaps the address set
 * under the lock, keeping the channels of addresses that stay. Channels of
 * addresses that went are destroyed after; calls on them hold their own
 * references. */
static void *resolve_main(void *p)
{
    struct cm_rpc_client *c = p;
    struct resolved found[MAX_RESOLVED], next[MAX_RESOLVED];
    grpc_channel *drop[MAX_RESOLVED];
    int nfound = 0, nnext = 0, ndrop = 0, i, j, ok = 1, changed = 0;

    for (i = 0; i < c->nch; i++) {
        char out[CM_ADDR_MAX_REPLICAS][CM_ADDR_MAX];
        int k, m;

        if (!c->is_name[i])
            continue;
        m = cm_addr_replicas(c->target[i], cm_addr_resolve_host, NULL, out, CM_ADDR_MAX_REPLICAS);
        if (m == 0)
            ok = 0; /* keep what we had: a name that does not answer now may again */
        for (k = 0; k < m && nfound < MAX_RESOLVED; k++) {
            int dup = 0;

            for (j = 0; j < nfound; j++)
                dup |= !strcmp(found[j].key, out[k]);
            if (dup)
                continue;
            cm_strlcpy(found[nfound].key, out[k], sizeof(found[0].key));
            found[nfound++].origin = i;
        }
    }
    pthread_mutex_lock(&c->lock);
    if (ok || nfound > 0) {
        for (i = 0; i < nfound; i++) {
            next[nnext] = found[i];
            next[nnext].ch = NULL;
            for (j = 0; j < c->nres; j++) {
                if (c->res[j].ch && !strcmp(c->res[j].key, found[i].key)) {
                    next[nnext] = c->res[j]; /* moves: channel and handles */
                    c->res[j].ch = NULL;
                    break;
                }
            }
            if (!next[nnext].ch) {
                char target[CM_ADDR_MAX + 8];

                /* "ipv6:[..]:p" is a gRPC target already; "a.b.c.d:p" gets its scheme. */
                snprintf(target, sizeof(target), "%s%.*s",
                         strncmp(found[i].key, "ipv6:", 5) ? "ipv4:" : "", CM_ADDR_MAX - 1,
                         found[i].key);
                next[nnext].ch = channel_new(target, c->max_msg);
                if (!next[nnext].ch)
                    continue;
                resolved_handles(c, &next[nnext]);
            }
            nnext++;
        }
        for (j = 0; j < c->nres; j++)
            if (c->res[j].ch)
                drop[ndrop++] = c->res[j].ch;
        changed = ndrop > 0 || nnext != c->nres;
        memcpy(c->res, next, sizeof(next[0]) * (size_t)nnext);
        c->nres = nnext;
        c->resolved_at = cm_now_ms();
    }
    c->resolving = 0;
    pthread_cond_broadcast(&c->resolved_cond);
    pthread_mutex_unlock(&c->lock);
    for (i = 0; i < ndrop; i++)
        grpc_channel_destroy(drop[i]);
    for (i = 0; changed && i < c->nch; i++) {
        /* Replicas came or went (compose --scale): say where sessions go. */
        char list[512];
        size_t pos = 0;

        if (!c->is_name[i])
            continue;
        list[0] = '\0';
        for (j = 0; j < nnext && pos < sizeof(list); j++)
            if (next[j].origin == i)
                pos += (size_t)snprintf(list + pos, sizeof(list) - pos, "%s%s", pos ? "," : "",
                                        next[j].key);
        cm_info("%s resolves to %s", c->target[i], list[0] ? list : "nothing");
    }
    return NULL;
}

/* Under |c->lock|: starts a lookup when the addresses are older than
 * |max_age_ms| and none runs. Never waits for one. */
static void resolve_kick_locked(struct cm_rpc_client *c, uint64_t max_age_ms)
{
    uint64_t now = cm_now_ms();

    if (c->resolving || (c->resolved_at && now - c->resolved_at < max_age_ms) ||
        (c->resolve_asked && now - c->resolve_asked < RESOLVE_RETRY_MS))
        return;
    if (c->resolver_started)
        pthread_join(c->resolver, NULL); /* finished: it cleared |resolving| */
    c->resolver_started = 0;
    c->resolve_asked = now;
    if (pthread_create(&c->resolver, NULL, resolve_main, c) == 0)
        c->resolving = c->resolver_started = 1;
}

void cm_rpc_client_resolve(struct cm_rpc_client *c)
{
    if (!c || !c->nnames)
        return;
    pthread_mutex_lock(&c->lock);
    resolve_kick_locked(c, 0);
    pthread_mutex_unlock(&c->lock);
}

struct cm_rpc_client *cm_rpc_client_new(const char *targets, const struct cm_rpc_method *methods,
                                        size_t n_methods, int max_msg_bytes, char *err,
                                        size_t errlen)
{
    struct cm_rpc_client *c = NULL;
    char *copy = NULL, *save = NULL, *tok;
    char *items[MAX_CHANNELS];
    int nitems = 0, all_ipv4 = 1, i;
    size_t k;

    if (n_methods + 1 > MAX_METHODS || !targets || !*targets) {
        snprintf(err, errlen, "no target or too many methods");
        return NULL;
    }
    copy = strdup(targets);
    c = calloc(1, sizeof(*c));
    if (!copy || !c)
        goto fail;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->resolved_cond, NULL);
    c->max_msg = max_msg_bytes;
    for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (!*tok)
            continue;
        if (nitems == MAX_CHANNELS) {
            snprintf(err, errlen, "more than %d addresses in '%s'", MAX_CHANNELS, targets);
            goto fail;
        }
        if (!is_ipv4_hostport(tok))
            all_ipv4 = 0;
        items[nitems++] = tok;
    }
    if (!nitems) {
        snprintf(err, errlen, "no address in '%s'", targets);
        goto fail;
    }
    if (all_ipv4 && nitems == 1) {
        /* One channel. (Several addresses get one each, below, so a call
         * can be sent to a chosen one: session affinity.) */
        char target[1024];
        size_t pos = (size_t)snprintf(target, sizeof(target), "ipv4:");

        for (i = 0; i < nitems && pos < sizeof(target); i++)
            pos += (size_t)snprintf(target + pos, sizeof(target) - pos, "%s%s", i ? "," : "",
                                    items[i]);
        if (pos >= sizeof(target)) {
            snprintf(err, errlen, "address list too long");
            goto fail;
        }
        cm_strlcpy(c->target[c->nch], items[0], sizeof(c->target[0]));
        c->ch[c->nch++] = channel_new(target, max_msg_bytes);
    } else {
        /* Names: one channel each; a name that resolves to several replicas
         * (compose --scale) is balanced by gRPC, the names by us. */
        for (i = 0; i < nitems; i++) {
            char target[512];

            if (is_ipv4_hostport(items[i]))
                snprintf(target, sizeof(target), "ipv4:%s", items[i]);
            else if (!strncmp(items[i], "dns:", 4)) {
                snprintf(target, sizeof(target), "%s", items[i]);
                c->is_name[c->nch] = 1;
                c->nnames++;
            } else if (strstr(items[i], ":/") || !strncmp(items[i], "unix:", 5) ||
                       !strncmp(items[i], "ipv4:", 5) || !strncmp(items[i], "ipv6:", 5))
                snprintf(target, sizeof(target), "%s", items[i]);
            else if (!strchr(items[i], ':')) {
                snprintf(err, errlen, "address '%s' has no port", items[i]);
                goto fail;
            } else {
                snprintf(target, sizeof(target), "dns:///%s", items[i]);
                c->is_name[c->nch] = items[i][0] != '['; /* "[v6]:p" is an address */
                c->nnames += c->is_name[c->nch];
            }
            cm_strlcpy(c->target[c->nch], items[i], sizeof(c->target[0]));
            c->ch[c->nch++] = channel_new(target, max_msg_bytes);
        }
    }
    c->methods[0] = cm_rpc_health_check_method;
    for (k = 0; k < n_methods; k++)
        c->methods[k + 1] = methods[k];
    c->nmethods = n_methods + 1;
    for (i = 0; i < c->nch; i++) {
        for (k = 0; k < c->nmethods; k++)
            c->handles[i][k] = grpc_channel_register_call(c->ch[i], c->methods[k].path, NULL, NULL);
    }
    free(copy);
    return c;
fail:
    free(copy);
    cm_rpc_client_free(c);
    return NULL;
}

void cm_rpc_client_free(struct cm_rpc_client *c)
{
    int i;

    if (!c)
        return;
    if (c->resolver_started)
        pthread_join(c->resolver, NULL); /* a lookup takes DNS's timeout at most */
    for (i = 0; i < c->nres; i++)
        grpc_channel_destroy(c->res[i].ch);
    for (i = 0; i < c->nch; i++)
        grpc_channel_destroy(c->ch[i]);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->resolved_cond);
    free(c);
}

static void status_set(struct cm_rpc_status *st, int code, const char *details)
{
    st->code = code;
    cm_strlcpy(st->details, details, sizeof(st->details));
    st->error_type[0] = '\0';
}

/* What every client call holds, whatever waits on it: the call, its
 * metadata, the request and the buffers its batches fill. */
struct cli {
    grpc_call *call;
    const ProtobufCMessageDescriptor *out;
    grpc_metadata md[MAX_META];
    size_t nmd;
    grpc_metadata_array init_md, trail_md;
    grpc_byte_buffer *send_bb, *recv_bb;
    grpc_status_code code;
    grpc_slice details;
};

struct cm_rpc_stream {
    struct cli k;
    grpc_completion_queue *cq;
    int start_tag, status_tag, start_reaped, ended;
    int recv_tag, recv_pending; /* a RECV_MESSAGE batch posted but not yet reaped */
};

/* FNV-1a over |key| then |target|, then MurmurHash3's 64-bit finaliser: the
 * rendezvous score of one address. (FNV alone leaves the high bits, which
 * decide the comparison, to the last bytes: three short names got 48/27/24 %
 * of the sessions; with the finaliser each gets its third.) */
uint64_t cm_rpc_rendezvous(const char *key, const char *target)
{
    uint64_t h = 1469598103934665603ULL;
    const char *p;

    for (p = key; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    h = (h ^ 0xff) * 1099511628211ULL;
    for (p = target; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
}

/* One channel a session call may go to. */
struct cand {
    const char *key;
    grpc_channel *ch;
    void *const *handles;
};

/* The candidates of session affinity: every address of every DNS name, and
 * every other listed target (a name not looked up yet counts as itself).
 * Under |c->lock| when the client has names. Returns how many. */
static int candidates(struct cm_rpc_client *c, struct cand *out)
{
    int i, j, n = 0, has;

    for (i = 0; i < c->nch; i++) {
        has = 0;
        for (j = 0; j < c->nres; j++) {
            if (c->res[j].origin != i)
                continue;
            out[n].key = c->res[j].key;
            out[n].ch = c->res[j].ch;
            out[n++].handles = c->res[j].handles;
            has = 1;
        }
        if (!has) {
            out[n].key = c->target[i];
            out[n].ch = c->ch[i];
            out[n++].handles = c->handles[i];
        }
    }
    return n;
}

/* The channel for |key|: the highest score among the reachable candidates.
 * One in TRANSIENT_FAILURE (its worker is gone or restarting) is passed
 * over, with a WARN line, so a session goes on elsewhere; the names are
 * then looked up again, since a replica that went may have a successor. */
static const struct cand *affinity_pick(struct cm_rpc_client *c, const char *key, struct cand *all)
{
    int i, n, best = -1, first = 0;
    uint64_t best_score = 0, first_score = 0;

    if (c->nnames) {
        resolve_kick_locked(c, RESOLVE_MAX_AGE_MS);
        if (!c->resolved_at && c->resolving) {
            /* The first session call: wait for the first answer (briefly),
             * or this session's first call would go where its next ones do
             * not. Looked up here, not at creation: clients that never make
             * a session call (a list checked and dropped) never look up. */
            struct timespec until = cm_deadline_ms(200);

            while (c->resolving && pthread_cond_timedwait(&c->resolved_cond, &c->lock, &until) == 0)
                ;
        }
    }
    n = candidates(c, all);
    for (i = 0; i < n; i++) {
        uint64_t score = cm_rpc_rendezvous(key, all[i].key);
        grpc_connectivity_state st = grpc_channel_check_connectivity_state(all[i].ch, 1);

        if (i == 0 || score > first_score) {
            first = i;
            first_score = score;
        }
        if ((st == GRPC_CHANNEL_TRANSIENT_FAILURE || st == GRPC_CHANNEL_SHUTDOWN) ||
            (best >= 0 && score <= best_score))
            continue;
        best = i;
        best_score = score;
    }
    if (best < 0)
        return &all[first]; /* none reachable: the call waits for, or fails on, its own */
    if (best != first) {
        cm_warn("%s is unreachable: this session continues on %s", all[first].key, all[best].key);
        if (c->nnames)
            resolve_kick_locked(c, 0);
    }
    return &all[best];
}

/* The channel and the method's handle for one call: round-robin over the
 * listed targets, or by |affinity| (a session id) over the candidates, then
 * under |c->lock|, which the caller holds until the call exists. */
static void *method_handle(struct cm_rpc_client *c, const struct cm_rpc_method *m,
                           grpc_channel **ch, const char *affinity)
{
    struct cand all[MAX_RESOLVED + MAX_CHANNELS];
    size_t k;
    int ci;

    for (k = 0; k < c->nmethods && strcmp(c->methods[k].path, m->path); k++)
        ;
    if (k == c->nmethods)
        return NULL;
    if (affinity && *affinity && (c->nch > 1 || c->nnames)) {
        const struct cand *p = affinity_pick(c, affinity, all);

        *ch = p->ch;
        return p->handles[k];
    }
    ci = c->nch > 1 ? (int)(atomic_fetch_add(&c->rr, 1u) % (unsigned)c->nch) : 0;
    *ch = c->ch[ci];
    return c->handles[ci][k];
}

static grpc_call *parent_call(const struct cm_rpc_call_opts *opts);

/* Creates the call and its initial metadata list; shared by unary and streams. */
static grpc_call *call_new(struct cm_rpc_client *c, const struct cm_rpc_method *m,
                           const struct cm_rpc_call_opts *opts, grpc_completion_queue *cq,
                           grpc_metadata *md, size_t *nmd, struct cm_rpc_status *st)
{
    gpr_timespec deadline = gpr_inf_future(GPR_CLOCK_MONOTONIC);
    void *handle;
    grpc_call *call;
    size_t k;
    grpc_channel *ch = NULL;
    int locked = opts->affinity && *opts->affinity && (c->nch > 1 || c->nnames);

    *nmd = 0;
    if (locked)
        pthread_mutex_lock(&c->lock); /* a resolved channel lives while it is held */
    handle = method_handle(c, m, &ch, opts->affinity);
    if (!handle) {
        if (locked)
            pthread_mutex_unlock(&c->lock);
        status_set(st, CM_RPC_INTERNAL, "method not registered with this client");
        return NULL;
    }
    if (opts->timeout_ms > 0)
        deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                gpr_time_from_millis(opts->timeout_ms, GPR_TIMESPAN));
    /* With a parent, the child inherits its deadline and is cancelled with it:
     * a client that leaves the gateway stops the tools too. */
    call = grpc_channel_create_registered_call(ch, parent_call(opts), GRPC_PROPAGATE_DEFAULTS, cq,
                                               handle, deadline, NULL);
    if (locked)
        pthread_mutex_unlock(&c->lock);
    if (!call) {
        status_set(st, CM_RPC_INTERNAL, "could not create call");
        return NULL;
    }
    if (auth_token) {
        md[*nmd].key = grpc_slice_from_static_string(CM_RPC_MD_INTERNAL_TOKEN);
        md[*nmd].value = grpc_slice_from_static_buffer(auth_token, auth_token_len);
        (*nmd)++;
    }
    for (k = 0; k < opts->n_meta && *nmd < MAX_META; k++) {
        if (!opts->meta[k].value || !opts->meta[k].value[0] ||
            !strcmp(opts->meta[k].key, CM_RPC_MD_INTERNAL_TOKEN))
            continue;
        md[*nmd].key = grpc_slice_from_static_string(opts->meta[k].key);
        md[*nmd].value = grpc_slice_from_copied_string(opts->meta[k].value);
        (*nmd)++;
    }
    return call;
}

static void read_status(grpc_status_code code, grpc_slice details, const grpc_metadata_array *trail,
                        struct cm_rpc_status *st)
{
    size_t k;

    st->code = (int)code;
    slice_copy(details, st->details, sizeof(st->details));
    st->error_type[0] = '\0';
    for (k = 0; k < trail->count; k++) {
        if (slice_eq(trail->metadata[k].key, CM_RPC_MD_ERROR_TYPE))
            slice_copy(trail->metadata[k].value, st->error_type, sizeof(st->error_type));
    }
}

/* Creates the call on |cq| and packs |req|. 0, or -1 with |st|. */
static int cli_open(struct cli *k, struct cm_rpc_client *c, const struct cm_rpc_method *m,
                    const struct cm_rpc_call_opts *opts, grpc_completion_queue *cq,
                    const ProtobufCMessage *req, struct cm_rpc_status *st)
{
    k->out = m->out;
    k->details = grpc_empty_slice();
    k->code = GRPC_STATUS_UNKNOWN;
    k->call = call_new(c, m, opts, cq, k->md, &k->nmd, st);
    if (!k->call)
        return -1;
    grpc_metadata_array_init(&k->init_md);
    grpc_metadata_array_init(&k->trail_md);
    k->send_bb = pack(req);
    return 0;
}

/* The opening ops: metadata, the request, half-close and the server's initial
 * metadata; |unary| adds the answer and the status, one batch (§2.5).
 * Returns how many were written into |ops| (room for 6). */
static size_t cli_ops(struct cli *k, grpc_op *ops, int wait_for_ready, int unary)
{
    size_t n = 4;

    memset(ops, 0, sizeof(grpc_op) * 6);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = k->nmd;
    ops[0].data.send_initial_metadata.metadata = k->nmd ? k->md : NULL;
    ops[0].flags = wait_for_ready ? GRPC_INITIAL_METADATA_WAIT_FOR_READY : 0;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = k->send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &k->init_md;
    if (unary) {
        ops[n].op = GRPC_OP_RECV_MESSAGE;
        ops[n++].data.recv_message.recv_message = &k->recv_bb;
        ops[n].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        ops[n].data.recv_status_on_client.trailing_metadata = &k->trail_md;
        ops[n].data.recv_status_on_client.status = &k->code;
        ops[n++].data.recv_status_on_client.status_details = &k->details;
    }
    return n;
}

/* The status op of a streaming call, posted on its own (§2.6). */
static void cli_status_op(struct cli *k, grpc_op *op)
{
    memset(op, 0, sizeof(*op));
    op->op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op->data.recv_status_on_client.trailing_metadata = &k->trail_md;
    op->data.recv_status_on_client.status = &k->code;
    op->data.recv_status_on_client.status_details = &k->details;
}

/* The answer of a unary call that completed: 0 with |*resp|, or -1. */
static int cli_result(struct cli *k, ProtobufCMessage **resp, struct cm_rpc_status *st)
{
    read_status(k->code, k->details, &k->trail_md, st);
    if (k->code != GRPC_STATUS_OK)
        return -1;
    *resp = unpack(k->out, k->recv_bb);
    if (*resp)
        return 0;
    status_set(st, CM_RPC_INTERNAL, "response message is malformed or missing");
    return -1;
}

static void cli_cleanup(struct cli *k)
{
    size_t i;

    for (i = 0; i < k->nmd; i++)
        grpc_slice_unref(k->md[i].value);
    grpc_byte_buffer_destroy(k->send_bb);
    if (k->recv_bb)
        grpc_byte_buffer_destroy(k->recv_bb);
    grpc_slice_unref(k->details);
    grpc_metadata_array_destroy(&k->init_md);
    grpc_metadata_array_destroy(&k->trail_md);
    grpc_call_unref(k->call);
}

struct cm_rpc_stream *cm_rpc_stream_open(struct cm_rpc_client *c, const struct cm_rpc_method *m,
                                         const ProtobufCMessage *req,
                                         const struct cm_rpc_call_opts *opts,
                                         struct cm_rpc_status *st)
{
    struct cm_rpc_call_opts none = {0};
    struct cm_rpc_stream *s = calloc(1, sizeof(*s));
    grpc_op ops[6], sop;
    size_t n;

    if (!s) {
        status_set(st, CM_RPC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    if (!opts)
        opts = &none;
    s->cq = thread_cq();
    if (cli_open(&s->k, c, m, opts, s->cq, req, st)) {
        free(s);
        return NULL;
    }
    n = cli_ops(&s->k, ops, opts->wait_for_ready, 0);
    cli_status_op(&s->k, &sop);
    /* Two batches (§2.6): the status one is posted at once, so the call ends
     * cleanly whenever the server finishes. */
    if (grpc_call_start_batch(s->k.call, ops, n, &s->start_tag, NULL) != GRPC_CALL_OK) {
        s->start_reaped = 1;
        grpc_call_cancel(s->k.call, NULL);
    }
    if (grpc_call_start_batch(s->k.call, &sop, 1, &s->status_tag, NULL) != GRPC_CALL_OK) {
        /* Cannot happen on a fresh call; fail loudly rather than hang in close. */
        status_set(st, CM_RPC_INTERNAL, "could not start the stream");
        grpc_call_cancel(s->k.call, NULL);
        if (!s->start_reaped)
            grpc_completion_queue_pluck(s->cq, &s->start_tag, gpr_inf_future(GPR_CLOCK_REALTIME),
                                        NULL);
        s->start_reaped = 1;
        s->k.code = GRPC_STATUS_INTERNAL;
        s->status_tag = -1; /* nothing to reap */
    }
    return s;
}

int cm_rpc_stream_next_timed(struct cm_rpc_stream *s, ProtobufCMessage **msg, int timeout_ms)
{
    gpr_timespec deadline = timeout_ms < 0
                                ? gpr_inf_future(GPR_CLOCK_REALTIME)
                                : gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                               gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    grpc_event ev;
    grpc_op op;

    *msg = NULL;
    if (s->ended)
        return 0;
    if (!s->recv_pending) {
        /* One RECV_MESSAGE at a time; after a timeout the same one is waited on. */
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &s->k.recv_bb;
        s->k.recv_bb = NULL;
        if (grpc_call_start_batch(s->k.call, &op, 1, &s->recv_tag, NULL) != GRPC_CALL_OK)
            return -1;
        s->recv_pending = 1;
    }
    ev = grpc_completion_queue_pluck(s->cq, &s->recv_tag, deadline, NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT)
        return 2;
    s->recv_pending = 0;
    if (ev.type != GRPC_OP_COMPLETE || !ev.success)
        return -1;
    if (!s->k.recv_bb) {
        s->ended = 1;
        return 0; /* the server closed the stream; the status says how */
    }
    *msg = unpack(s->k.out, s->k.recv_bb);
    grpc_byte_buffer_destroy(s->k.recv_bb);
    s->k.recv_bb = NULL;
    if (!*msg) {
        grpc_call_cancel(s->k.call, NULL);
        return -1;
    }
    return 1;
}

int cm_rpc_stream_next(struct cm_rpc_stream *s, ProtobufCMessage **msg)
{
    return cm_rpc_stream_next_timed(s, msg, -1);
}

void cm_rpc_stream_cancel(struct cm_rpc_stream *s)
{
    grpc_call_cancel(s->k.call, NULL);
}

int cm_rpc_stream_close(struct cm_rpc_stream *s, struct cm_rpc_status *st)
{
    int rc;

    if (!s)
        return -1;
    /* A stream abandoned early must not wait for the server to finish; one
     * read to its end keeps the status the server sent. */
    if (!s->ended)
        grpc_call_cancel(s->k.call, NULL);
    if (s->recv_pending) /* its buffer, if any, goes with the rest */
        grpc_completion_queue_pluck(s->cq, &s->recv_tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (!s->start_reaped)
        grpc_completion_queue_pluck(s->cq, &s->start_tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (s->status_tag != -1)
        grpc_completion_queue_pluck(s->cq, &s->status_tag, gpr_inf_future(GPR_CLOCK_REALTIME),
                                    NULL);
    if (s->status_tag != -1)
        read_status(s->k.code, s->k.details, &s->k.trail_md, st);
    rc = s->k.code == GRPC_STATUS_OK ? 0 : -1;
    cli_cleanup(&s->k);
    free(s);
    return rc;
}

int cm_rpc_call(struct cm_rpc_client *c, const struct cm_rpc_method *m, const ProtobufCMessage *req,
                ProtobufCMessage **resp, const struct cm_rpc_call_opts *opts,
                struct cm_rpc_status *st)
{
    struct cm_rpc_call_opts none = {0};
    grpc_completion_queue *cq = thread_cq();
    struct cli k;
    grpc_op ops[6];
    size_t n;
    int tag, rc = -1;

    *resp = NULL;
    if (!opts)
        opts = &none;
    if (cli_open(&k, c, m, opts, cq, req, st))
        return -1;
    n = cli_ops(&k, ops, opts->wait_for_ready, 1);
    /* Unary is one 6-op batch on this thread's queue (§2.5): one wake-up. */
    if (grpc_call_start_batch(k.call, ops, n, &tag, NULL) != GRPC_CALL_OK)
        status_set(st, CM_RPC_INTERNAL, "could not start call");
    else if (grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
             GRPC_OP_COMPLETE)
        status_set(st, CM_RPC_INTERNAL, "call did not complete");
    else
        rc = cli_result(&k, resp, st);
    cli_cleanup(&k);
    return rc;
}

/* gRPC waits at least 100 ms between connection attempts (it clamps every
 * backoff setting below that), so a peer that starts 5 ms after our first,
 * refused attempt would wait out the whole 100 ms. While somebody waits for
 * the connection, the backoff is reset every READY_SLICE_MS: each reset is
 * one connect() to a local port, and it stops once connected or at the
 * caller's deadline. */
#define READY_SLICE_MS 5

static int any_ready(struct cm_rpc_client *c, int try_to_connect)
{
    int i;

    for (i = 0; i < c->nch; i++) {
        if (grpc_channel_check_connectivity_state(c->ch[i], try_to_connect) == GRPC_CHANNEL_READY)
            return 1;
    }
    return 0;
}

int cm_rpc_client_connected(struct cm_rpc_client *c)
{
    return any_ready(c, 1);
}

void cm_rpc_client_reset_backoff(struct cm_rpc_client *c)
{
    int i;

    for (i = 0; i < c->nch; i++)
        grpc_channel_reset_connect_backoff(c->ch[i]);
}

int cm_rpc_client_wait_ready(struct cm_rpc_client *c, int timeout_ms)
{
    grpc_completion_queue *cq;
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));

    /* The common case costs one lock per channel: already connected. */
    if (any_ready(c, 1))
        return 0;
    cq = thread_cq();
    while (gpr_time_cmp(gpr_now(GPR_CLOCK_MONOTONIC), deadline) < 0) {
        grpc_connectivity_state s = grpc_channel_check_connectivity_state(c->ch[0], 1);
        gpr_timespec slice = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                          gpr_time_from_millis(READY_SLICE_MS, GPR_TIMESPAN));
        int tag;

        if (s == GRPC_CHANNEL_TRANSIENT_FAILURE)
            cm_rpc_client_reset_backoff(c);
        if (gpr_time_cmp(slice, deadline) > 0)
            slice = deadline;
        grpc_channel_watch_connectivity_state(c->ch[0], s, slice, cq, &tag);
        grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (any_ready(c, 1))
            return 0;
    }
    return -1;
}

int cm_rpc_health(struct cm_rpc_client *c, const char *service, int timeout_ms,
                  struct cm_rpc_status *st)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    ProtobufCMessage *resp;
    struct cm_rpc_call_opts o = {0};
    int serving;

    req.service = (char *)(service ? service : "");
    o.timeout_ms = timeout_ms;
    if (cm_rpc_call(c, &cm_rpc_health_check_method, &req.base, &resp, &o, st))
        return -1;
    serving = ((Grpc__Health__V1__HealthCheckResponse *)resp)->status ==
              GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    protobuf_c_message_free_unpacked(resp, NULL);
    return serving;
}

/* ---- asynchronous calls: every completion is an event on a cm_loop ----
 *
 * One NEXT queue per cm_rpc_events and one thread blocked on it forever
 * (no timeout: an idle process sleeps). Each tag is a struct cm_task; the
 * thread writes the completion's success into it and posts it to the loop,
 * where the owner's state machine runs without locks
 * (../shared/research/event-driven.md, "gRPC core without a thread per call"). */

struct cm_rpc_events {
    grpc_completion_queue *cq;
    struct cm_loop *loop;
    pthread_t thread;
    int started;
};

static grpc_completion_queue *events_cq(struct cm_rpc_events *ev)
{
    return ev->cq;
}

static void *events_main(void *p)
{
    struct cm_rpc_events *ev = p;

    for (;;) {
        grpc_event e = grpc_completion_queue_next(ev->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        struct cm_task *t;

        if (e.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (e.type != GRPC_OP_COMPLETE)
            continue;
        t = e.tag;
        t->ok = e.success;
        cm_loop_post(ev->loop, t);
    }
    return NULL;
}

struct cm_rpc_events *cm_rpc_events_new(struct cm_loop *loop)
{
    struct cm_rpc_events *ev = calloc(1, sizeof(*ev));

    if (!ev)
        return NULL;
    ev->loop = loop;
    ev->cq = grpc_completion_queue_create_for_next(NULL);
    if (pthread_create(&ev->thread, NULL, events_main, ev)) {
        grpc_completion_queue_shutdown(ev->cq);
        grpc_completion_queue_destroy(ev->cq);
        free(ev);
        return NULL;
    }
    ev->started = 1;
    return ev;
}

void cm_rpc_events_free(struct cm_rpc_events *ev)
{
    if (!ev)
        return;
    /* Every event still pending is delivered before GRPC_QUEUE_SHUTDOWN (§6.3). */
    grpc_completion_queue_shutdown(ev->cq);
    if (ev->started)
        pthread_join(ev->thread, NULL);
    grpc_completion_queue_destroy(ev->cq);
    free(ev);
}

/* One outgoing stream message waiting for its turn (one SEND at a time, §2.11). */
struct outmsg {
    struct outmsg *next;
    grpc_byte_buffer *bb;
    size_t len;
};

struct cm_rpc_acall {
    struct cm_task req_task, close_task, send_task;
    struct cm_rpc_server *srv;
    struct reg *reg;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    int cancelled_flag; /* written by RECV_CLOSE_ON_SERVER */
    int close_done, peer_gone, user_done, initial_sent, status_sent, send_inflight;
    struct outmsg *out_head, *out_tail, *inflight;
    size_t out_bytes;
    int code;
    char *details;
    char error_type[64];
    grpc_slice st_details;
    grpc_metadata trailer;
    int has_trailer;
    void (*on_cancel)(void *ud);
    void *cancel_ud;
    void (*on_idle)(void *ud);
    void *idle_ud;
    struct meta meta;
};

static void acall_maybe_free(struct cm_rpc_acall *a);
static void acall_pump(struct cm_rpc_acall *a);

static void outmsg_free(struct outmsg *m)
{
    if (!m)
        return;
    grpc_byte_buffer_destroy(m->bb);
    free(m);
}

static void acall_free(struct cm_rpc_acall *a)
{
    while (a->out_head) {
        struct outmsg *m = a->out_head;

        a->out_head = m->next;
        outmsg_free(m);
    }
    outmsg_free(a->inflight);
    meta_free(&a->meta);
    grpc_metadata_array_destroy(&a->md);
    if (a->payload)
        grpc_byte_buffer_destroy(a->payload);
    if (a->status_sent) {
        grpc_slice_unref(a->st_details);
        if (a->has_trailer)
            grpc_slice_unref(a->trailer.value);
    }
    free(a->details);
    if (a->call)
        grpc_call_unref(a->call);
    free(a);
}

/* The call goes once gRPC has nothing of ours in flight and the owner let go. */
static void acall_maybe_free(struct cm_rpc_acall *a)
{
    if (a->close_done && a->user_done && !a->send_inflight)
        acall_free(a);
}

static void on_close(struct cm_task *t)
{
    struct cm_rpc_acall *a = (void *)((char *)t - offsetof(struct cm_rpc_acall, close_task));

    a->close_done = 1;
    if (a->cancelled_flag) {
        a->peer_gone = 1;
        if (!a->user_done && a->on_cancel) {
            void (*cb)(void *) = a->on_cancel;

            a->on_cancel = NULL;
            cb(a->cancel_ud); /* may finish (and so release) the call */
            return;
        }
    }
    acall_maybe_free(a);
}

static void on_sent(struct cm_task *t)
{
    struct cm_rpc_acall *a = (void *)((char *)t - offsetof(struct cm_rpc_acall, send_task));

    a->send_inflight = 0;
    outmsg_free(a->inflight);
    a->inflight = NULL;
    if (!t->ok)
        a->peer_gone = 1;
    acall_pump(a);
    if (!a->send_inflight && !a->user_done && !a->peer_gone && a->on_idle) {
        a->on_idle(a->idle_ud); /* may send, or end (and so release) the call */
        return;
    }
    acall_maybe_free(a);
}

/* Starts the next send batch: the next message, the status, or both. */
static void acall_pump(struct cm_rpc_acall *a)
{
    grpc_op ops[3];
    size_t n = 0;
    int with_status;

    if (a->send_inflight || a->status_sent)
        return;
    if (a->peer_gone) {
        /* Nothing more can reach the client: drop what waits. */
        while (a->out_head) {
            struct outmsg *m = a->out_head;

            a->out_head = m->next;
            outmsg_free(m);
        }
        a->out_tail = NULL;
        a->out_bytes = 0;
        if (!a->user_done)
            return;
        if (a->close_done)
            return; /* cancelled: no status is owed (§6.7) */
    }
    if (!a->out_head && !a->user_done)
        return;
    memset(ops, 0, sizeof(ops));
    if (!a->initial_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        a->initial_sent = 1;
    }
    if (a->out_head) {
        a->inflight = a->out_head;
        a->out_head = a->inflight->next;
        if (!a->out_head)
            a->out_tail = NULL;
        a->out_bytes -= a->inflight->len;
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = a->inflight->bb;
    }
    with_status = a->user_done && !a->out_head;
    if (with_status) {
        a->st_details = grpc_slice_from_copied_string(a->details ? a->details : "");
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = (grpc_status_code)a->code;
        ops[n].data.send_status_from_server.status_details = &a->st_details;
        if (a->error_type[0]) {
            a->trailer.key = grpc_slice_from_static_string(CM_RPC_MD_ERROR_TYPE);
            a->trailer.value = grpc_slice_from_copied_string(a->error_type);
            a->has_trailer = 1;
            ops[n].data.send_status_from_server.trailing_metadata_count = 1;
            ops[n].data.send_status_from_server.trailing_metadata = &a->trailer;
        }
        n++;
        a->status_sent = 1;
    }
    if (grpc_call_start_batch(a->call, ops, n, &a->send_task, NULL) != GRPC_CALL_OK) {
        outmsg_free(a->inflight);
        a->inflight = NULL;
        a->peer_gone = 1;
        return;
    }
    a->send_inflight = 1;
}

static void on_request(struct cm_task *t);

static int async_arm(struct cm_rpc_server *srv, struct reg *reg)
{
    struct cm_rpc_acall *a = calloc(1, sizeof(*a));
    grpc_completion_queue *cq;

    if (!a)
        return CM_ENOMEM;
    a->srv = srv;
    a->reg = reg;
    a->req_task.run = on_request;
    a->close_task.run = on_close;
    a->send_task.run = on_sent;
    grpc_metadata_array_init(&a->md);
    cq = reg->events->cq;
    if (grpc_server_request_registered_call(srv->server, reg->handle, &a->call, &a->deadline,
                                            &a->md, &a->payload, cq, cq,
                                            &a->req_task) != GRPC_CALL_OK) {
        grpc_metadata_array_destroy(&a->md);
        free(a);
        return CM_EIO;
    }
    return 0;
}

static void on_request(struct cm_task *t)
{
    struct cm_rpc_acall *a = (struct cm_rpc_acall *)t; /* req_task is the first member */
    ProtobufCMessage *req;
    grpc_op op;

    if (!t->ok) {
        /* The server is shutting down: this request will never match. */
        if (a->call)
            grpc_call_unref(a->call);
        a->call = NULL;
        acall_free(a);
        return;
    }
    /* Re-arm first: the live call keeps the server from finishing shutdown,
     * so the server is valid here (§3). A failure only narrows the backlog. */
    async_arm(a->srv, a->reg);
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &a->cancelled_flag;
    if (grpc_call_start_batch(a->call, &op, 1, &a->close_task, NULL) != GRPC_CALL_OK) {
        a->close_done = a->user_done = 1;
        acall_maybe_free(a);
        return;
    }
    if (!token_ok(&a->md)) {
        log_refused(a->call, a->reg->m.path);
        grpc_byte_buffer_destroy(a->payload);
        a->payload = NULL;
        cm_rpc_acall_finish(a, CM_RPC_UNAUTHENTICATED, NULL, REFUSED_TEXT);
        return;
    }
    meta_copy(&a->meta, &a->md);
    if (!a->payload) {
        cm_rpc_acall_finish(a, CM_RPC_INVALID_ARGUMENT, NULL, "request message missing");
        return;
    }
    req = unpack(a->reg->m.in, a->payload);
    grpc_byte_buffer_destroy(a->payload);
    a->payload = NULL;
    if (!req) {
        cm_rpc_acall_finish(a, CM_RPC_INVALID_ARGUMENT, NULL, "request message is malformed");
        return;
    }
    a->reg->async_handler(a, req, a->reg->ud);
}

const char *cm_rpc_acall_meta(const struct cm_rpc_acall *a, const char *key)
{
    return meta_get(&a->meta, key);
}

int cm_rpc_acall_meta_at(const struct cm_rpc_acall *a, int i, const char **key, const char **value)
{
    return meta_at(&a->meta, i, key, value);
}

void cm_rpc_acall_on_cancel(struct cm_rpc_acall *a, void (*cb)(void *ud), void *ud)
{
    a->on_cancel = cb;
    a->cancel_ud = ud;
}

void cm_rpc_acall_on_idle(struct cm_rpc_acall *a, void (*cb)(void *ud), void *ud)
{
    a->on_idle = cb;
    a->idle_ud = ud;
}

int cm_rpc_acall_busy(const struct cm_rpc_acall *a)
{
    return a->send_inflight || a->out_head != NULL;
}

/* Queues |msg| behind what waits. 0, CM_ECANCELED, CM_ENOMEM or CM_ETOOBIG. */
static int acall_enqueue(struct cm_rpc_acall *a, const ProtobufCMessage *msg, size_t cap)
{
    struct outmsg *m;

    if (a->peer_gone || a->user_done)
        return CM_ECANCELED;
    m = calloc(1, sizeof(*m));
    if (!m)
        return CM_ENOMEM;
    m->len = protobuf_c_message_get_packed_size(msg);
    if (cap && a->out_bytes + m->len > cap) {
        /* A reader that does not keep up must not grow our memory. */
        free(m);
        grpc_call_cancel_with_status(a->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                     "the stream's reader is too slow", NULL);
        a->peer_gone = 1;
        return CM_ETOOBIG;
    }
    m->bb = pack(msg);
    if (a->out_tail)
        a->out_tail->next = m;
    else
        a->out_head = m;
    a->out_tail = m;
    a->out_bytes += m->len;
    return 0;
}

int cm_rpc_acall_send(struct cm_rpc_acall *a, const ProtobufCMessage *msg, size_t cap)
{
    int rc = acall_enqueue(a, msg, cap);

    if (!rc)
        acall_pump(a);
    return rc;
}

void cm_rpc_acall_end_with(struct cm_rpc_acall *a, const ProtobufCMessage *last)
{
    if (a->user_done)
        return;
    /* Queued without a send of its own: it leaves with the status, in one
     * batch, unless an earlier message is still on its way. */
    a->code = acall_enqueue(a, last, 0) ? GRPC_STATUS_INTERNAL : GRPC_STATUS_OK;
    a->user_done = 1;
    a->on_cancel = NULL;
    a->on_idle = NULL;
    a->details = strdup("");
    acall_pump(a);
    acall_maybe_free(a);
}

void cm_rpc_acall_reply(struct cm_rpc_acall *a, const ProtobufCMessage *msg)
{
    if (a->user_done)
        return;
    /* Message and status leave in one batch (§2.11, unary). */
    a->code = acall_enqueue(a, msg, 0) ? GRPC_STATUS_INTERNAL : GRPC_STATUS_OK;
    a->user_done = 1;
    a->on_cancel = NULL;
    a->on_idle = NULL;
    acall_pump(a);
    acall_maybe_free(a);
}

void cm_rpc_acall_finish(struct cm_rpc_acall *a, int code, const char *error_type, const char *fmt,
                         ...)
{
    va_list ap;
    char buf[512];

    if (a->user_done)
        return;
    buf[0] = '\0';
    if (fmt) {
        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
    }
    a->code = code;
    a->details = strdup(buf);
    if (error_type)
        cm_strlcpy(a->error_type, error_type, sizeof(a->error_type));
    a->user_done = 1;
    a->on_cancel = NULL;
    a->on_idle = NULL;
    acall_pump(a);
    acall_maybe_free(a);
}

/* ---- asynchronous client calls (unary) ---- */

struct cm_rpc_pending {
    struct cm_task task;
    struct cli k;
    cm_rpc_async_done done;
    void *ud;
};

static grpc_call *parent_call(const struct cm_rpc_call_opts *opts)
{
    if (opts->parent)
        return opts->parent->call;
    if (opts->aparent)
        return opts->aparent->call;
    return NULL;
}

static void on_pending_done(struct cm_task *t)
{
    struct cm_rpc_pending *p = (struct cm_rpc_pending *)t;
    struct cm_rpc_status st;
    ProtobufCMessage *resp = NULL;

    if (!t->ok)
        status_set(&st, CM_RPC_INTERNAL, "call did not complete");
    else
        cli_result(&p->k, &resp, &st);
    p->done(p->ud, &st, resp);
    cli_cleanup(&p->k);
    free(p);
}

struct cm_rpc_pending *cm_rpc_call_async(struct cm_rpc_client *c, struct cm_rpc_events *ev,
                                         const struct cm_rpc_method *m, const ProtobufCMessage *req,
                                         const struct cm_rpc_call_opts *opts,
                                         cm_rpc_async_done done, void *ud, struct cm_rpc_status *st)
{
    struct cm_rpc_call_opts none = {0};
    struct cm_rpc_pending *p = calloc(1, sizeof(*p));
    grpc_op ops[6];
    size_t n;

    if (!p) {
        status_set(st, CM_RPC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    if (!opts)
        opts = &none;
    p->task.run = on_pending_done;
    p->done = done;
    p->ud = ud;
    if (cli_open(&p->k, c, m, opts, ev->cq, req, st)) {
        free(p);
        return NULL;
    }
    n = cli_ops(&p->k, ops, opts->wait_for_ready, 1);
    if (grpc_call_start_batch(p->k.call, ops, n, &p->task, NULL) != GRPC_CALL_OK) {
        status_set(st, CM_RPC_INTERNAL, "could not start call");
        cli_cleanup(&p->k);
        free(p);
        return NULL;
    }
    return p;
}

void cm_rpc_pending_cancel(struct cm_rpc_pending *p)
{
    if (p)
        grpc_call_cancel(p->k.call, NULL);
}

/* ---- asynchronous client streams (server-streaming) ----
 * Three kinds of batch, each its own task: the start (send + close + initial
 * metadata), the status (posted at once, §2.6) and one RECV_MESSAGE at a
 * time. The stream ends, and |on_end| runs, once the status is in and no
 * batch is still out. */

struct cm_rpc_astream {
    struct cm_task start_task, status_task, recv_task;
    struct cli k;
    int start_out, status_out, recv_out, eos;
    cm_rpc_astream_msg on_msg;
    cm_rpc_astream_end on_end;
    void *ud;
};

static void astream_maybe_end(struct cm_rpc_astream *s)
{
    struct cm_rpc_status st;

    if (s->start_out || s->status_out || s->recv_out)
        return;
    read_status(s->k.code, s->k.details, &s->k.trail_md, &st);
    s->on_end(s->ud, &st);
    cli_cleanup(&s->k);
    free(s);
}

static void astream_recv(struct cm_rpc_astream *s)
{
    grpc_op op;

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &s->k.recv_bb;
    if (grpc_call_start_batch(s->k.call, &op, 1, &s->recv_task, NULL) == GRPC_CALL_OK)
        s->recv_out = 1;
    else
        s->eos = 1;
}

static void on_astream_start(struct cm_task *t)
{
    struct cm_rpc_astream *s = (void *)((char *)t - offsetof(struct cm_rpc_astream, start_task));

    s->start_out = 0;
    if (t->ok && !s->eos)
        astream_recv(s);
    else
        s->eos = 1;
    astream_maybe_end(s);
}

static void on_astream_msg(struct cm_task *t)
{
    struct cm_rpc_astream *s = (void *)((char *)t - offsetof(struct cm_rpc_astream, recv_task));
    grpc_byte_buffer *bb = s->k.recv_bb;

    s->recv_out = 0;
    s->k.recv_bb = NULL;
    if (!t->ok || !bb) {
        s->eos = 1; /* the end of the stream, or a failed call: the status says */
    } else {
        ProtobufCMessage *m = unpack(s->k.out, bb);

        grpc_byte_buffer_destroy(bb);
        if (!m) {
            grpc_call_cancel_with_status(s->k.call, GRPC_STATUS_INTERNAL, "malformed message",
                                         NULL);
            s->eos = 1;
        } else {
            s->on_msg(s->ud, m);
            if (!s->eos)
                astream_recv(s);
        }
    }
    astream_maybe_end(s);
}

static void on_astream_status(struct cm_task *t)
{
    struct cm_rpc_astream *s = (void *)((char *)t - offsetof(struct cm_rpc_astream, status_task));

    s->status_out = 0;
    astream_maybe_end(s);
}

struct cm_rpc_astream *cm_rpc_astream_open(struct cm_rpc_client *c, struct cm_rpc_events *ev,
                                           const struct cm_rpc_method *m,
                                           const ProtobufCMessage *req,
                                           const struct cm_rpc_call_opts *opts,
                                           cm_rpc_astream_msg on_msg, cm_rpc_astream_end on_end,
                                           void *ud, struct cm_rpc_status *st)
{
    struct cm_rpc_call_opts none = {0};
    struct cm_rpc_astream *s = calloc(1, sizeof(*s));
    grpc_op ops[6], sop;
    size_t n;

    if (!s) {
        status_set(st, CM_RPC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    if (!opts)
        opts = &none;
    s->start_task.run = on_astream_start;
    s->status_task.run = on_astream_status;
    s->recv_task.run = on_astream_msg;
    s->on_msg = on_msg;
    s->on_end = on_end;
    s->ud = ud;
    if (cli_open(&s->k, c, m, opts, ev->cq, req, st)) {
        free(s);
        return NULL;
    }
    n = cli_ops(&s->k, ops, opts->wait_for_ready, 0);
    cli_status_op(&s->k, &sop);
    if (grpc_call_start_batch(s->k.call, &sop, 1, &s->status_task, NULL) != GRPC_CALL_OK) {
        status_set(st, CM_RPC_INTERNAL, "could not start the stream");
        cli_cleanup(&s->k);
        free(s);
        return NULL;
    }
    s->status_out = 1;
    if (grpc_call_start_batch(s->k.call, ops, n, &s->start_task, NULL) == GRPC_CALL_OK)
        s->start_out = 1;
    else
        grpc_call_cancel(s->k.call, NULL); /* the status batch then ends it */
    return s;
}

void cm_rpc_astream_cancel(struct cm_rpc_astream *s)
{
    if (s)
        grpc_call_cancel(s->k.call, NULL);
}
