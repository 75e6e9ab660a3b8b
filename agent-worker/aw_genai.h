/* aw_genai: Bedrock Converse messages in the OpenTelemetry GenAI form, for
 * the content a chat span may carry (opt-in: OTEL_INSTRUMENTATION_GENAI_
 * CAPTURE_MESSAGE_CONTENT, as the OpenTelemetry GenAI instrumentations do).
 *
 * The conventions' message shape is {"role", "parts": [...]} with parts
 * {"type":"text","content"}, {"type":"tool_call","id","name","arguments"},
 * {"type":"tool_call_response","id","response"}, {"type":"reasoning",
 * "content"}; an output message adds "finish_reason". A user turn made only
 * of tool results becomes role "tool". Binary blocks (images, documents,
 * videos) become a part naming their type and nothing else: no bytes leave.
 * No I/O; unit-tested (test_aw_genai). */
#ifndef AW_GENAI_H
#define AW_GENAI_H

#include <jansson.h>
#include <stddef.h>

/* The conventions' finish reason for a Bedrock stopReason ("end_turn" ->
 * "stop", "tool_use" -> "tool_call", "max_tokens" -> "length", the
 * guardrail and content filters -> "content_filter"; others as they are). */
const char *aw_genai_finish_reason(const char *stop_reason);

/* A new array of |messages| (Bedrock's, borrowed) in the GenAI form; NULL
 * only when out of memory. */
json_t *aw_genai_input(const json_t *messages);
/* A new one-element array: the assistant |message| with its finish reason. */
json_t *aw_genai_output(const json_t *message, const char *stop_reason);

/* |v| as compact JSON text of at most |cap| bytes (malloc'd): a longer
 * text is cut there (as OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT cuts attribute
 * values), never inside a UTF-8 sequence. NULL when out of memory. */
char *aw_genai_dump(const json_t *v, size_t cap);

#endif
