#define _GNU_SOURCE /* strptime, timegm */
#include "aw_bedrock.h"
#include "aw_aws.h"
#include "aw_creds.h"
#include "aw_curl.h"
#include "aw_retry.h"
#include "aw_stream.h"
#include "cm_err.h"
#include "cm_json.h"
#include "cm_sigv4.h"
#include "cm_util.h"

#include <curl/curl.h>
#include <openssl/crypto.h> /* OPENSSL_cleanse */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Connections kept for reuse: as many as can be in flight at once (the
 * gateway's GATEWAY_MAX_CONNECTIONS default). Against Bedrock's HTTP/2 a
 * handful carry everything; an HTTP/1.1 endpoint needs one per call in
 * flight, and a smaller pool closes most of a burst's connections as its
 * calls end, each close after a walk of every connection libcurl 7.88 holds
 * (the oldest idle one goes): quadratic in the burst, and the next burst
 * connects again. */
#define MAX_POOLED_CONNECTIONS 4096
#define MAX_POOLED_EASY 64

/* Monotonic seconds, the adaptive rate limiter's clock. */
static double now_s(void)
{
    return (double)cm_now_ms() / 1000.0;
}

void aw_turn_clear(struct aw_turn *t)
{
    if (!t)
        return;
    json_decref(t->message);
    memset(t, 0, sizeof(*t));
}

int aw_bedrock_model_path(const char *model_id, const char *op, struct cm_buf *out)
{
    int rc = cm_buf_addstr(out, "/model/");

    if (!rc)
        rc = cm_sigv4_uri_encode(out, model_id, strlen(model_id), 0);
    if (!rc)
        rc = cm_buf_printf(out, "/%s", op);
    return rc;
}

static int has_tool_blocks(const json_t *messages)
{
    size_t i, j;
    json_t *m, *block;

    json_array_foreach(messages, i, m)
    {
        json_array_foreach(json_object_get(m, "content"), j, block)
        {
            if (json_object_get(block, "toolUse") || json_object_get(block, "toolResult"))
                return 1;
        }
    }
    return 0;
}

int aw_bedrock_supports_tool_status(const char *model_id)
{
    return strstr(model_id, "anthropic") || strstr(model_id, "nova");
}

static int is_empty_text(const json_t *block)
{
    const char *t = json_string_value(json_object_get(block, "text"));

    return t && !*t;
}

/* 1 when |messages| must be rewritten before it is sent. */
static int needs_rewrite(const json_t *messages, int keep_status)
{
    size_t i, j;
    json_t *m, *block;

    json_array_foreach(messages, i, m)
    {
        json_array_foreach(json_object_get(m, "content"), j, block)
        {
            if (is_empty_text(block))
                return 1;
            if (!keep_status && json_object_get(json_object_get(block, "toolResult"), "status"))
                return 1;
        }
    }
    return 0;
}

/* A copy of |messages| without empty text blocks (a turn left empty gets a
 * placeholder text) and, if asked, without toolResult.status. */
static json_t *rewrite(const json_t *messages, int keep_status)
{
    json_t *out = json_deep_copy(messages), *m, *content, *block;
    size_t i, j;

    json_array_foreach(out, i, m)
    {
        content = json_object_get(m, "content");
        for (j = json_array_size(content); j-- > 0;) {
            block = json_array_get(content, j);
            if (is_empty_text(block))
                json_array_remove(content, j);
            else if (!keep_status)
                json_object_del(json_object_get(block, "toolResult"), "status");
        }
        if (json_is_array(content) && !json_array_size(content))
            json_array_append_new(content, json_pack("{s:s}", "text", "[blank text]"));
    }
    return out;
}

static json_t *cache_point(void)
{
    return json_pack("{s:{s:s}}", "cachePoint", "type", "default");
}

/* toolConfig to send: the tools (or a placeholder), toolChoice, cachePoint. */
static json_t *tool_config_for(const json_t *tools, const json_t *messages,
                               const struct aw_request_options *o)
{
    json_t *cfg, *list;
    const char *choice = o->tool_choice;

    if (!tools) {
        if (!has_tool_blocks(messages))
            return NULL;
        /* The history holds toolUse/toolResult blocks but no tool is available
         * now (tool-workers down): Bedrock requires a toolConfig regardless. */
        return json_pack("{s:[{s:{s:s,s:s,s:{s:{s:s,s:{}}}}}]}", "tools", "toolSpec", "name",
                         "noop", "description", "This is a placeholder tool that MUST be ignored.",
                         "inputSchema", "json", "type", "object", "properties");
    }
    if (!o->prompt_caching && (!choice || !strcmp(choice, "auto")))
        return json_incref((json_t *)tools); /* the common case: no copy */
    cfg = json_object();
    list = json_copy(json_object_get(tools, "tools"));
    if (o->prompt_caching)
        json_array_append_new(list, cache_point());
    json_object_set_new(cfg, "tools", list);
    if (choice && !strcmp(choice, "any"))
        json_object_set_new(cfg, "toolChoice", json_pack("{s:{}}", "any"));
    else if (choice && !strncmp(choice, "tool:", 5))
        json_object_set_new(cfg, "toolChoice", json_pack("{s:{s:s}}", "tool", "name", choice + 5));
    else if (choice)
        json_object_set_new(cfg, "toolChoice", json_pack("{s:{}}", "auto"));
    return cfg;
}

