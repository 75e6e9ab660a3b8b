#define _GNU_SOURCE
#include "tw_mcp.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

enum tw_mcp_kind tw_mcp_message(const char *line, size_t len, json_t **msg, long long *id,
                                json_t **result, json_t **error)
{
    json_t *m = json_loadb(line, len, 0, NULL), *jid, *method;

    *msg = m;
    *id = -1;
    *result = *error = NULL;
    if (!json_is_object(m) || !json_is_string(json_object_get(m, "jsonrpc")) ||
        strcmp(json_string_value(json_object_get(m, "jsonrpc")), "2.0"))
        return TW_MCP_INVALID;
    jid = json_object_get(m, "id");
    method = json_object_get(m, "method");
    if (json_is_string(method))
        return jid && !json_is_null(jid) ? TW_MCP_REQUEST : TW_MCP_NOTIFICATION;
    if (!jid)
        return TW_MCP_INVALID;
    *id = json_is_integer(jid) ? (long long)json_integer_value(jid) : -1;
    *result = json_object_get(m, "result");
    *error = json_object_get(m, "error");
    return *result || json_is_object(*error) ? TW_MCP_RESPONSE : TW_MCP_INVALID;
}

json_t *tw_mcp_reply_to(json_t *request)
{
    const char *method = json_string_value(json_object_get(request, "method"));
    json_t *id = json_object_get(request, "id");

    if (method && !strcmp(method, "ping"))
        return json_pack("{s:s,s:O,s:{}}", "jsonrpc", "2.0", "id", id, "result");
    return json_pack("{s:s,s:O,s:{s:i,s:s}}", "jsonrpc", "2.0", "id", id, "error", "code", -32601,
                     "message", "Method not found: this client offers no capabilities");
}

static int append(char **buf, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int append(char **buf, size_t *len, const char *fmt, ...)
{
    va_list ap;
    char *piece, *grown;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&piece, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    grown = realloc(*buf, *len + (size_t)n + 1);
    if (!grown) {
        free(piece);
        return -1;
    }
    memcpy(grown + *len, piece, (size_t)n + 1);
    *buf = grown;
    *len += (size_t)n;
    free(piece);
    return 0;
}

char *tw_mcp_result_text(json_t *result, int *is_error)
{
    json_t *content = json_object_get(result, "content"), *item, *sc;
    char *out = calloc(1, 1);
    size_t len = 0, i;
    int rc = 0;

    *is_error = json_is_true(json_object_get(result, "isError"));
    if (!out)
        return NULL;
    json_array_foreach(content, i, item)
    {
        const char *type = json_string_value(json_object_get(item, "type"));
        const char *sep = len ? "\n" : "";

        if (type && !strcmp(type, "text") && json_is_string(json_object_get(item, "text")))
            rc |= append(&out, &len, "%s%s", sep, json_string_value(json_object_get(item, "text")));
        else if (type && (!strcmp(type, "image") || !strcmp(type, "audio")))
            rc |= append(&out, &len, "%s[%s %s, %zu bytes of base64 not shown]", sep, type,
                         json_string_value(json_object_get(item, "mimeType"))
                             ? json_string_value(json_object_get(item, "mimeType"))
                             : "",
                         json_string_length(json_object_get(item, "data")));
        else if (type && !strcmp(type, "resource_link"))
            rc |= append(&out, &len, "%s[resource %s]", sep,
                         json_string_value(json_object_get(item, "uri"))
                             ? json_string_value(json_object_get(item, "uri"))
                             : "");
        else if (type && !strcmp(type, "resource")) {
            json_t *r = json_object_get(item, "resource");

            if (json_is_string(json_object_get(r, "text")))
                rc |=
                    append(&out, &len, "%s%s", sep, json_string_value(json_object_get(r, "text")));
            else
                rc |= append(&out, &len, "%s[resource %s not shown]", sep,
                             json_string_value(json_object_get(r, "uri"))
                                 ? json_string_value(json_object_get(r, "uri"))
                                 : "");
        } else {
            rc |= append(&out, &len, "%s[%s content not shown]", sep, type ? type : "unknown");
        }
    }
    if (!len && (sc = json_object_get(result, "structuredContent"))) {
        char *dumped = json_dumps(sc, JSON_COMPACT);

        rc |= dumped ? append(&out, &len, "%s", dumped) : -1;
        free(dumped);
    }
    if (rc) {
        free(out);
        return NULL;
    }
    return out;
}

char *tw_mcp_error_text(json_t *error)
{
    const char *m = json_string_value(json_object_get(error, "message"));
    char *s;

    if (asprintf(&s, "MCP error %lld: %s",
                 (long long)json_integer_value(json_object_get(error, "code")),
                 m ? m : "(no message)") < 0)
        return NULL;
    return s;
}

/* ---- the session with a server process ---- */

struct session {
    pid_t pid;
    int to, from; /* its stdin, its stdout */
    FILE *in;
    char *line;
    size_t cap;
    long long next_id;
};

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int start(struct session *s, char *const *argv, char *err, size_t errlen)
{
    int in[2], out[2];

    memset(s, 0, sizeof(*s));
    s->pid = -1;
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC))
        return fail(err, errlen, "pipe: %s", strerror(errno));
    s->pid = fork();
    if (s->pid < 0)
        return fail(err, errlen, "cannot start the MCP server: %s", strerror(errno));
    if (s->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        execvp(argv[0], argv);
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    s->to = in[1];
    s->from = out[0];
    s->in = fdopen(s->from, "r");
    s->next_id = 1;
    signal(SIGPIPE, SIG_IGN);
    return s->in ? 0 : fail(err, errlen, "out of memory");
}

