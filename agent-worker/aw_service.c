/* The AgentService handlers as events on the loop. An invocation is the
 * struct below plus the aw_agent step state: it holds no thread while it waits
 * for its session, the first tool listing, the model or its tools, and every
 * wait ends with an event (a completion, a timer, the client's cancellation). */
#include "aw_service.h"
#include "aw_genai.h"
#include "aw_history.h"
#include "aw_idem.h"
#include "aw_agent.h"
#include "aw_bedrock.h"
#include "aw_session.h"
#include "aw_store.h"
#include "aw_tools.h"
#include "cm_err.h"
#include "cm_json.h"
#include "cm_log.h"
#include "cm_metrics.h"
#include "cm_otel.h"
#include "cm_rpc.h"
#include "cm_status.h"
#include "cm_trace.h"
#include "cm_util.h"

#include "agentcore.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

/* Events queued for a gateway that does not read: past this the stream is
 * cancelled rather than grown (the gateway reads as fast as its client). */
#define OUTBOX_CAP (8u * 1024 * 1024)
/* The most text merged into one delta while the call is busy. */
#define HELD_MAX (64u * 1024)

static const struct cm_rpc_method invoke_method = {
    "/agentcore.v1.AgentService/Invoke", &agentcore__v1__invoke_request__descriptor,
    &agentcore__v1__invoke_response__descriptor, CM_RPC_UNARY};
static const struct cm_rpc_method stream_method = {
    "/agentcore.v1.AgentService/InvokeStream", &agentcore__v1__invoke_request__descriptor,
    &agentcore__v1__invoke_event__descriptor, CM_RPC_SERVER_STREAM};

enum mode { MODE_REPLY, MODE_FINAL_EVENT, MODE_EVENTS };

struct invocation;

/* One running tool call of the current turn. */
struct tool_slot {
    struct invocation *inv;
    size_t index;
    struct aw_tools_exec *exec; /* NULL once its result is in */
    uint64_t t0;
};

/* Calls and time per tool, for the line that closes an invocation. */
#define TOOL_STATS 8
/* Context overflows one invocation recovers from, at most. */
#define MAX_REDUCTIONS 10
struct tool_stat {
    char name[48];
    int calls;
    uint64_t ms;
};

/* A retry of a request that is still running (same client-chosen request id
 * and session): it joins the run instead of waiting for the session's turn
 * and running again. */
struct follower {
    struct follower *next;
    struct cm_rpc_acall *call;
    Agentcore__V1__InvokeRequest *req;
    enum mode mode;
    struct invocation *leader;
    int got_text;
};

/* Events of a run kept for retries that join it: past this, no one joins
 * (a retry then waits and gets the whole answer). */
#define EVLOG_CAP (1024u * 1024)

struct invocation {
    struct aw_service *svc;
    /* The invoke_agent span: a child of the gateway's; tool calls and model
     * calls are its children. */
    struct cm_trace trace;
    char trace_id[33], span_id[17], traceparent[CM_TRACEPARENT_LEN + 1];
    uint64_t start_ns;    /* for the span */
    struct cm_trace chat; /* the model call under way's span */
    uint64_t chat_start_ns;
    struct cm_rpc_acall *call;        /* NULL once answered */
    struct invocation *lnext, *lprev; /* in svc->joinable: a retry may join it */
    int joinable;
    struct follower *followers;
    struct cm_buf evlog; /* the streamed events so far, packed, each after its 4-byte length */
    int evlog_over;
    /* Text for |call| that came while an earlier message was still on its
     * way: it leaves as one delta once the call is idle (see send_event). */
    struct cm_buf held;
    int held_block;
    Agentcore__V1__InvokeRequest *req;
    enum mode mode;
    int text_sent, turn_text; /* some answer text went out (this invocation, this turn) */
    int cancelled;
    uv_timer_t timer; /* the SESSION_WAIT_MS wait */
    struct aw_session_waiter swait;
    struct aw_tools_waiter twait;
    struct aw_session *sess;
    struct aw_agent agent;
    int agent_live;
    struct aw_bedrock_call *model;
    struct aw_tools_call tcall;
    struct tool_slot *slots;
    size_t nslots, running, next_tool; /* next_tool: the first not started yet */
    int deferred_rc; /* why it ends, once the tool calls still running report back */
    uint64_t t0, model_t0;
    uint64_t model_ms, first_token_ms;     /* model time in all; first text (0: none yet) */
    int reductions;                        /* of the history, after context overflows */
    Agentcore__V1__InvokeResponse *replay; /* an earlier run's answer to send instead */
    /* The backing store (svc->store): one request at a time, the load before
     * the loop, a checkpoint when a turn asks for tools, the save at the end. */
    struct aw_store_op sop;
    int store_busy;          /* |sop| in flight (a load or a checkpoint) */
    int closing;             /* the final save runs; it ends the invocation */
    int end_pending;         /* complete() came while |sop| was in flight */
    int dirty;               /* the history may have changed */
    int conflicts;           /* saves refused because another writer got there first */
    size_t own_n;            /* messages this invocation added (re-added after a conflict) */
    int end_rc, end_has_err; /* why it ends, kept across the final save */
    /* What the model calls had cost when it failed or was cancelled (the
     * rollback clears the result; the calls were billed all the same). */
    long long spent_in, spent_out;
    int spent_iterations;
    int summarized;     /* the summarizing manager ran (or was tried) */
    size_t summary_cut; /* the messages its summary replaces */
    struct aw_model_error end_err;
    struct tool_stat tools[TOOL_STATS];
    int ntools, tool_calls;
};

static void step(struct invocation *inv, enum aw_agent_next next);
static void call_model(struct invocation *inv);
static void complete(struct invocation *inv, int rc, const struct aw_model_error *err);
static void checkpoint(struct invocation *inv);
static int summarize(struct invocation *inv);

static void log_ctx(const struct invocation *inv)
{
    cm_log_set_context(inv->req->request_id, inv->req->session_id);
    cm_log_set_trace(inv->trace_id, inv->span_id);
}

/* Sends the held text as one delta. */
static void flush_held(struct invocation *inv)
{
    Agentcore__V1__InvokeEvent ev = AGENTCORE__V1__INVOKE_EVENT__INIT;
    Agentcore__V1__TextDelta d = AGENTCORE__V1__TEXT_DELTA__INIT;

    if (!inv->held.len)
        return;
    if (inv->call && !inv->cancelled && !cm_buf_add(&inv->held, "", 1)) {
        ev.event_case = AGENTCORE__V1__INVOKE_EVENT__EVENT_TEXT_DELTA;
        ev.text_delta = &d;
        d.content_block_index = inv->held_block;
        d.text = inv->held.data;
        cm_rpc_acall_send(inv->call, &ev.base, OUTBOX_CAP);
    }
    cm_buf_reset(&inv->held);
}

static void on_call_idle(void *ud)
{
    flush_held(ud);
}

/* Events leave in order. A text delta that comes while an earlier message is
 * still on its way to the gateway is held and merged with the text after it
 * until the call is idle: when the reader falls behind (thousands of streams,
 * a model that sends faster than they drain), the answer leaves in fewer,
 * larger messages instead of queueing one per delta; a reader that keeps up
 * sees every delta as it came. The event log and the followers get each
 * delta as it came. */
static void send_event(struct invocation *inv, Agentcore__V1__InvokeEvent *ev)
{
    struct follower *f;

    if (inv->call && !inv->cancelled && inv->mode == MODE_EVENTS) {
        int text = ev->event_case == AGENTCORE__V1__INVOKE_EVENT__EVENT_TEXT_DELTA;
        size_t len = text ? strlen(ev->text_delta->text) : 0;

        if (text && inv->held.len &&
            (inv->held_block != ev->text_delta->content_block_index ||
             inv->held.len + len > HELD_MAX))
            flush_held(inv);
        if (text && (inv->held.len || cm_rpc_acall_busy(inv->call)) &&
            cm_buf_add(&inv->held, ev->text_delta->text, len) == 0) {
            inv->held_block = ev->text_delta->content_block_index;
        } else {
            flush_held(inv);
            cm_rpc_acall_send(inv->call, &ev->base, OUTBOX_CAP);
        }
    }
    for (f = inv->followers; f; f = f->next) {
        if (f->mode == MODE_EVENTS) {
            cm_rpc_acall_send(f->call, &ev->base, OUTBOX_CAP);
            f->got_text |= ev->event_case == AGENTCORE__V1__INVOKE_EVENT__EVENT_TEXT_DELTA;
        }
    }
    if (inv->joinable && !inv->evlog_over) {
        size_t len = agentcore__v1__invoke_event__get_packed_size(ev);
        uint32_t n = (uint32_t)len;

        if (inv->evlog.len + 4 + len > EVLOG_CAP ||
            cm_buf_reserve(&inv->evlog, inv->evlog.len + 4 + len)) {
            inv->evlog_over = 1; /* no retry may join from now on */
            return;
        }
        memcpy(inv->evlog.data + inv->evlog.len, &n, 4);
        agentcore__v1__invoke_event__pack(ev, (uint8_t *)inv->evlog.data + inv->evlog.len + 4);
        inv->evlog.len += 4 + len;
    }
}