static int forces_tool(const struct aw_request_options *o)
{
    return o->tool_choice && strcmp(o->tool_choice, "auto");
}

/* |s| (a serialised object) with ,"toolConfig":|tc| added before its end. */
static char *splice_tool_config(char *s, const char *tc)
{
    static const char key[] = ",\"toolConfig\":";
    size_t n = strlen(s), k = sizeof(key) - 1, t = strlen(tc);
    char *out = n >= 2 ? realloc(s, n + k + t + 1) : NULL;

    if (!out) {
        free(s);
        return NULL;
    }
    memcpy(out + n - 1, key, k);
    memcpy(out + n - 1 + k, tc, t);
    memcpy(out + n - 1 + k + t, "}", 2);
    return out;
}

char *aw_bedrock_build_body(const json_t *messages, const struct aw_request_options *o,
                            const json_t *tool_config)
{
    return aw_bedrock_build_body_with(messages, o, tool_config, NULL);
}

char *aw_bedrock_build_body_with(const json_t *messages, const struct aw_request_options *o,
                                 const json_t *tool_config, const char *tool_config_json)
{
    json_t *body = json_object(), *inf, *tc, *msgs = NULL;
    char *s = NULL;
    int spliced = 0;

    if (!body)
        return NULL;
    if (needs_rewrite(messages, o->tool_result_status))
        msgs = rewrite(messages, o->tool_result_status);
    if (json_object_set(body, "messages", msgs ? msgs : (json_t *)messages))
        goto out;
    if (o->system_prompt && *o->system_prompt) {
        json_t *sys = json_pack("[{s:s}]", "text", o->system_prompt);

        if (o->prompt_caching)
            json_array_append_new(sys, cache_point());
        if (json_object_set_new(body, "system", sys))
            goto out;
    }
    inf = json_pack("{s:i}", "maxTokens", o->max_tokens);
    if (o->has_temperature)
        json_object_set_new(inf, "temperature", json_real(o->temperature));
    if (o->has_top_p)
        json_object_set_new(inf, "topP", json_real(o->top_p));
    if (o->stop_sequences)
        json_object_set(inf, "stopSequences", (json_t *)o->stop_sequences);
    if (json_object_set_new(body, "inferenceConfig", inf))
        goto out;
    tc = tool_config_for(tool_config, messages, o);
    /* The shared configuration as it is: its text was made once. */
    spliced = tc && tc == tool_config && tool_config_json;
    if (spliced)
        json_decref(tc);
    else if (tc && json_object_set_new(body, "toolConfig", tc))
        goto out;
    if (o->additional_fields) {
        json_t *add = (json_t *)o->additional_fields;

        /* Extended thinking cannot be combined with a forced tool choice. */
        if (tc && forces_tool(o) && json_object_get(add, "thinking")) {
            add = json_copy(add);
            json_object_del(add, "thinking");
        } else {
            json_incref(add);
        }
        if (json_object_size(add) && json_object_set(body, "additionalModelRequestFields", add)) {
            json_decref(add);
            goto out;
        }
        json_decref(add);
    }
    if (o->guardrail_id && *o->guardrail_id &&
        json_object_set_new(
            body, "guardrailConfig",
            json_pack("{s:s,s:s,s:s}", "guardrailIdentifier", o->guardrail_id, "guardrailVersion",
                      o->guardrail_version ? o->guardrail_version : "DRAFT", "trace",
                      o->guardrail_trace ? o->guardrail_trace : "disabled")))
        goto out;
    s = json_dumps(body, JSON_COMPACT);
    if (s && spliced)
        s = splice_tool_config(s, tool_config_json);
out:
    json_decref(msgs);
    json_decref(body);
    return s;
}

