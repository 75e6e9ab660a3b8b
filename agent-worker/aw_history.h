/* aw_history: keeps a conversation valid for Bedrock, with no I/O.
 *
 * Bedrock refuses a whole conversation, on every later call, for one broken
 * message: a toolUse whose toolResult never came (a crash, a cancel, a
 * SIGTERM between the two: the Strands SDK's #3651), a toolResult whose
 * toolUse was trimmed away, an empty text block, two turns of one role in a
 * row, a conversation that starts with the assistant. The loop never writes
 * such a history itself (a failed invocation is rolled back), but a restored
 * one (a file or object store, an older version) may hold one: this repairs it
 * in place before the loop uses it, so a session is never poisoned forever. */
#ifndef AW_HISTORY_H
#define AW_HISTORY_H

#include <jansson.h>
#include <stddef.h>

/* What an interrupted tool call's toolResult says. */
#define AW_HISTORY_INTERRUPTED                                                                     \
    "interrupted: this tool call did not complete (the invocation ended before its result)"

/* Repairs |messages| (a Converse "messages" array) in place:
 * - drops what is not a message (an object with role "user" or "assistant"
 *   and a content array) and content blocks that are empty text;
 * - drops toolResults that answer no toolUse of the assistant turn before;
 * - gives every toolUse without a toolResult an error toolResult saying it was
 *   interrupted, in the user turn that follows (made when missing), so the
 *   model can decide what to do next;
 * - merges consecutive turns of one role, drops turns left empty, and drops
 *   leading assistant turns (a conversation starts with the user).
 * Returns how many repairs were made (0: it was valid), or -1 out of memory
 * (|messages| is then valid still, maybe not fully repaired). |what|, when
 * not NULL, gets a short description of the first repair. */
int aw_history_repair(json_t *messages, char *what, size_t whatlen);

/* 1 when a Bedrock error message says the conversation is too long for the
 * model's context (the substrings the Strands SDKs match). */
int aw_history_is_overflow(const char *message);

/* Makes |messages| smaller after a context overflow, one step per call,
 * never removing messages from |keep_from| on (the invocation's own):
 * 1. the oldest toolResult text over AW_HISTORY_CUT_OVER bytes (in any
 *    message) keeps about its first and last AW_HISTORY_CUT_KEEP bytes
 *    (whole UTF-8 characters) and says what was cut;
 * 2. else the oldest turns go (two messages at least), up to a user turn
 *    that starts a conversation (text, no toolResult), |keep_from| at the
 *    latest.
 * Returns how many messages were removed from the front (the caller shifts
 * its indexes), 0 when only a result was shortened, -1 when nothing more can
 * go. |what| says what was done. */
#define AW_HISTORY_CUT_OVER 500 /* above what a shortened one keeps */
#define AW_HISTORY_CUT_KEEP 200
int aw_history_reduce(json_t *messages, size_t keep_from, char *what, size_t whatlen);

/* ---- the window and the summarizing manager ----
 * The window keeps at most |max| messages: it cuts whole turns from the front,
 * up to a user turn that starts a conversation (text, no toolResult), so no
 * toolResult loses its toolUse. The summarizing manager
 * (CONVERSATION_MANAGER=summarizing) asks the model to summarize what the cut
 * would drop and keeps the summary instead. */

/* How many messages from the front the window drops (0: none; the whole
 * array when no user text turn is left to start from). */
size_t aw_history_cut(const json_t *messages, size_t max);

/* What the summary request asks (the emulator answers it too). */
#define AW_HISTORY_SUMMARY_ASK                                                                     \
    "Summarize the conversation above for your own later use: the user's requests, the facts "     \
    "and decisions, what tools returned, and what is still open. Answer with the summary only, "   \
    "in plain text, and call no tools."
/* The summary prefix kept in the history. */
#define AW_HISTORY_SUMMARY_HEAD "Summary of the earlier conversation:\n"

/* A new messages array asking for a summary of messages[0..cut): copies of
 * them, repaired, then the request in a user turn. NULL out of memory. */
json_t *aw_history_summary_request(const json_t *messages, size_t cut);

/* Replaces messages[0..cut) by |summary|: it becomes the first text block of
 * the first kept message (a user text turn), or the only message when
 * nothing is kept. 0, or -1 out of memory (|messages| unchanged). */
int aw_history_apply_summary(json_t *messages, size_t cut, const char *summary);

#endif
