#include "gw_api.h"

#include "agentcore.pb-c.h"
#include "cm_json.h"
#include "cm_rpc.h"
#include "cm_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void gw_reply_clear(struct gw_reply *r)
{
    if (!r)
        return;
    free(r->body);
    r->body = NULL;
    r->status = 0;
}

void gw_invocation_clear(struct gw_invocation *inv)
{
    if (!inv)
        return;
    json_decref(inv->root);
    memset(inv, 0, sizeof(*inv));
}

/* JSON strings must be valid UTF-8, but parser and peer messages may quote
 * broken input: such text keeps only its ASCII (in |buf|). */
static const char *safe_text(const char *text, char *buf, size_t cap)
{
    size_t i;

    if (!text || cm_utf8_valid(text, strlen(text)))
        return text;
    for (i = 0; text[i] && i < cap - 1; i++)
        buf[i] = (unsigned char)text[i] < 0x80 ? text[i] : '?';
    buf[i] = '\0';
    return buf;
}

char *gw_api_error_body(const char *error, const char *details)
{
    char safe[512];
    json_t *o;
    char *s;

    details = safe_text(details, safe, sizeof(safe));
    o = details ? json_pack("{s:s,s:s}", "error", error, "details", details)
                : json_pack("{s:s}", "error", error);
    s = o ? cm_json_dump(o) : NULL;
    json_decref(o);
    return s;
}

void gw_api_error(struct gw_reply *r, int status, const char *error, const char *details)
{
    r->status = status;
    r->body = gw_api_error_body(error, details);
}

int gw_api_json_shape(const char *body, size_t len, char *why, size_t whylen)
{
    size_t i, depth = 0, elements = 0;
    int in_string = 0;

    for (i = 0; i < len; i++) {
        char c = body[i];

        if (in_string) {
            if (c == '\\')
                i++; /* the escaped byte cannot end the string */
            else if (c == '"')
                in_string = 0;
            continue;
        }
        switch (c) {
        case '"':
            in_string = 1;
            break;
        case '{':
        case '[':
            if (++depth > GW_JSON_MAX_DEPTH) {
                snprintf(why, whylen, "JSON nested deeper than %d levels", GW_JSON_MAX_DEPTH);
                return -1;
            }
            elements++; /* a container is an element too */
            break;
        case ',':
            elements++;
            break;
        case '}':
        case ']':
            if (depth)
                depth--;
            break;
        default:
            break;
        }
        if (elements > GW_JSON_MAX_ELEMENTS) {
            snprintf(why, whylen, "JSON with more than %d elements", GW_JSON_MAX_ELEMENTS);
            return -1;
        }
    }
    return 0;
}

/* An optional token budget: a positive integer (JSON null or absent: none). */
static int opt_budget(const json_t *root, const char *key, long long *out, char *why, size_t whylen)
{
    json_t *v = json_object_get(root, key);

    *out = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 1 ||
        json_integer_value(v) > 1000000000000LL) {
        snprintf(why, whylen, "field '%s': must be an integer from 1 to 10^12", key);
        return -1;
    }
    *out = (long long)json_integer_value(v);
    return 0;
}

int gw_api_parse_invocation(const char *body, size_t len, struct gw_invocation *out,
                            struct gw_reply *err)
{
    json_error_t jerr;
    char why[256];

    memset(out, 0, sizeof(*out));
    if (len == 0) {
        gw_api_error(err, 400, "Invalid JSON", "request body is empty");
        return -1;
    }
    if (!cm_utf8_valid(body, len)) {
        gw_api_error(err, 400, "Invalid encoding", "request body is not valid UTF-8");
        return -1;
    }
    if (gw_api_json_shape(body, len, why, sizeof(why))) {
        gw_api_error(err, 400, "Invalid JSON", why);
        return -1;
    }
    /* Trailing garbage after the value is an error; jansson also rejects \u0000,
     * so every string below is a plain C string. */
    out->root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!out->root) {
        snprintf(why, sizeof(why), "%s: line %d column %d (char %d)", jerr.text, jerr.line,
                 jerr.column, jerr.position);
        gw_api_error(err, 400, "Invalid JSON", why);
        return -1;
    }
    if (!json_is_object(out->root)) {
        gw_api_error(err, 400, "Invalid request", "request body must be a JSON object");
        goto fail;
    }
    out->stream_set = json_object_get(out->root, "stream") != NULL;
    if (cm_json_str(out->root, "prompt", &out->prompt, why, sizeof(why)) ||
        cm_json_opt_str(out->root, "session_id", &out->session_id, why, sizeof(why)) ||
        cm_json_opt_bool(out->root, "stream", &out->stream, why, sizeof(why))) {
        gw_api_error(err, 400, "Invalid request", why);
        goto fail;
    }
    if (!out->prompt[0]) {
        gw_api_error(err, 400, "Invalid request", "field 'prompt': must not be empty");
        goto fail;
    }
    if (cm_json_opt_str(out->root, "idempotency_key", &out->idempotency_key, why, sizeof(why))) {
        gw_api_error(err, 400, "Invalid request", why);
        goto fail;
    }
    if (out->idempotency_key && (!out->idempotency_key[0] || strlen(out->idempotency_key) > 255 ||
                                 !gw_api_metadata_ok("x", out->idempotency_key, 256))) {
        gw_api_error(err, 400, "Invalid request",
                     "field 'idempotency_key': 1 to 255 printable ASCII characters");
        goto fail;
    }
    if (opt_budget(out->root, "max_total_tokens", &out->max_total_tokens, why, sizeof(why)) ||
        opt_budget(out->root, "max_output_tokens", &out->max_output_tokens, why, sizeof(why))) {
        gw_api_error(err, 400, "Invalid request", why);
        goto fail;
    }
    return 0;
