/* cm_util: small helpers every component shares: ids, clocks, readiness. */
#ifndef CM_UTIL_H
#define CM_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define CM_UUID_LEN 36 /* without the terminator */

/* Writes a random (version 4) UUID into |out| (at least CM_UUID_LEN + 1 bytes).
 * Returns 0 or CM_EIO. */
int cm_uuid4(char *out);

/* |n| bytes from the kernel's CSPRNG (getrandom(2): no lock, no library
 * state; it answers small requests whole once the pool is initialised).
 * 0, or CM_EIO. */
int cm_random(void *buf, size_t n);

/* Monotonic milliseconds, for durations. */
uint64_t cm_now_ms(void);
/* Wall-clock milliseconds since the epoch. */
uint64_t cm_wall_ms(void);
/* The CLOCK_REALTIME instant |ms| from now, as pthread_cond_timedwait wants. */
struct timespec cm_deadline_ms(long ms);

/* The s6 readiness protocol: if the environment variable NOTIFY_FD names an
 * open descriptor, write "<port>\n" to it and close it. s6-supervise takes the
 * newline as "ready"; tests read the bound port from the same line. */
void cm_notify_ready(int port);

/* Copies at most |cap|-1 bytes of |src| and terminates; returns strlen(dst). */
size_t cm_strlcpy(char *dst, const char *src, size_t cap);

/* Reads a whole file of at most |cap| bytes into a malloc'd, NUL-terminated
 * string (its length in |*len| when non-NULL). NULL if it cannot be read or
 * is larger than |cap|. */
char *cm_read_file(const char *path, size_t cap, size_t *len);

/* 1 when the |n| bytes at |s| are well-formed UTF-8 (no overlongs, no
 * surrogates, nothing past U+10FFFF), 0 otherwise. */
int cm_utf8_valid(const char *s, size_t n);

#endif
