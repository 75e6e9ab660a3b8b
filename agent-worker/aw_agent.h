/* aw_agent: the agent loop, with no I/O of its own.
 *
 * The seed's loop: append the user's prompt; up to |max_iterations| times call
 * the model; run every toolUse of its answer through |io->run_tool| and append
 * the toolResults; stop at the first answer that asks for no tool. The model,
 * the tools and cancellation come in through |io|, so tests drive the loop with
 * fakes and the service wires it to Bedrock and the tool-workers.
 *
 * History rules kept here: a failed invocation leaves the history exactly as it
 * was (nothing half-written survives); a new prompt that follows a user turn
 * (e.g. after MaxIterations ended on toolResults) joins that turn, so roles
 * keep alternating as Bedrock requires. */
#ifndef AW_AGENT_H
#define AW_AGENT_H

#include "aw_bedrock.h"

#include <jansson.h>

struct aw_tool_result {
    char *text; /* malloc'd */
    int is_error;
};

struct aw_agent_io {
    /* One model call on |messages|. 0 with |out| filled, or a cm_err code
     * (CM_EUPSTREAM with |err| filled, CM_ECANCELED, CM_ENOMEM). */
    int (*converse)(void *ud, const json_t *messages, struct aw_turn *out,
                    struct aw_model_error *err);
    /* One tool call. Always fills |out| (failures are error results for the model). */
    void (*run_tool)(void *ud, const char *tool_use_id, const char *name, const json_t *input,
                     struct aw_tool_result *out);
    /* 1 when the caller went away; may be NULL. */
    int (*cancelled)(void *ud);
    /* Each tool call before it runs and its result after; may be NULL. The
     * JSON is the toolUse / toolResult block (borrowed). */
    void (*on_tool_use)(void *ud, const json_t *tool_use);
    void (*on_tool_result)(void *ud, const json_t *tool_result);
    void *ud;
};

struct aw_agent_result {
    char *response;       /* malloc'd: the text of every answer of this invocation, the
                           * turns joined by a blank line (what a streaming client saw) */
    char stop_reason[64]; /* EndTurn, ToolUse, MaxTokens, StopSequence, MaxIterations, ... */
    long long input_tokens, output_tokens, total_tokens;
    int iterations; /* model calls made */
};

void aw_agent_result_clear(struct aw_agent_result *r);

/* Runs one invocation on |history| (modified in place). Returns 0, or
 * CM_EUPSTREAM (model failure, |err| filled), CM_ECANCELED, CM_ENOMEM, CM_EINVAL
 * (max_iterations < 1). On failure |history| is restored. */
int aw_agent_run(json_t *history, const char *prompt, int max_iterations,
                 const struct aw_agent_io *io, struct aw_agent_result *res,
                 struct aw_model_error *err);

/* Bedrock's stop reason to the runtime's name: "end_turn" -> "EndTurn". */
void aw_agent_stop_reason(const char *bedrock, char *out, size_t cap);

#endif
