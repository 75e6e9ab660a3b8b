/* aw_bedrock: the Bedrock Runtime Converse client.
 *
 * Split nghttp2-style: request building, response parsing and error mapping
 * take and return plain data (no I/O) and are unit-tested and fuzzed; only
 * aw_bedrock_converse() talks to the network, through libcurl, signing each
 * attempt with cm_sigv4 (service "bedrock", the model id percent-encoded in the
 * path and encoded again in the canonical path, ../shared/research/bedrock-wire.md §1, §4).
 *
 * Retries follow the AWS SDKs' standard mode: up to max_attempts attempts in
 * all, full-jitter exponential backoff (base retry_base_ms, doubling, capped at
 * 20 s), on throttling, 500/502/503/504, ModelNotReady and transport errors;
 * never on other 4xx. */
#ifndef AW_BEDROCK_H
#define AW_BEDROCK_H

#include "aw_aws.h"
#include "cm_buf.h"

#include <jansson.h>
#include <stddef.h>
#include <uv.h>

#define AW_BEDROCK_MAX_RESPONSE (16 * 1024 * 1024)

/* Everything a request carries besides the conversation and the tools. */
struct aw_request_options {
    const char *system_prompt; /* NULL: none */
    int max_tokens;
    int has_temperature, has_top_p;
    double temperature, top_p;
    const json_t *stop_sequences;    /* array or NULL */
    const json_t *additional_fields; /* additionalModelRequestFields object or NULL */
    const char *tool_choice;         /* NULL/"auto", "any" or "tool:<name>" */
    int prompt_caching;              /* cachePoint after the system prompt and the tools */
    const char *guardrail_id, *guardrail_version, *guardrail_trace; /* id NULL: none */
    int tool_result_status; /* 0: strip toolResult.status (models that reject it) */
};

struct aw_creds;

struct aw_bedrock_config {
    const char *endpoint; /* "https://bedrock-runtime.us-east-1.amazonaws.com" or an emulator */
    const char *region;
    const char *model_id;
    struct aw_creds *creds;            /* where signing credentials come from (borrowed) */
    const char *bearer_token;          /* AWS_BEARER_TOKEN_BEDROCK: Bearer auth instead of SigV4 */
    struct aw_request_options request; /* copied (the JSON values are referenced) */
    int connect_timeout_ms;
    int read_timeout_ms;
    int max_attempts;
    int retry_base_ms;
    int retry_mode;        /* enum aw_retry_mode */
    const char *ca_bundle; /* AWS_CA_BUNDLE: CA file for TLS verification, or NULL */
    int streaming;         /* 1: ConverseStream, 0: Converse */
    uv_loop_t *loop;       /* the loop every call runs on */
    void (*on_log)(int warn,
                   const char *text); /* what the client learnt (clock skew); may be NULL */
};

/* One assistant turn as Converse returned it. */
struct aw_turn {
    json_t *message;      /* {"role":"assistant","content":[...]}, owned */
    char stop_reason[64]; /* Bedrock's value, e.g. "end_turn" */
    long long input_tokens, output_tokens, total_tokens;
};

void aw_turn_clear(struct aw_turn *t);

/* ---- no I/O ---- */

/* "/model/<id percent-encoded, ':' and '/' included>/converse" into |out|. */
int aw_bedrock_model_path(const char *model_id, const char *op, struct cm_buf *out);

/* 1 when Bedrock accepts toolResult.status for |model_id| (Claude and Nova,
 * as the Strands SDK decides). */
int aw_bedrock_supports_tool_status(const char *model_id);

/* Serialises a Converse request from |messages| (borrowed), |o| and
 * |tool_config| (borrowed, may be NULL). The rules the Strands SDK applies so
 * Bedrock accepts a history are applied to what is sent (never to |messages|):
 * a placeholder tool when the history holds tool blocks but no tool is
 * configured, no empty text blocks, toolResult.status only where supported,
 * and no "thinking" while toolChoice forces a tool. Returns a malloc'd string
 * or NULL on allocation failure. */
char *aw_bedrock_build_body(const json_t *messages, const struct aw_request_options *o,
                            const json_t *tool_config);
/* The same, with |tool_config_json| (NULL: none) the compact text of
 * |tool_config|: where the body carries that configuration unchanged, the
 * text goes in as it is instead of being serialised again (the catalogue is
 * the largest part of most requests). */
char *aw_bedrock_build_body_with(const json_t *messages, const struct aw_request_options *o,
                                 const json_t *tool_config, const char *tool_config_json);

/* Parses a 200 Converse body. 0, or CM_EINVAL with a reason in |err|. */
int aw_bedrock_parse_response(const char *body, size_t len, struct aw_turn *out, char *err,
                              size_t errlen);

/* Fills |out| from an error answer: type from the x-amzn-ErrorType header
 * (|type_header| may be NULL), else the body's __type/code; message from the
 * body's message/Message. Adds the fix to the inference-profile error. */
void aw_bedrock_parse_error(int status, const char *type_header, const char *body, size_t len,
                            struct aw_model_error *out);

/* 1 when an error of this status/type is retried by the standard mode. */
int aw_bedrock_retryable(int status, const char *type);

/* 1 when an error answer says our clock is off (RequestTimeTooSkewed,
 * "Signature expired", ...): worth one retry with the service's time. */
int aw_bedrock_clock_skewed(int status, const char *type, const char *message);
/* An HTTP Date ("Tue, 01 Dec 2026 15:04:05 GMT") in unix seconds, or -1. */
long long aw_bedrock_http_date(const char *s);

/* ---- I/O, on the loop thread only ---- */

struct aw_bedrock;

/* Copies |cfg|; binds to |cfg->loop|. NULL with a reason in |err| on a bad
 * endpoint. Call from the loop thread (or before the loop runs). */
struct aw_bedrock *aw_bedrock_new(const struct aw_bedrock_config *cfg, char *err, size_t errlen);
/* Every call must have ended or been cancelled. On the loop thread. */
void aw_bedrock_free(struct aw_bedrock *b);

/* What one model call reports back; every field but on_done may be NULL. */
struct aw_call_cb {
    /* Each text delta as it arrives (ConverseStream only). Once one was
     * handed out, a failure of that attempt is no longer retried. */
    void (*on_text)(void *ud, int block, const char *text, size_t len);
    /* Once, at the end: |rc| 0 with |turn| filled (take turn->message, or it
     * is freed on return), or CM_EUPSTREAM / CM_ENOMEM with |err| filled. */
    void (*on_done)(void *ud, int rc, struct aw_turn *turn, struct aw_model_error *err);
    void *ud;
    /* W3C traceparent sent with the request (copied; NULL: none): the
     * model call's span in the invocation's trace. */
    const char *traceparent;
};

/* One model call (Converse, or ConverseStream when the client was made with
 * |streaming|) with the SDKs' retries, run as events on the loop: no thread
 * waits, a silent model costs nothing, and BEDROCK_READ_TIMEOUT_MS limits the
 * silence between received bytes, not the length of the answer. Returns the
 * call, or NULL on allocation failure (|cb| never runs). */
struct aw_bedrock_call;
struct aw_bedrock_call *aw_bedrock_start(struct aw_bedrock *b, const json_t *messages,
                                         const json_t *tool_config, const struct aw_call_cb *cb);
/* Stops the call at once (its HTTP/2 stream is reset, a backoff or a wait for
 * credentials abandoned); on_done does not run. NULL is fine. */
void aw_bedrock_cancel(struct aw_bedrock_call *c);

#endif