static void send_text(struct invocation *inv, int block, const char *text, size_t len)
{
    Agentcore__V1__InvokeEvent ev = AGENTCORE__V1__INVOKE_EVENT__INIT;
    Agentcore__V1__TextDelta d = AGENTCORE__V1__TEXT_DELTA__INIT;
    char *t = strndup(text, len);

    if (!t)
        return;
    ev.event_case = AGENTCORE__V1__INVOKE_EVENT__EVENT_TEXT_DELTA;
    ev.text_delta = &d;
    d.content_block_index = block;
    /* A new turn's text follows the earlier turns' after a blank line, the
     * separator aw_agent puts into the final response too. */
    if (inv->text_sent && !inv->turn_text) {
        d.text = "\n\n";
        send_event(inv, &ev);
    }
    d.text = t;
    send_event(inv, &ev);
    inv->text_sent = inv->turn_text = 1;
    free(t);
}

static void on_text(void *ud, int block, const char *text, size_t len)
{
    struct invocation *inv = ud;

    if (!inv->first_token_ms) {
        inv->first_token_ms = cm_now_ms() - inv->t0 + 1; /* +1: 0 means none */
        cm_metrics_observe(inv->svc->metrics, inv->svc->m_ttft, NULL,
                           (double)(inv->first_token_ms - 1) / 1000.0);
    }
    send_text(ud, block, text, len);
}

static void send_json_event(struct invocation *inv, int tool_use, const json_t *block)
{
    Agentcore__V1__InvokeEvent ev = AGENTCORE__V1__INVOKE_EVENT__INIT;
    char *js;

    if (inv->mode != MODE_EVENTS || !block || !(js = cm_json_dump(block)))
        return;
    if (tool_use) {
        ev.event_case = AGENTCORE__V1__INVOKE_EVENT__EVENT_TOOL_USE_JSON;
        ev.tool_use_json = js;
    } else {
        ev.event_case = AGENTCORE__V1__INVOKE_EVENT__EVENT_TOOL_RESULT_JSON;
        ev.tool_result_json = js;
    }
    send_event(inv, &ev);
    free(js);
}

/* ---- the model ---- */

/* Per side (sent, received): what a chat span's content event carries. */
#define CONTENT_CAP (64 * 1024)

/* The chat span of the model call that just ended (GenAI conventions). With
 * content capture on, the messages |sent| (NULL: not kept, the summary call's)
 * and the answer ride in the event the conventions name for them. */
static void chat_span(struct invocation *inv, const json_t *sent, int rc,
                      const struct aw_turn *turn, const struct aw_model_error *err)
{
    char name[300], *in_text = NULL, *out_text = NULL;
    struct cm_otel_attr a[] = {
        {"gen_ai.operation.name", "chat", 0},
        {"gen_ai.provider.name", "aws.bedrock", 0},
        {"gen_ai.request.model", inv->svc->model_id ? inv->svc->model_id : "", 0},
        {"session.id", inv->req->session_id, 0},
        {"gen_ai.usage.input_tokens", NULL, rc == 0 && turn ? turn->input_tokens : 0},
        {"gen_ai.usage.output_tokens", NULL, rc == 0 && turn ? turn->output_tokens : 0},
        {"gen_ai.response.finish_reasons", rc == 0 && turn ? turn->stop_reason : "", 0},
        {"error.type", rc && err ? err->type : NULL, 0},
    };
    struct cm_otel_span sp = {name,
                              CM_OTEL_CLIENT,
                              &inv->chat,
                              inv->chat_start_ns,
                              cm_otel_now_ns(),
                              rc != 0,
                              rc && err ? err->message : cm_strerror(rc),
                              a,
                              rc && err ? 8 : 7,
                              NULL,
                              0,
                              rc && err ? err->type : NULL};
    struct cm_otel_attr ca[3] = {{"gen_ai.operation.name", "chat", 0}};
    struct cm_otel_event content = {"gen_ai.client.inference.operation.details", 0, ca, 1};

    if (!cm_otel_sampled(inv->svc->otel, &inv->chat))
        return;
    snprintf(name, sizeof(name), "chat %s", inv->svc->model_id ? inv->svc->model_id : "");
    if (inv->svc->capture_content) {
        json_t *in = sent ? aw_genai_input(sent) : NULL;
        json_t *out = rc == 0 && turn ? aw_genai_output(turn->message, turn->stop_reason) : NULL;

        in_text = in ? aw_genai_dump(in, CONTENT_CAP) : NULL;
        out_text = out ? aw_genai_dump(out, CONTENT_CAP) : NULL;
        json_decref(in);
        json_decref(out);
        if (in_text)
            ca[content.n_attrs++] = (struct cm_otel_attr){"gen_ai.input.messages", in_text, 0};
        if (out_text)
            ca[content.n_attrs++] = (struct cm_otel_attr){"gen_ai.output.messages", out_text, 0};
        content.time_ns = sp.end_ns;
        sp.events = &content;
        sp.n_events = 1;
    }
    cm_otel_record(inv->svc->otel, &sp);
    free(in_text);
    free(out_text);
}

static void on_model_done(void *ud, int rc, struct aw_turn *turn, struct aw_model_error *err)
{
    struct invocation *inv = ud;
    enum aw_agent_next next;

    inv->model = NULL;
    inv->model_ms += cm_now_ms() - inv->model_t0;
    chat_span(inv, inv->agent.history, rc, turn, err);
    cm_metrics_observe(inv->svc->metrics, inv->svc->m_model, NULL,
                       (double)(cm_now_ms() - inv->model_t0) / 1000.0);
    if (rc == CM_EUPSTREAM && err && aw_history_is_overflow(err->message) && !inv->cancelled &&
        !inv->turn_text) {
        /* The conversation no longer fits the model: shorten the oldest
         * long tool results, then drop the oldest turns, and call again. */
        char what[200] = "";
        int ok = inv->reductions++ < MAX_REDUCTIONS &&
                 aw_agent_reduce(&inv->agent, what, sizeof(what)) == 0;

        log_ctx(inv);
        if (ok) {
            cm_warn("context overflow (%s): %s; calling the model again", err->type, what);
            cm_log_clear_context();
            call_model(inv);
            return;
        }
        cm_log_clear_context();
        snprintf(err->message, sizeof(err->message),
                 "the conversation does not fit the model's context window: %s after %d "
                 "reductions; start a new session or send a shorter prompt",
                 inv->reductions > MAX_REDUCTIONS ? "still too long" : what, inv->reductions - 1);
    }
    if (rc) {
        complete(inv, rc, err);
        return;
    }
    if (inv->mode == MODE_EVENTS && !inv->turn_text) {
        /* Converse (not ConverseStream) delivers a turn whole: stream its text
         * as one delta so a streaming client still sees every answer. */
        json_t *block;
        size_t i;

        json_array_foreach(json_object_get(turn->message, "content"), i, block)
        {
            const char *t = json_string_value(json_object_get(block, "text"));

            if (t && *t)
                send_text(inv, (int)i, t, strlen(t));
        }
    }
    if (CM_LOG_ENABLED(CM_LOG_DEBUG)) {
        char dur[24];
        const char *kv[] = {"durationMs", dur, "stopReason", turn->stop_reason, NULL};

        snprintf(dur, sizeof(dur), "%llu", (unsigned long long)(cm_now_ms() - inv->model_t0));
        log_ctx(inv);
        cm_log_write(CM_LOG_DEBUG, kv, "model call done");
        cm_log_clear_context();
    }
    next = aw_agent_on_turn(&inv->agent, turn);
    if (next == AW_NEXT_TOOLS)
        checkpoint(inv); /* a crash while the tools run keeps the prompt and the toolUse */
    step(inv, next);
}

