#include "aw_stream.h"
#include "cm_err.h"
#include "cm_json.h"
#include "cm_util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void aw_stream_init(struct aw_stream *s, aw_stream_text_fn on_text, void *ud)
{
    int i;

    memset(s, 0, sizeof(*s));
    s->max_index = -1;
    s->on_text = on_text;
    s->ud = ud;
    for (i = 0; i < AW_STREAM_MAX_BLOCKS; i++) {
        cm_buf_init(&s->blocks[i].text, AW_BEDROCK_MAX_RESPONSE);
        cm_buf_init(&s->blocks[i].signature, 64 * 1024);
    }
}

void aw_stream_cleanup(struct aw_stream *s)
{
    int i;

    if (!s)
        return;
    for (i = 0; i <= s->max_index && i < AW_STREAM_MAX_BLOCKS; i++) {
        cm_buf_free(&s->blocks[i].text);
        cm_buf_free(&s->blocks[i].signature);
        json_decref(s->blocks[i].meta);
        json_decref(s->blocks[i].items);
        free(s->blocks[i].redacted);
    }
    s->max_index = -1;
}

static int fail(struct aw_model_error *err, int status, const char *type, const char *msg, int code)
{
    err->http_status = status;
    cm_strlcpy(err->type, type, sizeof(err->type));
    cm_strlcpy(err->message, msg, sizeof(err->message));
    aw_redact_credentials(err->message, sizeof(err->message));
    return code;
}

/* The status each modeled stream exception carries as an HTTP error. */
static int exception_status(const char *type)
{
    static const struct {
        const char *type;
        int status;
    } map[] = {{"ThrottlingException", 429},     {"ServiceUnavailableException", 503},
               {"InternalServerException", 500}, {"ModelStreamErrorException", 424},
               {"ValidationException", 400},     {"ModelTimeoutException", 408}};
    size_t i;

    for (i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        if (!strcmp(map[i].type, type))
            return map[i].status;
    }
    return 500;
}

static int on_exception(const struct cm_evs_message *m, struct aw_model_error *err)
{
    const struct cm_evs_header *h = cm_evs_find(m, ":exception-type");
    json_t *payload = json_loadb((const char *)m->payload, m->payload_len, 0, NULL);
    const char *msg = NULL;
    char type[96];

    type[0] = '\0';
    if (h && h->type == CM_EVS_STRING)
        snprintf(type, sizeof(type), "%.*s", (int)h->len, (const char *)h->bytes);
    /* The header names the union member ("throttlingException"); the error
     * type is the shape ("ThrottlingException"). */
    type[0] = (char)toupper((unsigned char)type[0]);
    if (!type[0])
        cm_strlcpy(type, "StreamException", sizeof(type));
    cm_json_opt_str(payload, "message", &msg, NULL, 0);
    if (!msg)
        cm_json_opt_str(payload, "Message", &msg, NULL, 0);
    fail(err, exception_status(type), type, msg && *msg ? msg : "exception in the event stream", 0);
    json_decref(payload);
    return CM_EUPSTREAM;
}

static int on_error_frame(const struct cm_evs_message *m, struct aw_model_error *err)
{
    const struct cm_evs_header *code = cm_evs_find(m, ":error-code");
    const struct cm_evs_header *msg = cm_evs_find(m, ":error-message");
    char type[96], text[512];

    snprintf(type, sizeof(type), "%.*s", code && code->type == CM_EVS_STRING ? (int)code->len : 0,
             code ? (const char *)code->bytes : "");
    snprintf(text, sizeof(text), "%.*s", msg && msg->type == CM_EVS_STRING ? (int)msg->len : 0,
             msg ? (const char *)msg->bytes : "");
    return fail(err, 500, type[0] ? type : "StreamError", text[0] ? text : "error in the stream",
                CM_EUPSTREAM);
}

static struct aw_stream_block *block_at(struct aw_stream *s, json_t *ev, enum aw_block_kind kind,
                                        struct aw_model_error *err)
{
    json_t *jidx = json_object_get(ev, "contentBlockIndex");
    long long idx = json_is_integer(jidx) ? json_integer_value(jidx) : -1;
    struct aw_stream_block *b;