int aw_bedrock_parse_response(const char *body, size_t len, struct aw_turn *out, char *err,
                              size_t errlen)
{
    json_error_t jerr;
    json_t *root, *output, *message, *content, *usage;
    const char *stop;
    long long v;
    int rc = CM_EINVAL;

    memset(out, 0, sizeof(*out));
    root = json_loadb(body, len, 0, &jerr);
    if (!root) {
        snprintf(err, errlen, "response is not JSON: %s", jerr.text);
        return CM_EINVAL;
    }
    if (cm_json_obj(root, "output", &output, err, errlen) ||
        cm_json_obj(output, "message", &message, err, errlen) ||
        cm_json_arr(message, "content", &content, err, errlen) ||
        cm_json_str(root, "stopReason", &stop, err, errlen))
        goto out;
    /* Only role and content go back into the history; unknown keys are dropped,
     * and so are empty text blocks (Bedrock rejects them in a later request). */
    out->message = json_pack("{s:s,s:o}", "role", "assistant", "content", json_array());
    if (out->message) {
        json_t *dst = json_object_get(out->message, "content"), *block;
        size_t i;

        json_array_foreach(content, i, block)
        {
            if (!is_empty_text(block))
                json_array_append(dst, block);
        }
    }
    if (!out->message) {
        rc = CM_ENOMEM;
        goto out;
    }
    cm_strlcpy(out->stop_reason, stop, sizeof(out->stop_reason));
    usage = json_object_get(root, "usage");
    if (json_is_object(usage)) {
        if (!cm_json_int(usage, "inputTokens", &v, NULL, 0))
            out->input_tokens = v;
        if (!cm_json_int(usage, "outputTokens", &v, NULL, 0))
            out->output_tokens = v;
        if (!cm_json_int(usage, "totalTokens", &v, NULL, 0))
            out->total_tokens = v;
        else
            out->total_tokens = out->input_tokens + out->output_tokens;
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

void aw_bedrock_parse_error(int status, const char *type_header, const char *body, size_t len,
                            struct aw_model_error *out)
{
    aw_parse_error(status, type_header, body, len, out);
    if (strstr(out->message, "on-demand throughput") || strstr(out->message, "inference profile")) {
        size_t n = strlen(out->message);

        snprintf(out->message + n, sizeof(out->message) - n, "%s",
                 " (fix: set MODEL_ID to a cross-region inference profile id such as "
                 "'us.<model-id>', 'eu.', 'apac.' or 'global.', or to an inference profile ARN)");
    }
}

int aw_bedrock_retryable(int status, const char *type)
{
    /* Transient codes; Bedrock models ModelNotReadyException as retryable. */
    static const char *const transient[] = {"ModelNotReadyException", "RequestTimeout",
                                            "RequestTimeoutException", "PriorRequestNotComplete"};
    size_t i;

    if (status == 0 || status == 500 || status == 502 || status == 503 || status == 504)
        return 1;
    if (aw_retry_is_throttle(type))
        return 1;
    for (i = 0; type && i < sizeof(transient) / sizeof(transient[0]); i++) {
        if (!strcmp(type, transient[i]))
            return 1;
    }
    return 0;
}

/* ---- transport ---- */

struct aw_bedrock {
    struct aw_endpoint ep;
    struct aw_creds *creds;
    char *bearer;
    char *region, *model_id, *system_prompt, *tool_choice;
    char *guardrail_id, *guardrail_version, *guardrail_trace;
    struct aw_request_options opts; /* its strings point at the copies above */
    char *path;                     /* base path + /model/<id>/converse, computed once */
    char *stream_path;              /* ... /converse-stream */
    int streaming;
    int connect_timeout_ms, read_timeout_ms, max_attempts, retry_base_ms, retry_mode;
    struct aw_retry_quota quota;
    struct aw_rate rate; /* paces attempts in adaptive mode only */
    char *ca_bundle;
    /* The loop that owns every transfer, and its one multi handle: one
     * connection pool, HTTP/2 streams multiplexed over it. */
    uv_loop_t *loop;
    struct aw_curl *multi;
    CURL *easy_pool[MAX_POOLED_EASY]; /* reused handles: no allocation per call */
    int n_easy;
    long long clock_offset_s;  /* service clock minus ours, learnt from a skew 403 */
    int tls;                   /* https endpoint: HTTP/2 expected */
    struct aw_creds_async cra; /* credentials without waiting on the loop */
    void (*on_log)(int level, const char *text);
    json_t *tc_key; /* the tool configuration last seen (a reference)... */
    char *tc_json;  /* ...and its text */
};

static char *dup_or_null(const char *s)
{
    return s && *s ? strdup(s) : NULL;
}

struct aw_bedrock *aw_bedrock_new(const struct aw_bedrock_config *cfg, char *err, size_t errlen)
{
    struct aw_bedrock *b = calloc(1, sizeof(*b));
    struct cm_buf path;

    if (!b)
        return NULL;
    aw_rate_init(&b->rate, now_s());
    if (aw_endpoint_parse(cfg->endpoint, &b->ep, err, errlen))
        goto fail;
    b->region = strdup(cfg->region);
    b->model_id = strdup(cfg->model_id);
    b->creds = cfg->creds;
    b->bearer = dup_or_null(cfg->bearer_token);
    b->opts = cfg->request;
    b->system_prompt = dup_or_null(cfg->request.system_prompt);
    b->tool_choice = dup_or_null(cfg->request.tool_choice);
    b->guardrail_id = dup_or_null(cfg->request.guardrail_id);
    b->guardrail_version = dup_or_null(cfg->request.guardrail_version);
    b->guardrail_trace = dup_or_null(cfg->request.guardrail_trace);
    b->opts.system_prompt = b->system_prompt;
    b->opts.tool_choice = b->tool_choice;
    b->opts.guardrail_id = b->guardrail_id;
    b->opts.guardrail_version = b->guardrail_version;
    b->opts.guardrail_trace = b->guardrail_trace;
    json_incref((json_t *)b->opts.stop_sequences);
    json_incref((json_t *)b->opts.additional_fields);
    b->opts.tool_result_status = aw_bedrock_supports_tool_status(cfg->model_id);
    b->connect_timeout_ms = cfg->connect_timeout_ms;
    b->read_timeout_ms = cfg->read_timeout_ms;
    b->max_attempts = cfg->max_attempts > 0 ? cfg->max_attempts : 1;
    b->retry_base_ms = cfg->retry_base_ms;
    b->retry_mode = cfg->retry_mode;
    aw_retry_quota_init(&b->quota, AW_RETRY_CAPACITY);
    b->ca_bundle = dup_or_null(cfg->ca_bundle);
    b->loop = cfg->loop;
    aw_creds_async_init(&b->cra, b->creds, b->loop);
    b->tls = !strncmp(cfg->endpoint, "https://", 8);
    b->on_log = cfg->on_log;
    b->multi = aw_curl_new(cfg->loop, MAX_POOLED_CONNECTIONS);
    if (!b->multi)
        goto fail;
    aw_curl_serial(b->multi, !b->tls); /* plain http:// is HTTP/1.1 here */
    if (!b->region || !b->model_id)
        goto fail;
    cm_buf_init(&path, 8192);
    if (cm_buf_addstr(&path, b->ep.base_path) ||
        aw_bedrock_model_path(b->model_id, "converse", &path)) {
        cm_buf_free(&path);
        snprintf(err, errlen, "model id too long");
        goto fail;
    }
    b->path = cm_buf_steal(&path);
    if (!b->path || cm_buf_addstr(&path, b->ep.base_path) ||
        aw_bedrock_model_path(b->model_id, "converse-stream", &path)) {
        cm_buf_free(&path);
        goto fail;
    }
    b->stream_path = cm_buf_steal(&path);
    if (!b->stream_path)
        goto fail;
    b->streaming = cfg->streaming;
    return b;
fail:
    aw_bedrock_free(b);
    return NULL;
}

static void free_secret(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

void aw_bedrock_free(struct aw_bedrock *b)
{
    if (!b)
        return;
    aw_creds_async_cleanup(&b->cra); /* a refresh in flight outlives us */
    while (b->n_easy)
        curl_easy_cleanup(b->easy_pool[--b->n_easy]);
    aw_curl_free(b->multi);
    free(b->ca_bundle);
    free(b->region);
    free(b->model_id);
    free_secret(b->bearer);
    free(b->system_prompt);
    free(b->tool_choice);
    free(b->guardrail_id);
    free(b->guardrail_version);
    free(b->guardrail_trace);
    json_decref((json_t *)b->opts.stop_sequences);
    json_decref((json_t *)b->opts.additional_fields);
    free(b->path);
    free(b->stream_path);
    json_decref(b->tc_key);
    free(b->tc_json);
    aw_rate_cleanup(&b->rate);
    free(b);
}

#define MAX_POOLED_EASY 64

static void set_error(struct aw_model_error *e, int status, const char *type, const char *msg)
{
    e->http_status = status;
    cm_strlcpy(e->type, type, sizeof(e->type));
    cm_strlcpy(e->message, msg, sizeof(e->message));
}

/* The event-stream decoder and the turn being assembled: several KiB, so a
 * call that is still waiting for the model (most of them, most of the time)
 * does not carry them. */
struct decoding {
    struct cm_evs_decoder dec;
    struct aw_stream asm_;
};

/* One model call: its attempts, the waits between them and the transfer of
 * the current attempt. Lives on the loop; freed in the timer's close callback
 * (libuv frees nothing before that, ../shared/research/event-driven.md). */
struct aw_bedrock_call {
    struct aw_bedrock *b;
    struct aw_call_cb cb;
    char *body;
    size_t body_len;
    int attempt, refetched, skew_retried, spent;
    enum { ST_IDLE, ST_PACE, ST_CREDS, ST_XFER, ST_BACKOFF, ST_DONE } state;
    uv_timer_t timer;          /* pacing, backoff, or the silence watch of a transfer */
    struct aw_creds_waiter cw; /* queued for credentials (ST_CREDS) */
    char traceparent[64];      /* "" when untraced */
    /* the current attempt */
    CURL *h;
    struct curl_slist *headers;
    struct cm_buf rbody;
    char error_type[128];
    char date[64]; /* the response's Date header, for clock-skew correction */
    long status;
    uint64_t last_rx; /* uv_now() of the last received byte (or of the start) */
    int streaming;
    struct decoding *ds; /* ConverseStream state, made at the first byte of a 200 */
    int stream_rc;
    struct aw_model_error serr;
    struct aw_turn turn;
    struct aw_model_error err;
};

static void attempt_start(struct aw_bedrock_call *c);
static void call_finish(struct aw_bedrock_call *c, int rc);

static CURL *easy_get(struct aw_bedrock *b)
{
    if (b->n_easy)
        return b->easy_pool[--b->n_easy];
    return curl_easy_init();
}

static void easy_put(struct aw_bedrock *b, CURL *h)
{
    if (b->n_easy < MAX_POOLED_EASY) {
        curl_easy_reset(h);
        b->easy_pool[b->n_easy++] = h;
    } else {
        curl_easy_cleanup(h);
    }
}

static int on_frame(void *ud, const struct cm_evs_message *m)
{
    struct aw_bedrock_call *c = ud;

    c->stream_rc = aw_stream_on_frame(&c->ds->asm_, m, &c->serr);
    return c->stream_rc;
}

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    struct aw_bedrock_call *c = ud;
    int rc;

    c->last_rx = uv_now(c->b->loop);
    if (!c->status)
        curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &c->status);
    if (c->streaming && c->status == 200) {
        if (!c->ds) {
            c->ds = calloc(1, sizeof(*c->ds));
            if (!c->ds)
                return 0; /* out of memory: aborts the transfer */
            cm_evs_decoder_init(&c->ds->dec, 0, on_frame, c);
            aw_stream_init(&c->ds->asm_, c->cb.on_text, c->cb.ud);
        }
        rc = cm_evs_decoder_feed(&c->ds->dec, p, sz * n);
        if (rc && !c->stream_rc) {
            /* The decoder itself failed (CRC, lengths, caps). */
            c->stream_rc = CM_EUPSTREAM;
            set_error(&c->serr, 200, "MalformedStream", cm_evs_strerror(rc));
        }
        return rc ? 0 : sz * n;
    }
    return cm_buf_add(&c->rbody, p, sz * n) ? 0 : sz * n; /* past the cap: abort */
}

/* Copies a header's value when its name matches. */
static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    struct aw_bedrock_call *c = ud;
    size_t len = sz * n;

    c->last_rx = uv_now(c->b->loop);
    aw_header_value(p, len, "x-amzn-errortype:", c->error_type, sizeof(c->error_type));
    aw_header_value(p, len, "date:", c->date, sizeof(c->date));
    return len;
}