static void call_model(struct invocation *inv)
{
    struct aw_call_cb cb = {inv->mode == MODE_EVENTS ? on_text : NULL, on_model_done, inv, NULL};
    json_t *tool_config = aw_tools_config(inv->svc->tools);
    char tp[CM_TRACEPARENT_LEN + 1];

    /* The model call's span, a child of ours; Bedrock hears of it too. */
    if (inv->traceparent[0] && cm_trace_child(&inv->trace, &inv->chat) == 0) {
        cm_trace_format(&inv->chat, tp);
        cb.traceparent = tp;
        inv->chat_start_ns = cm_otel_now_ns();
    }

    inv->turn_text = 0;
    inv->model_t0 = cm_now_ms();
    inv->model = aw_bedrock_start(inv->svc->bedrock, inv->agent.history, tool_config, &cb);
    json_decref(tool_config);
    if (!inv->model)
        step(inv, aw_agent_fail(&inv->agent, CM_ENOMEM));
}

/* ---- tools: the toolUses of a turn run at once, MAX_PARALLEL_TOOLS at most ---- */

/* Applies one result; the agent's next step (AW_NEXT_WAIT until the last). */
static enum aw_agent_next tool_result(struct invocation *inv, size_t i,
                                      const struct aw_tool_result *res)
{
    const json_t *block;
    enum aw_agent_next next;

    next = aw_agent_on_tool_result(&inv->agent, i, res->text, res->is_error, &block);
    send_json_event(inv, 0, block);
    return next;
}

static void on_tool_done(void *ud, struct aw_tool_result *res);

/* Starts queued calls while fewer than the cap run. Results known at once
 * (an unknown tool) are applied here, but no step runs: the caller steps. */
static enum aw_agent_next start_tools(struct invocation *inv)
{
    enum aw_agent_next next = AW_NEXT_WAIT, n;
    size_t cap = inv->svc->max_parallel_tools > 0 ? (size_t)inv->svc->max_parallel_tools : 1;

    while (inv->next_tool < inv->nslots && inv->running < cap) {
        size_t i = inv->next_tool++;
        const json_t *use = aw_agent_tool_use(&inv->agent, i);
        struct tool_slot *s = &inv->slots[i];
        struct aw_tool_result now = {NULL, -1};

        if (!aw_agent_tool_pending(&inv->agent, i))
            continue;
        s->t0 = cm_now_ms();
        if (aw_tools_execute_async(
                inv->svc->tools, &inv->tcall, json_string_value(json_object_get(use, "toolUseId")),
                json_string_value(json_object_get(use, "name")), json_object_get(use, "input"),
                on_tool_done, s, &s->exec, &now) == 0) {
            inv->running++;
            continue;
        }
        if (now.is_error >= 0 && (n = tool_result(inv, i, &now)) != AW_NEXT_WAIT)
            next = n;
        free(now.text);
    }
    return next;
}

/* Counts one finished call of tool |i| (the first TOOL_STATS names; the
 * rest under "other"). */
static void tool_stat(struct invocation *inv, size_t i, uint64_t ms)
{
    const char *name =
        json_string_value(json_object_get(aw_agent_tool_use(&inv->agent, i), "name"));
    int k;

    if (!name)
        name = "?";
    for (k = 0; k < inv->ntools && strcmp(inv->tools[k].name, name); k++)
        ;
    if (k == inv->ntools) {
        if (k == TOOL_STATS)
            k = TOOL_STATS - 1, name = "other";
        else
            inv->ntools++;
        cm_strlcpy(inv->tools[k].name, name, sizeof(inv->tools[k].name));
    }
    inv->tools[k].calls++;
    inv->tools[k].ms += ms;
    inv->tool_calls++;
}

static void on_tool_done(void *ud, struct aw_tool_result *res)
{
    struct tool_slot *s = ud;
    struct invocation *inv = s->inv;
    enum aw_agent_next next, more;

    s->exec = NULL;
    inv->running--;
    tool_stat(inv, s->index, cm_now_ms() - s->t0);
    if (inv->svc->metrics) {
        const char *l[] = {
            json_string_value(json_object_get(aw_agent_tool_use(&inv->agent, s->index), "name")),
            res->is_error ? "error" : "success"};

        if (!l[0])
            l[0] = "?";
        cm_metrics_count(inv->svc->metrics, inv->svc->m_tools, l, 1);
        cm_metrics_observe(inv->svc->metrics, inv->svc->m_tool_dur, NULL,
                           (double)(cm_now_ms() - s->t0) / 1000.0);
    }
    if (inv->cancelled) {
        if (!inv->running)
            complete(inv, inv->deferred_rc ? inv->deferred_rc : CM_ECANCELED, NULL);
        return;
    }
    next = tool_result(inv, s->index, res);
    more = start_tools(inv); /* a queued call takes the freed place */
    if (next == AW_NEXT_WAIT)
        next = more;
    if (next != AW_NEXT_WAIT)
        step(inv, next);
}

static void run_tools(struct invocation *inv)
{
    size_t n = aw_agent_tool_count(&inv->agent), i;
    enum aw_agent_next next;

    free(inv->slots);
    inv->slots = calloc(n, sizeof(*inv->slots));
    if (!inv->slots) {
        step(inv, aw_agent_fail(&inv->agent, CM_ENOMEM));
        return;
    }
    inv->nslots = n;
    inv->next_tool = 0;
    /* The client hears every toolUse the model asked for at once; the calls
     * start as the cap allows. */
    for (i = 0; i < n; i++) {
        inv->slots[i].inv = inv;
        inv->slots[i].index = i;
        send_json_event(inv, 1, aw_agent_tool_use(&inv->agent, i));
    }
    next = start_tools(inv);
    if (next != AW_NEXT_WAIT)
        step(inv, next);
}

/* ---- the loop's driver ---- */

static void step(struct invocation *inv, enum aw_agent_next next)
{
    switch (next) {
    case AW_NEXT_MODEL:
        if (inv->cancelled)
            complete(inv, CM_ECANCELED, NULL);
        else
            call_model(inv);
        break;
    case AW_NEXT_TOOLS:
        run_tools(inv);
        break;
    case AW_NEXT_WAIT:
        break;
    case AW_NEXT_DONE:
        complete(inv, 0, NULL);
        break;
    case AW_NEXT_FAILED:
        complete(inv, inv->agent.rc, NULL);
        break;
    }
}

/* The smaller of two budgets, 0 meaning none. */
static long long budget(long long configured, long long requested)
{
    if (requested <= 0)
        return configured;
    return configured > 0 && configured < requested ? configured : requested;
}

/* A request id answered already (a retry; it may have waited for the first
 * run to end, holding this session's turn): that answer, no second run. */
static int replayed(struct invocation *inv)
{
    size_t len;
    const void *data = inv->svc->answers ? aw_idem_get(inv->svc->answers, inv->req->request_id,
                                                       inv->req->session_id, &len, cm_now_ms())
                                         : NULL;

    if (!data)
        return 0;
    inv->replay = agentcore__v1__invoke_response__unpack(NULL, len, data);
    if (!inv->replay)
        return 0;
    complete(inv, 0, NULL);
    return 1;
}

static void begin(struct invocation *inv)
{
    char what[200];
    int rc, fixed;

    if (replayed(inv))
        return;
    inv->dirty = 1;
    fixed = aw_history_repair(aw_session_messages(inv->sess), what, sizeof(what));

    if (fixed > 0) {
        /* Bedrock would refuse this conversation on every call from now on. */
        log_ctx(inv);
        cm_warn("session history repaired (%d change%s), first: %s", fixed, fixed > 1 ? "s" : "",
                what);
        cm_log_clear_context();
    }
    rc = aw_agent_begin(&inv->agent, aw_session_messages(inv->sess), inv->req->prompt,
                        inv->svc->max_iterations);
    aw_agent_set_budget(
        &inv->agent, budget(inv->svc->max_invocation_tokens, inv->req->max_total_tokens),
        budget(inv->svc->max_invocation_output_tokens, inv->req->max_output_tokens));

    inv->agent_live = 1;
    if (rc)
        complete(inv, rc, NULL);
    else
        step(inv, AW_NEXT_MODEL);
}

static void tools_listed(struct aw_tools_waiter *w)
{
    struct invocation *inv = (void *)((char *)w - offsetof(struct invocation, twait));

    begin(inv);
}