    if (idx < 0 || idx >= AW_STREAM_MAX_BLOCKS) {
        fail(err, 200, "MalformedStream", "contentBlockIndex missing or out of range", 0);
        return NULL;
    }
    if (idx > s->max_index)
        s->max_index = (int)idx;
    b = &s->blocks[idx];
    if (b->kind == AW_BLOCK_NONE)
        b->kind = kind;
    return b;
}

static int on_block_start(struct aw_stream *s, json_t *ev, struct aw_model_error *err)
{
    json_t *start = json_object_get(ev, "start"), *tu, *tr;
    struct aw_stream_block *b;

    tu = json_object_get(start, "toolUse");
    tr = json_object_get(start, "toolResult");
    b = block_at(s, ev, tu ? AW_BLOCK_TOOL_USE : tr ? AW_BLOCK_TOOL_RESULT : AW_BLOCK_OTHER, err);
    if (!b)
        return CM_EINVAL;
    if ((tu || tr) && !b->meta)
        b->meta = json_deep_copy(tu ? tu : tr);
    return 0;
}

static int append(struct cm_buf *buf, const char *s, struct aw_model_error *err)
{
    if (s && cm_buf_addstr(buf, s))
        return fail(err, 200, "ResponseTooLarge", "content block larger than the cap", CM_EINVAL);
    return 0;
}

static int on_block_delta(struct aw_stream *s, json_t *ev, struct aw_model_error *err)
{
    json_t *delta = json_object_get(ev, "delta"), *v;
    struct aw_stream_block *b;

    if ((v = json_object_get(delta, "text"))) {
        const char *t = json_string_value(v);

        b = block_at(s, ev, AW_BLOCK_TEXT, err);
        if (!b || append(&b->text, t, err))
            return CM_EINVAL;
        if (t && *t && s->on_text) {
            s->on_text(s->ud, (int)(b - s->blocks), t, strlen(t));
            s->forwarded = 1;
        }
    } else if ((v = json_object_get(delta, "toolUse"))) {
        b = block_at(s, ev, AW_BLOCK_TOOL_USE, err);
        if (!b || append(&b->text, json_string_value(json_object_get(v, "input")), err))
            return CM_EINVAL;
    } else if ((v = json_object_get(delta, "reasoningContent"))) {
        const char *red = json_string_value(json_object_get(v, "redactedContent"));

        b = block_at(s, ev, AW_BLOCK_REASONING, err);
        if (!b || append(&b->text, json_string_value(json_object_get(v, "text")), err) ||
            append(&b->signature, json_string_value(json_object_get(v, "signature")), err))
            return CM_EINVAL;
        if (red) {
            free(b->redacted);
            b->redacted = strdup(red);
        }
    } else if ((v = json_object_get(delta, "toolResult"))) {
        size_t i;
        json_t *item;

        b = block_at(s, ev, AW_BLOCK_TOOL_RESULT, err);
        if (!b)
            return CM_EINVAL;
        if (!b->items)
            b->items = json_array();
        json_array_foreach(v, i, item) json_array_append(b->items, item);
    } else if ((v = json_object_get(delta, "citation"))) {
        b = block_at(s, ev, AW_BLOCK_TEXT, err);
        if (!b)
            return CM_EINVAL;
        if (!b->items)
            b->items = json_array();
        json_array_append(b->items, v);
    }
    return 0; /* other delta kinds (image, ...) are not kept */
}

int aw_stream_on_frame(struct aw_stream *s, const struct cm_evs_message *m,
                       struct aw_model_error *err)
{
    const struct cm_evs_header *type = cm_evs_find(m, ":event-type");
    char name[64];
    json_t *ev;
    int rc = 0;

