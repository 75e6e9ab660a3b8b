#include "aw_bedrock.h"
#include "aw_aws.h"
#include "aw_creds.h"
#include "aw_retry.h"
#include "aw_stream.h"
#include "cm_err.h"
#include "cm_json.h"
#include "cm_sigv4.h"
#include "cm_util.h"

#include <curl/curl.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define CANCEL_CHECK_MS 10
#define MAX_POOLED_CONNECTIONS 256

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

char *aw_bedrock_build_body(const json_t *messages, const struct aw_request_options *o,
                            const json_t *tool_config)
{
    json_t *body = json_object(), *inf, *tc, *msgs = NULL;
    char *s = NULL;

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
    if (tc && json_object_set_new(body, "toolConfig", tc))
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

/* "ThrottlingException:http://internal.amazon.com/coral/..." and
 * "com.amazon.coral#ThrottlingException" both name ThrottlingException. */
static void clean_type(const char *raw, char *out, size_t cap)
{
    const char *hash = strchr(raw, '#');
    size_t n;

    if (hash)
        raw = hash + 1;
    n = strcspn(raw, ":");
    if (n >= cap)
        n = cap - 1;
    memcpy(out, raw, n);
    out[n] = '\0';
}

void aw_bedrock_parse_error(int status, const char *type_header, const char *body, size_t len,
                            struct aw_model_error *out)
{
    json_t *root = body && len ? json_loadb(body, len, 0, NULL) : NULL;
    const char *msg = NULL, *type = NULL;

    memset(out, 0, sizeof(*out));
    out->http_status = status;
    if (json_is_object(root)) {
        cm_json_opt_str(root, "message", &msg, NULL, 0);
        if (!msg)
            cm_json_opt_str(root, "Message", &msg, NULL, 0);
        cm_json_opt_str(root, "__type", &type, NULL, 0);
        if (!type)
            cm_json_opt_str(root, "code", &type, NULL, 0);
    }
    if (type_header && *type_header)
        type = type_header;
    if (type)
        clean_type(type, out->type, sizeof(out->type));
    if (!out->type[0]) /* none, or one like "ns#" that names nothing */
        snprintf(out->type, sizeof(out->type), "HTTP%d", status);
    if (msg && *msg) {
        cm_strlcpy(out->message, msg, sizeof(out->message));
    } else if (body && len && !root) {
        /* Not JSON (a proxy's page?): keep a short, printable excerpt. */
        size_t i, n = len < 200 ? len : 200;

        for (i = 0; i < n; i++)
            out->message[i] = (body[i] >= 0x20 && body[i] < 0x7f) ? body[i] : ' ';
        out->message[n] = '\0';
    } else {
        snprintf(out->message, sizeof(out->message), "HTTP status %d", status);
    }
    if (strstr(out->message, "on-demand throughput") || strstr(out->message, "inference profile")) {
        size_t n = strlen(out->message);

        snprintf(out->message + n, sizeof(out->message) - n, "%s",
                 " (fix: set MODEL_ID to a cross-region inference profile id such as "
                 "'us.<model-id>', 'eu.', 'apac.' or 'global.', or to an inference profile ARN)");
    }
    json_decref(root);
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
    /* One pool of connections, DNS answers and TLS sessions for every worker
     * thread's handle, so a thread reuses a connection another one opened. */
    CURLSH *share;
    pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
};

static void share_lock(CURL *h, curl_lock_data d, curl_lock_access a, void *u)
{
    (void)h, (void)a;
    pthread_mutex_lock(&((struct aw_bedrock *)u)->share_locks[d]);
}

static void share_unlock(CURL *h, curl_lock_data d, void *u)
{
    (void)h;
    pthread_mutex_unlock(&((struct aw_bedrock *)u)->share_locks[d]);
}

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
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&b->share_locks[i], NULL);
    b->share = curl_share_init();
    if (!b->share)
        goto fail;
    curl_share_setopt(b->share, CURLSHOPT_LOCKFUNC, share_lock);
    curl_share_setopt(b->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
    curl_share_setopt(b->share, CURLSHOPT_USERDATA, b);
    curl_share_setopt(b->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
    curl_share_setopt(b->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(b->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
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
    if (b->share) {
        curl_share_cleanup(b->share);
        for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
            pthread_mutex_destroy(&b->share_locks[i]);
    }
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
    aw_rate_cleanup(&b->rate);
    free(b);
}

static pthread_key_t curl_key;
static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_destroy(void *h)
{
    curl_easy_cleanup(h);
}

static pthread_key_t multi_key;

static void multi_destroy(void *m)
{
    curl_multi_cleanup(m);
}

static void curl_key_make(void)
{
    pthread_key_create(&curl_key, curl_destroy);
    pthread_key_create(&multi_key, multi_destroy);
}

/* One easy handle per thread keeps its connection (and TLS session) alive
 * between calls, so a conversation pays the TLS handshake once. */
static CURL *thread_curl(void)
{
    CURL *h;

    pthread_once(&curl_once, curl_key_make);
    h = pthread_getspecific(curl_key);
    if (!h) {
        h = curl_easy_init();
        if (h)
            pthread_setspecific(curl_key, h);
    }
    return h;
}

void aw_bedrock_thread_done(void)
{
    CURL *h;
    CURLM *m;

    pthread_once(&curl_once, curl_key_make);
    h = pthread_getspecific(curl_key);
    if (h) {
        pthread_setspecific(curl_key, NULL);
        curl_easy_cleanup(h);
    }
    m = pthread_getspecific(multi_key);
    if (m) {
        pthread_setspecific(multi_key, NULL);
        curl_multi_cleanup(m);
    }
}

static void set_error(struct aw_model_error *e, int status, const char *type, const char *msg)
{
    e->http_status = status;
    cm_strlcpy(e->type, type, sizeof(e->type));
    cm_strlcpy(e->message, msg, sizeof(e->message));
}

/* One attempt's transfer. A 200 ConverseStream body goes through the decoder
 * into the assembler as it arrives; any other body is kept (capped) for the
 * error parser. */
struct xfer {
    CURL *h;
    struct cm_buf body;
    char error_type[128];
    int (*cancelled)(void *);
    void *cancel_ud;
    int was_cancelled;
    uint64_t last_check;
    int streaming;
    long status; /* known from the first body byte on */
    struct cm_evs_decoder dec;
    struct aw_stream asm_;
    int stream_rc;              /* why the stream stopped early, 0 if it did not */
    struct aw_model_error serr; /* the stream's error, when stream_rc is set */
};

static int on_frame(void *ud, const struct cm_evs_message *m)
{
    struct xfer *x = ud;

    x->stream_rc = aw_stream_on_frame(&x->asm_, m, &x->serr);
    return x->stream_rc;
}

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    struct xfer *x = ud;
    int rc;

    if (!x->status)
        curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->status);
    if (x->streaming && x->status == 200) {
        rc = cm_evs_decoder_feed(&x->dec, p, sz * n);
        if (rc && !x->stream_rc) {
            /* The decoder itself failed (CRC, lengths, caps). */
            x->stream_rc = CM_EUPSTREAM;
            set_error(&x->serr, 200, "MalformedStream", cm_evs_strerror(rc));
        }
        return rc ? 0 : sz * n;
    }
    return cm_buf_add(&x->body, p, sz * n) ? 0 : sz * n; /* past the cap: abort */
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    struct xfer *x = ud;
    size_t len = sz * n;
    static const char name[] = "x-amzn-errortype:";

    if (len > sizeof(name) - 1 && !strncasecmp(p, name, sizeof(name) - 1)) {
        size_t i = sizeof(name) - 1, k = 0;

        while (i < len && (p[i] == ' ' || p[i] == '\t'))
            i++;
        while (i < len && p[i] != '\r' && p[i] != '\n' && k < sizeof(x->error_type) - 1)
            x->error_type[k++] = p[i++];
        x->error_type[k] = '\0';
    }
    return len;
}

/* libcurl calls this on every turn of its loop. Asking gRPC whether the caller
 * left costs a queue pluck (locks, often a futex): doing it on every call
 * measured 2.4x the worker's CPU per invocation, so it is asked at most once
 * per CANCEL_CHECK_MS. */
static int on_progress(void *ud, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    struct xfer *x = ud;
    uint64_t now;

    (void)a, (void)b, (void)c, (void)d;
    if (!x->cancelled)
        return 0;
    now = cm_now_ms();
    if (now - x->last_check < CANCEL_CHECK_MS)
        return 0;
    x->last_check = now;
    if (x->cancelled(x->cancel_ud)) {
        x->was_cancelled = 1;
        return 1;
    }
    return 0;
}

/* One signed POST. Returns 0 (HTTP answer in |status| and |x|), CM_ECANCELED,
 * or CM_EIO with |err| describing the transport failure. */
#define POLL_SLICE_MS 50

/* Runs one transfer on this thread's multi handle in short slices, asking
 * between them whether the caller left: curl_easy_perform would only call the
 * progress callback about once a second while the model is silent. */
static CURLcode perform(CURL *h, struct xfer *x)
{
    CURLM *m = pthread_getspecific(multi_key);
    CURLcode cc = CURLE_OK;
    CURLMsg *msg;
    int running = 1, left;

    if (!m) {
        m = curl_multi_init();
        if (!m)
            return curl_easy_perform(h);
        /* Keep connections for every worker thread, not curl's default handful:
         * otherwise they are closed after use and reopened by the next call. */
        curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long)MAX_POOLED_CONNECTIONS);
        pthread_setspecific(multi_key, m);
    }
    if (curl_multi_add_handle(m, h) != CURLM_OK)
        return curl_easy_perform(h);
    while (running) {
        if (curl_multi_perform(m, &running) != CURLM_OK) {
            cc = CURLE_RECV_ERROR;
            break;
        }
        if (!running)
            break;
        if (x->cancelled && x->cancelled(x->cancel_ud)) {
            x->was_cancelled = 1;
            cc = CURLE_ABORTED_BY_CALLBACK;
            break;
        }
        curl_multi_poll(m, NULL, 0, POLL_SLICE_MS, NULL);
    }
    while ((msg = curl_multi_info_read(m, &left))) {
        if (msg->msg == CURLMSG_DONE && msg->easy_handle == h && cc == CURLE_OK)
            cc = msg->data.result;
    }
    curl_multi_remove_handle(m, h);
    return cc;
}

