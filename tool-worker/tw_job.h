/* tw_job: the work a waiting sandbox receives (TOOL_SANDBOX_WARM).
 *
 * A warm sandbox is bubblewrap already set up around the helper, which waits
 * on its stdin for this message before it confines itself and runs the
 * tool: the helper's own arguments (limits, mode, the tool's argv) and the
 * tool's environment. The tool's input follows on the same stdin, so the
 * helper reads exactly the message and leaves the rest for the tool.
 *
 * Wire form: a 4-byte little-endian length L, then L bytes: a 4-byte
 * little-endian count of arguments A, a 4-byte count of environment entries
 * E, then A + E NUL-terminated strings, nothing after. Counts, not
 * separators: an argument may be empty (sh -c ""). No I/O here. */
#ifndef TW_JOB_H
#define TW_JOB_H

#include <stddef.h>

#define TW_JOB_MAX (2u << 20) /* L at most: what execve would take as arguments */

/* The message with its length prefix, malloc'd, in |*len|. NULL when out of
 * memory or past TW_JOB_MAX. |args| and |env| are NULL-terminated (NULL is
 * an empty list). */
char *tw_job_encode(const char *const *args, const char *const *env, size_t *len);

/* The length in the first 4 bytes of a message. */
size_t tw_job_length(const unsigned char prefix[4]);

/* Decodes the |len| bytes after the prefix, in place: |*args| and |*env|
 * (malloc'd, NULL-terminated) point into |buf|. 0, or -1 when the bytes are
 * not a message or memory ran out (nothing to free then). */
int tw_job_decode(char *buf, size_t len, char ***args, char ***env);

#endif
