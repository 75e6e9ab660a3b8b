#include "gw_wss.h"
#include "cm_log.h"
#include "cm_util.h"
#include "gw_api.h"
#include "gw_mhd.h"
#include "gw_ws.h"

#include "agentcore.pb-c.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <wslay/wslay.h>

#define WS_CLOSE_WAIT_MS 2000 /* how long a sent close waits for the peer's */
/* What a session may hold for a client that does not read: wslay queues a
 * pong per ping and every event of an invocation. Past either cap the socket
 * is closed with 1008; a socket that takes no byte of what is queued for
 * WS_WRITE_TIMEOUT_MS is dropped (its close could never be sent). */
#define WS_MAX_QUEUED_BYTES (32u * 1024 * 1024)
#define WS_MAX_QUEUED_MSGS 1024
#define WS_WRITE_TIMEOUT_MS 10000
#define WS_STOP_WRITE_MS 1000 /* the same once the gateway stops */

struct gw_wss {
    struct gw_wss_config cfg;
    pthread_mutex_t lock; /* everything below */
    pthread_cond_t cond;  /* threads reached 0 */
    int stopping;
    int threads;         /* sessions running (a thread each) */
    struct wcall *calls; /* open InvokeStream calls, cancelled at shutdown */
    struct ws *sockets;  /* open sessions, woken at shutdown */
};

/* A process-wide count, not |threads|: the metrics endpoint may read it
 * while (or after) the gw_wss is freed. */
static atomic_long open_sessions;

int64_t gw_wss_sessions(void *ignored)
{
    (void)ignored;
    return atomic_load(&open_sessions);
}

/* One invocation's InvokeStream call, registered for shutdown. */
struct wcall {
    struct gw_wss *s;
    struct cm_rpc_stream *stream;
    struct wcall *prev, *next;
};

/* ---- the shutdown registry of calls ---- */

static void registry_add(struct wcall *x)
{
    struct gw_wss *s = x->s;

    pthread_mutex_lock(&s->lock);
    x->next = s->calls;
    if (s->calls)
        s->calls->prev = x;
    s->calls = x;
    pthread_mutex_unlock(&s->lock);
}

static void registry_remove(struct wcall *x)
{
    struct gw_wss *s = x->s;

    pthread_mutex_lock(&s->lock);
    if (x->prev)
        x->prev->next = x->next;
    else if (s->calls == x)
        s->calls = x->next;
    if (x->next)
        x->next->prev = x->prev;
    x->prev = x->next = NULL;
    pthread_mutex_unlock(&s->lock);
}

/* Closes the call (cancelling it unless it ended) and fills |st|. */
static int stream_finish(struct wcall *x, struct cm_rpc_status *st)
{
    int rc;

    if (!x->stream)
        return -1;
    registry_remove(x);
    rc = cm_rpc_stream_close(x->stream, st);
    x->stream = NULL;
    return rc;
}

static int is_stopping(struct gw_wss *s)
{
    int stopping;

    pthread_mutex_lock(&s->lock);
    stopping = s->stopping;
    pthread_mutex_unlock(&s->lock);
    return stopping;
}

static int slot_take(struct gw_wss *s)
{
    return s->cfg.slot_take(s->cfg.slot_ud);
}

static void slot_give(struct gw_wss *s)
{
    s->cfg.slot_give(s->cfg.slot_ud);
}

/* Opens the InvokeStream call of one invocation, every event streamed,
 * registered for shutdown. NULL with |st|. */