static int post_once(struct aw_bedrock *b, const char *body, const struct aw_credentials *cr,
                     struct xfer *x, long *status, struct aw_model_error *err)
{
    struct curl_slist *list;
    char url[8192], line[512];
    CURL *h = thread_curl();
    const char *path = x->streaming ? b->stream_path : b->path;
    CURLcode cc;
    int rc = CM_EIO;

    if (!h) {
        set_error(err, 0, "TransportError", "cannot create an HTTP handle");
        return CM_ENOMEM;
    }
    x->h = h;
    list = aw_sign_post(&b->ep, path, "bedrock", b->region, cr, b->bearer, "application/json", NULL,
                        0, body, strlen(body));
    if (!list) {
        set_error(err, 0, "SigningError", "cannot sign the request");
        return CM_EINVAL;
    }
    snprintf(url, sizeof(url), "%s%s", b->ep.scheme_host, path);

    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_SHARE, b->share);
    curl_easy_setopt(h, CURLOPT_MAXCONNECTS, (long)MAX_POOLED_CONNECTIONS);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
    if (b->ca_bundle)
        curl_easy_setopt(h, CURLOPT_CAINFO, b->ca_bundle);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    curl_easy_setopt(h, CURLOPT_USERAGENT, "agentcore-c/0.1");
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)b->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)b->read_timeout_ms);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, x);
    cc = perform(h, x);
    aw_slist_free_secure(list); /* it held the signature and the token */
    if (cc == CURLE_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
        rc = 0;
    } else if (x->was_cancelled) {
        rc = CM_ECANCELED;
    } else if (x->stream_rc) {
        /* The stream carried an exception or could not be decoded. */
        *err = x->serr;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
        rc = x->stream_rc;
    } else if (cc == CURLE_WRITE_ERROR) {
        set_error(err, 0, "ResponseTooLarge", "model response larger than the cap");
        rc = CM_ETOOBIG;
    } else {
        snprintf(line, sizeof(line), "cannot reach %.300s: %s", b->ep.scheme_host,
                 curl_easy_strerror(cc));
        set_error(err, 0, cc == CURLE_OPERATION_TIMEDOUT ? "Timeout" : "TransportError", line);
    }
    return rc;
}

