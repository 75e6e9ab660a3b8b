#include "cm_log.h"
#include "cm_err.h"
#include "cm_util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 8192
#define CTX_MAX 128

enum cm_log_level cm_log_min_level = CM_LOG_INFO;
static char logger_name[64] = "agentcore";
static int out_fd = 2;

static __thread char ctx_request[CTX_MAX];
static __thread char ctx_session[CTX_MAX];
static __thread char ctx_trace[33], ctx_span[17];

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void cm_log_init(const char *logger, enum cm_log_level level)
{
    if (logger)
        cm_strlcpy(logger_name, logger, sizeof(logger_name));
    cm_log_min_level = level;
}

void cm_log_set_fd(int fd)
{
    out_fd = fd < 0 ? 2 : fd;
}

int cm_log_level_parse(const char *s, enum cm_log_level *out)
{
    if (!strcasecmp(s, "DEBUG"))
        *out = CM_LOG_DEBUG;
    else if (!strcasecmp(s, "INFO"))
        *out = CM_LOG_INFO;
    else if (!strcasecmp(s, "WARN") || !strcasecmp(s, "WARNING"))
        *out = CM_LOG_WARN;
    else if (!strcasecmp(s, "ERROR"))
        *out = CM_LOG_ERROR;
    else
        return CM_EINVAL;
    return 0;
}

void cm_log_set_context(const char *request_id, const char *session_id)
{
    cm_strlcpy(ctx_request, request_id ? request_id : "", CTX_MAX);
    cm_strlcpy(ctx_session, session_id ? session_id : "", CTX_MAX);
    ctx_trace[0] = ctx_span[0] = '\0';
}

void cm_log_set_trace(const char *trace_id, const char *span_id)
{
    cm_strlcpy(ctx_trace, trace_id ? trace_id : "", sizeof(ctx_trace));
    cm_strlcpy(ctx_span, span_id ? span_id : "", sizeof(ctx_span));
}

void cm_log_clear_context(void)
{
    ctx_request[0] = '\0';
    ctx_session[0] = '\0';
    ctx_trace[0] = ctx_span[0] = '\0';
}

const char *cm_log_request_id(void)
{
    return ctx_request[0] ? ctx_request : NULL;
}

const char *cm_log_session_id(void)
{
    return ctx_session[0] ? ctx_session : NULL;
}

/* Appends a JSON string literal; truncates (keeping the quote) instead of
 * overflowing. Control bytes are escaped; other bytes pass through so UTF-8
 * stays as it is. */
static int put_str(char *out, int pos, int cap, const char *s)
{
    static const char hex[] = "0123456789abcdef";

    if (pos > cap - 8)
        return pos; /* no room for even an empty string */
    out[pos++] = '"';
    for (; *s && pos < cap - 8; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '"' || c == '\\') {
            out[pos++] = '\\';
            out[pos++] = (char)c;
        } else if (c == '\n') {
            out[pos++] = '\\';
            out[pos++] = 'n';
        } else if (c == '\r') {
            out[pos++] = '\\';
            out[pos++] = 'r';
        } else if (c == '\t') {
            out[pos++] = '\\';
            out[pos++] = 't';
        } else if (c < 0x20) {
            memcpy(out + pos, "\\u00", 4);
            pos += 4;
            out[pos++] = hex[c >> 4];
            out[pos++] = hex[c & 15];
        } else {
            out[pos++] = (char)c;
        }
    }
    out[pos++] = '"'; /* the loop stops 8 bytes short, so this fits */
    return pos;
}

static int put_raw(char *out, int pos, int cap, const char *s)
{
    while (*s && pos < cap - 1)
        out[pos++] = *s++;
    return pos;
}

/* A field is written whole (value truncated if need be) or not at all, so the
 * line stays valid JSON however long the values are. */
static int put_field(char *out, int pos, int cap, const char *key, const char *val)
{
    if (pos + (int)strlen(key) + 16 > cap)
        return pos;
    pos = put_raw(out, pos, cap, ",");
    pos = put_str(out, pos, cap, key);
    pos = put_raw(out, pos, cap, ":");
    return put_str(out, pos, cap, val);
}

int cm_log_format(char *out, int cap, long long wall_ms, enum cm_log_level level,
                  const char *const *kv, const char *message)
{
    char ts[64];
    struct tm tm;
    time_t secs = (time_t)(wall_ms / 1000);
    int pos = 0;
    int lim = cap - 2; /* the closing brace and newline always fit */

    gmtime_r(&secs, &tm);
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", (tm.tm_year + 1900) % 10000,
             (tm.tm_mon + 1) % 100, tm.tm_mday % 100, tm.tm_hour % 100, tm.tm_min % 100,
             tm.tm_sec % 100, (int)(wall_ms % 1000));
    pos = put_raw(out, pos, lim, "{\"timestamp\":");
    pos = put_str(out, pos, lim, ts);
    pos = put_field(out, pos, lim, "level", level_names[level]);
    pos = put_field(out, pos, lim, "message", message);
    pos = put_field(out, pos, lim, "logger", logger_name);
    if (ctx_request[0])
        pos = put_field(out, pos, lim, "requestId", ctx_request);
    if (ctx_session[0])
        pos = put_field(out, pos, lim, "sessionId", ctx_session);
    if (ctx_trace[0]) {
        pos = put_field(out, pos, lim, "traceId", ctx_trace);
        pos = put_field(out, pos, lim, "spanId", ctx_span);
    }
    for (; kv && kv[0]; kv += 2) {
        if (kv[1])
            pos = put_field(out, pos, lim, kv[0], kv[1]);
    }
    out[pos++] = '}';
    out[pos++] = '\n';
    return pos;
}

void cm_log_write(enum cm_log_level level, const char *const *kv, const char *fmt, ...)
{
    char msg[4096];
    char line[LINE_MAX_BYTES];
    va_list ap;
    int n;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    n = cm_log_format(line, sizeof(line), (long long)cm_wall_ms(), level, kv, msg);
    if (write(out_fd, line, (size_t)n) < 0) {
        /* stderr is gone; there is nowhere left to report it. */
    }
}
