/* gw_api: the AgentCore HTTP contract as data in, data out (no I/O).
 *
 * Parsing and validating an invocation body, choosing the session id, shaping
 * the JSON answer and mapping agent failures to HTTP statuses all live here, so
 * they are unit-tested and fuzzed without sockets. gw_http does the I/O. */
#ifndef GW_API_H
#define GW_API_H

#include <jansson.h>
#include <stddef.h>

#define GW_SESSION_ID_MAX 256
#define GW_SESSION_HEADER "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"
#define GW_REQUEST_HEADER "X-Amzn-Bedrock-AgentCore-Runtime-Request-Id"

/* An HTTP answer: status and a malloc'd JSON body. */
struct gw_reply {
    int status;
    char *body;
};

void gw_reply_clear(struct gw_reply *r);

/* A validated invocation. Strings point into |root|. */
struct gw_invocation {
    json_t *root;
    const char *prompt;
    const char *session_id; /* from the body; NULL when absent */
    int stream;             /* the body's "stream" value */
    int stream_set;         /* 1 when the body has a "stream" field */
    /* Token budgets the body asks for ("max_total_tokens",
     * "max_output_tokens": positive integers), 0 when absent. */
    long long max_total_tokens, max_output_tokens;
    /* "idempotency_key": the request id when no request-id header came (a
     * retry with the same key gets the first run's answer); NULL when absent. */
    const char *idempotency_key;
};

void gw_invocation_clear(struct gw_invocation *inv);

/* The structure a body may build: a 100 MB body of "[[],[],..." would become
 * a jansson tree tens of times larger, so the shape is checked in one pass
 * over the bytes before anything is parsed. */
#define GW_JSON_MAX_DEPTH 64
#define GW_JSON_MAX_ELEMENTS 100000

/* 0 when |len| bytes of JSON text stay within the depth and element caps
 * (elements: arrays, objects and the values separated by commas), else -1
 * with a reason in |why|. Strings are skipped, escapes included. */
int gw_api_json_shape(const char *body, size_t len, char *why, size_t whylen);

/* Parses |len| bytes of body. Returns 0 with |out| filled, or -1 with |err| set
 * to the 400 answer: {"error":"Invalid JSON","details":...} for an empty or
 * malformed body or one over the shape caps, {"error":"Invalid request",
 * "details":...} for a prompt, session_id or stream field that is missing or
 * of the wrong type. */
int gw_api_parse_invocation(const char *body, size_t len, struct gw_invocation *out,
                            struct gw_reply *err);

/* Picks the session id: the header wins over the body; both are checked
 * (1..256 printable ASCII bytes). Writes it to |out| (GW_SESSION_ID_MAX + 1
 * bytes) or generates a UUID when neither is given. Returns 0, or -1 with the
 * 400 answer in |err|. */
int gw_api_session_id(const char *header, const char *body_value, char *out, struct gw_reply *err);

/* Returns a malloc'd {"error":..,"details":..} body (details omitted when NULL). */
char *gw_api_error_body(const char *error, const char *details);
/* Fills |r| with |status| and an error body. */
void gw_api_error(struct gw_reply *r, int status, const char *error, const char *details);

/* The seed's answer shape from the agent's reply fields. malloc'd JSON or NULL. */
char *gw_api_response_body(const char *invocation_id, const char *session_id, const char *response,
                           const char *stop_reason, long long input_tokens, long long output_tokens,
                           long long total_tokens, int iterations);

/* Maps a failed agent call (gRPC code, error type trailer, details) to the
 * HTTP answer: 503 agent unreachable or saturated, 504 timeout, 400 bad input,
 * 502 model failure, 500 anything else. */
void gw_api_agent_error(int rpc_code, const char *error_type, const char *details,
                        struct gw_reply *r);

/* 1 when the answer is to be an event stream: "stream": true in the body, or
 * no "stream" field and an Accept header that asks for text/event-stream and
 * not for JSON (an explicit "stream": false always wins). */
int gw_api_wants_stream(const struct gw_invocation *inv, const char *accept);

/* The events of a streamed invocation as JSON, malloc'd (NULL on allocation
 * failure); SSE sends each as "data: <json>\n\n", WebSocket as a text
 * message. Text deltas use the shape Strands streams for raw model chunks,
 * which the AgentCore CLI prints as text; a tool call is {"tool_use":...},
 * its result {"tool_result":...}, the last event the non-streaming answer.
 * Only the error event has an "error" key. Unknown event kinds give "". */
struct Agentcore__V1__InvokeEvent;
char *gw_api_event_json(const struct Agentcore__V1__InvokeEvent *ev);
char *gw_api_error_event(const char *error, const char *error_type);
/* "data: " + |json| + "\n\n" (malloc'd; "" gives ""). */
char *gw_api_sse(const char *json);

/* 1 when header |name|'s value must not be logged: Authorization, cookies,
 * X-Amz-Security-Token, the workload access token, and any name containing
 * token, secret, key or password (case-insensitive). */
int gw_api_header_sensitive(const char *name);

/* 1 when header |name| is request context the platform forwards to the agent
 * (Authorization, X-Amzn-Bedrock-AgentCore-Runtime-Custom-*, the workload
 * access token, OAuth2CallbackUrl, traceparent, tracestate, baggage). */
int gw_api_header_forwarded(const char *name);

/* 1 when header |name| with |value| can travel as gRPC metadata: the name,
 * lowercased, of [0-9a-z_.-], the value printable ASCII (0x20-0x7E) and at
 * most |max| bytes. gRPC refuses anything else (and may print it), so such a
 * header is dropped at the edge, by name. */
int gw_api_metadata_ok(const char *name, const char *value, size_t max);

/* 1 when a WebSocket upgrade with Origin |origin| may proceed: no Origin
 * (not a browser), or one listed exactly (case-insensitive) in the
 * comma-separated |allowed|, or |allowed| is "*". A browser page must not
 * drive a local agent. */
int gw_api_origin_allowed(const char *origin, const char *allowed);

/* {"status":"Healthy","time_of_last_update":<secs>} as a malloc'd string. */
char *gw_api_ping_body(const char *status, long long time_of_last_update);

#endif