/* The session is loaded: wait for the first tool listing if it is still
 * under way (cold start), then run. */
static void session_loaded(struct invocation *inv)
{
    inv->twait.ready = tools_listed;
    if (!aw_tools_wait_listed(inv->svc->tools, &inv->twait))
        begin(inv);
}

/* ---- the backing store ---- */

static void store_log(struct invocation *inv, enum cm_log_level level, const char *what,
                      const char *detail)
{
    const char *kv[] = {"store", aw_store_name(inv->svc->store), NULL};

    log_ctx(inv);
    CM_LOGF(level, kv, "%s: %s", what, detail);
    cm_log_clear_context();
}

/* Replaces the held history with |from|'s messages, in place (the agent
 * holds the array). */
static void adopt(struct invocation *inv, json_t *from)
{
    json_t *msgs = aw_session_messages(inv->sess);

    json_array_clear(msgs);
    json_array_extend(msgs, from);
}

/* A store request ended while the invocation wanted to end: end it now. */
static int end_if_pending(struct invocation *inv)
{
    if (!inv->end_pending)
        return 0;
    inv->end_pending = 0;
    complete(inv, inv->end_rc, inv->end_has_err ? &inv->end_err : NULL);
    return 1;
}

static void on_loaded(struct aw_store_op *op, int rc)
{
    struct invocation *inv = op->data;

    inv->store_busy = 0;
    if (rc == AW_STORE_OK) {
        adopt(inv, op->messages);
        aw_session_set_version(inv->sess, op->version);
    } else if (rc == AW_STORE_NOT_FOUND) {
        aw_session_set_version(inv->sess, op->version);
        if (op->error[0])
            store_log(inv, CM_LOG_ERROR, "stored session skipped", op->error);
    }
    json_decref(op->messages);
    op->messages = NULL;
    if (end_if_pending(inv))
        return;
    if (rc == AW_STORE_FAILED) {
        /* Running on a history that may be stale could write over a newer
         * one: refuse, clearly, and let the client retry. */
        store_log(inv, CM_LOG_ERROR, "session load failed", op->error);
        if (inv->call) /* NULL when its client left and a retry carries the run */
            cm_rpc_acall_finish(inv->call, CM_RPC_FAILED_PRECONDITION, "SessionStoreError",
                                "the session store is unavailable: %s", op->error);
        inv->call = NULL;
        complete(inv, CM_EIO, NULL);
        return;
    }
    session_loaded(inv);
}

/* The session is ours: bring it up to date from the store (a cached one
 * costs a stat or a 304), then run. */
static void have_session(struct invocation *inv, struct aw_session *sess)
{
    uv_timer_stop(&inv->timer);
    inv->sess = sess;
    if (!inv->svc->store) {
        session_loaded(inv);
        return;
    }
    inv->sop.id = inv->req->session_id;
    inv->sop.data = inv;
    inv->sop.done = on_loaded;
    cm_strlcpy(inv->sop.version, aw_session_version(sess), sizeof(inv->sop.version));
    inv->store_busy = 1;
    if (aw_store_load(inv->svc->store, &inv->sop)) {
        cm_strlcpy(inv->sop.error, "out of memory", sizeof(inv->sop.error));
        on_loaded(&inv->sop, AW_STORE_FAILED);
    }
}

/* Starts saving the held history (trimmed to the window first) with |done|.
 * 0, or -1 when it could not start (|done| does not run). */
static int save_history(struct invocation *inv, void (*done)(struct aw_store_op *, int))
{
    json_t *msgs = aw_session_messages(inv->sess);

    free(inv->sop.body);
    inv->sop.body = aw_store_encode(inv->req->session_id, msgs, (long long)(cm_wall_ms() / 1000),
                                    &inv->sop.len);
    inv->sop.id = inv->req->session_id;
    inv->sop.data = inv;
    inv->sop.done = done;
    cm_strlcpy(inv->sop.version, aw_session_version(inv->sess), sizeof(inv->sop.version));
    if (!inv->sop.body || aw_store_save(inv->svc->store, &inv->sop)) {
        cm_strlcpy(inv->sop.error, inv->sop.body ? "document too large" : "out of memory",
                   sizeof(inv->sop.error));
        return -1;
    }
    return 0;
}

static void on_checkpoint(struct aw_store_op *op, int rc)
{
    struct invocation *inv = op->data;

    inv->store_busy = 0;
    free(op->body);
    op->body = NULL;
    if (rc == AW_STORE_OK)
        aw_session_set_version(inv->sess, op->version);
    else /* the final save tells whether the turn is kept */
        store_log(inv, CM_LOG_WARN, "checkpoint not saved",
                  rc == AW_STORE_CONFLICT ? "another writer saved this session meanwhile"
                                          : op->error);
    end_if_pending(inv);
}

/* Mid-invocation, while the tools run: best effort, at most one at a time. */
static void checkpoint(struct invocation *inv)
{
    if (!inv->svc->store || inv->store_busy)
        return;
    inv->store_busy = 1;
    if (save_history(inv, on_checkpoint))
        inv->store_busy = 0;
}

static void finish(struct invocation *inv, int rc, const struct aw_model_error *err);
static void save_final(struct invocation *inv);

static void final_done(struct invocation *inv)
{
    free(inv->sop.body);
    inv->sop.body = NULL;
    finish(inv, inv->end_rc, inv->end_has_err ? &inv->end_err : NULL);
}

/* After a conflict: the other writer's history, then this invocation's own
 * messages again, repaired; then the save is tried once more. */
static void on_conflict_loaded(struct aw_store_op *op, int rc)
{
    struct invocation *inv = op->data;
    json_t *msgs = aw_session_messages(inv->sess), *merged;
    size_t n = json_array_size(msgs), i;

    if (rc != AW_STORE_OK && rc != AW_STORE_NOT_FOUND) {
        store_log(inv, CM_LOG_ERROR, "session not saved (reload after a conflict failed)",
                  op->error);
        json_decref(op->messages);
        op->messages = NULL;
        final_done(inv);
        return;
    }
    merged = op->messages ? op->messages : json_array();
    op->messages = NULL;
    for (i = n - (inv->own_n < n ? inv->own_n : n); merged && i < n; i++)
        json_array_append(merged, json_array_get(msgs, i));
    if (merged) {
        aw_history_repair(merged, NULL, 0);
        adopt(inv, merged);
    }
    json_decref(merged);
    aw_session_set_version(inv->sess, op->version);
    save_final(inv);
}

static void on_final_saved(struct aw_store_op *op, int rc)
{
    struct invocation *inv = op->data;

    if (rc == AW_STORE_OK) {
        aw_session_set_version(inv->sess, op->version);
    } else if (rc == AW_STORE_CONFLICT && ++inv->conflicts <= 3) {
        /* Another agent-worker ran a turn of this session meanwhile. */
        store_log(inv, CM_LOG_WARN, "session saved by another writer meanwhile",
                  "reloading it and adding this invocation's turn");
        op->version[0] = '\0';
        op->done = on_conflict_loaded;
        if (aw_store_load(inv->svc->store, op) == 0)
            return;
        cm_strlcpy(op->error, "out of memory", sizeof(op->error));
    }
    if (rc != AW_STORE_OK)
        /* Answered anyway: the cache keeps the turn, and the next save
         * (same version) carries it to the store. */
        store_log(inv, CM_LOG_ERROR, "session not saved",
                  rc == AW_STORE_CONFLICT ? "other writers kept saving it" : op->error);
    final_done(inv);
}

static void save_final(struct invocation *inv)
{
    aw_session_trim(aw_session_messages(inv->sess), aw_sessions_window(inv->svc->sessions));
    if (save_history(inv, on_final_saved)) {
        store_log(inv, CM_LOG_ERROR, "session not saved", inv->sop.error);
        final_done(inv);
    }
}

static void session_ready(struct aw_session_waiter *w, struct aw_session *sess)
{
    have_session((void *)((char *)w - offsetof(struct invocation, swait)), sess);
}

static void session_wait_over(uv_timer_t *t)
{
    struct invocation *inv = t->data;

    aw_sessions_cancel_wait(inv->svc->sessions, &inv->swait);
    log_ctx(inv);
    cm_warn("session busy: another invocation of it ran for longer than %d ms",
            inv->svc->session_wait_ms);
    cm_log_clear_context();
    cm_rpc_acall_finish(inv->call, CM_RPC_ABORTED, "SessionBusy",
                        "another invocation of this session is still running (waited %d ms)",
                        inv->svc->session_wait_ms);
    inv->call = NULL;
    complete(inv, CM_ETIMEDOUT, NULL);
}

