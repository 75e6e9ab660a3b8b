/* cm_rpc: servers and clients in one process over loopback. */
#include "cm_loop.h"
#include "cm_rpc.h"
#include "cm_status.h"

#include "agentcore.pb-c.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

static const struct cm_rpc_method exec_method = {
    "/agentcore.v1.ToolService/Execute", &agentcore__v1__execute_request__descriptor,
    &agentcore__v1__execute_response__descriptor, CM_RPC_UNARY};
static const struct cm_rpc_method missing_method = {
    "/agentcore.v1.ToolService/NoSuchMethod", &agentcore__v1__execute_request__descriptor,
    &agentcore__v1__execute_response__descriptor, CM_RPC_UNARY};

static const struct cm_rpc_method stream_method = {
    "/agentcore.v1.AgentService/InvokeStream", &agentcore__v1__invoke_request__descriptor,
    &agentcore__v1__invoke_event__descriptor, CM_RPC_SERVER_STREAM};

struct srv {
    struct cm_rpc_server *s;
    int port;
    char id[8];
    atomic_int calls;
};

/* What the "slow" handler saw, signalled to the test when it gives up. */
static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t seen_cond = PTHREAD_COND_INITIALIZER;
static int slow_saw_cancel;

static void handler(struct cm_rpc_ctx *ctx, const ProtobufCMessage *msg, void *ud)
{
    const Agentcore__V1__ExecuteRequest *req = (const void *)msg;
    Agentcore__V1__ExecuteResponse resp = AGENTCORE__V1__EXECUTE_RESPONSE__INIT;
    struct srv *s = ud;
    char content[256];
    const char *rid = cm_rpc_ctx_meta(ctx, CM_RPC_MD_REQUEST_ID);

    atomic_fetch_add(&s->calls, 1);
    if (!strcmp(req->name, "fail")) {
        cm_rpc_ctx_fail(ctx, CM_RPC_INVALID_ARGUMENT, "TestError", "boom %d", 42);
        return;
    }
    if (!strcmp(req->name, "slow")) {
        /* Work until the caller goes away (bounded: 10 s). */
        int i;

        for (i = 0; i < 1000 && !cm_rpc_ctx_cancelled(ctx); i++) {
            struct timespec ts = {0, 10 * 1000000L};
            nanosleep(&ts, NULL);
        }
        pthread_mutex_lock(&seen_lock);
        slow_saw_cancel = cm_rpc_ctx_cancelled(ctx) ? 1 : -1;
        pthread_cond_broadcast(&seen_cond);
        pthread_mutex_unlock(&seen_lock);
        return;
    }
    snprintf(content, sizeof(content), "%s:%s:%s", s->id, req->input_json, rid ? rid : "-");
    resp.tool_use_id = req->tool_use_id;
    resp.content = content;
    resp.status = AGENTCORE__V1__TOOL_STATUS__TOOL_STATUS_SUCCESS;
    cm_rpc_ctx_reply(ctx, &resp.base);
}

/* "count:N" streams N deltas; "forever" streams until the peer is gone. */
static int stream_saw_gone;

static void stream_handler(struct cm_rpc_ctx *ctx, const ProtobufCMessage *msg, void *ud)
{
    const Agentcore__V1__InvokeRequest *req = (const void *)msg;
    Agentcore__V1__InvokeEvent ev = AGENTCORE__V1__INVOKE_EVENT__INIT;
    Agentcore__V1__TextDelta d = AGENTCORE__V1__TEXT_DELTA__INIT;
    char text[32];
    int i, n = 100000;

    (void)ud;
    if (!strncmp(req->prompt, "count:", 6))
        n = atoi(req->prompt + 6);
    ev.event_case = AGENTCORE__V1__INVOKE_EVENT__EVENT_TEXT_DELTA;
    d.text = text;
    ev.text_delta = &d;
    for (i = 0; i < n; i++) {
        snprintf(text, sizeof(text), "d%d", i);
        if (cm_rpc_ctx_send(ctx, &ev.base)) {
            pthread_mutex_lock(&seen_lock);
            stream_saw_gone = 1;
            pthread_cond_broadcast(&seen_cond);
            pthread_mutex_unlock(&seen_lock);
            return;
        }
    }
}

