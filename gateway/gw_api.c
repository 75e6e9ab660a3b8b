#include "gw_api.h"
#include "cm_json.h"
#include "cm_rpc.h"
#include "cm_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

char *gw_api_error_body(const char *error, const char *details)
{
    char safe[512];
    json_t *o;
    char *s;
    size_t i;

    if (details && !cm_utf8_valid(details, strlen(details))) {
        /* Parser messages quote the input, which may end mid-character:
         * JSON strings must be valid UTF-8, so keep only the ASCII. */
        for (i = 0; details[i] && i < sizeof(safe) - 1; i++)
            safe[i] = (unsigned char)details[i] < 0x80 ? details[i] : '?';
        safe[i] = '\0';
        details = safe;
    }
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