/* The client left, or the deadline passed. Everything in flight stops; the
 * invocation ends once no tool call can still report to it. */
static void cancel_run(struct invocation *inv);
static void follower_free(struct follower *f);

/* The client left, or the deadline passed. With a retry of this request
 * waiting on it (and no tool call whose gRPC parent is this call), the run
 * goes on for the retry; otherwise it stops. */
static void on_cancel(void *ud)
{
    struct invocation *inv = ud;

    if (inv->call && inv->followers && !inv->running && !inv->swait.sess) {
        cm_rpc_acall_finish(inv->call, CM_RPC_CANCELLED, NULL, "invocation cancelled");
        inv->call = NULL;
        /* Tool calls from now on hang off a caller still there. */
        inv->tcall.aparent = inv->followers->call;
        log_ctx(inv);
        cm_info("the caller left; the run goes on for its retry (same request id)");
        cm_log_clear_context();
        return;
    }
    cancel_run(inv);
}

/* A retry that joined a run left: when nobody listens any more, the run stops. */
static void follower_cancel(void *ud)
{
    struct follower *f = ud, **pp;
    struct invocation *inv = f->leader;

    for (pp = &inv->followers; *pp && *pp != f; pp = &(*pp)->next)
        ;
    if (*pp)
        *pp = f->next;
    cm_rpc_acall_finish(f->call, CM_RPC_CANCELLED, NULL, "invocation cancelled");
    if (inv->tcall.aparent == f->call)
        inv->tcall.aparent = inv->followers ? inv->followers->call : NULL;
    follower_free(f);
    if (!inv->call && !inv->followers && !inv->cancelled)
        cancel_run(inv);
}

static void cancel_run(struct invocation *inv)
{
    size_t i;

    inv->cancelled = 1;
    if (inv->swait.sess) {
        aw_sessions_cancel_wait(inv->svc->sessions, &inv->swait);
        complete(inv, CM_ECANCELED, NULL);
        return;
    }
    aw_tools_unwait(inv->svc->tools, &inv->twait);
    if (inv->model) {
        aw_bedrock_cancel(inv->model);
        inv->model = NULL;
    }
    for (i = 0; i < inv->nslots; i++)
        aw_tools_exec_cancel(inv->slots[i].exec);
    if (!inv->running)
        complete(inv, CM_ECANCELED, NULL);
}

static void inv_closed(uv_handle_t *h)
{
    struct invocation *inv = h->data;
    struct aw_service *svc = inv->svc;

    if (inv->replay)
        agentcore__v1__invoke_response__free_unpacked(inv->replay, NULL);
    free(inv->sop.body);
    cm_buf_free(&inv->evlog);
    cm_buf_free(&inv->held);
    protobuf_c_message_free_unpacked(&inv->req->base, NULL);
    free(inv->slots);
    free(inv);
    if (--svc->live == 0 && svc->on_idle) {
        void (*fn)(void *) = svc->on_idle;

        svc->on_idle = NULL;
        fn(svc->idle_ud);
    }
}

/* Keeps a finished invocation's answer for retries of its request id. */
static void keep_answer(struct invocation *inv, const Agentcore__V1__InvokeResponse *resp)
{
    size_t len;
    uint8_t *buf;

    if (!inv->svc->answers || !inv->req->request_id[0] || !inv->req->client_request_id)
        return; /* nobody could retry with an id we made up */
    len = agentcore__v1__invoke_response__get_packed_size(resp);
    if (!(buf = malloc(len ? len : 1)))
        return;
    agentcore__v1__invoke_response__pack(resp, buf);
    aw_idem_put(inv->svc->answers, inv->req->request_id, inv->req->session_id, buf, len,
                cm_now_ms());
    free(buf);
}

/* ---- retries that join a run ---- */

static void start(struct cm_rpc_acall *call, ProtobufCMessage *msg, struct aw_service *svc,
                  enum mode mode);

static void unjoinable(struct invocation *inv)
{
    if (!inv->joinable)
        return;
    if (inv->lprev)
        inv->lprev->lnext = inv->lnext;
    else
        inv->svc->joinable = inv->lnext;
    if (inv->lnext)
        inv->lnext->lprev = inv->lprev;
    inv->lnext = inv->lprev = NULL;
    inv->joinable = 0;
}

static void follower_free(struct follower *f)
{
    protobuf_c_message_free_unpacked(&f->req->base, NULL);
    free(f);
}

/* One text delta with |text| (a whole answer) on |call|. */
static void text_to(struct cm_rpc_acall *call, const char *text)
{
    Agentcore__V1__InvokeEvent ev = AGENTCORE__V1__INVOKE_EVENT__INIT;
    Agentcore__V1__TextDelta d = AGENTCORE__V1__TEXT_DELTA__INIT;

    if (!text || !*text)
        return;
    ev.event_case = AGENTCORE__V1__INVOKE_EVENT__EVENT_TEXT_DELTA;
    ev.text_delta = &d;
    d.text = (char *)text;
    cm_rpc_acall_send(call, &ev.base, OUTBOX_CAP);
}

static void answer_final(struct cm_rpc_acall *call, enum mode mode,
                         Agentcore__V1__InvokeResponse *resp)
{
    if (mode != MODE_REPLY) {
        Agentcore__V1__InvokeEvent ev = AGENTCORE__V1__INVOKE_EVENT__INIT;

        ev.event_case = AGENTCORE__V1__INVOKE_EVENT__EVENT_FINAL;
        ev.final = resp;
        cm_rpc_acall_end_with(call, &ev.base);
    } else {
        cm_rpc_acall_reply(call, &resp->base);
    }
}

/* The run answered: each retry that joined it gets the same answer. */
static void answer_followers(struct invocation *inv, Agentcore__V1__InvokeResponse *resp)
{
    struct follower *f;

    while ((f = inv->followers)) {
        inv->followers = f->next;
        if (f->mode == MODE_EVENTS && !f->got_text)
            text_to(f->call, resp->response);
        answer_final(f->call, f->mode, resp);
        follower_free(f);
    }
}

/* The run failed or was cancelled: its retries run on their own (after it,
 * in the session's queue), as any retry of a failed request would. */
static void rerun_followers(struct invocation *inv)
{
    struct follower *f;

    while ((f = inv->followers)) {
        inv->followers = f->next;
        start(f->call, &f->req->base, inv->svc, f->mode);
        free(f);
    }
}

/* A retry of |req| while its first run still goes (same client-chosen
 * request id, same session): the run, or NULL. */
static struct invocation *find_run(struct aw_service *svc, const Agentcore__V1__InvokeRequest *req)
{
    struct invocation *x;

    if (!req->client_request_id || !req->request_id[0])
        return NULL;
    for (x = svc->joinable; x; x = x->lnext)
        if (!strcmp(x->req->request_id, req->request_id) &&
            !strcmp(x->req->session_id, req->session_id))
            return x;
    return NULL;
}

/* Joins |run|: the events it streamed so far at once, then the rest as they
 * come, then its answer. 0, or -1 when it cannot be joined (its event log
 * passed EVLOG_CAP, or it has stopped). */
static int join(struct invocation *run, struct cm_rpc_acall *call,
                Agentcore__V1__InvokeRequest *req, enum mode mode)
{
    struct follower *f;
    size_t pos = 0;

    if (run->evlog_over || run->cancelled || (!run->call && !run->followers) ||
        !(f = calloc(1, sizeof(*f))))
        return -1;
    f->call = call;
    f->req = req;
    f->mode = mode;
    f->leader = run;
    while (mode == MODE_EVENTS && pos + 4 <= run->evlog.len) {
        uint32_t n;
        Agentcore__V1__InvokeEvent *ev;

        memcpy(&n, run->evlog.data + pos, 4);
        ev = agentcore__v1__invoke_event__unpack(NULL, n,
                                                 (const uint8_t *)run->evlog.data + pos + 4);
        if (ev) {
            cm_rpc_acall_send(call, &ev->base, OUTBOX_CAP);
            f->got_text |= ev->event_case == AGENTCORE__V1__INVOKE_EVENT__EVENT_TEXT_DELTA;
            agentcore__v1__invoke_event__free_unpacked(ev, NULL);
        }
        pos += 4 + n;
    }
    f->next = run->followers;
    run->followers = f;
    cm_rpc_acall_on_cancel(call, follower_cancel, f);
    log_ctx(run);
    cm_info("a retry of this request joined its running invocation (%zu bytes of events so far)",
            run->evlog.len);
    cm_log_clear_context();
    return 0;
}