static void srv_start(struct srv *s, const char *id)
{
    struct cm_rpc_server_config cfg = {"127.0.0.1:0", 4, 1 << 20};

    memset(s, 0, sizeof(*s));
    snprintf(s->id, sizeof(s->id), "%s", id);
    s->s = cm_rpc_server_new(&cfg);
    assert_non_null(s->s);
    assert_int_equal(cm_rpc_server_add(s->s, &exec_method, handler, s), 0);
    assert_int_equal(cm_rpc_server_add(s->s, &stream_method, stream_handler, s), 0);
    s->port = cm_rpc_server_start(s->s);
    assert_true(s->port > 0);
}

static void srv_stop(struct srv *s)
{
    cm_rpc_server_shutdown(s->s, 1000);
    cm_rpc_server_free(s->s);
}

static struct cm_rpc_client *client(const struct srv *a, const struct srv *b)
{
    char target[64], err[128];
    const struct cm_rpc_method ms[] = {exec_method, missing_method, stream_method};
    struct cm_rpc_client *c;

    if (b)
        snprintf(target, sizeof(target), "127.0.0.1:%d,127.0.0.1:%d", a->port, b->port);
    else
        snprintf(target, sizeof(target), "127.0.0.1:%d", a->port);
    c = cm_rpc_client_new(target, ms, 3, 1 << 20, err, sizeof(err));
    assert_non_null(c);
    return c;
}

static int call(struct cm_rpc_client *c, const struct cm_rpc_method *m, const char *name,
                int timeout_ms, char *content, size_t cap, struct cm_rpc_status *st)
{
    Agentcore__V1__ExecuteRequest req = AGENTCORE__V1__EXECUTE_REQUEST__INIT;
    Agentcore__V1__ExecuteResponse *resp;
    struct cm_rpc_meta md[] = {{CM_RPC_MD_REQUEST_ID, "req-123"}};
    struct cm_rpc_call_opts o = {timeout_ms, NULL, md, 1, 1, NULL, NULL};

    req.tool_use_id = "tu";
    req.name = (char *)name;
    req.input_json = "{}";
    if (cm_rpc_call(c, m, &req.base, (ProtobufCMessage **)&resp, &o, st))
        return -1;
    if (content)
        snprintf(content, cap, "%s", resp->content);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

static void test_unary_metadata_errors_and_unknown_method(void **state)
{
    struct srv a;
    struct cm_rpc_client *c;
    struct cm_rpc_status st;
    char content[256];

    (void)state;
    srv_start(&a, "A");
    c = client(&a, NULL);
    assert_int_equal(call(c, &exec_method, "echo", 5000, content, sizeof(content), &st), 0);
    assert_string_equal(content, "A:{}:req-123");
    assert_int_equal(call(c, &exec_method, "fail", 5000, NULL, 0, &st), -1);
    assert_int_equal(st.code, CM_RPC_INVALID_ARGUMENT);
    assert_string_equal(st.details, "boom 42");
    assert_string_equal(st.error_type, "TestError");
    assert_int_equal(call(c, &missing_method, "x", 5000, NULL, 0, &st), -1);
    assert_int_equal(st.code, CM_RPC_UNIMPLEMENTED);
    assert_non_null(strstr(st.details, "NoSuchMethod"));
    cm_rpc_client_free(c);
    srv_stop(&a);
}

static void test_deadline_cancels_the_server_side(void **state)
{
    struct srv a;
    struct cm_rpc_client *c;
    struct cm_rpc_status st;
    struct timespec until;

    (void)state;
    srv_start(&a, "A");
    c = client(&a, NULL);
    slow_saw_cancel = 0;
    assert_int_equal(call(c, &exec_method, "slow", 300, NULL, 0, &st), -1);
    assert_int_equal(st.code, CM_RPC_DEADLINE_EXCEEDED);
    /* The handler notices the deadline itself (event, bounded wait). */
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&seen_lock);
    while (slow_saw_cancel == 0 && pthread_cond_timedwait(&seen_cond, &seen_lock, &until) == 0)
        ;
    pthread_mutex_unlock(&seen_lock);
    assert_int_equal(slow_saw_cancel, 1);
    cm_rpc_client_free(c);
    srv_stop(&a);
}

