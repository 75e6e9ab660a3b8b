/* tw_toolio: how a built-in tool program talks to the tool-worker: the
 * tool's JSON input on stdin (capped), one {"status","content"} object on
 * stdout. Shared by the helpers that run inside the sandbox. */
#ifndef TW_TOOLIO_H
#define TW_TOOLIO_H

#include <stddef.h>

#include <jansson.h>

#define TW_TOOLIO_MAX_INPUT (2 * 1024 * 1024)

/* Reads stdin (at most TW_TOOLIO_MAX_INPUT bytes) and parses one JSON
 * object. NULL with a reason in |err| when it is not one. */
json_t *tw_toolio_input(char *err, size_t errlen);

/* Writes the result object. 0, or -1 when stdout failed. */
int tw_toolio_answer(int is_error, const char *text);

/* 1 when |p| is text a tool result can carry (UTF-8, no NUL). */
int tw_text_ok(const char *p, size_t n);

#endif