/* ---- the summarizing conversation manager ---- */

static void on_summary(void *ud, int rc, struct aw_turn *turn, struct aw_model_error *err)
{
    struct invocation *inv = ud;
    json_t *msgs = aw_session_messages(inv->sess), *block;
    struct aw_agent *a = &inv->agent;
    char text[16384] = "", removed[24];
    const char *kv[] = {"messagesReplaced", removed, NULL};
    size_t i, pos = 0;

    inv->model = NULL;
    inv->model_ms += cm_now_ms() - inv->model_t0;
    chat_span(inv, NULL, rc, turn, err);
    if (rc == 0) {
        json_array_foreach(json_object_get(turn->message, "content"), i, block)
        {
            const char *t = json_string_value(json_object_get(block, "text"));

            if (t && pos < sizeof(text))
                pos += (size_t)snprintf(text + pos, sizeof(text) - pos, "%s", t);
        }
        a->res.input_tokens += turn->input_tokens; /* billed with this invocation */
        a->res.output_tokens += turn->output_tokens;
        a->res.total_tokens += turn->total_tokens;
    }
    log_ctx(inv);
    if (rc == 0 && text[0] && aw_history_apply_summary(msgs, inv->summary_cut, text) == 0) {
        /* The agent's view of where this invocation began moves with them. */
        a->start_len = a->start_len > inv->summary_cut ? a->start_len - inv->summary_cut : 0;
        snprintf(removed, sizeof(removed), "%zu", inv->summary_cut);
        CM_LOGF(CM_LOG_INFO, kv, "history summarized");
    } else {
        cm_warn("history not summarized (%s): the window drops the oldest turns instead",
                rc ? (err ? err->message : cm_strerror(rc)) : "empty or unusable summary");
    }
    cm_log_clear_context();
    complete(inv, 0, NULL);
}

/* When the window would drop turns: 1 with a model call asking to
 * summarize them under way, 0 when there is nothing to do (or no call could
 * start: the window applies). */
static int summarize(struct invocation *inv)
{
    struct aw_call_cb cb = {NULL, on_summary, inv, NULL};
    json_t *msgs = aw_session_messages(inv->sess), *req, *tool_config;
    char tp[CM_TRACEPARENT_LEN + 1];

    inv->summarized = 1;
    inv->summary_cut = aw_history_cut(msgs, aw_sessions_window(inv->svc->sessions));
    if (!inv->summary_cut || !(req = aw_history_summary_request(msgs, inv->summary_cut)))
        return 0;
    /* Bedrock wants the tool configuration whenever the messages hold
     * toolUse or toolResult blocks. */
    tool_config = aw_tools_config(inv->svc->tools);
    inv->model_t0 = cm_now_ms();
    if (inv->traceparent[0] && cm_trace_child(&inv->trace, &inv->chat) == 0) {
        cm_trace_format(&inv->chat, tp);
        cb.traceparent = tp;
        inv->chat_start_ns = cm_otel_now_ns();
    }
    inv->model = aw_bedrock_start(inv->svc->bedrock, req, tool_config, &cb);
    json_decref(tool_config);
    json_decref(req);
    return inv->model != NULL;
}

/* Ends the invocation: once no tool call can report to it any more, and
 * once its history is in the store (when there is one), finish(). */
static void complete(struct invocation *inv, int rc, const struct aw_model_error *err)
{
    size_t i;

    if (inv->running) {
        /* Tool calls still hold pointers to us: stop them and end when the
         * last one reports (on_tool_done). */
        inv->cancelled = 1;
        inv->deferred_rc = rc ? rc : CM_ECANCELED;
        for (i = 0; i < inv->nslots; i++)
            aw_tools_exec_cancel(inv->slots[i].exec);
        return;
    }
    if (inv->closing)
        return; /* the final save ends it */
    if (rc == 0 && inv->svc->summarize && inv->sess && inv->agent_live && !inv->summarized &&
        !inv->cancelled && summarize(inv))
        return; /* on_summary comes back here */
    if (inv->agent_live && rc && !inv->agent.rc) {
        inv->spent_in = inv->agent.res.input_tokens;
        inv->spent_out = inv->agent.res.output_tokens;
        inv->spent_iterations = inv->agent.res.iterations;
        aw_agent_fail(&inv->agent, rc); /* restores the history */
    }
    if (!inv->svc->store || !inv->sess || (!inv->dirty && !inv->store_busy)) {
        finish(inv, rc, err);
        return;
    }
    inv->end_rc = rc;
    inv->end_has_err = err != NULL;
    if (err)
        inv->end_err = *err; /* |err| lives in the model call, gone by then */
    if (inv->store_busy) {
        inv->end_pending = 1; /* the load or checkpoint comes back first */
        return;
    }
    inv->closing = 1;
    if (inv->agent_live && !inv->agent.rc) {
        /* What this invocation added: the prompt's turn (joined to the one
         * before, when that was a user turn) and everything after. */
        size_t keep = inv->agent.start_len -
                      (inv->agent.joined_at != (size_t)-1 && inv->agent.start_len ? 1 : 0);

        inv->own_n = json_array_size(aw_session_messages(inv->sess)) - keep;
    }
    save_final(inv);
}

/* The invocation's counters: outcome (the stop reason, or what failed),
 * duration, tokens. */
static void invoke_metrics(struct invocation *inv, int rc)
{
    struct aw_service *svc = inv->svc;
    const struct aw_agent_result *res = &inv->agent.res;
    const char *outcome = rc == 0              ? (inv->replay ? "Replayed" : res->stop_reason)
                          : rc == CM_ECANCELED ? "Cancelled"
                          : rc == CM_EUPSTREAM ? "ModelError"
                          : rc == CM_ETIMEDOUT ? "SessionBusy"
                                               : "Error";
    const char *in[] = {"input"}, *out[] = {"output"}, *o[] = {outcome};

    if (!svc->metrics)
        return;
    cm_metrics_gauge(svc->metrics, svc->m_active, NULL, -1);
    cm_metrics_count(svc->metrics, svc->m_invocations, o, 1);
    cm_metrics_observe(svc->metrics, svc->m_duration, NULL,
                       (double)(cm_now_ms() - inv->t0) / 1000.0);
    cm_metrics_count(svc->metrics, svc->m_tokens, in,
                     (uint64_t)(inv->spent_in ? inv->spent_in : res->input_tokens));
    cm_metrics_count(svc->metrics, svc->m_tokens, out,
                     (uint64_t)(inv->spent_out ? inv->spent_out : res->output_tokens));
}

int aw_service_metrics(struct aw_service *svc, struct cm_metrics *m)
{
    static const char *const outcome[] = {"outcome", NULL}, *const type[] = {"type", NULL},
                             *const tool[] = {"tool", "status", NULL};

    svc->metrics = m;
    svc->m_invocations = cm_metrics_family(
        m, "agentcore_invocations_total",
        "Invocations by outcome (the stop reason, or what failed)", CM_COUNTER, outcome);
    svc->m_duration = cm_metrics_family(m, "agentcore_invocation_duration_seconds",
                                        "Invocation latency, start to answer", CM_HISTOGRAM, NULL);
    svc->m_model = cm_metrics_family(m, "agentcore_model_call_duration_seconds",
                                     "Model call latency (each Converse/ConverseStream call)",
                                     CM_HISTOGRAM, NULL);
    svc->m_ttft =
        cm_metrics_family(m, "agentcore_time_to_first_token_seconds",
                          "Streamed invocations: time to the first text", CM_HISTOGRAM, NULL);
    svc->m_tokens = cm_metrics_family(m, "agentcore_tokens_total", "Model tokens, in and out",
                                      CM_COUNTER, type);
    svc->m_tools = cm_metrics_family(m, "agentcore_tool_calls_total",
                                     "Tool calls by tool and status", CM_COUNTER, tool);
    svc->m_tool_dur =
        cm_metrics_family(m, "agentcore_tool_call_duration_seconds",
                          "Tool call latency, as the agent-worker sees it", CM_HISTOGRAM, NULL);
    svc->m_active = cm_metrics_family(m, "agentcore_active_invocations",
                                      "Invocations in flight (streams included)", CM_GAUGE, NULL);
    return svc->m_invocations < 0 || svc->m_active < 0 ? CM_ENOMEM : 0;
}