/* Drops the current attempt's transfer and decoder state. */
static void attempt_cleanup(struct aw_bedrock_call *c)
{
    if (c->h) {
        if (c->state == ST_XFER)
            aw_curl_remove(c->b->multi, c->h);
        easy_put(c->b, c->h);
        c->h = NULL;
    }
    aw_slist_free_secure(c->headers); /* it held the signature and the token */
    c->headers = NULL;
    cm_buf_free(&c->rbody);
    if (c->ds) {
        cm_evs_decoder_cleanup(&c->ds->dec);
        aw_stream_cleanup(&c->ds->asm_);
        free(c->ds);
        c->ds = NULL;
    }
}

static void call_closed(uv_handle_t *h)
{
    struct aw_bedrock_call *c = h->data;

    aw_turn_clear(&c->turn);
    free(c->body);
    free(c);
}

static void call_release(struct aw_bedrock_call *c)
{
    attempt_cleanup(c);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, call_closed);
}

static int key_invalid(const char *type)
{
    return !strcmp(type, "UnrecognizedClientException") ||
           !strcmp(type, "InvalidSignatureException") || !strcmp(type, "ExpiredTokenException") ||
           !strcmp(type, "InvalidClientTokenId") || !strcmp(type, "ExpiredToken");
}

int aw_bedrock_clock_skewed(int status, const char *type, const char *message)
{
    if (status != 403 && status != 400)
        return 0;
    if (!strcmp(type, "RequestTimeTooSkewed") || !strcmp(type, "RequestExpired") ||
        !strcmp(type, "RequestInTheFuture"))
        return 1;
    /* Bedrock says it in the message of an InvalidSignatureException. */
    return strstr(message, "Signature expired") || strstr(message, "Signature not yet current") ||
           strstr(message, "too skewed");
}