static void test_health(void **state)
{
    struct srv a;
    struct cm_rpc_client *c;
    struct cm_rpc_status st;

    (void)state;
    srv_start(&a, "A");
    c = client(&a, NULL);
    assert_int_equal(cm_rpc_health(c, "", 5000, &st), 1);
    assert_int_equal(cm_rpc_health(c, "agentcore.v1.ToolService", 5000, &st), 1);
    assert_int_equal(cm_rpc_health(c, "no.such.Service", 5000, &st), -1);
    assert_int_equal(st.code, CM_RPC_NOT_FOUND);
    cm_rpc_server_set_serving(a.s, 0);
    assert_int_equal(cm_rpc_health(c, "", 5000, &st), 0);
    cm_rpc_client_free(c);
    srv_stop(&a);
}

static void test_round_robin_over_two_servers(void **state)
{
    struct srv a, b;
    struct cm_rpc_client *c;
    struct cm_rpc_status st;
    int i;

    (void)state;
    srv_start(&a, "A");
    srv_start(&b, "B");
    c = client(&a, &b);
    /* round_robin only uses READY subchannels, so the first calls may all go
     * to whichever connects first; within 200 calls both must have served. */
    for (i = 0; i < 200 && (atomic_load(&a.calls) == 0 || atomic_load(&b.calls) == 0); i++)
        assert_int_equal(call(c, &exec_method, "echo", 5000, NULL, 0, &st), 0);
    assert_true(atomic_load(&a.calls) > 0);
    assert_true(atomic_load(&b.calls) > 0);
    cm_rpc_client_free(c);
    srv_stop(&a);
    srv_stop(&b);
}

static void test_unreachable_is_unavailable(void **state)
{
    struct srv a;
    struct cm_rpc_client *c;
    struct cm_rpc_status st;
    Agentcore__V1__ExecuteRequest req = AGENTCORE__V1__EXECUTE_REQUEST__INIT;
    ProtobufCMessage *resp;
    struct cm_rpc_call_opts o = {5000, NULL, NULL, 0, 0, NULL, NULL};

    (void)state;
    srv_start(&a, "A");
    c = client(&a, NULL);
    srv_stop(&a); /* nothing listens on that port any more */
    assert_int_equal(cm_rpc_call(c, &exec_method, &req.base, &resp, &o, &st), -1);
    assert_int_equal(st.code, CM_RPC_UNAVAILABLE);
    assert_null(resp);
    cm_rpc_client_free(c);
}

static struct cm_rpc_stream *open_stream(struct cm_rpc_client *c, const char *prompt,
                                         struct cm_rpc_status *st)
{
    Agentcore__V1__InvokeRequest req = AGENTCORE__V1__INVOKE_REQUEST__INIT;
    struct cm_rpc_call_opts o = {10000, NULL, NULL, 0, 1, NULL, NULL};

    req.prompt = (char *)prompt;
    return cm_rpc_stream_open(c, &stream_method, &req.base, &o, st);
}

