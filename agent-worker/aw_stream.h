/* aw_stream: ConverseStream events -> the assistant turn Converse would return.
 *
 * No I/O: it is fed decoded event-stream frames (cm_evstream) and builds the
 * same {"role":"assistant","content":[...]} message, stop reason and usage as
 * aw_bedrock_parse_response does for Converse, so both paths give identical
 * conversations. Text, toolUse (input fragments joined, parsed at the block's
 * end), reasoningContent (text + signature, or redactedContent), server-side
 * toolResult and citations are kept; unknown events and fields are ignored.
 * In-stream exceptions become typed errors with the status the service models
 * for them (throttlingException -> ThrottlingException, 429).
 *
 * Caps: AW_STREAM_MAX_BLOCKS content blocks; each block's text at most
 * AW_BEDROCK_MAX_RESPONSE bytes. */
#ifndef AW_STREAM_H
#define AW_STREAM_H

#include "aw_bedrock.h"
#include "cm_buf.h"
#include "cm_evstream.h"

#include <jansson.h>

#define AW_STREAM_MAX_BLOCKS 64

/* Called for each text delta as it arrives (for streaming to the client). */
typedef void (*aw_stream_text_fn)(void *ud, int block, const char *text, size_t len);

enum aw_block_kind {
    AW_BLOCK_NONE,
    AW_BLOCK_TEXT,
    AW_BLOCK_REASONING,
    AW_BLOCK_TOOL_USE,
    AW_BLOCK_TOOL_RESULT,
    AW_BLOCK_OTHER
};

struct aw_stream_block {
    enum aw_block_kind kind;
    struct cm_buf text;      /* text, reasoning text, or toolUse input JSON */
    struct cm_buf signature; /* reasoning signature */
    json_t *meta;            /* toolUse/toolResult fields from contentBlockStart */
    json_t *items;           /* toolResult content, or citations of a text block */
    char *redacted;          /* reasoning redactedContent (base64) */
};

struct aw_stream {
    struct aw_stream_block blocks[AW_STREAM_MAX_BLOCKS];
    int max_index; /* highest block index seen, -1 when none */
    char stop_reason[64];
    long long input_tokens, output_tokens, total_tokens;
    int started, stopped, forwarded;
    aw_stream_text_fn on_text;
    void *ud;
};

void aw_stream_init(struct aw_stream *s, aw_stream_text_fn on_text, void *ud);
void aw_stream_cleanup(struct aw_stream *s);

/* One decoded frame. Returns 0, CM_EUPSTREAM (an exception frame; |err| filled)
 * or CM_EINVAL (a malformed event; |err| says which). */
int aw_stream_on_frame(struct aw_stream *s, const struct cm_evs_message *m,
                       struct aw_model_error *err);

/* After the last frame: builds the turn. CM_EINVAL (|err| filled) when the
 * stream ended before messageStop. */
int aw_stream_finish(struct aw_stream *s, struct aw_turn *out, struct aw_model_error *err);

#endif