long long aw_bedrock_http_date(const char *s)
{
    struct tm tm;

    memset(&tm, 0, sizeof(tm));
    if (!s || !strptime(s, "%a, %d %b %Y %H:%M:%S GMT", &tm))
        return -1;
    return (long long)timegm(&tm);
}

/* Turns a finished 200 transfer into the turn: parse the Converse body, or
 * finish the assembled stream. 0 or CM_EUPSTREAM with |c->err| set. */
static int finish_ok(struct aw_bedrock_call *c)
{
    char perr[256];

    if (c->streaming) {
        if (!c->ds) {
            set_error(&c->err, 200, "IncompleteStream", "the event stream was empty");
            return CM_EUPSTREAM;
        }
        if (!cm_evs_decoder_idle(&c->ds->dec)) {
            set_error(&c->err, 200, "IncompleteStream", "the event stream ended inside a frame");
            return CM_EUPSTREAM;
        }
        return aw_stream_finish(&c->ds->asm_, &c->turn, &c->err) ? CM_EUPSTREAM : 0;
    }
    if (aw_bedrock_parse_response(c->rbody.data ? c->rbody.data : "", c->rbody.len, &c->turn, perr,
                                  sizeof(perr))) {
        set_error(&c->err, 200, "MalformedResponse", perr);
        return CM_EUPSTREAM;
    }
    return 0;
}

