/* cm_log: one JSON object per line on stderr, in the shape the Python AgentCore
 * SDK writes (Lambda-style JSON logs):
 *
 *   {"timestamp":"2026-11-24T14:29:56.123Z","level":"INFO","message":"...",
 *    "logger":"agentcore.gateway","requestId":"...","sessionId":"...",
 *    "traceId":"...","spanId":"...", ...extra}
 *
 * requestId/sessionId come from the calling thread's context (cm_log_set_context)
 * and are omitted when unknown. Extra fields are key/value string pairs.
 *
 * The macros test the level before any formatting, so a disabled line costs one
 * comparison. Each line leaves in one write(2), so concurrent threads never
 * interleave inside a line. Never pass secrets: nothing here masks values. */
#ifndef CM_LOG_H
#define CM_LOG_H

enum cm_log_level { CM_LOG_DEBUG = 0, CM_LOG_INFO, CM_LOG_WARN, CM_LOG_ERROR };

extern enum cm_log_level cm_log_min_level;

/* Sets the logger name (copied, up to 63 bytes) and the minimum level. */
void cm_log_init(const char *logger, enum cm_log_level level);
/* Redirects output (tests); -1 restores stderr. */
void cm_log_set_fd(int fd);
/* Parses DEBUG|INFO|WARN|WARNING|ERROR (any case). 0 or CM_EINVAL. */
int cm_log_level_parse(const char *s, enum cm_log_level *out);

/* Thread-local request context; NULL clears a field. Values are copied (capped
 * at 127 bytes). */
void cm_log_set_context(const char *request_id, const char *session_id);
void cm_log_clear_context(void);
/* The W3C trace and span ids (lower-case hex) of what the thread works on,
 * written as "traceId" and "spanId" (CloudWatch joins logs to traces by
 * them). cm_log_set_context clears them: set them after it. */
void cm_log_set_trace(const char *trace_id, const char *span_id);
const char *cm_log_request_id(void);
const char *cm_log_session_id(void);

/* |kv| is NULL or a NULL-terminated list of key, value strings; a NULL value
 * skips its pair. */
void cm_log_write(enum cm_log_level level, const char *const *kv, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Formats one line into |out| (cap |cap|) without writing it; returns its length.
 * Exposed for the unit tests. */
int cm_log_format(char *out, int cap, long long wall_ms, enum cm_log_level level,
                  const char *const *kv, const char *message);

#define CM_LOG_ENABLED(lvl) ((lvl) >= cm_log_min_level)
#define CM_LOGF(lvl, kv, ...)                                                                      \
    do {                                                                                           \
        if (CM_LOG_ENABLED(lvl))                                                                   \
            cm_log_write((lvl), (kv), __VA_ARGS__);                                                \
    } while (0)
#define cm_debug(...) CM_LOGF(CM_LOG_DEBUG, NULL, __VA_ARGS__)
#define cm_info(...) CM_LOGF(CM_LOG_INFO, NULL, __VA_ARGS__)
#define cm_warn(...) CM_LOGF(CM_LOG_WARN, NULL, __VA_ARGS__)
#define cm_error(...) CM_LOGF(CM_LOG_ERROR, NULL, __VA_ARGS__)

#endif
