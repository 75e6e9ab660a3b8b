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

#endif
