/* tw_mcp: a Model Context Protocol client over stdio (JSON-RPC 2.0, one
 * message per line), for MCP servers used as tool sources.
 *
 * It runs inside the tool sandbox, in the helper: the helper starts the
 * server as its child (so the server gets the same namespaces, filter and
 * limits), performs the handshake (initialize, then the initialized
 * notification once the server answered), then either lists the tools
 * (tools/list, following nextCursor) or calls one (tools/call), and stops
 * the server. Requests the server sends to us (ping, roots/list, sampling)
 * are answered: ping with an empty result, the rest with "method not
 * found", since we declare no client capabilities.
 *
 * The message logic is apart from the I/O so it is unit-tested and fuzzed:
 * tw_mcp_message() classifies one received line, tw_mcp_result_text() turns
 * a tools/call result into text for the model. */
#ifndef TW_MCP_H
#define TW_MCP_H

#include <stddef.h>

#include <jansson.h>

#define TW_MCP_PROTOCOL "2025-06-18"
#define TW_MCP_MAX_LINE (8 * 1024 * 1024) /* one message from the server, at most */
#define TW_MCP_MAX_PAGES 64               /* tools/list pages followed */

enum tw_mcp_kind {
    TW_MCP_INVALID,     /* not a JSON-RPC 2.0 message */
    TW_MCP_RESPONSE,    /* a result or an error for one of our ids */
    TW_MCP_REQUEST,     /* the server asks us something (has an id) */
    TW_MCP_NOTIFICATION /* no id: nothing to answer */
};

/* Parses |line|. For a response, |*id| is its id (-1 when not an integer),
 * |*result| or |*error| borrowed from |*msg| (which the caller decrefs). */
enum tw_mcp_kind tw_mcp_message(const char *line, size_t len, json_t **msg, long long *id,
                                json_t **result, json_t **error);

/* The reply to a request from the server ("ping" answers {}). New reference. */
json_t *tw_mcp_reply_to(json_t *request);

/* Text for the model from a tools/call result: the text items joined, other
 * items named (an image is "[image/png, 1234 bytes of base64]"), and
 * structuredContent when there is no text. |*is_error| from "isError".
 * malloc'd; NULL on allocation failure. */
char *tw_mcp_result_text(json_t *result, int *is_error);

/* A JSON-RPC error object as one line of text. malloc'd. */
char *tw_mcp_error_text(json_t *error);

/* Runs the server |argv| and lists its tools: 0 with the "tools" array (new
 * reference) in |*tools|, or -1 with a reason in |err|. */
int tw_mcp_list(char *const *argv, json_t **tools, char *err, size_t errlen);

/* Runs the server |argv| and calls |tool| with |arguments|. 0 with the
 * result text (malloc'd) and error flag, or -1 with a reason in |err| (the
 * server failed, not the tool). */
int tw_mcp_call(char *const *argv, const char *tool, json_t *arguments, char **text, int *is_error,
                char *err, size_t errlen);

#endif