    if (cm_evs_is(m, ":message-type", "exception"))
        return on_exception(m, err);
    if (cm_evs_is(m, ":message-type", "error"))
        return on_error_frame(m, err);
    if (!type || type->type != CM_EVS_STRING || type->len >= sizeof(name))
        return 0; /* not an event we know how to read: ignore, as the SDKs do */
    memcpy(name, type->bytes, type->len);
    name[type->len] = '\0';
    ev = json_loadb((const char *)m->payload, m->payload_len, 0, NULL);
    if (!json_is_object(ev)) {
        json_decref(ev);
        return fail(err, 200, "MalformedStream", "event payload is not a JSON object", CM_EINVAL);
    }
    if (!strcmp(name, "messageStart")) {
        s->started = 1;
    } else if (!strcmp(name, "contentBlockStart")) {
        rc = on_block_start(s, ev, err);
    } else if (!strcmp(name, "contentBlockDelta")) {
        rc = on_block_delta(s, ev, err);
    } else if (!strcmp(name, "messageStop")) {
        const char *stop = json_string_value(json_object_get(ev, "stopReason"));

        cm_strlcpy(s->stop_reason, stop ? stop : "end_turn", sizeof(s->stop_reason));
        s->stopped = 1;
    } else if (!strcmp(name, "metadata")) {
        json_t *u = json_object_get(ev, "usage");
        long long v;

        if (!cm_json_int(u, "inputTokens", &v, NULL, 0))
            s->input_tokens = v;
        if (!cm_json_int(u, "outputTokens", &v, NULL, 0))
            s->output_tokens = v;
        if (!cm_json_int(u, "totalTokens", &v, NULL, 0))
            s->total_tokens = v;
        else
            s->total_tokens = s->input_tokens + s->output_tokens;
    } /* contentBlockStop and unknown events need nothing */
    json_decref(ev);
    return rc;
}

static json_t *block_json(const struct aw_stream_block *b)
{
    const char *t = b->text.data ? b->text.data : "";

    switch (b->kind) {
    case AW_BLOCK_TEXT:
        if (b->items && json_array_size(b->items))
            return json_pack("{s:{s:[{s:s}],s:O}}", "citationsContent", "content", "text", t,
                             "citations", b->items);
        return *t ? json_pack("{s:s}", "text", t) : NULL; /* no empty text blocks */
    case AW_BLOCK_REASONING:
        if (b->redacted)
            return json_pack("{s:{s:s}}", "reasoningContent", "redactedContent", b->redacted);
        if (b->signature.len)
            return json_pack("{s:{s:{s:s,s:s}}}", "reasoningContent", "reasoningText", "text", t,
                             "signature", b->signature.data);
        return json_pack("{s:{s:{s:s}}}", "reasoningContent", "reasoningText", "text", t);
    case AW_BLOCK_TOOL_USE: {
        /* Fragments join into one JSON document; an empty one means {}, and
         * one that does not parse becomes {} as the Strands SDK does. */
        json_t *use = b->meta ? json_deep_copy(b->meta) : json_object();
        json_t *input = *t ? json_loads(t, JSON_DECODE_ANY, NULL) : json_object();

        if (!input)
            input = json_object();
        json_object_set_new(use, "input", input);
        return json_pack("{s:o}", "toolUse", use);
    }
    case AW_BLOCK_TOOL_RESULT: {
        json_t *res = b->meta ? json_deep_copy(b->meta) : json_object();

        if (b->items)
            json_object_set(res, "content", b->items);
        else
            json_object_set_new(res, "content", json_array());
        return json_pack("{s:o}", "toolResult", res);
    }
    default:
        return NULL;
    }
}

int aw_stream_finish(struct aw_stream *s, struct aw_turn *out, struct aw_model_error *err)
{
    json_t *content;
    int i;

    memset(out, 0, sizeof(*out));
    if (!s->stopped)
        return fail(err, 200, "IncompleteStream", "the event stream ended before messageStop",
                    CM_EINVAL);
    content = json_array();
    for (i = 0; i <= s->max_index; i++) {
        json_t *bj = block_json(&s->blocks[i]);

        if (bj)
            json_array_append_new(content, bj);
    }
    out->message = json_pack("{s:s,s:o}", "role", "assistant", "content", content);
    if (!out->message)
        return CM_ENOMEM;
    cm_strlcpy(out->stop_reason, s->stop_reason, sizeof(out->stop_reason));
    out->input_tokens = s->input_tokens;
    out->output_tokens = s->output_tokens;
    out->total_tokens = s->total_tokens;
    return 0;
}