static void on_timer(uv_timer_t *t);

/* Waits |ms| on the call's timer in |state|, then goes on with on_timer. */
static void wait_then(struct aw_bedrock_call *c, int state, uint64_t ms)
{
    c->state = state;
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

/* What to do after an attempt ended with |rc| (0, CM_EUPSTREAM, ...). */
static void attempt_done(struct aw_bedrock_call *c, int rc)
{
    struct aw_bedrock *b = c->b;
    struct aw_model_error *err = &c->err;
    int forwarded = c->streaming && c->ds && c->ds->asm_.forwarded;
    unsigned int r = 0;

    uv_timer_stop(&c->timer);
    if (b->retry_mode == AW_RETRY_ADAPTIVE && rc != CM_ECANCELED)
        aw_rate_update(&b->rate, rc == CM_EUPSTREAM && aw_retry_is_throttle(err->type), now_s());
    c->state = ST_IDLE;
    attempt_cleanup(c);
    if (rc == 0) {
        if (b->retry_mode != AW_RETRY_LEGACY)
            aw_retry_quota_release(&b->quota, c->spent ? c->spent : 1);
        call_finish(c, 0);
        return;
    }
    /* A clock that is off by minutes: learn the offset from the service's
     * Date header (as the JavaScript SDK's systemClockOffset) and sign again
     * once, outside the budget. */
    if (rc == CM_EUPSTREAM && !c->skew_retried && !b->bearer &&
        aw_bedrock_clock_skewed(err->http_status, err->type, err->message)) {
        long long server = aw_bedrock_http_date(c->date);

        if (server > 0) {
            b->clock_offset_s = server - (long long)time(NULL);
            c->skew_retried = 1;
            if (b->on_log) {
                char text[160];

                snprintf(text, sizeof(text),
                         "clock skew corrected: signing with an offset of %lld s from the "
                         "service's Date header",
                         b->clock_offset_s);
                b->on_log(1, text);
            }
            attempt_start(c);
            return;
        }
    }
    /* A key the service calls invalid (rotated secret, expired token): fetch
     * the credentials again and try once more, outside the budget. */
    if (rc == CM_EUPSTREAM && err->http_status == 403 && key_invalid(err->type) && b->creds &&
        !b->bearer && !c->refetched) {
        c->refetched = 1;
        aw_creds_invalidate(b->creds);
        attempt_start(c);
        return;
    }
    /* Text already handed to the client cannot be taken back: a stream that
     * fails after that is not retried. */
    if (rc != CM_EUPSTREAM || forwarded || !aw_bedrock_retryable(err->http_status, err->type) ||
        c->attempt >= b->max_attempts) {
        call_finish(c, rc);
        return;
    }
    if (b->retry_mode != AW_RETRY_LEGACY) {
        int cost = aw_retry_cost(err->type);

        if (!aw_retry_quota_acquire(&b->quota, cost)) {
            call_finish(c, rc); /* the retry budget is spent: fail fast */
            return;
        }
        c->spent += cost;
    }
    if (cm_random(&r, sizeof(r)))
        r = 0; /* no jitter then: the backoff is still bounded */
    {
        uint64_t wait = (uint64_t)aw_retry_backoff_ms(c->attempt, b->retry_base_ms, r);

        if (b->on_log) {
            char text[1000];

            snprintf(text, sizeof(text),
                     "model call attempt %d failed, retrying in %llu ms: %s: %s", c->attempt,
                     (unsigned long long)wait, err->type, err->message);
            b->on_log(1, text);
        }
        wait_then(c, ST_BACKOFF, wait);
    }
}

static void on_xfer_done(void *ud, CURLcode cc)
{
    struct aw_bedrock_call *c = ud;
    char line[512];
    int rc;

    c->state = ST_IDLE; /* curl let go of the handle */
    if (cc == CURLE_OK) {
        curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &c->status);
        if (c->status == 200) {
            rc = finish_ok(c);
        } else {
            aw_bedrock_parse_error((int)c->status, c->error_type, c->rbody.data, c->rbody.len,
                                   &c->err);
            rc = CM_EUPSTREAM;
        }
    } else if (c->stream_rc) {
        /* The stream carried an exception or could not be decoded. */
        c->err = c->serr;
        rc = c->stream_rc;
    } else if (cc == CURLE_WRITE_ERROR) {
        set_error(&c->err, 0, "ResponseTooLarge", "model response larger than the cap");
        rc = CM_EUPSTREAM;
    } else {
        snprintf(line, sizeof(line), "cannot reach %.300s: %s", c->b->ep.scheme_host,
                 curl_easy_strerror(cc));
        set_error(&c->err, 0, cc == CURLE_OPERATION_TIMEDOUT ? "Timeout" : "TransportError", line);
        rc = CM_EUPSTREAM;
    }
    attempt_done(c, rc);
}