static struct wcall *call_open(struct gw_wss *s, struct gw_mhd_fwd *fwd,
                               const struct gw_invocation *inv, const char *session,
                               const char *request_id, struct cm_rpc_status *st)
{
    Agentcore__V1__InvokeRequest ireq = AGENTCORE__V1__INVOKE_REQUEST__INIT;
    struct cm_rpc_call_opts o = {0};
    struct wcall *x = calloc(1, sizeof(*x));
    size_t base = fwd->n;

    if (!x) {
        st->code = CM_RPC_RESOURCE_EXHAUSTED;
        cm_strlcpy(st->details, "out of memory", sizeof(st->details));
        st->error_type[0] = '\0';
        return NULL;
    }
    fwd->meta[fwd->n++] = (struct cm_rpc_meta){CM_RPC_MD_REQUEST_ID, request_id};
    fwd->meta[fwd->n++] = (struct cm_rpc_meta){CM_RPC_MD_SESSION_ID, session};
    ireq.prompt = (char *)inv->prompt;
    ireq.max_total_tokens = inv->max_total_tokens;
    ireq.max_output_tokens = inv->max_output_tokens;
    ireq.session_id = (char *)session;
    ireq.request_id = (char *)request_id;
    ireq.stream = 1;
    o.timeout_ms = s->cfg.stream_timeout_ms;
    o.affinity = session; /* a session stays on its agent-worker */
    /* Processes start in any order (s6 starts all three at once): a call that
     * arrives before the agent-worker listens waits for it, within
     * AGENT_READY_WAIT_MS, instead of failing. The call itself does not wait
     * for a connection (gRPC's wait-for-ready has no deadline of its own): an
     * agent-worker lost after this check fails it at once, with 503. */
    if (cm_rpc_client_wait_ready(s->cfg.agent, s->cfg.agent_ready_wait_ms)) {
        st->code = CM_RPC_UNAVAILABLE;
        snprintf(st->details, sizeof(st->details),
                 "no agent-worker reachable within %d ms (AGENT_READY_WAIT_MS)",
                 s->cfg.agent_ready_wait_ms);
        st->error_type[0] = '\0';
        free(x);
        return NULL;
    }
    o.meta = fwd->meta;
    o.n_meta = fwd->n;
    x->s = s;
    x->stream = cm_rpc_stream_open(s->cfg.agent, s->cfg.stream_method, &ireq.base, &o, st);
    fwd->n = base;
    if (!x->stream) {
        free(x);
        return NULL;
    }
    registry_add(x);
    return x;
}

/* ---- /ws: the same invocations over a WebSocket ---- */

/* One WebSocket: one invocation at a time, its events sent as text messages
 * in the SSE events' JSON; a socket that closes cancels the invocation. */
struct ws {
    struct gw_wss *s;
    MHD_socket sock;
    struct MHD_UpgradeResponseHandle *urh;
    const char *extra; /* bytes MHD read past the handshake (our copy) */
    size_t extra_len;
    char *extra_copy;
    wslay_event_context_ptr ctx;
    struct wcall *call;
    struct gw_mhd_fwd fwd;
    char session[GW_SESSION_ID_MAX + 1]; /* from the upgrade request, or "" */
    char request_id[256];
    /* A close to send once the messages queued before it are out: wslay puts
     * control frames ahead of data, so it must not be queued earlier. */
    uint16_t close_code;
    uint64_t active_at;     /* last frame received or invocation event (idle timeout) */
    uint64_t opened_at;     /* for the closing log line */
    uint64_t blocked_since; /* queued bytes the socket has not taken, since; 0 none */
    uint64_t sent;          /* bytes the socket took (progress of a blocked write) */
    /* While an invocation runs, a pump thread sleeps on its stream and hands
     * each event over through |q| and the |wake| eventfd, so the socket's
     * thread sleeps in poll() on the socket and |wake|, never on a timer. */
    int wake;
    pthread_t pump;
    int pump_live;
    pthread_mutex_t qlock; /* q_head/q_tail, pump_done */
    struct wsq *q_head, *q_tail;
    int pump_done;
    struct ws *prev, *next; /* the gateway's open sockets, woken at shutdown */
};

struct wsq {
    struct wsq *next;
    char *text;
};

static void ws_text(struct ws *w, char *text);

static void ws_wake(struct ws *w)
{
    uint64_t one = 1;

    if (write(w->wake, &one, sizeof(one)) < 0) {
        /* an eventfd only refuses at 2^64-1 pending wake-ups */
    }
}