/* Waits |ms| in short slices so a cancelled call stops waiting at once.
 * Returns 1 if cancelled. */
static int wait_ms(uint64_t ms, int (*cancelled)(void *), void *ud)
{
    uint64_t until = cm_now_ms() + ms;

    while (cm_now_ms() < until) {
        struct timespec ts = {0, 20 * 1000000L};

        if (cancelled && cancelled(ud))
            return 1;
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* The full-jitter backoff before the next attempt. Returns 1 if cancelled. */
static int backoff(struct aw_bedrock *b, int attempt, int (*cancelled)(void *), void *ud)
{
    unsigned int r = 0;

    RAND_bytes((unsigned char *)&r, sizeof(r));
    return wait_ms((uint64_t)aw_retry_backoff_ms(attempt, b->retry_base_ms, r), cancelled, ud);
}

/* Adaptive mode: waits for a send token. Returns 1 if cancelled meanwhile. */
static int pace(struct aw_bedrock *b, int (*cancelled)(void *), void *ud)
{
    double wait;

    while ((wait = aw_rate_acquire(&b->rate, now_s())) > 0) {
        if (wait_ms((uint64_t)(wait * 1000) + 1, cancelled, ud))
            return 1;
    }
    return 0;
}

static int key_invalid(const char *type)
{
    return !strcmp(type, "UnrecognizedClientException") ||
           !strcmp(type, "InvalidSignatureException") || !strcmp(type, "ExpiredTokenException") ||
           !strcmp(type, "InvalidClientTokenId") || !strcmp(type, "ExpiredToken");
}

/* Turns a finished 200 transfer into |out|: parse the Converse body, or
 * finish the assembled stream. 0 or CM_EUPSTREAM with |err| set. */
static int finish_ok(struct xfer *x, struct aw_turn *out, struct aw_model_error *err)
{
    char perr[256];

    if (x->streaming) {
        if (!cm_evs_decoder_idle(&x->dec)) {
            set_error(err, 200, "IncompleteStream", "the event stream ended inside a frame");
            return CM_EUPSTREAM;
        }
        return aw_stream_finish(&x->asm_, out, err) ? CM_EUPSTREAM : 0;
    }
    if (aw_bedrock_parse_response(x->body.data ? x->body.data : "", x->body.len, out, perr,
                                  sizeof(perr))) {
        set_error(err, 200, "MalformedResponse", perr);
        return CM_EUPSTREAM;
    }
    return 0;
}

int aw_bedrock_converse(struct aw_bedrock *b, const json_t *messages, const json_t *tool_config,
                        const struct aw_call *call, struct aw_turn *out, struct aw_model_error *err)
{
    struct aw_credentials cr;
    char *body;
    int attempt, rc = CM_EUPSTREAM, refetched = 0, spent = 0;

    memset(out, 0, sizeof(*out));
    memset(err, 0, sizeof(*err));
    memset(&cr, 0, sizeof(cr));
    body = aw_bedrock_build_body(messages, &b->opts, tool_config);
    if (!body)
        return CM_ENOMEM;
    for (attempt = 1; attempt <= b->max_attempts; attempt++) {
        struct xfer x;
        long status = 0;
        int forwarded;

        if (b->retry_mode == AW_RETRY_ADAPTIVE &&
            pace(b, call ? call->cancelled : NULL, call ? call->ud : NULL)) {
            rc = CM_ECANCELED;
            break;
        }
        memset(&x, 0, sizeof(x));
        cm_buf_init(&x.body, AW_BEDROCK_MAX_RESPONSE);
        x.cancelled = call ? call->cancelled : NULL;
        x.cancel_ud = call ? call->ud : NULL;
        x.streaming = b->streaming;
        if (x.streaming) {
            cm_evs_decoder_init(&x.dec, 0, on_frame, &x);
            aw_stream_init(&x.asm_, call ? call->on_text : NULL, call ? call->ud : NULL);
        }
        if (!b->bearer && b->creds && aw_creds_get(b->creds, &cr, err)) {
            rc = CM_EUPSTREAM;
            cm_buf_free(&x.body);
            if (x.streaming) {
                cm_evs_decoder_cleanup(&x.dec);
                aw_stream_cleanup(&x.asm_);
            }
            break;
        }
        rc = post_once(b, body, &cr, &x, &status, err);
        if (rc == 0 && status == 200)
            rc = finish_ok(&x, out, err);
        else if (rc == 0) {
            aw_bedrock_parse_error((int)status, x.error_type, x.body.data, x.body.len, err);
            rc = CM_EUPSTREAM;
        } else if (rc == CM_EIO) {
            rc = CM_EUPSTREAM; /* transport error: err says which, status 0 */
        }
        if (b->retry_mode == AW_RETRY_ADAPTIVE && rc != CM_ECANCELED)
            aw_rate_update(&b->rate, rc == CM_EUPSTREAM && aw_retry_is_throttle(err->type),
                           now_s());
        forwarded = x.streaming && x.asm_.forwarded;
        cm_buf_free(&x.body);
        if (x.streaming) {
            cm_evs_decoder_cleanup(&x.dec);
            aw_stream_cleanup(&x.asm_);
        }
        /* A key the service calls invalid (rotated secret, expired token):
         * fetch the credentials again and try once more, outside the budget. */
        if (rc == CM_EUPSTREAM && err->http_status == 403 && key_invalid(err->type) && b->creds &&
            !b->bearer && !refetched) {
            refetched = 1;
            aw_creds_invalidate(b->creds);
            attempt--;
            continue;
        }
        /* Text already handed to the client cannot be taken back: a stream that
         * fails after that is not retried. */
        if (rc != CM_EUPSTREAM || forwarded || !aw_bedrock_retryable(err->http_status, err->type) ||
            attempt == b->max_attempts)
            break;
        if (b->retry_mode != AW_RETRY_LEGACY) {
            int cost = aw_retry_cost(err->type);

            if (!aw_retry_quota_acquire(&b->quota, cost))
                break; /* the retry budget is spent: fail fast under sustained errors */
            spent += cost;
        }
        if (backoff(b, attempt, x.cancelled, x.cancel_ud)) {
            rc = CM_ECANCELED;
            break;
        }
    }
    if (rc == 0 && b->retry_mode != AW_RETRY_LEGACY)
        aw_retry_quota_release(&b->quota, spent ? spent : 1);
    aw_credentials_clear(&cr);
    free(body);
    return rc;
}