fail:
    gw_invocation_clear(out);
    return -1;
}

static int valid_session(const char *s)
{
    size_t n = strlen(s), i;

    if (n == 0 || n > GW_SESSION_ID_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        if (s[i] < 0x21 || s[i] > 0x7e)
            return 0;
    }
    return 1;
}

int gw_api_session_id(const char *header, const char *body_value, char *out, struct gw_reply *err)
{
    const char *pick = header && *header ? header : body_value;

    if (!pick) {
        if (cm_uuid4(out)) {
            gw_api_error(err, 500, "Internal error", "cannot generate a session id");
            return -1;
        }
        return 0;
    }
    if (!valid_session(pick)) {
        gw_api_error(err, 400, "Invalid request",
                     "session id must be 1 to 256 printable ASCII characters without spaces");
        return -1;
    }
    cm_strlcpy(out, pick, GW_SESSION_ID_MAX + 1);
    return 0;
}

char *gw_api_response_body(const char *invocation_id, const char *session_id, const char *response,
                           const char *stop_reason, long long input_tokens, long long output_tokens,
                           long long total_tokens, int iterations)
{
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:{s:I,s:I,s:I},s:i}", "invocation_id", invocation_id,
                          "session_id", session_id, "response", response, "stop_reason",
                          stop_reason, "usage", "input_tokens", (json_int_t)input_tokens,
                          "output_tokens", (json_int_t)output_tokens, "total_tokens",
                          (json_int_t)total_tokens, "iterations", iterations);
    char *s = o ? cm_json_dump(o) : NULL;

    json_decref(o);
    return s;
}

void gw_api_agent_error(int rpc_code, const char *error_type, const char *details,
                        struct gw_reply *r)
{
    if (error_type && !strcmp(error_type, "ModelError"))
        gw_api_error(r, 502, "Model invocation failed", details);
    else if (error_type && !strcmp(error_type, "SessionStoreError"))
        gw_api_error(r, 503, "Session store unavailable", details);
    else if (error_type && !strcmp(error_type, "ShuttingDown"))
        gw_api_error(r, 503, "Runtime shutting down", details);
    else if (rpc_code == CM_RPC_ABORTED && error_type && !strcmp(error_type, "SessionBusy"))
        gw_api_error(r, 409, "Session busy", details);
    else if (rpc_code == CM_RPC_UNAVAILABLE)
        gw_api_error(r, 503, "Agent worker unavailable", details);
    else if (rpc_code == CM_RPC_RESOURCE_EXHAUSTED)
        gw_api_error(r, 503, "Agent worker busy", details);
    else if (rpc_code == CM_RPC_DEADLINE_EXCEEDED)
        gw_api_error(r, 504, "Invocation timed out", details);
    else if (rpc_code == CM_RPC_INVALID_ARGUMENT)
        gw_api_error(r, 400, "Invalid request", details);
    else
        gw_api_error(r, 500, "Agent failed", details);
}

char *gw_api_ping_body(const char *status, long long time_of_last_update)
{
    json_t *o = json_pack("{s:s,s:I}", "status", status, "time_of_last_update",
                          (json_int_t)time_of_last_update);
    char *s = o ? cm_json_dump(o) : NULL;

    json_decref(o);
    return s;
}

int gw_api_wants_stream(const struct gw_invocation *inv, const char *accept)
{
    if (inv->stream_set)
        return inv->stream;
    return accept && strstr(accept, "text/event-stream") && !strstr(accept, "application/json");
}