static void *ws_pump_main(void *p)
{
    struct ws *w = p;
    ProtobufCMessage *m;

    /* The stream was opened on the socket's thread; reading it from here is
     * fine (one reader at a time, and cancel is thread-safe). */
    while (cm_rpc_stream_next(w->call->stream, &m) == 1) {
        struct wsq *e = calloc(1, sizeof(*e));

        if (e)
            e->text = gw_api_event_json((Agentcore__V1__InvokeEvent *)m);
        protobuf_c_message_free_unpacked(m, NULL);
        if (!e)
            continue;
        pthread_mutex_lock(&w->qlock);
        if (w->q_tail)
            w->q_tail->next = e;
        else
            w->q_head = e;
        w->q_tail = e;
        pthread_mutex_unlock(&w->qlock);
        ws_wake(w);
    }
    pthread_mutex_lock(&w->qlock);
    w->pump_done = 1;
    pthread_mutex_unlock(&w->qlock);
    ws_wake(w);
    return NULL;
}

/* Takes what the pump queued; with |send| 0 it is dropped. Returns 1 when
 * the pump has finished (and has been joined). */
static int ws_take(struct ws *w, int send)
{
    struct wsq *e, *next;
    int done;

    pthread_mutex_lock(&w->qlock);
    e = w->q_head;
    w->q_head = w->q_tail = NULL;
    done = w->pump_done;
    pthread_mutex_unlock(&w->qlock);
    for (; e; e = next) {
        next = e->next;
        if (send)
            ws_text(w, e->text);
        else
            free(e->text);
        free(e);
    }
    if (done && w->pump_live) {
        pthread_join(w->pump, NULL);
        w->pump_live = 0;
    }
    return done;
}

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud)
{
    struct ws *w = ud;
    ssize_t r;

    (void)flags;
    if (w->extra_len) {
        size_t n = w->extra_len < len ? w->extra_len : len;

        memcpy(buf, w->extra, n);
        w->extra += n;
        w->extra_len -= n;
        return (ssize_t)n;
    }
    r = recv(w->sock, buf, len, 0);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (r <= 0) { /* the client went away */
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return r;
}

static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *ud)
{
    struct ws *w = ud;
    ssize_t r = send(w->sock, data, len, MSG_NOSIGNAL);

    (void)flags;
    if (r > 0)
        w->sent += (uint64_t)r;
    if (r < 0) {
        wslay_event_set_error(ctx, errno == EAGAIN || errno == EWOULDBLOCK
                                       ? WSLAY_ERR_WOULDBLOCK
                                       : WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return r;
}

/* Queues |text| (taken) as a text message. */
static void ws_text(struct ws *w, char *text)
{
    struct wslay_event_msg m;

    if (!text)
        return;
    if (*text) {
        m.opcode = WSLAY_TEXT_FRAME;
        m.msg = (const uint8_t *)text;
        m.msg_length = strlen(text);
        wslay_event_queue_msg(w->ctx, &m); /* copies the message */
    }
    free(text);
}

static void ws_close_call(struct ws *w)
{
    struct cm_rpc_status st;

    if (!w->call)
        return;
    if (w->pump_live) {
        cm_rpc_stream_cancel(w->call->stream); /* the pump wakes and ends */
        pthread_join(w->pump, NULL);
        w->pump_live = 0;
        ws_take(w, 0);
    }
    stream_finish(w->call, &st);
    free(w->call);
    w->call = NULL;
    slot_give(w->s);
}

static void ws_invocation(struct ws *w, const char *payload, size_t len)
{
    struct gw_invocation inv;
    struct gw_reply rep = {0, NULL};
    struct cm_rpc_status st;
    char session[GW_SESSION_ID_MAX + 1];

    if (w->call) {
        ws_text(w,
                gw_api_error_event("an invocation is already running on this connection", "Busy"));
        return;
    }
    if (is_stopping(w->s)) {
        ws_text(w, gw_api_error_event("the gateway is stopping", "Unavailable"));
        return;
    }
    if (gw_api_parse_invocation(payload, len, &inv, &rep)) {
        ws_text(w, rep.body); /* the same body an HTTP 400 carries */
        return;
    }
    if (gw_api_session_id(w->session[0] ? w->session : NULL, inv.session_id, session, &rep)) {
        gw_invocation_clear(&inv);
        ws_text(w, rep.body);
        return;
    }
    if (cm_uuid4(w->request_id))
        cm_strlcpy(w->request_id, "unknown", sizeof(w->request_id));
    cm_log_set_context(w->request_id, session);
    if (!slot_take(w->s)) {
        gw_invocation_clear(&inv);
        ws_text(w, gw_api_error_event("too many concurrent invocations", "Busy"));
        return;
    }
    w->call = call_open(w->s, &w->fwd, &inv, session, w->request_id, &st);
    gw_invocation_clear(&inv);
    if (!w->call) {
        slot_give(w->s);
        ws_text(w, gw_api_error_event(st.details, cm_rpc_code_name(st.code)));
        w->close_code = WSLAY_CODE_INTERNAL_SERVER_ERROR;
        return;
    }
    w->pump_done = 0;
    w->pump_live = !pthread_create(&w->pump, NULL, ws_pump_main, w);
    if (!w->pump_live) {
        ws_close_call(w);
        ws_text(w, gw_api_error_event("cannot follow the invocation", "AgentError"));
    }
}

static void ws_on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *ud)
{
    struct ws *w = ud;

    (void)ctx;
    w->active_at = cm_now_ms();
    if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME)
        ws_invocation(w, (const char *)arg->msg, arg->msg_length);
    else if (arg->opcode == WSLAY_CONNECTION_CLOSE)
        ws_close_call(w); /* wslay answers the close itself */
}