/* The silence watch: one timer per transfer, re-armed only when it fires, so
 * a stream costs no wake-up per received chunk. */
static void watch_silence(struct aw_bedrock_call *c)
{
    uint64_t now = uv_now(c->b->loop), limit = (uint64_t)c->b->read_timeout_ms;
    uint64_t quiet = now - c->last_rx;
    char line[160];

    if (quiet < limit) {
        uv_timer_start(&c->timer, on_timer, limit - quiet, 0);
        return;
    }
    snprintf(line, sizeof(line), "no data from the model for %d ms (BEDROCK_READ_TIMEOUT_MS)",
             c->b->read_timeout_ms);
    aw_curl_remove(c->b->multi, c->h);
    c->state = ST_IDLE;
    set_error(&c->err, 0, "Timeout", line);
    attempt_done(c, CM_EUPSTREAM);
}

static void start_transfer(struct aw_bedrock_call *c, const struct aw_credentials *cr)
{
    struct aw_bedrock *b = c->b;
    const char *path = c->streaming ? b->stream_path : b->path;
    char url[8192];
    CURL *h;

    c->h = h = easy_get(b);
    if (!h) {
        set_error(&c->err, 0, "TransportError", "cannot create an HTTP handle");
        attempt_done(c, CM_ENOMEM);
        return;
    }
    c->headers =
        aw_sign_post(&b->ep, path, "bedrock", b->region, cr, b->bearer, "application/json", NULL, 0,
                     c->body, c->body_len, (long long)time(NULL) + b->clock_offset_s);
    if (!c->headers) {
        set_error(&c->err, 0, "SigningError", "cannot sign the request");
        attempt_done(c, CM_EINVAL);
        return;
    }
    if (c->traceparent[0]) {
        /* Not signed: a header the service reads, as the AWS SDKs send it. */
        char line[96];
        struct curl_slist *l;

        snprintf(line, sizeof(line), "traceparent: %s", c->traceparent);
        if ((l = curl_slist_append(c->headers, line)))
            c->headers = l;
    }
    snprintf(url, sizeof(url), "%s%s", b->ep.scheme_host, path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->headers);
    if (b->ca_bundle)
        curl_easy_setopt(h, CURLOPT_CAINFO, b->ca_bundle);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body_len);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "agentcore-c/0.1");
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    /* A call that starts while the first connection is still being set up
     * waits for it and shares it (HTTP/2 over TLS, as Bedrock speaks),
     * instead of opening another. Plain http:// (an emulator) is HTTP/1.1:
     * there, waiting would only serialise calls behind the first. */
    if (b->tls)
        curl_easy_setopt(h, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)b->connect_timeout_ms);
    /* curl's 16 KiB receive buffer is allocated when the transfer starts and
     * held while the model thinks; event-stream frames are small, and a
     * Converse body arrives in a few more reads. */
    curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 4096L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
    aw_turn_clear(&c->turn); /* a failed attempt may have left a part */
    c->status = 0;
    c->error_type[0] = c->date[0] = '\0';
    c->stream_rc = 0;
    cm_buf_init(&c->rbody, AW_BEDROCK_MAX_RESPONSE);
    if (aw_curl_add(b->multi, h, on_xfer_done, c)) {
        set_error(&c->err, 0, "TransportError", "cannot start the HTTP transfer");
        attempt_done(c, CM_EUPSTREAM);
        return;
    }
    c->state = ST_XFER;
    c->last_rx = uv_now(b->loop);
    uv_timer_start(&c->timer, on_timer, (uint64_t)b->read_timeout_ms, 0);
}

