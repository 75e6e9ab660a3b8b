/* aw_idem: the answers of finished invocations by request id, for a while,
 * so a client that retries a request it never got the answer of (the
 * connection broke, a proxy retried) gets that answer instead of a second
 * run that would add the turn to its conversation twice. No I/O, one thread.
 *
 * Bounded three ways: entries, bytes of answers, and age (the window); the
 * oldest go first. An answer is returned only to a request of the same
 * session. */
#ifndef AW_IDEM_H
#define AW_IDEM_H

#include <stddef.h>
#include <stdint.h>

struct aw_idem;

/* NULL when out of memory. |window_ms| 0 keeps nothing. */
struct aw_idem *aw_idem_new(size_t max_entries, size_t max_bytes, uint64_t window_ms);
void aw_idem_free(struct aw_idem *d);

/* Keeps a copy of |data| (a packed answer) for |key| of |session|, replacing
 * an older one. 0, or -1 (out of memory, or larger than the byte cap: not
 * kept). */
int aw_idem_put(struct aw_idem *d, const char *key, const char *session, const void *data,
                size_t len, uint64_t now_ms);
/* The answer kept for |key| of |session| and not older than the window
 * (borrowed until the next put or free), or NULL. */
const void *aw_idem_get(struct aw_idem *d, const char *key, const char *session, size_t *len,
                        uint64_t now_ms);
size_t aw_idem_count(const struct aw_idem *d);

#endif