/* Sends what the running invocation produced; at its end, its failure (if
 * any) and the call's cleanup. */
static void ws_pump(struct ws *w)
{
    struct cm_rpc_status st;

    w->active_at = cm_now_ms();
    if (!ws_take(w, 1))
        return;
    if (stream_finish(w->call, &st)) {
        ws_text(w,
                gw_api_error_event(st.details[0] ? st.details : cm_rpc_code_name(st.code),
                                   st.error_type[0] ? st.error_type : cm_rpc_code_name(st.code)));
        /* Cancelled at shutdown: 1001. The agent-worker itself failed or is
         * gone: 1011. */
        if (is_stopping(w->s))
            w->close_code = WSLAY_CODE_GOING_AWAY;
        else if (!st.error_type[0] && st.code != CM_RPC_INVALID_ARGUMENT)
            w->close_code = WSLAY_CODE_INTERNAL_SERVER_ERROR;
    }
    free(w->call);
    w->call = NULL;
    slot_give(w->s);
}

static void ws_register(struct ws *w, int add)
{
    struct gw_wss *s = w->s;

    pthread_mutex_lock(&s->lock);
    if (add) {
        w->next = s->sockets;
        if (s->sockets)
            s->sockets->prev = w;
        s->sockets = w;
    } else {
        if (w->prev)
            w->prev->next = w->next;
        else if (s->sockets == w)
            s->sockets = w->next;
        if (w->next)
            w->next->prev = w->prev;
    }
    pthread_mutex_unlock(&s->lock);
}

/* Closing a socket with unread input makes the kernel send a RST, which can
 * destroy the close frame still on its way (e.g. after refusing an oversized
 * message). So: send FIN, read away what the peer still sends, briefly. */