static char *dump(json_t *v)
{
    char *s = v ? cm_json_dump(v) : NULL;

    json_decref(v);
    return s;
}

static char *wrap(const char *key, const char *json)
{
    json_t *inner = json_loads(json, 0, NULL);

    return inner ? dump(json_pack("{s:o}", key, inner)) : NULL;
}

char *gw_api_event_json(const struct Agentcore__V1__InvokeEvent *ev)
{
    const Agentcore__V1__InvokeResponse *f;

    switch (ev->event_case) {
    case AGENTCORE__V1__INVOKE_EVENT__EVENT_TEXT_DELTA:
        return dump(json_pack("{s:{s:{s:i,s:{s:s}}}}", "event", "contentBlockDelta",
                              "contentBlockIndex", ev->text_delta->content_block_index, "delta",
                              "text", ev->text_delta->text));
    case AGENTCORE__V1__INVOKE_EVENT__EVENT_TOOL_USE_JSON:
        return wrap("tool_use", ev->tool_use_json);
    case AGENTCORE__V1__INVOKE_EVENT__EVENT_TOOL_RESULT_JSON:
        return wrap("tool_result", ev->tool_result_json);
    case AGENTCORE__V1__INVOKE_EVENT__EVENT_FINAL:
        f = ev->final;
        return gw_api_response_body(f->invocation_id, f->session_id, f->response, f->stop_reason,
                                    f->usage ? f->usage->input_tokens : 0,
                                    f->usage ? f->usage->output_tokens : 0,
                                    f->usage ? f->usage->total_tokens : 0, f->iterations);
    default:
        return strdup("");
    }
}

char *gw_api_error_event(const char *error, const char *error_type)
{
    char safe[512];

    error = safe_text(error, safe, sizeof(safe));
    return dump(json_pack("{s:s,s:s,s:s}", "error", error, "error_type", error_type, "message",
                          "An error occurred during streaming"));
}

char *gw_api_sse(const char *json)
{
    size_t n = strlen(json);
    char *out;

    if (!n)
        return strdup("");
    out = malloc(n + 9);
    if (out) {
        memcpy(out, "data: ", 6);
        memcpy(out + 6, json, n);
        memcpy(out + 6 + n, "\n\n", 3);
    }
    return out;
}

static int contains_ci(const char *hay, const char *needle)
{
    size_t n = strlen(needle);

    for (; *hay; hay++) {
        if (!strncasecmp(hay, needle, n))
            return 1;
    }
    return 0;
}

int gw_api_header_sensitive(const char *name)
{
    static const char *const exact[] = {
        "authorization",      "proxy-authorization",  "cookie",
        "set-cookie",         "x-amz-security-token", "x-amz-bedrock-agentcore-identity-wat",
        "workloadaccesstoken"};
    static const char *const parts[] = {"token", "secret", "key", "password"};
    size_t i;

    for (i = 0; i < sizeof(exact) / sizeof(exact[0]); i++) {
        if (!strcasecmp(name, exact[i]))
            return 1;
    }
    for (i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        if (contains_ci(name, parts[i]))
            return 1;
    }
    return 0;
}

int gw_api_metadata_ok(const char *name, const char *value, size_t max)
{
    const char *c;

    for (c = name; *c; c++) {
        char l = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);

        if (!((l >= 'a' && l <= 'z') || (l >= '0' && l <= '9') || l == '-' || l == '_' || l == '.'))
            return 0;
    }
    if (c == name || strlen(value) > max)
        return 0;
    for (c = value; *c; c++) {
        if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e)
            return 0;
    }
    return 1;
}

int gw_api_origin_allowed(const char *origin, const char *allowed)
{
    const char *p = allowed;
    size_t n;

    if (!origin)
        return 1;
    while (p && *p) {
        n = strcspn(p, ",");
        while (n && *p == ' ')
            p++, n--;
        if ((n == 1 && *p == '*') || (n == strlen(origin) && !strncasecmp(p, origin, n)))
            return 1;
        p += n + (p[n] == ',');
    }
    return 0;
}

int gw_api_header_forwarded(const char *name)
{
    static const char *const exact[] = {"authorization",
                                        "x-amz-bedrock-agentcore-identity-wat",
                                        "workloadaccesstoken",
                                        "oauth2callbackurl",
                                        "traceparent",
                                        "tracestate",
                                        "baggage"};
    static const char custom[] = "x-amzn-bedrock-agentcore-runtime-custom-";
    size_t i;

    for (i = 0; i < sizeof(exact) / sizeof(exact[0]); i++) {
        if (!strcasecmp(name, exact[i]))
            return 1;
    }
    return !strncasecmp(name, custom, sizeof(custom) - 1) && name[sizeof(custom) - 1];
}