static void stop(struct session *s)
{
    int status;

    if (s->to > 0)
        close(s->to);
    if (s->in)
        fclose(s->in);
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, &status, 0);
    }
    free(s->line);
}

static int send_msg(struct session *s, json_t *m)
{
    char *text = json_dumps(m, JSON_COMPACT);
    size_t len, off = 0;
    ssize_t n;

    json_decref(m);
    if (!text)
        return -1;
    len = strlen(text);
    text[len++] = '\n'; /* replaces the NUL: the message is one line */
    while (off < len && (n = write(s->to, text + off, len - off)) > 0)
        off += (size_t)n;
    n = errno;
    free(text);
    errno = (int)n; /* the caller tells a server that is gone (EPIPE) from other failures */
    return off == len ? 0 : -1;
}

/* Waits for the response to |id|, answering the server's own requests on
 * the way. Returns the message (the caller decrefs) with |*result| or
 * |*error| borrowed from it, or NULL with |err|. */
static json_t *await(struct session *s, long long id, json_t **result, json_t **error, char *err,
                     size_t errlen)
{
    for (;;) {
        ssize_t n = getline(&s->line, &s->cap, s->in);
        long long got;
        json_t *m;

        if (n < 0) {
            fail(err, errlen, "the MCP server closed its output (it exited or crashed)");
            return NULL;
        }
        if (n > TW_MCP_MAX_LINE) {
            fail(err, errlen, "the MCP server sent a message larger than %d bytes",
                 TW_MCP_MAX_LINE);
            return NULL;
        }
        switch (tw_mcp_message(s->line, (size_t)n, &m, &got, result, error)) {
        case TW_MCP_RESPONSE:
            if (got == id)
                return m;
            break; /* a stale answer: ignore */
        case TW_MCP_REQUEST:
            if (send_msg(s, tw_mcp_reply_to(m))) {
                json_decref(m);
                fail(err, errlen, "cannot write to the MCP server");
                return NULL;
            }
            break;
        default:
            break; /* notifications and log noise on stdout are not ours to answer */
        }
        json_decref(m);
    }
}

static json_t *request(struct session *s, const char *method, json_t *params, json_t **result,
                       char *err, size_t errlen)
{
    long long id = s->next_id++;
    json_t *m, *error = NULL;

    if (send_msg(s, json_pack("{s:s,s:I,s:s,s:o}", "jsonrpc", "2.0", "id", (json_int_t)id, "method",
                              method, "params", params ? params : json_object()))) {
        /* A server that already exited: which of the two ends meets it
         * first is a race, so both say the same. */
        if (errno == EPIPE)
            fail(err, errlen, "the MCP server closed its input (it exited or crashed)");
        else
            fail(err, errlen, "cannot write to the MCP server: %s", strerror(errno));
        return NULL;
    }
    m = await(s, id, result, &error, err, errlen);
    if (m && error) {
        char *text = tw_mcp_error_text(error);

        fail(err, errlen, "%s failed: %s", method, text ? text : "MCP error");
        free(text);
        json_decref(m);
        return NULL;
    }
    return m;
}

static int handshake(struct session *s, char *err, size_t errlen)
{
    json_t *result, *m;

    m = request(s, "initialize",
                json_pack("{s:s,s:{},s:{s:s,s:s}}", "protocolVersion", TW_MCP_PROTOCOL,
                          "capabilities", "clientInfo", "name", "agentcore-c", "version", "0.1"),
                &result, err, errlen);
    if (!m)
        return -1;
    json_decref(m);
    return send_msg(s,
                    json_pack("{s:s,s:s}", "jsonrpc", "2.0", "method", "notifications/initialized"))
               ? fail(err, errlen, "cannot write to the MCP server")
               : 0;
}

int tw_mcp_list(char *const *argv, json_t **tools, char *err, size_t errlen)
{
    struct session s;
    json_t *all = json_array(), *result, *m, *params = NULL, *cursor;
    int page, rc = -1;

    *tools = NULL;
    if (start(&s, argv, err, errlen) || handshake(&s, err, errlen))
        goto out;
    for (page = 0; page < TW_MCP_MAX_PAGES; page++) {
        if (!(m = request(&s, "tools/list", params, &result, err, errlen)))
            goto out;
        params = NULL;
        json_array_extend(all, json_object_get(result, "tools"));
        cursor = json_object_get(result, "nextCursor");
        if (json_is_string(cursor) && json_string_length(cursor))
            params = json_pack("{s:O}", "cursor", cursor);
        json_decref(m);
        if (!params)
            break;
    }
    json_decref(params);
    *tools = json_incref(all);
    rc = 0;
out:
    json_decref(all);
    stop(&s);
    return rc;
}

int tw_mcp_call(char *const *argv, const char *tool, json_t *arguments, char **text, int *is_error,
                char *err, size_t errlen)
{
    struct session s;
    json_t *result, *m;
    int rc = -1;

    *text = NULL;
    if (start(&s, argv, err, errlen) || handshake(&s, err, errlen))
        goto out;
    m = request(&s, "tools/call", json_pack("{s:s,s:O}", "name", tool, "arguments", arguments),
                &result, err, errlen);
    if (!m)
        goto out;
    *text = tw_mcp_result_text(result, is_error);
    json_decref(m);
    rc = *text ? 0 : fail(err, errlen, "out of memory");
out:
    stop(&s);
    return rc;
}