static void ws_linger(MHD_socket sock)
{
    uint64_t until = cm_now_ms() + 500;
    char junk[4096];

    shutdown(sock, SHUT_WR);
    while (cm_now_ms() < until) {
        struct pollfd p = {sock, POLLIN, 0};
        ssize_t r;

        if (poll(&p, 1, 100) <= 0)
            continue;
        r = recv(sock, junk, sizeof(junk), 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            break; /* the peer closed too */
    }
}

/* The part of a WebSocket session that needs the connection, on MHD's
 * thread: copies what the session thread will need, then hands over. */
static void *ws_main(void *p);
static void ws_end(struct ws *w);

static void ws_upgraded(void *cls, struct MHD_Connection *c, void *con_cls, const char *extra_in,
                        size_t extra_in_size, MHD_socket sock,
                        struct MHD_UpgradeResponseHandle *urh)
{
    struct gw_wss *s = cls;
    const char *session = MHD_lookup_connection_value(c, MHD_HEADER_KIND, GW_SESSION_HEADER);
    struct ws *w = calloc(1, sizeof(*w));
    pthread_attr_t attr;
    pthread_t t;
    int admitted, started = 0;

    (void)con_cls;
    /* Counted before gw_wss_wait looks, or never started: a session must not
     * outlive the gw_wss. */
    pthread_mutex_lock(&s->lock);
    admitted = !s->stopping && w;
    if (admitted) {
        s->threads++;
        atomic_fetch_add(&open_sessions, 1);
    }
    pthread_mutex_unlock(&s->lock);
    if (admitted) {
        w->s = s;
        w->sock = sock;
        w->urh = urh;
        w->extra_copy = extra_in_size ? malloc(extra_in_size) : NULL;
        if (w->extra_copy)
            memcpy(w->extra_copy, extra_in, extra_in_size);
        w->extra = w->extra_copy;
        w->extra_len = w->extra_copy ? extra_in_size : 0;
        if (session && strlen(session) <= GW_SESSION_ID_MAX)
            cm_strlcpy(w->session, session, sizeof(w->session));
        gw_mhd_fwd_collect(&w->fwd, c);
        /* MHD's threads serve every connection: a session that waits on its
         * client lives on a thread of its own. */
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        started = !pthread_create(&t, &attr, ws_main, w);
        pthread_attr_destroy(&attr);
    }
    if (started)
        return;
    MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
    if (admitted)
        ws_end(w);
    else
        free(w);
}

/* Frees a session and tells the gateway it is over. */
static void ws_end(struct ws *w)
{
    struct gw_wss *s = w->s;

    gw_mhd_fwd_clear(&w->fwd);
    free(w->extra_copy);
    free(w);
    pthread_mutex_lock(&s->lock);
    atomic_fetch_sub(&open_sessions, 1);
    if (--s->threads == 0)
        pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

/* The smaller of a poll timeout (-1: none) and |ms|. */
static int ws_min_timeout(int timeout, uint64_t ms)
{
    int t = ms > INT_MAX ? INT_MAX : (int)ms;

    return timeout < 0 || t < timeout ? t : timeout;
}

static void *ws_main(void *p)
{
    struct ws *w = p;
    struct gw_wss *s = w->s;
    MHD_socket sock = w->sock;
    struct MHD_UpgradeResponseHandle *urh = w->urh;
    struct wslay_event_callbacks cb = {ws_recv, ws_send, NULL, NULL, NULL, NULL, ws_on_msg};
    int flags = fcntl(sock, F_GETFL);
    uint64_t closed_at = 0;

    fcntl(sock, F_SETFL, flags | O_NONBLOCK);
    w->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_mutex_init(&w->qlock, NULL);
    if (w->wake < 0 || wslay_event_context_server_init(&w->ctx, &cb, w)) {
        if (w->wake >= 0)
            close(w->wake);
        pthread_mutex_destroy(&w->qlock);
        MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
        ws_end(w);
        return NULL;
    }
    ws_register(w, 1);
    wslay_event_config_set_max_recv_msg_length(w->ctx, s->cfg.max_message);
    w->active_at = w->opened_at = cm_now_ms();
    while (wslay_event_want_read(w->ctx) || wslay_event_want_write(w->ctx)) {
        struct pollfd pf[2] = {{sock, 0, 0}, {w->wake, POLLIN, 0}};
        int stopping = is_stopping(s), timeout = -1, closing;
        uint64_t now = cm_now_ms(), sent_before;

        closing = w->close_code || wslay_event_get_close_sent(w->ctx);
        /* A running invocation gets the gateway's grace (it holds a slot
         * gw_http waits for); an idle socket closes at once. */
        if (stopping && !w->call && !closing)
            w->close_code = WSLAY_CODE_GOING_AWAY;
        /* Idle: no message from the client and no invocation for a while. */
        if (!stopping && s->cfg.idle_timeout_ms > 0 && !w->call && !closing) {
            uint64_t at = w->active_at + (uint64_t)s->cfg.idle_timeout_ms;

            if (now >= at) {
                cm_info("WebSocket idle for %d ms: closed", s->cfg.idle_timeout_ms);
                w->close_code = WSLAY_CODE_GOING_AWAY;
            } else {
                timeout = ws_min_timeout(timeout, at - now);
            }
        }
        /* A client that does not read: stop its invocation, read nothing
         * more, and close with 1008 ahead of what is queued. */
        if (!closing && (wslay_event_get_queued_msg_length(w->ctx) > WS_MAX_QUEUED_BYTES ||
                         wslay_event_get_queued_msg_count(w->ctx) > WS_MAX_QUEUED_MSGS)) {
            cm_warn("WebSocket client is not reading (%zu messages, %zu bytes queued): closed "
                    "with 1008",
                    wslay_event_get_queued_msg_count(w->ctx),
                    wslay_event_get_queued_msg_length(w->ctx));
            ws_close_call(w);
            wslay_event_shutdown_read(w->ctx);
            wslay_event_queue_close(w->ctx, WSLAY_CODE_POLICY_VIOLATION, NULL, 0);
        }
        if (w->close_code && !wslay_event_want_write(w->ctx)) {
            wslay_event_queue_close(w->ctx, w->close_code, NULL, 0);
            w->close_code = 0;
        }
        /* Our close is out: wait a little for the peer's, never forever (a
         * client that does not answer must not hold a thread, or shutdown). */
        if (wslay_event_get_close_sent(w->ctx) && !wslay_event_want_write(w->ctx)) {
            if (stopping)
                break; /* the linger below still reads what the peer sends */
            if (!closed_at)
                closed_at = now;
            else if (now - closed_at > WS_CLOSE_WAIT_MS)
                break;
            timeout = ws_min_timeout(timeout, WS_CLOSE_WAIT_MS + 1 - (now - closed_at));
        }
        /* Something to write that the socket does not take: not for ever. */
        if (wslay_event_want_write(w->ctx)) {
            uint64_t limit = stopping ? WS_STOP_WRITE_MS : WS_WRITE_TIMEOUT_MS;

            if (!w->blocked_since)
                w->blocked_since = now;
            if (now - w->blocked_since >= limit) {
                cm_warn("WebSocket client took nothing for %llu ms: dropped",
                        (unsigned long long)limit);
                break;
            }
            timeout = ws_min_timeout(timeout, w->blocked_since + limit - now);
        } else {
            w->blocked_since = 0;
        }
        if (wslay_event_want_read(w->ctx))
            pf[0].events |= POLLIN;
        if (wslay_event_want_write(w->ctx))
            pf[0].events |= POLLOUT;
        /* Sleeps until the client sends, the socket drains, the invocation
         * has an event, the gateway stops or a deadline above passes. */
        if (w->extra_len)
            pf[0].revents = POLLIN;
        else if (poll(pf, 2, timeout) < 0 && errno != EINTR)
            break;
        if (pf[1].revents & POLLIN) {
            uint64_t n;

            if (read(w->wake, &n, sizeof(n)) < 0) {
                /* EAGAIN: another wake-up already took it */
            }
        }
        if ((pf[0].revents & (POLLIN | POLLHUP | POLLERR)) && wslay_event_recv(w->ctx)) {
            /* The client went away or broke the protocol (an oversized
             * message, say): send the close wslay queued, if it can go. */
            wslay_event_send(w->ctx);
            break;
        }
        if (w->call)
            ws_pump(w);
        sent_before = w->sent;
        if (wslay_event_want_write(w->ctx) && wslay_event_send(w->ctx))
            break;
        if (w->sent != sent_before)
            w->blocked_since = 0; /* it took something: the write timeout starts again */
    }
    if (w->call)
        cm_info("WebSocket closed mid-invocation: invocation cancelled");
    {
        char ms[24];
        const char *kv[] = {"durationMs", ms, NULL};

        snprintf(ms, sizeof(ms), "%llu", (unsigned long long)(cm_now_ms() - w->opened_at));
        CM_LOGF(CM_LOG_INFO, kv, "WebSocket session ended");
    }
    ws_close_call(w);
    ws_register(w, 0);
    close(w->wake);
    pthread_mutex_destroy(&w->qlock);
    wslay_event_context_free(w->ctx);
    cm_log_clear_context();
    ws_linger(sock);
    MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
    ws_end(w);
    return NULL;
}

enum MHD_Result gw_wss_answer(struct gw_wss *s, struct MHD_Connection *c, int *status)
{
    char why[128], accept[GW_WS_ACCEPT_LEN + 1];
    const char *key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Sec-WebSocket-Key");
    struct MHD_Response *r;
    enum MHD_Result ret;
    if (is_stopping(s)) {
        *status = 503;
        return gw_mhd_send_json(c, 503,
                                gw_api_error_body("Shutting down", "the gateway is stopping"), NULL,
                                NULL, NULL);
    }
    if (!gw_api_origin_allowed(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin"),
                               s->cfg.origins)) {
        cm_warn("/ws refused for Origin %.200s (not in GATEWAY_WS_ORIGINS)",
                MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin"));
        *status = 403;
        return gw_mhd_send_json(c, 403,
                                gw_api_error_body("Forbidden",
                                                  "this Origin may not open /ws "
                                                  "(GATEWAY_WS_ORIGINS lists those that may)"),
                                NULL, NULL, NULL);
    }
    if (gw_mhd_headers_refused(c, why, sizeof(why))) {
        char msg[300];

        snprintf(msg, sizeof(msg),
                 "header %s: the value must be printable ASCII (0x20-0x7E) to reach the agent",
                 why);
        cm_warn("refused: %s", msg);
        *status = 400;
        return gw_mhd_send_json(c, 400, gw_api_error_body("Invalid request", msg), NULL, NULL,
                                NULL);
    }
    why[0] = '\0';
    if (gw_ws_check(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Upgrade"),
                    MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Connection"),
                    MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Sec-WebSocket-Version"), key,
                    why, sizeof(why)) ||
        gw_ws_accept_key(key, accept)) {
        *status = 400;
        return gw_mhd_send_json(c, 400, gw_api_error_body("Invalid WebSocket handshake", why), NULL,
                                NULL, NULL);
    }
    r = MHD_create_response_for_upgrade(ws_upgraded, s);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Upgrade", "websocket");
    MHD_add_response_header(r, "Connection", "Upgrade");
    MHD_add_response_header(r, "Sec-WebSocket-Accept", accept);
    *status = 101;
    ret = MHD_queue_response(c, MHD_HTTP_SWITCHING_PROTOCOLS, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---- lifecycle ---- */

struct gw_wss *gw_wss_new(const struct gw_wss_config *cfg)
{
    struct gw_wss *s = calloc(1, sizeof(*s));

    if (!s)
        return NULL;
    s->cfg = *cfg;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    return s;
}

void gw_wss_shutdown(struct gw_wss *s)
{
    pthread_mutex_lock(&s->lock);
    s->stopping = 1;
    for (struct ws *w = s->sockets; w; w = w->next)
        ws_wake(w); /* they close with 1001 */
    pthread_mutex_unlock(&s->lock);
}

void gw_wss_cancel(struct gw_wss *s)
{
    pthread_mutex_lock(&s->lock);
    for (struct wcall *x = s->calls; x; x = x->next)
        cm_rpc_stream_cancel(x->stream);
    pthread_mutex_unlock(&s->lock);
}

int gw_wss_wait(struct gw_wss *s, int ms)
{
    struct timespec until = cm_deadline_ms(ms);
    int left;

    pthread_mutex_lock(&s->lock);
    while (s->threads > 0 && pthread_cond_timedwait(&s->cond, &s->lock, &until) == 0)
        ;
    left = s->threads;
    pthread_mutex_unlock(&s->lock);
    return left ? -1 : 0;
}

void gw_wss_free(struct gw_wss *s)
{
    if (!s)
        return;
    if (gw_wss_wait(s, 0)) {
        /* A session thread still runs (a peer that would not let go): it
         * holds |s|, so it is left to the exiting process. */
        return;
    }
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s);
}