static void test_stream_to_the_end(void **state)
{
    struct srv a;
    struct cm_rpc_client *c;
    struct cm_rpc_status st;
    struct cm_rpc_stream *s;
    ProtobufCMessage *m;
    int n = 0, rc;
    char want[16];

    (void)state;
    srv_start(&a, "A");
    c = client(&a, NULL);
    s = open_stream(c, "count:25", &st);
    assert_non_null(s);
    while ((rc = cm_rpc_stream_next(s, &m)) == 1) {
        const Agentcore__V1__InvokeEvent *ev = (const void *)m;

        snprintf(want, sizeof(want), "d%d", n++);
        assert_int_equal(ev->event_case, AGENTCORE__V1__INVOKE_EVENT__EVENT_TEXT_DELTA);
        assert_string_equal(ev->text_delta->text, want);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(n, 25);
    assert_int_equal(cm_rpc_stream_close(s, &st), 0);
    assert_int_equal(st.code, CM_RPC_OK);
    cm_rpc_client_free(c);
    srv_stop(&a);
}

static void test_stream_cancel_reaches_the_server(void **state)
{
    struct srv a;
    struct cm_rpc_client *c;
    struct cm_rpc_status st;
    struct cm_rpc_stream *s;
    ProtobufCMessage *m;
    struct timespec until;
    int i;

    (void)state;
    srv_start(&a, "A");
    c = client(&a, NULL);
    stream_saw_gone = 0;
    s = open_stream(c, "forever", &st);
    for (i = 0; i < 3; i++) {
        assert_int_equal(cm_rpc_stream_next(s, &m), 1);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    cm_rpc_stream_cancel(s);
    assert_int_equal(cm_rpc_stream_close(s, &st), -1);
    assert_int_equal(st.code, CM_RPC_CANCELLED);
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&seen_lock);
    while (!stream_saw_gone && pthread_cond_timedwait(&seen_cond, &seen_lock, &until) == 0)
        ;
    pthread_mutex_unlock(&seen_lock);
    assert_int_equal(stream_saw_gone, 1);
    cm_rpc_client_free(c);
    srv_stop(&a);
}

static void test_bad_targets(void **state)
{
    char err[128];

    (void)state;
    assert_null(cm_rpc_client_new("", &exec_method, 1, 1 << 20, err, sizeof(err)));
    assert_null(
        cm_rpc_client_new("hostname-without-port", &exec_method, 1, 1 << 20, err, sizeof(err)));
    assert_non_null(strstr(err, "no port"));
}

/* ---- asynchronous calls on a loop ---- */

static const struct cm_rpc_method watch_method = {
    "/agentcore.v1.AgentService/WatchStatus", &agentcore__v1__status_request__descriptor,
    &agentcore__v1__status_response__descriptor, CM_RPC_SERVER_STREAM};

/* What the loop side saw; the test waits on it (bounded), never sleeps. */
static pthread_mutex_t ev_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ev_cond = PTHREAD_COND_INITIALIZER;
static int held_cancelled, async_done_code = -1, watch_values[8], n_watch, watch_ended;
static char async_content[64];

static void ev_signal(void)
{
    pthread_cond_broadcast(&ev_cond);
}

/* Waits (at most 10 s) until *flag reaches |want|. */
static int ev_wait(const int *flag, int want)
{
    struct timespec until;
    int ok;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&ev_lock);
    while (*flag < want && pthread_cond_timedwait(&ev_cond, &ev_lock, &until) == 0)
        ;
    ok = *flag >= want;
    pthread_mutex_unlock(&ev_lock);
    return ok;
}

struct asrv {
    struct cm_loop *loop;
    struct cm_rpc_events *ev;
    struct cm_rpc_server *s;
    struct cm_status *hub;
    int port;
};

struct later {
    uv_timer_t t;
    struct cm_rpc_acall *call;
};

static void reply_text(struct cm_rpc_acall *call, const char *text)
{
    Agentcore__V1__ExecuteResponse resp = AGENTCORE__V1__EXECUTE_RESPONSE__INIT;

    resp.content = (char *)text;
    resp.status = AGENTCORE__V1__TOOL_STATUS__TOOL_STATUS_SUCCESS;
    cm_rpc_acall_reply(call, &resp.base);
}

static void later_closed(uv_handle_t *h)
{
    free(h->data);
}

static void later_fire(uv_timer_t *t)
{
    struct later *l = t->data;

    reply_text(l->call, "answered from a timer");
    uv_close((uv_handle_t *)t, later_closed);
}

static void held_cancel(void *ud)
{
    struct cm_rpc_acall *call = ud;

    cm_rpc_acall_finish(call, CM_RPC_CANCELLED, NULL, "gone");
    pthread_mutex_lock(&ev_lock);
    held_cancelled++;
    ev_signal();
    pthread_mutex_unlock(&ev_lock);
}

static void async_exec(struct cm_rpc_acall *call, ProtobufCMessage *msg, void *ud)
{
    const Agentcore__V1__ExecuteRequest *req = (const void *)msg;
    struct asrv *a = ud;

    if (!strcmp(req->name, "later")) {
        /* The handler returns; the answer comes from another event. */
        struct later *l = calloc(1, sizeof(*l));

        uv_timer_init(cm_loop_uv(a->loop), &l->t);
        l->t.data = l;
        l->call = call;
        uv_timer_start(&l->t, later_fire, 20, 0);
    } else if (!strcmp(req->name, "hold")) {
        cm_rpc_acall_on_cancel(call, held_cancel, call); /* until the client leaves */
    } else {
        char text[96];

        snprintf(text, sizeof(text), "echo:%s:%s", req->input_json,
                 cm_rpc_acall_meta(call, CM_RPC_MD_REQUEST_ID) ?: "-");
        reply_text(call, text);
    }
    protobuf_c_message_free_unpacked(msg, NULL);
}

/* "idle:N": one message at a time, each sent from the idle callback once the
 * one before has left. */
struct paced {
    struct cm_rpc_acall *call;
    int sent, n;
};

