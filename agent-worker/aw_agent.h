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
    char stop_reason[64]; /* EndTurn, MaxTokens, StopSequence, MaxIterations,
                           * TokenBudgetExceeded, GuardrailIntervened, ... */
    long long input_tokens, output_tokens, total_tokens;
    int iterations; /* model calls made */
};

void aw_agent_result_clear(struct aw_agent_result *r);

/* ---- the loop as a step function (no I/O) ----
 *
 * nghttp2-style: the caller feeds events (a model turn arrived, a tool result
 * arrived, a failure) and is told what to do next; it owns all I/O, so an
 * invocation is this small struct, not a thread. Tool results may arrive in
 * any order: they are slotted by index and appended in the order the model
 * asked for them. */
enum aw_agent_next {
    AW_NEXT_MODEL,  /* call the model on the history */
    AW_NEXT_TOOLS,  /* run the tools aw_agent_tool_use() lists */
    AW_NEXT_WAIT,   /* tool results still outstanding */
    AW_NEXT_DONE,   /* |res| holds the answer */
    AW_NEXT_FAILED, /* |rc| says why; the history is back as it was */
};

struct aw_agent {
    json_t *history; /* borrowed: the session's messages */
    size_t start_len, joined_at;
    int max_iterations, iteration;
    long long max_total_tokens, max_output_tokens; /* budgets, 0: none */
    struct aw_agent_result res;
    json_t *uses, *results; /* the current turn's toolUse blocks and their result slots */
    size_t pending;
    int rc;
};

/* Adds the prompt. 0 (next: AW_NEXT_MODEL), CM_EINVAL (max_iterations < 1) or
 * CM_ENOMEM. */
int aw_agent_begin(struct aw_agent *a, json_t *history, const char *prompt, int max_iterations);
/* After a context overflow: makes the history smaller by one step
 * (aw_history_reduce), never touching this invocation's own messages.
 * 0 when the model may be called again, -1 when nothing more can go; |what|
 * says what was done. */
int aw_agent_reduce(struct aw_agent *a, char *what, size_t whatlen);
/* Token budgets of this invocation (0: none), after aw_agent_begin. Once a
 * turn brings the invocation's totals to one, the loop makes no further model
 * call: the stop reason is TokenBudgetExceeded (tools the last turn asked for
 * still run, so the history ends on their results, as with MaxIterations). */
void aw_agent_set_budget(struct aw_agent *a, long long max_total_tokens,
                         long long max_output_tokens);
/* A model turn arrived (|turn->message| is referenced, not taken; a turn cut
 * off by max_tokens has its toolUse blocks, incomplete, replaced in place by
 * a text block saying so: they never run and the history stays valid). */
enum aw_agent_next aw_agent_on_turn(struct aw_agent *a, struct aw_turn *turn);
/* The toolUse blocks of the current turn (borrowed), in the model's order. */
size_t aw_agent_tool_count(const struct aw_agent *a);
const json_t *aw_agent_tool_use(const struct aw_agent *a, size_t i);
/* 1 while tool |i| still needs running (0: it got its result already, e.g. a
 * toolUse without a name). */
int aw_agent_tool_pending(const struct aw_agent *a, size_t i);
/* Tool |i| finished; |text| is copied. |*block| (may be NULL) is set to the
 * toolResult block (borrowed) for streaming. AW_NEXT_WAIT until the last one. */
enum aw_agent_next aw_agent_on_tool_result(struct aw_agent *a, size_t i, const char *text,
                                           int is_error, const json_t **block);
/* Abandons the invocation with |rc| (model failure, cancellation): the history
 * is restored. Returns AW_NEXT_FAILED. */
enum aw_agent_next aw_agent_fail(struct aw_agent *a, int rc);
void aw_agent_cleanup(struct aw_agent *a);

/* Runs one invocation on |history| (modified in place) with blocking |io|,
 * through the step functions above (tests and tools use it). Returns 0, or
 * CM_EUPSTREAM (model failure, |err| filled), CM_ECANCELED, CM_ENOMEM, CM_EINVAL
 * (max_iterations < 1). On failure |history| is restored. */
int aw_agent_run(json_t *history, const char *prompt, int max_iterations,
                 const struct aw_agent_io *io, struct aw_agent_result *res,
                 struct aw_model_error *err);

/* Bedrock's stop reason to the runtime's name: "end_turn" -> "EndTurn". */
void aw_agent_stop_reason(const char *bedrock, char *out, size_t cap);

#endif