/* ---- credentials without blocking the loop (aw_creds_async) ---- */

static void with_credentials(struct aw_bedrock_call *c);

static void creds_ready(struct aw_creds_waiter *w)
{
    with_credentials((struct aw_bedrock_call *)((char *)w - offsetof(struct aw_bedrock_call, cw)));
}

static void with_credentials(struct aw_bedrock_call *c)
{
    struct aw_bedrock *b = c->b;
    struct aw_credentials cr;
    int rc;

    memset(&cr, 0, sizeof(cr));
    if (b->bearer || !b->creds) {
        start_transfer(c, &cr);
        return;
    }
    c->cw.ready = creds_ready;
    rc = aw_creds_async_get(&b->cra, &cr, &c->cw, &c->err);
    if (rc == 1) {
        c->state = ST_CREDS;
        return;
    }
    if (rc) {
        call_finish(c, CM_EUPSTREAM);
        return;
    }
    start_transfer(c, &cr);
    aw_credentials_clear(&cr);
}

static void attempt_start(struct aw_bedrock_call *c)
{
    struct aw_bedrock *b = c->b;
    double wait;

    c->attempt++;
    memset(&c->err, 0, sizeof(c->err));
    if (b->retry_mode == AW_RETRY_ADAPTIVE && (wait = aw_rate_acquire(&b->rate, now_s())) > 0) {
        c->attempt--; /* taken again when the token is there */
        wait_then(c, ST_PACE, (uint64_t)(wait * 1000) + 1);
        return;
    }
    with_credentials(c);
}

static void on_timer(uv_timer_t *t)
{
    struct aw_bedrock_call *c = t->data;

    switch (c->state) {
    case ST_XFER:
        watch_silence(c);
        break;
    case ST_PACE:
    case ST_BACKOFF:
        c->state = ST_IDLE;
        attempt_start(c);
        break;
    default:
        break;
    }
}

static void call_finish(struct aw_bedrock_call *c, int rc)
{
    c->state = ST_DONE;
    if (c->cb.on_done)
        c->cb.on_done(c->cb.ud, rc, &c->turn, &c->err);
    call_release(c);
}

struct aw_bedrock_call *aw_bedrock_start(struct aw_bedrock *b, const json_t *messages,
                                         const json_t *tool_config, const struct aw_call_cb *cb)
{
    struct aw_bedrock_call *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->b = b;
    c->cb = *cb;
    if (cb->traceparent)
        snprintf(c->traceparent, sizeof(c->traceparent), "%s", cb->traceparent);
    c->cb.traceparent = NULL; /* the copy above is what lives on */
    c->streaming = b->streaming;
    if (tool_config != b->tc_key) {
        /* A new catalogue: serialised once here, not once per request. */
        json_decref(b->tc_key);
        free(b->tc_json);
        b->tc_key = tool_config ? json_incref((json_t *)tool_config) : NULL;
        b->tc_json = tool_config ? json_dumps(tool_config, JSON_COMPACT) : NULL;
    }
    c->body = aw_bedrock_build_body_with(messages, &b->opts, tool_config, b->tc_json);
    if (!c->body) {
        free(c);
        return NULL;
    }
    c->body_len = strlen(c->body);
    uv_timer_init(b->loop, &c->timer);
    c->timer.data = c;
    attempt_start(c);
    return c;
}

void aw_bedrock_cancel(struct aw_bedrock_call *c)
{
    if (!c || c->state == ST_DONE)
        return;
    if (c->state == ST_CREDS)
        aw_creds_async_cancel(&c->b->cra, &c->cw);
    c->cb.on_done = NULL;
    c->state = c->state == ST_XFER ? ST_XFER : ST_IDLE;
    attempt_cleanup(c); /* on HTTP/2 this resets the call's stream only */
    c->state = ST_DONE;
    call_release(c);
}
