/* aw_session: conversations per session id, held in memory, bounded four ways.
 * With a backing store (aw_store: SESSION_STORE=file or s3) this is its
 * cache and the keeper of each session's turn: an evicted session is read
 * again from the store, and each session remembers the store version it
 * holds (aw_session_version) so a cached one is only revalidated.
 *
 * - At most |max_sessions| sessions. Creating one more evicts the least
 *   recently used session that no invocation holds; if every session is held,
 *   acquire fails (the caller answers RESOURCE_EXHAUSTED).
 * - At most |max_messages| messages per session. On release the oldest turns
 *   are dropped, whole: the history always starts with a user message that
 *   carries text (never with an orphan toolResult), so Bedrock accepts it.
 * - At most |max_bytes| of conversations in all (their compact JSON size,
 *   counted on release): past it, the least recently used idle sessions go.
 * - A session idle longer than |ttl_ms| goes, found when the store is next
 *   used (no timer: an idle process stays asleep).
 * Each eviction is counted and logged (one INFO line per sweep).
 *
 * A session is held by one invocation at a time: acquire blocks while another
 * invocation of the same session runs, so turns never interleave. Sessions of
 * different ids never wait for each other beyond a short map lookup. */
#ifndef AW_SESSION_H
#define AW_SESSION_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define AW_SESSION_ID_MAX 256

struct aw_sessions;
struct aw_session;

struct aw_sessions *aw_sessions_new(size_t max_sessions, size_t max_messages);
/* The byte cap and the idle lifetime (0: none for either); |now| (NULL: the
 * monotonic clock in ms) lets tests move time. Before any acquire. */
void aw_sessions_set_limits(struct aw_sessions *s, size_t max_bytes, uint64_t ttl_ms,
                            uint64_t (*now)(void));

/* All sessions must be released. NULL is fine. */
void aw_sessions_free(struct aw_sessions *s);

/* Finds or creates session |id| (1..AW_SESSION_ID_MAX bytes) and holds it.
 * Returns NULL when the id is invalid, memory is short, or every slot is held. */
struct aw_session *aw_sessions_acquire(struct aw_sessions *s, const char *id);
/* The held session's messages (Bedrock format), borrowed; the holder may modify it. */
json_t *aw_session_messages(struct aw_session *sess);
/* The held session's id, and its version in the backing store (aw_store;
 * "" when it has none yet). set_version copies (NULL or "": none); -1 out of
 * memory. */
const char *aw_session_id(const struct aw_session *sess);
const char *aw_session_version(const struct aw_session *sess);
int aw_session_set_version(struct aw_session *sess, const char *version);
/* The window: messages a session keeps after each invocation. */
size_t aw_sessions_window(const struct aw_sessions *s);
/* Trims the history to the cap and lets the next invocation in. */
void aw_sessions_release(struct aw_sessions *s, struct aw_session *sess);

/* ---- the same without blocking, for the event loop ----
 * Use either the blocking calls above or these on one aw_sessions, never both;
 * these run on one thread (the loop). */
struct aw_session_waiter {
    struct aw_session_waiter *next, *prev;
    struct aw_session *sess; /* set while queued */
    /* Its turn came: the session is now held by this waiter. */
    void (*ready)(struct aw_session_waiter *w, struct aw_session *sess);
};

/* 0 with |*out| held; 1 when another invocation holds it: |w| is queued and
 * its |ready| runs when the turn passes to it (in arrival order); -1 when the
 * id is invalid, memory is short or every session slot is held. */
int aw_sessions_acquire_async(struct aw_sessions *s, const char *id, struct aw_session_waiter *w,
                              struct aw_session **out);
/* Leaves the queue (timed out, cancelled). No-op when not queued. */
void aw_sessions_cancel_wait(struct aw_sessions *s, struct aw_session_waiter *w);
/* Trims the history and hands the session to the next waiter, if any (its
 * |ready| runs before this returns). */
void aw_sessions_release_async(struct aw_sessions *s, struct aw_session *sess);

/* Sessions held, bytes of their conversations, sessions evicted so far. */
struct aw_sessions_stats {
    size_t count, bytes, evicted;
};
void aw_sessions_stats(struct aw_sessions *s, struct aw_sessions_stats *out);

/* The trimming rule on its own (unit-tested): drops whole turns from the front
 * of |messages| until at most |max| remain and the first is a user text turn. */
void aw_session_trim(json_t *messages, size_t max);

#endif