static void paced_send(struct paced *p)
{
    Agentcore__V1__InvokeEvent ev = AGENTCORE__V1__INVOKE_EVENT__INIT;
    Agentcore__V1__TextDelta d = AGENTCORE__V1__TEXT_DELTA__INIT;

    ev.event_case = AGENTCORE__V1__INVOKE_EVENT__EVENT_TEXT_DELTA;
    ev.text_delta = &d;
    d.content_block_index = p->sent++;
    d.text = "x";
    assert_false(cm_rpc_acall_busy(p->call));
    assert_int_equal(cm_rpc_acall_send(p->call, &ev.base, 1 << 20), 0);
    assert_true(cm_rpc_acall_busy(p->call)); /* on its way: what comes now waits */
}

static void paced_idle(void *ud)
{
    struct paced *p = ud;

    if (p->sent < p->n) {
        paced_send(p);
        return;
    }
    cm_rpc_acall_finish(p->call, CM_RPC_OK, NULL, NULL); /* no idle callback after this */
    free(p);
}

static void async_stream(struct cm_rpc_acall *call, ProtobufCMessage *msg, void *ud)
{
    const Agentcore__V1__InvokeRequest *req = (const void *)msg;
    Agentcore__V1__InvokeEvent ev = AGENTCORE__V1__INVOKE_EVENT__INIT;
    Agentcore__V1__TextDelta d = AGENTCORE__V1__TEXT_DELTA__INIT;
    int n = atoi(req->prompt), i;

    (void)ud;
    if (!strncmp(req->prompt, "idle:", 5)) {
        struct paced *p = calloc(1, sizeof(*p));

        assert_non_null(p);
        p->call = call;
        p->n = atoi(req->prompt + 5);
        cm_rpc_acall_on_idle(call, paced_idle, p);
        paced_send(p);
        protobuf_c_message_free_unpacked(msg, NULL);
        return;
    }
    ev.event_case = AGENTCORE__V1__INVOKE_EVENT__EVENT_TEXT_DELTA;
    ev.text_delta = &d;
    for (i = 0; i < n; i++) {
        d.content_block_index = i;
        d.text = "x";
        assert_int_equal(cm_rpc_acall_send(call, &ev.base, 1 << 20), 0);
    }
    cm_rpc_acall_finish(call, CM_RPC_OK, NULL, NULL);
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void asrv_start(struct asrv *a)
{
    struct cm_rpc_server_config cfg = {"127.0.0.1:0", 1, 1 << 20};

    memset(a, 0, sizeof(*a));
    a->loop = cm_loop_new();
    assert_non_null(a->loop);
    a->ev = cm_rpc_events_new(a->loop);
    a->hub = cm_status_new(a->loop);
    a->s = cm_rpc_server_new(&cfg);
    assert_int_equal(cm_rpc_server_add_async(a->s, a->ev, &exec_method, async_exec, a), 0);
    assert_int_equal(cm_rpc_server_add_async(a->s, a->ev, &stream_method, async_stream, a), 0);
    assert_int_equal(cm_status_serve(a->hub, a->s, a->ev, &watch_method), 0);
    assert_int_equal(cm_loop_start(a->loop), 0);
    a->port = cm_rpc_server_start(a->s);
    assert_true(a->port > 0);
}

static void asrv_stop(struct asrv *a)
{
    cm_status_close(a->hub);
    cm_rpc_server_shutdown(a->s, 1000);
    cm_rpc_server_free(a->s);
    cm_rpc_events_free(a->ev);
    cm_loop_free(a->loop);
    cm_status_free(a->hub);
}

static void test_async_server_answers_later(void **state)
{
    struct asrv a;
    struct srv view;
    struct cm_rpc_client *c;
    struct cm_rpc_status st;
    char content[128];

    (void)state;
    asrv_start(&a);
    view.port = a.port;
    c = client(&view, NULL);
    assert_int_equal(call(c, &exec_method, "echo", 5000, content, sizeof(content), &st), 0);
    assert_string_equal(content, "echo:{}:req-123");
    assert_int_equal(call(c, &exec_method, "later", 5000, content, sizeof(content), &st), 0);
    assert_string_equal(content, "answered from a timer");
    /* Many at once on one loop thread: none waits for another. */
    for (int i = 0; i < 20; i++)
        assert_int_equal(call(c, &exec_method, "later", 5000, NULL, 0, &st), 0);
    cm_rpc_client_free(c);
    asrv_stop(&a);
}

static void test_async_cancel_is_an_event(void **state)
{
    struct asrv a;
    struct srv view;
    struct cm_rpc_client *c;
    struct cm_rpc_status st;
    int before = held_cancelled;

    (void)state;
    asrv_start(&a);
    view.port = a.port;
    c = client(&view, NULL);
    /* The deadline passes while the server holds the call: its cancellation
     * callback runs (nothing polled for it). */
    assert_int_equal(call(c, &exec_method, "hold", 200, NULL, 0, &st), -1);
    assert_int_equal(st.code, CM_RPC_DEADLINE_EXCEEDED);
    assert_true(ev_wait(&held_cancelled, before + 1));
    cm_rpc_client_free(c);
    asrv_stop(&a);
}

/* Streams |prompt| to the end: the messages it got, each checked to come in
 * order. */
static int stream_count(struct cm_rpc_client *c, const char *prompt)
{
    Agentcore__V1__InvokeRequest req = AGENTCORE__V1__INVOKE_REQUEST__INIT;
    struct cm_rpc_status st;
    struct cm_rpc_stream *s;
    ProtobufCMessage *m;
    int n = 0;

    req.prompt = (char *)prompt;
    s = cm_rpc_stream_open(c, &stream_method, &req.base, NULL, &st);
    assert_non_null(s);
    while (cm_rpc_stream_next(s, &m) == 1) {
        assert_int_equal(((Agentcore__V1__InvokeEvent *)m)->text_delta->content_block_index, n);
        n++;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    assert_int_equal(cm_rpc_stream_close(s, &st), 0);
    return n;
}

static void test_async_stream_in_order(void **state)
{
    struct asrv a;
    struct srv view;
    struct cm_rpc_client *c;

    (void)state;
    asrv_start(&a);
    view.port = a.port;
    c = client(&view, NULL);
    assert_int_equal(stream_count(c, "50"), 50);
    /* Paced by the idle callback: each message after the one before left. */
    assert_int_equal(stream_count(c, "idle:20"), 20);
    cm_rpc_client_free(c);
    asrv_stop(&a);
}

/* The asynchronous client side: a unary call and a watch, both from the loop. */
struct aclient {
    struct asrv *a;
    struct cm_rpc_client *c;
    struct cm_rpc_astream *watch;
};

static void on_async_done(void *ud, const struct cm_rpc_status *st, ProtobufCMessage *resp)
{
    (void)ud;
    pthread_mutex_lock(&ev_lock);
    if (resp) {
        snprintf(async_content, sizeof(async_content), "%s",
                 ((Agentcore__V1__ExecuteResponse *)resp)->content);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    async_done_code = st->code;
    ev_signal();
    pthread_mutex_unlock(&ev_lock);
}

static void start_async_call(void *p)
{
    Agentcore__V1__ExecuteRequest req = AGENTCORE__V1__EXECUTE_REQUEST__INIT;
    struct aclient *ac = p;
    struct cm_rpc_status st;

    req.name = "later";
    req.input_json = "{}";
    assert_non_null(
        cm_rpc_call_async(ac->c, ac->a->ev, &exec_method, &req.base, NULL, on_async_done, ac, &st));
}

static void on_watch_msg(void *ud, ProtobufCMessage *msg)
{
    (void)ud;
    pthread_mutex_lock(&ev_lock);
    if (n_watch < 8)
        watch_values[n_watch++] = ((Agentcore__V1__StatusResponse *)msg)->active_background_tasks;
    ev_signal();
    pthread_mutex_unlock(&ev_lock);
    protobuf_c_message_free_unpacked(msg, NULL);
}

static void on_watch_end(void *ud, const struct cm_rpc_status *st)
{
    (void)ud;
    (void)st;
    pthread_mutex_lock(&ev_lock);
    watch_ended++;
    ev_signal();
    pthread_mutex_unlock(&ev_lock);
}

static void start_watch(void *p)
{
    Agentcore__V1__StatusRequest req = AGENTCORE__V1__STATUS_REQUEST__INIT;
    struct aclient *ac = p;
    struct cm_rpc_status st;

    ac->watch = cm_rpc_astream_open(ac->c, ac->a->ev, &watch_method, &req.base, NULL, on_watch_msg,
                                    on_watch_end, ac, &st);
    assert_non_null(ac->watch);
}

static void test_async_client_and_status_watch(void **state)
{
    const struct cm_rpc_method ms[] = {exec_method, watch_method};
    struct asrv a;
    struct aclient ac;
    char target[64], err[128];
    int ended = watch_ended;

    (void)state;
    asrv_start(&a);
    snprintf(target, sizeof(target), "127.0.0.1:%d", a.port);
    ac.a = &a;
    ac.c = cm_rpc_client_new(target, ms, 2, 1 << 20, err, sizeof(err));
    assert_non_null(ac.c);
    async_done_code = -1;
    cm_loop_call(a.loop, start_async_call, &ac);
    assert_true(ev_wait(&async_done_code, 0));
    assert_int_equal(async_done_code, CM_RPC_OK);
    assert_string_equal(async_content, "answered from a timer");

    n_watch = 0;
    cm_loop_call(a.loop, start_watch, &ac);
    assert_true(ev_wait(&n_watch, 1)); /* the value at once */
    assert_int_equal(watch_values[0], 0);
    cm_status_set(a.hub, 3);
    assert_true(ev_wait(&n_watch, 2)); /* then each change, once */
    assert_int_equal(watch_values[1], 3);
    cm_status_set(a.hub, 3); /* no change, nothing sent */
    cm_status_set(a.hub, 1);
    assert_true(ev_wait(&n_watch, 3));
    assert_int_equal(watch_values[2], 1);
    assert_int_equal(cm_status_get(a.hub), 1);
    cm_status_close(a.hub); /* ends the watch: shutdown does not wait for it */
    assert_true(ev_wait(&watch_ended, ended + 1));
    assert_int_equal(n_watch, 3);
    cm_rpc_client_free(ac.c);
    asrv_stop(&a);
}

static int setup(void **state)
{
    (void)state;
    cm_rpc_init();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cm_rpc_thread_done();
    cm_rpc_shutdown();
    return 0;
}

/* Rendezvous scores spread sessions evenly over any number of targets, and
 * removing a target moves only its own sessions. */
static void test_rendezvous_spreads_and_moves_little(void **state)
{
    static const char *const sets[][5] = {
        {"a:1", "b:1", "c:1", NULL},
        {"172.26.0.6:50051", "172.26.0.7:50051", NULL},
        {"10.0.0.2:50051", "10.0.0.3:50051", "10.0.0.4:50051", "10.0.0.5:50051", NULL},
    };
    enum { N = 3000 };
    size_t s;

    (void)state;
    for (s = 0; s < sizeof(sets) / sizeof(sets[0]); s++) {
        int count[5] = {0}, n = 0, i, t, moved = 0;

        while (sets[s][n])
            n++;
        for (i = 0; i < N; i++) {
            char key[64];
            int best = 0, best_wo_last = 0;

            snprintf(key, sizeof(key), "session-%06d-0000000000000000000000", i);
            for (t = 1; t < n; t++) {
                if (cm_rpc_rendezvous(key, sets[s][t]) > cm_rpc_rendezvous(key, sets[s][best]))
                    best = t;
                if (t < n - 1 && cm_rpc_rendezvous(key, sets[s][t]) >
                                     cm_rpc_rendezvous(key, sets[s][best_wo_last]))
                    best_wo_last = t;
            }
            count[best]++;
            moved += best != best_wo_last && best != n - 1; /* only the last one's may move */
        }
        for (t = 0; t < n; t++) {
            if (count[t] < N / n * 85 / 100 || count[t] > N / n * 115 / 100)
                fail_msg("%s got %d of %d sessions over %d targets", sets[s][t], count[t], N, n);
        }
        assert_int_equal(moved, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unary_metadata_errors_and_unknown_method),
        cmocka_unit_test(test_deadline_cancels_the_server_side),
        cmocka_unit_test(test_health),
        cmocka_unit_test(test_round_robin_over_two_servers),
        cmocka_unit_test(test_rendezvous_spreads_and_moves_little),
        cmocka_unit_test(test_unreachable_is_unavailable),
        cmocka_unit_test(test_stream_to_the_end),
        cmocka_unit_test(test_stream_cancel_reaches_the_server),
        cmocka_unit_test(test_bad_targets),
        cmocka_unit_test(test_async_server_answers_later),
        cmocka_unit_test(test_async_cancel_is_an_event),
        cmocka_unit_test(test_async_stream_in_order),
        cmocka_unit_test(test_async_client_and_status_watch),
    };
    return cmocka_run_group_tests_name("cm_rpc", tests, setup, teardown);
}
