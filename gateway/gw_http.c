#include "gw_http.h"
#include "cm_buf.h"
#include "cm_log.h"
#include "cm_rpc.h"
#include "cm_util.h"
#include "gw_api.h"

#include "agentcore.pb-c.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const struct cm_rpc_method invoke_method = {
    "/agentcore.v1.AgentService/Invoke", &agentcore__v1__invoke_request__descriptor,
    &agentcore__v1__invoke_response__descriptor, CM_RPC_UNARY};

struct gw_http {
    struct MHD_Daemon *daemon;
    struct cm_rpc_client *agent;
    struct gw_http_config cfg;
    int port;
    long long ping_since; /* unix seconds of the last status change */
    pthread_mutex_t lock;
    pthread_cond_t idle;
    int in_flight;
};

/* Per-request state, alive from the first callback to MHD's completion notice. */
struct req {
    struct cm_buf body;
    int too_big;
    uint64_t start_ms;
};

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];

    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    cm_warn("http: %s", msg);
}

static enum MHD_Result send_json(struct MHD_Connection *c, int status, char *body,
                                 const char *session_id, const char *request_id, const char *allow)
{
    struct MHD_Response *r;
    enum MHD_Result ret;

    if (!body)
        body = strdup("{\"error\":\"Internal error\"}");
    r = MHD_create_response_from_buffer(body ? strlen(body) : 0, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    if (session_id)
        MHD_add_response_header(r, GW_SESSION_HEADER, session_id);
    if (request_id)
        MHD_add_response_header(r, GW_REQUEST_HEADER, request_id);
    if (allow)
        MHD_add_response_header(r, "Allow", allow);
    ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

/* The non-streaming answer as one SSE event, for clients that ask to stream
 * before token streaming lands: the final event's shape is the JSON answer. */
static enum MHD_Result send_sse_final(struct MHD_Connection *c, const char *json,
                                      const char *session_id, const char *request_id)
{
    struct cm_buf b;
    struct MHD_Response *r;
    enum MHD_Result ret;

    cm_buf_init(&b, strlen(json) + 16);
    if (cm_buf_printf(&b, "data: %s\n\n", json)) {
        cm_buf_free(&b);
        return MHD_NO;
    }
    r = MHD_create_response_from_buffer(b.len, b.data, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        cm_buf_free(&b);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, GW_SESSION_HEADER, session_id);
    MHD_add_response_header(r, GW_REQUEST_HEADER, request_id);
    ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

static void access_log(const char *method, const char *url, int status, uint64_t start_ms)
{
    char st[8], dur[24];
    const char *kv[] = {"method", method, "path", url, "status", st, "durationMs", dur, NULL};

    if (!CM_LOG_ENABLED(CM_LOG_INFO))
        return;
    snprintf(st, sizeof(st), "%d", status);
    snprintf(dur, sizeof(dur), "%llu", (unsigned long long)(cm_now_ms() - start_ms));
    cm_log_write(CM_LOG_INFO, kv, "request");
}

static enum MHD_Result handle_ping(struct gw_http *h, struct MHD_Connection *c)
{
    return send_json(c, 200, gw_api_ping_body("Healthy", h->ping_since), NULL, NULL, NULL);
}

static void flight(struct gw_http *h, int delta)
{
    pthread_mutex_lock(&h->lock);
    h->in_flight += delta;
    if (h->in_flight == 0)
        pthread_cond_broadcast(&h->idle);
    pthread_mutex_unlock(&h->lock);
}

static enum MHD_Result handle_invocation(struct gw_http *h, struct MHD_Connection *c,
                                         struct req *rq, int *status_out)
{
    Agentcore__V1__InvokeRequest ireq = AGENTCORE__V1__INVOKE_REQUEST__INIT;
    Agentcore__V1__InvokeResponse *iresp = NULL;
    struct gw_invocation inv;
    struct gw_reply rep = {0, NULL};
    struct cm_rpc_status st;
    struct cm_rpc_call_opts o = {0};
    struct cm_rpc_meta md[3];
    char session[GW_SESSION_ID_MAX + 1], request_id[CM_UUID_LEN + 1 + 220];
    const char *hdr;
    enum MHD_Result ret;

    hdr = MHD_lookup_connection_value(c, MHD_HEADER_KIND, GW_REQUEST_HEADER);
    if (hdr && *hdr && strlen(hdr) < sizeof(request_id))
        cm_strlcpy(request_id, hdr, sizeof(request_id));
    else if (cm_uuid4(request_id))
        cm_strlcpy(request_id, "unknown", sizeof(request_id));
    cm_log_set_context(request_id, NULL);

    if (rq->too_big) {
        char why[96];

        snprintf(why, sizeof(why), "request body larger than %zu bytes", h->cfg.max_body);
        gw_api_error(&rep, 413, "Payload Too Large", why);
        goto reply;
    }
    if (gw_api_parse_invocation(rq->body.data ? rq->body.data : "", rq->body.len, &inv, &rep))
        goto reply;
    if (gw_api_session_id(MHD_lookup_connection_value(c, MHD_HEADER_KIND, GW_SESSION_HEADER),
                          inv.session_id, session, &rep)) {
        gw_invocation_clear(&inv);
        goto reply;
    }
    cm_log_set_context(request_id, session);

    ireq.prompt = (char *)inv.prompt;
    ireq.session_id = session;
    ireq.request_id = request_id;
    ireq.stream = inv.stream;
    md[0] = (struct cm_rpc_meta){CM_RPC_MD_REQUEST_ID, request_id};
    md[1] = (struct cm_rpc_meta){CM_RPC_MD_SESSION_ID, session};
    md[2] = (struct cm_rpc_meta){CM_RPC_MD_TRACEPARENT,
                                 MHD_lookup_connection_value(c, MHD_HEADER_KIND, "traceparent")};
    o.timeout_ms = h->cfg.invoke_timeout_ms;
    o.meta = md;
    o.n_meta = 3;
    flight(h, 1);
    if (cm_rpc_call(h->agent, &invoke_method, &ireq.base, (ProtobufCMessage **)&iresp, &o, &st)) {
        cm_warn("agent call failed: %s: %s", cm_rpc_code_name(st.code), st.details);
        gw_api_agent_error(st.code, st.error_type, st.details, &rep);
    } else {
        rep.status = 200;
        rep.body =
            gw_api_response_body(iresp->invocation_id, iresp->session_id, iresp->response,
                                 iresp->stop_reason, iresp->usage ? iresp->usage->input_tokens : 0,
                                 iresp->usage ? iresp->usage->output_tokens : 0,
                                 iresp->usage ? iresp->usage->total_tokens : 0, iresp->iterations);
        protobuf_c_message_free_unpacked(&iresp->base, NULL);
        if (!rep.body)
            gw_api_error(&rep, 500, "Internal error", "cannot serialise the answer");
    }
    flight(h, -1);
    if (rep.status == 200 && inv.stream) {
        gw_invocation_clear(&inv);
        *status_out = 200;
        ret = send_sse_final(c, rep.body, session, request_id);
        gw_reply_clear(&rep);
        return ret;
    }
    gw_invocation_clear(&inv);
    *status_out = rep.status;
    return send_json(c, rep.status, rep.body, session, request_id, NULL);
reply:
    *status_out = rep.status;
    return send_json(c, rep.status, rep.body, NULL, request_id, NULL);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct gw_http *h = cls;
    struct req *rq = *con_cls;
    int is_ping = !strcmp(url, "/ping"), is_inv = !strcmp(url, "/invocations");
    int status = 0;
    enum MHD_Result ret;

    (void)version;
    if (!rq) {
        const char *cl;

        rq = calloc(1, sizeof(*rq));
        if (!rq)
            return MHD_NO;
        rq->start_ms = cm_now_ms();
        cm_buf_init(&rq->body, h->cfg.max_body);
        *con_cls = rq;
        /* Answer what needs no body at once. */
        if (!is_ping && !is_inv) {
            access_log(method, url, 404, rq->start_ms);
            return send_json(c, 404, gw_api_error_body("Not Found", NULL), NULL, NULL, NULL);
        }
        if (is_ping && strcmp(method, "GET") && strcmp(method, "HEAD")) {
            access_log(method, url, 405, rq->start_ms);
            return send_json(c, 405, gw_api_error_body("Method Not Allowed", NULL), NULL, NULL,
                             "GET, HEAD");
        }
        if (is_inv && strcmp(method, "POST")) {
            access_log(method, url, 405, rq->start_ms);
            return send_json(c, 405, gw_api_error_body("Method Not Allowed", NULL), NULL, NULL,
                             "POST");
        }
        cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > h->cfg.max_body)
            rq->too_big = 1;
        /* Answering on a later call keeps the connection alive: MHD closes
         * connections answered before it finished reading the request. */
        return MHD_YES;
    }
    if (is_inv && *upload_data_size) {
        if (!rq->too_big && cm_buf_add(&rq->body, upload_data, *upload_data_size))
            rq->too_big = 1; /* keep reading (and discarding) so the 413 reaches the client */
        if (rq->too_big)
            cm_buf_free(&rq->body);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (is_ping) {
        ret = handle_ping(h, c);
        if (CM_LOG_ENABLED(CM_LOG_DEBUG))
            access_log(method, url, 200, rq->start_ms); /* polled every 2 s: debug only */
        return ret;
    }
    ret = handle_invocation(h, c, rq, &status);
    access_log(method, url, status, rq->start_ms);
    cm_log_clear_context();
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct req *rq = *con_cls;

    (void)cls, (void)c, (void)toe;
    if (!rq)
        return;
    cm_buf_free(&rq->body);
    free(rq);
    *con_cls = NULL;
}

struct gw_http *gw_http_start(const struct gw_http_config *cfg, struct cm_rpc_client *agent,
                              char *err, size_t errlen)
{
    struct gw_http *h = calloc(1, sizeof(*h));
    struct sockaddr_in sa;
    const union MHD_DaemonInfo *info;

    if (!h) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->agent = agent;
    h->cfg = *cfg;
    h->ping_since = (long long)time(NULL);
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->idle, NULL);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)cfg->port);
    if (inet_pton(AF_INET, cfg->host, &sa.sin_addr) != 1) {
        snprintf(err, errlen, "'%s' is not an IPv4 address", cfg->host);
        goto fail;
    }
    h->daemon =
        MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                             MHD_USE_ERROR_LOG | MHD_USE_ITC | MHD_USE_POLL,
                         (uint16_t)cfg->port, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER,
                         on_mhd_log, h, MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_CONNECTION_LIMIT,
                         (unsigned int)cfg->max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
                         (unsigned int)cfg->idle_timeout_s, MHD_OPTION_NOTIFY_COMPLETED,
                         on_completed, h, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u, MHD_OPTION_END);
    if (!h->daemon) {
        snprintf(err, errlen, "cannot listen on %s:%d (address in use?)", cfg->host, cfg->port);
        goto fail;
    }
    info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : cfg->port;
    return h;
fail:
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->idle);
    free(h);
    return NULL;
}

int gw_http_port(const struct gw_http *h)
{
    return h->port;
}

void gw_http_stop(struct gw_http *h, int grace_ms)
{
    struct timespec until;

    if (!h)
        return;
    MHD_quiesce_daemon(h->daemon); /* no new connections from here on */
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += grace_ms / 1000;
    until.tv_nsec += (long)(grace_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&h->lock);
    while (h->in_flight > 0) {
        if (pthread_cond_timedwait(&h->idle, &h->lock, &until))
            break;
    }
    if (h->in_flight > 0)
        cm_warn("%d invocation(s) still running after the grace period", h->in_flight);
    pthread_mutex_unlock(&h->lock);
    MHD_stop_daemon(h->daemon);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->idle);
    free(h);
}