/* The invoke_agent span of the whole invocation (GenAI conventions). */
static void invoke_span(struct invocation *inv, int rc, const struct aw_model_error *err)
{
    const struct aw_agent_result *res = &inv->agent.res;
    const char *stop = rc == CM_ECANCELED ? "Cancelled"
                       : rc               ? ""
                       : inv->replay      ? inv->replay->stop_reason
                                          : res->stop_reason;
    struct cm_otel_attr a[] = {
        {"gen_ai.operation.name", "invoke_agent", 0},
        {"gen_ai.provider.name", "aws.bedrock", 0},
        {"gen_ai.request.model", inv->svc->model_id ? inv->svc->model_id : "", 0},
        {"session.id", inv->req->session_id, 0},
        {"gen_ai.conversation.id", inv->req->session_id, 0},
        {"agentcore.request.id", inv->req->request_id, 0},
        {"gen_ai.usage.input_tokens", NULL, inv->spent_in ? inv->spent_in : res->input_tokens},
        {"gen_ai.usage.output_tokens", NULL, inv->spent_out ? inv->spent_out : res->output_tokens},
        {"agentcore.stop_reason", stop, 0},
        {"agentcore.tool_calls", NULL, inv->tool_calls},
    };
    struct cm_otel_span sp = {"invoke_agent",
                              CM_OTEL_SERVER,
                              &inv->trace,
                              inv->start_ns,
                              cm_otel_now_ns(),
                              rc != 0 && rc != CM_ECANCELED,
                              rc && err ? err->message : cm_strerror(rc),
                              a,
                              sizeof(a) / sizeof(a[0]),
                              NULL,
                              0,
                              rc && err ? err->type : NULL};

    cm_otel_record(inv->svc->otel, &sp);
}

/* Answers the call (unless already answered), logs, releases the session
 * (which may start the next invocation of it) and frees. */
static void finish(struct invocation *inv, int rc, const struct aw_model_error *err)
{
    struct aw_agent_result *res = &inv->agent.res;
    struct cm_rpc_acall *call = inv->call;
    char dur[24], iters[16];

    if (rc == 0 && inv->cancelled)
        rc = CM_ECANCELED; /* finished, but nobody is listening any more */
    flush_held(inv);       /* the text so far goes before the answer or the error */
    inv->call = NULL;
    unjoinable(inv);
    invoke_span(inv, rc, err);
    invoke_metrics(inv, rc);
    snprintf(dur, sizeof(dur), "%llu", (unsigned long long)(cm_now_ms() - inv->t0));
    log_ctx(inv);
    if (!call && (rc || !inv->followers)) {
        /* answered already (session wait over), or its caller left */
    } else if (rc == 0 && inv->replay) {
        const char *kv[] = {"durationMs", dur, "stopReason", inv->replay->stop_reason, NULL};

        CM_LOGF(CM_LOG_INFO, kv, "invocation answered from its earlier run (same request id)");
        if (call) {
            if (inv->mode == MODE_EVENTS) /* a streaming client sees the whole answer at once */
                text_to(call, inv->replay->response);
            answer_final(call, inv->mode, inv->replay);
        }
        answer_followers(inv, inv->replay);
    } else if (rc == 0) {
        Agentcore__V1__InvokeResponse resp = AGENTCORE__V1__INVOKE_RESPONSE__INIT;
        Agentcore__V1__Usage usage = AGENTCORE__V1__USAGE__INIT;
        char model[24], ttft[24], in[24], out[24], total[24], calls[16], tools[512];
        const char *kv[] = {"durationMs", dur, "iterations", iters, "stopReason", res->stop_reason,
                            "streamed", inv->mode == MODE_EVENTS ? "true" : "false", "modelMs",
                            model, "inputTokens", in, "outputTokens", out, "totalTokens", total,
                            "toolCalls", calls, "tools", tools,
                            /* time to first token: streamed invocations only */
                            inv->first_token_ms ? "firstTokenMs" : NULL, ttft, NULL};
        size_t pos = 0;
        int k;

        snprintf(iters, sizeof(iters), "%d", res->iterations);
        snprintf(model, sizeof(model), "%llu", (unsigned long long)inv->model_ms);
        snprintf(ttft, sizeof(ttft), "%llu", (unsigned long long)(inv->first_token_ms - 1));
        snprintf(in, sizeof(in), "%lld", res->input_tokens);
        snprintf(out, sizeof(out), "%lld", res->output_tokens);
        snprintf(total, sizeof(total), "%lld", res->total_tokens);
        snprintf(calls, sizeof(calls), "%d", inv->tool_calls);
        tools[0] = '\0';
        for (k = 0; k < inv->ntools && pos < sizeof(tools); k++) /* "name:calls:ms,..." */
            pos += (size_t)snprintf(tools + pos, sizeof(tools) - pos, "%s%s:%d:%llu", k ? "," : "",
                                    inv->tools[k].name, inv->tools[k].calls,
                                    (unsigned long long)inv->tools[k].ms);
        CM_LOGF(CM_LOG_INFO, kv, "invocation done");
        resp.invocation_id = inv->req->request_id;
        resp.session_id = inv->req->session_id;
        resp.response = res->response ? res->response : "";
        resp.stop_reason = res->stop_reason;
        usage.input_tokens = res->input_tokens;
        usage.output_tokens = res->output_tokens;
        usage.total_tokens = res->total_tokens;
        resp.usage = &usage;
        resp.iterations = res->iterations;
        keep_answer(inv, &resp);
        if (call)
            answer_final(call, inv->mode, &resp);
        answer_followers(inv, &resp);
    } else if (rc == CM_EUPSTREAM && err) {
        const char *kv[] = {"durationMs", dur, "errorType", err->type, NULL};

        char shown[sizeof(err->message)];

        /* The log keeps the whole message; the HTTP client gets it without
         * ARNs, account ids or secret names. */
        CM_LOGF(CM_LOG_ERROR, kv, "model call failed: %s", err->message);
        aw_public_message(err->message, shown, sizeof(shown));
        if (err->http_status)
            cm_rpc_acall_finish(call, CM_RPC_FAILED_PRECONDITION, "ModelError", "%s (HTTP %d): %s",
                                err->type, err->http_status, shown);
        else
            cm_rpc_acall_finish(call, CM_RPC_FAILED_PRECONDITION, "ModelError", "%s: %s", err->type,
                                shown);
    } else if (rc == CM_ECANCELED) {
        char model[24], in[24], out[24], calls[16];
        const char *kv[] = {"durationMs",   dur,       "iterations", iters,         "stopReason",
                            "Cancelled",    "modelMs", model,        "inputTokens", in,
                            "outputTokens", out,       "toolCalls",  calls,         NULL};

        /* The stop reason the issue list names: the caller left (or the
         * deadline passed); the history is as before the invocation. */
        snprintf(iters, sizeof(iters), "%d",
                 inv->spent_iterations ? inv->spent_iterations : res->iterations);
        snprintf(model, sizeof(model), "%llu", (unsigned long long)inv->model_ms);
        snprintf(in, sizeof(in), "%lld", inv->spent_in ? inv->spent_in : res->input_tokens);
        snprintf(out, sizeof(out), "%lld", inv->spent_out ? inv->spent_out : res->output_tokens);
        snprintf(calls, sizeof(calls), "%d", inv->tool_calls);
        CM_LOGF(CM_LOG_INFO, kv, "invocation cancelled by the caller");
        cm_rpc_acall_finish(call, CM_RPC_CANCELLED, NULL, "invocation cancelled");
    } else {
        cm_error("invocation failed: %s", cm_strerror(rc));
        cm_rpc_acall_finish(call, CM_RPC_INTERNAL, "AgentError", "agent failed: %s",
                            cm_strerror(rc));
    }
    cm_log_clear_context();
    if (inv->agent_live)
        aw_agent_cleanup(&inv->agent);
    inv->agent_live = 0;
    uv_close((uv_handle_t *)&inv->timer, inv_closed);
    if (inv->sess) {
        struct aw_session *sess = inv->sess;

        inv->sess = NULL;
        aw_sessions_release_async(inv->svc->sessions, sess); /* may start the next one */
    }
    rerun_followers(inv);
}

/* Names (never values: Authorization, tokens) of the request context the
 * gateway forwarded. */
static void log_context(struct cm_rpc_acall *call)
{
    char names[1024];
    const char *k, *v, *kv[] = {"headers", names, NULL};
    size_t pos = 0;
    int i;

    names[0] = '\0';
    for (i = 0; cm_rpc_acall_meta_at(call, i, &k, &v); i++) {
        if (!strncmp(k, "x-agentcore-", 12) || !strncmp(k, "grpc-", 5) || !strcmp(k, "user-agent"))
            continue;
        pos += (size_t)snprintf(names + pos, sizeof(names) - pos, "%s%s", pos ? "," : "", k);
        if (pos >= sizeof(names))
            break;
    }
    cm_log_write(CM_LOG_DEBUG, kv, "request context");
}

static void start(struct cm_rpc_acall *call, ProtobufCMessage *msg, struct aw_service *svc,
                  enum mode mode)
{
    Agentcore__V1__InvokeRequest *req = (Agentcore__V1__InvokeRequest *)msg;
    struct invocation *inv, *run;
    struct aw_session *sess;
    int rc;

    if (!req->prompt[0] || !req->session_id[0]) {
        cm_rpc_acall_finish(call, CM_RPC_INVALID_ARGUMENT, NULL,
                            "prompt and session_id are required");
        protobuf_c_message_free_unpacked(msg, NULL);
        return;
    }
    if ((run = find_run(svc, req)) && join(run, call, req, mode) == 0)
        return;
    inv = calloc(1, sizeof(*inv));
    if (!inv) {
        cm_rpc_acall_finish(call, CM_RPC_RESOURCE_EXHAUSTED, NULL, "out of memory");
        protobuf_c_message_free_unpacked(msg, NULL);
        return;
    }
    svc->live++; /* until inv_closed */
    cm_buf_init(&inv->evlog, EVLOG_CAP);
    cm_buf_init(&inv->held, HELD_MAX + 1);
    if (req->client_request_id && req->request_id[0] && svc->answers) {
        /* A retry may come while this runs: it joins instead of running twice. */
        inv->joinable = 1;
        inv->lnext = svc->joinable;
        if (svc->joinable)
            svc->joinable->lprev = inv;
        svc->joinable = inv;
    }
    inv->svc = svc;
    inv->call = call;
    inv->req = req;
    inv->mode = mode;
    inv->t0 = cm_now_ms();
    uv_timer_init(svc->loop, &inv->timer);
    inv->timer.data = inv;
    inv->tcall.aparent = call;
    inv->tcall.request_id = req->request_id;
    inv->tcall.session_id = req->session_id;
    inv->start_ns = cm_otel_now_ns();
    cm_metrics_gauge(svc->metrics, svc->m_active, NULL, 1);
    if (cm_trace_continue(cm_rpc_acall_meta(call, CM_RPC_MD_TRACEPARENT), &inv->trace) == 0) {
        cm_trace_ids(&inv->trace, inv->trace_id, inv->span_id);
        cm_trace_format(&inv->trace, inv->traceparent);
        inv->tcall.traceparent = inv->traceparent; /* a tool call's parent is our span */
    }
    if (CM_LOG_ENABLED(CM_LOG_DEBUG)) {
        log_ctx(inv);
        log_context(call);
        cm_log_clear_context();
    }
    cm_rpc_acall_on_cancel(call, on_cancel, inv);
    if (mode == MODE_EVENTS)
        cm_rpc_acall_on_idle(call, on_call_idle, inv);
    inv->swait.ready = session_ready;
    rc = aw_sessions_acquire_async(svc->sessions, req->session_id, &inv->swait, &sess);
    if (rc == 0) {
        have_session(inv, sess);
    } else if (rc == 1) {
        /* Another invocation of this session runs: wait for the turn, holding
         * no thread, at most SESSION_WAIT_MS. */
        uv_timer_start(&inv->timer, session_wait_over, (uint64_t)svc->session_wait_ms, 0);
    } else {
        cm_rpc_acall_finish(call, CM_RPC_RESOURCE_EXHAUSTED, "SessionLimit",
                            "session limit reached (every session is busy) or invalid session id");
        inv->call = NULL;
        complete(inv, CM_ETOOBIG, NULL);
    }
}

static void invoke(struct cm_rpc_acall *call, ProtobufCMessage *msg, void *ud)
{
    start(call, msg, ud, MODE_REPLY);
}

/* Events as they happen when the caller asked for them (|stream|), else only
 * the final one: the gateway uses InvokeStream for JSON answers too, so that
 * an invocation whose client left can be cancelled. */
static void invoke_stream(struct cm_rpc_acall *call, ProtobufCMessage *msg, void *ud)
{
    const Agentcore__V1__InvokeRequest *req = (const void *)msg;

    start(call, msg, ud, req->stream ? MODE_EVENTS : MODE_FINAL_EVENT);
}

static const struct cm_rpc_method status_method = {
    "/agentcore.v1.AgentService/Status", &agentcore__v1__status_request__descriptor,
    &agentcore__v1__status_response__descriptor, CM_RPC_UNARY};

/* Background work anywhere behind this agent-worker: its own tasks (none
 * yet) and what the tool-workers last reported. Never blocks. */
static void status(struct cm_rpc_ctx *ctx, const ProtobufCMessage *msg, void *ud)
{
    Agentcore__V1__StatusResponse resp = AGENTCORE__V1__STATUS_RESPONSE__INIT;
    struct aw_service *svc = ud;

    (void)msg;
    resp.active_background_tasks = cm_status_get(svc->status);
    cm_rpc_ctx_reply(ctx, &resp.base);
}

static const struct cm_rpc_method watch_method = {
    "/agentcore.v1.AgentService/WatchStatus", &agentcore__v1__status_request__descriptor,
    &agentcore__v1__status_response__descriptor, CM_RPC_SERVER_STREAM};

static const struct cm_rpc_method export_method = {
    "/agentcore.v1.AgentService/ExportSpans", &agentcore__v1__export_spans_request__descriptor,
    &agentcore__v1__export_spans_response__descriptor, CM_RPC_UNARY};

/* The gateway's spans, when exports are signed: queued as they are, for
 * this process's exporter to sign and send. Never blocks. */
static void export_spans(struct cm_rpc_ctx *ctx, const ProtobufCMessage *msg, void *ud)
{
    const Agentcore__V1__ExportSpansRequest *req = (const void *)msg;
    Agentcore__V1__ExportSpansResponse resp = AGENTCORE__V1__EXPORT_SPANS_RESPONSE__INIT;
    struct aw_service *svc = ud;

    int signal = req->metrics.len ? CM_OTEL_METRICS : CM_OTEL_TRACES;
    const ProtobufCBinaryData *b = req->metrics.len ? &req->metrics : &req->request;

    switch (cm_otel_forward(svc->otel, signal, b->data, b->len)) {
    case 0:
        cm_rpc_ctx_reply(ctx, &resp.base);
        break;
    case CM_ENOENT:
        cm_rpc_ctx_fail(ctx, CM_RPC_FAILED_PRECONDITION, "TelemetryOff",
                        "this agent-worker exports no %s", signal ? "metrics" : "spans");
        break;
    case CM_EINVAL:
        cm_rpc_ctx_fail(ctx, CM_RPC_INVALID_ARGUMENT, "BadTelemetry",
                        "request is not an OTLP export request with %s",
                        signal ? "metrics" : "spans");
        break;
    default:
        cm_rpc_ctx_fail(ctx, CM_RPC_RESOURCE_EXHAUSTED, "SpanQueueFull",
                        "the span queue is full; the spans were dropped");
    }
}

int aw_service_register(struct cm_rpc_server *srv, struct cm_rpc_events *ev, struct aw_service *svc)
{
    int rc = cm_rpc_server_add_async(srv, ev, &invoke_method, invoke, svc);

    if (!rc)
        rc = cm_rpc_server_add_async(srv, ev, &stream_method, invoke_stream, svc);
    if (!rc)
        rc = cm_status_serve(svc->status, srv, ev, &watch_method);
    if (!rc)
        rc = cm_rpc_server_add_aux(srv, &export_method, export_spans, svc);
    return rc ? rc : cm_rpc_server_add_aux(srv, &status_method, status, svc);
}
