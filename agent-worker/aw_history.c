/* The repairs run in passes, each leaving the array more regular for the
 * next: shape (messages and blocks), pairing (toolUse with toolResult), then
 * roles. Pairing works turn by turn on ids, since Bedrock matches a
 * toolResult to the toolUse of the assistant turn right before it. */
#include "aw_history.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fix {
    int n;
    char *what;
    size_t len;
};

static void note(struct fix *f, const char *fmt, ...)
{
    va_list ap;

    if (f->n++ == 0 && f->what && f->len) {
        va_start(ap, fmt);
        vsnprintf(f->what, f->len, fmt, ap);
        va_end(ap);
    }
}

static const char *role_of(const json_t *m)
{
    const char *r = json_string_value(json_object_get(m, "role"));

    return r && (!strcmp(r, "user") || !strcmp(r, "assistant")) ? r : NULL;
}

static int blank(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r')
            return 0;
    return 1;
}

/* Pass 1: messages and blocks of the right shape; empty text removed. */
static void shape(json_t *messages, struct fix *f)
{
    size_t i = 0, k;

    while (i < json_array_size(messages)) {
        json_t *m = json_array_get(messages, i), *content = json_object_get(m, "content");

        if (!role_of(m) || !json_is_array(content)) {
            note(f, "message %zu is not a user or assistant turn", i);
            json_array_remove(messages, i);
            continue;
        }
        for (k = 0; k < json_array_size(content);) {
            json_t *b = json_array_get(content, k), *t = json_object_get(b, "text");

            if (!json_is_object(b) || json_object_size(b) == 0 ||
                (t && (!json_is_string(t) || blank(json_string_value(t))))) {
                note(f, "message %zu: empty content block removed", i);
                json_array_remove(content, k);
                continue;
            }
            k++;
        }
        i++;
    }
}

/* The toolUseId of a |kind| block ("toolUse" or "toolResult"), or NULL. */
static const char *id_of(const json_t *block, const char *kind)
{
    return json_string_value(json_object_get(json_object_get(block, kind), "toolUseId"));
}

/* 1 when |message| holds a |kind| block for |id|. */
static int holds(const json_t *message, const char *kind, const char *id)
{
    json_t *b;
    size_t k;

    if (!message || !id)
        return 0;
    json_array_foreach(json_object_get(message, "content"), k, b)
    {
        const char *x = id_of(b, kind);

        if (x && !strcmp(x, id))
            return 1;
    }
    return 0;
}

/* Pass 2: toolResults answer the assistant turn before; every toolUse has
 * one. Runs before roles are merged: a toolResult is matched to the turn it
 * follows as the history stands. */
static int pair(json_t *messages, struct fix *f)
{
    size_t i, k;

    for (i = 0; i < json_array_size(messages); i++) {
        json_t *m = json_array_get(messages, i), *prev = i ? json_array_get(messages, i - 1) : NULL;
        json_t *content = json_object_get(m, "content");

        if (strcmp(role_of(m), "user"))
            continue;
        if (prev && strcmp(role_of(prev), "assistant"))
            prev = NULL;
        for (k = 0; k < json_array_size(content);) {
            const char *r = id_of(json_array_get(content, k), "toolResult");

            if (json_object_get(json_array_get(content, k), "toolResult") &&
                !holds(prev, "toolUse", r)) {
                note(f, "message %zu: a toolResult answering no toolUse removed", i);
                json_array_remove(content, k);
                continue;
            }
            k++;
        }
    }
    for (i = 0; i < json_array_size(messages); i++) {
        json_t *m = json_array_get(messages, i), *next, *b;
        size_t at = 0;

        if (strcmp(role_of(m), "assistant"))
            continue;
        next = i + 1 < json_array_size(messages) ? json_array_get(messages, i + 1) : NULL;
        if (next && strcmp(role_of(next), "user"))
            next = NULL;
        json_array_foreach(json_object_get(m, "content"), k, b)
        {
            const char *id = id_of(b, "toolUse");
            json_t *res;

            if (!id || holds(next, "toolResult", id))
                continue;
            if (!next) {
                next = json_pack("{s:s,s:[]}", "role", "user", "content");
                if (!next || json_array_insert_new(messages, i + 1, next))
                    return -1;
            }
            res = json_pack("{s:{s:s,s:[{s:s}],s:s}}", "toolResult", "toolUseId", id, "content",
                            "text", AW_HISTORY_INTERRUPTED, "status", "error");
            /* Results first, in the order of the uses, as the loop writes them. */
            if (!res || json_array_insert_new(json_object_get(next, "content"), at++, res))
                return -1;
            note(f, "message %zu: toolUse %s had no toolResult (interrupted)", i, id);
        }
    }
    return 0;
}

/* Removes every toolResult block of |content|; 1 when there was one. */
static int strip_results(json_t *content)
{
    size_t k = 0;
    int any = 0;

    while (k < json_array_size(content)) {
        if (json_object_get(json_array_get(content, k), "toolResult")) {
            json_array_remove(content, k);
            any = 1;
        } else {
            k++;
        }
    }
    return any;
}

/* Pass 3: no empty turns, alternating roles, the user first. */
static void roles(json_t *messages, struct fix *f)
{
    size_t i = 0;

    while (i < json_array_size(messages)) {
        json_t *m = json_array_get(messages, i);

        if (json_array_size(json_object_get(m, "content")) == 0) {
            note(f, "message %zu: empty turn removed", i);
            json_array_remove(messages, i);
            continue;
        }
        if (i == 0 && strcmp(role_of(m), "user")) {
            note(f, "a leading assistant turn removed");
            json_array_remove(messages, 0);
            continue;
        }
        if (i == 0 && strip_results(json_object_get(m, "content"))) {
            /* Their toolUse went with a removed turn. */
            note(f, "toolResults at the start of the conversation removed");
            continue;
        }
        if (i > 0 && !strcmp(role_of(m), role_of(json_array_get(messages, i - 1)))) {
            json_t *into = json_object_get(json_array_get(messages, i - 1), "content");

            note(f, "messages %zu and %zu of one role merged", i - 1, i);
            json_array_extend(into, json_object_get(m, "content"));
            json_array_remove(messages, i);
            continue;
        }
        i++;
    }
}

int aw_history_repair(json_t *messages, char *what, size_t whatlen)
{
    struct fix f = {0, what, whatlen};
    int rounds;

    if (what && whatlen)
        what[0] = '\0';
    if (!json_is_array(messages))
        return -1;
    /* One round settles every case the tests know; a second proves nothing
     * changes any more (the third is a bound, not a need). */
    for (rounds = 0; rounds < 3; rounds++) {
        int before = f.n;

        shape(messages, &f);
        if (pair(messages, &f))
            return -1;
        roles(messages, &f);
        if (f.n == before)
            break;
    }
    return f.n;
}

int aw_history_is_overflow(const char *message)
{
    static const char *const says[] = {
        "Input is too long for requested model",
        "input length and `max_tokens` exceed context limit",
        "too many total text bytes",
        "prompt is too long",
    };
    size_t i;

    for (i = 0; message && i < sizeof(says) / sizeof(says[0]); i++)
        if (strstr(message, says[i]))
            return 1;
    return 0;
}

/* Shortens the first long text of a toolResult in |m|; 1 when it did. */
static int shorten_result(json_t *m, char *what, size_t whatlen, size_t index)
{
    json_t *b, *c;
    size_t k, j;

    json_array_foreach(json_object_get(m, "content"), k, b)
    {
        json_array_foreach(json_object_get(json_object_get(b, "toolResult"), "content"), j, c)
        {
            const char *t = json_string_value(json_object_get(c, "text"));
            size_t n = t ? strlen(t) : 0, cut;
            char *out;

            size_t head = AW_HISTORY_CUT_KEEP, tail = n - AW_HISTORY_CUT_KEEP;

            if (n <= AW_HISTORY_CUT_OVER)
                continue;
            /* Cut between characters: never inside a UTF-8 sequence. */
            while (head > 0 && ((unsigned char)t[head] & 0xC0) == 0x80)
                head--;
            while (tail < n && ((unsigned char)t[tail] & 0xC0) == 0x80)
                tail++;
            cut = tail - head;
            out = malloc(n + 64);
            if (!out)
                return -1;
            snprintf(out, n + 64, "%.*s... [truncated: %zu bytes removed] ...%s", (int)head, t, cut,
                     t + tail);
            if (json_object_set_new(c, "text", json_string(out))) {
                free(out);
                return -1;
            }
            free(out);
            snprintf(what, whatlen, "shortened a tool result of message %zu by %zu bytes", index,
                     cut);
            return 1;
        }
    }
    return 0;
}

static int starts_conversation(const json_t *m)
{
    json_t *b;
    size_t k;
    int text = 0;

    if (strcmp(role_of(m) ? role_of(m) : "", "user"))
        return 0;
    json_array_foreach(json_object_get(m, "content"), k, b)
    {
        if (json_object_get(b, "toolResult"))
            return 0;
        text |= json_object_get(b, "text") != NULL;
    }
    return text;
}

int aw_history_reduce(json_t *messages, size_t keep_from, char *what, size_t whatlen)
{
    size_t n = json_array_size(messages), i, cut;
    char dummy[8];

    if (!what || !whatlen)
        what = dummy, whatlen = sizeof(dummy);
    what[0] = '\0';
    if (keep_from > n)
        keep_from = n;
    /* Results are shortened wherever they are, the current turn's too (a
     * rollback removes those messages whole). */
    for (i = 0; i < n; i++) {
        int rc = shorten_result(json_array_get(messages, i), what, whatlen, i);

        if (rc)
            return rc < 0 ? -1 : 0;
    }
    /* Drop the oldest turns: cut at the first conversation start after the
     * first two messages (one exchange at least goes), at |keep_from| at
     * the latest. */
    for (cut = 2; cut <= keep_from && cut < n; cut++)
        if (starts_conversation(json_array_get(messages, cut)))
            break;
    if (cut > keep_from || cut >= n) {
        snprintf(what, whatlen, "nothing left to remove before the current turn");
        return -1;
    }
    for (i = 0; i < cut; i++)
        json_array_remove(messages, 0);
    snprintf(what, whatlen, "removed the %zu oldest messages", cut);
    return (int)cut;
}

/* ---- the window and the summarizing manager ---- */

size_t aw_history_cut(const json_t *messages, size_t max)
{
    size_t n = json_array_size(messages), cut;

    if (n <= max)
        return 0;
    for (cut = n - max; cut < n && !starts_conversation(json_array_get(messages, cut)); cut++)
        ;
    return cut;
}

json_t *aw_history_summary_request(const json_t *messages, size_t cut)
{
    json_t *req = json_array(), *ask;
    size_t i;

    if (!req)
        return NULL;
    for (i = 0; i < cut && i < json_array_size(messages); i++)
        if (json_array_append_new(req, json_deep_copy(json_array_get(messages, i)))) {
            json_decref(req);
            return NULL;
        }
    ask = json_pack("{s:s,s:[{s:s}]}", "role", "user", "content", "text", AW_HISTORY_SUMMARY_ASK);
    if (json_array_append_new(req, ask) || aw_history_repair(req, NULL, 0) < 0) {
        json_decref(req);
        return NULL;
    }
    return req; /* the repair merged the request into a trailing user turn, if any */
}

int aw_history_apply_summary(json_t *messages, size_t cut, const char *summary)
{
    size_t n = json_array_size(messages), len = strlen(AW_HISTORY_SUMMARY_HEAD) + strlen(summary);
    char *text = malloc(len + 1);
    json_t *block;

    if (!text)
        return -1;
    snprintf(text, len + 1, "%s%s", AW_HISTORY_SUMMARY_HEAD, summary);
    block = json_pack("{s:s}", "text", text);
    free(text);
    if (!block)
        return -1;
    if (cut >= n) {
        json_t *only = json_pack("{s:s,s:[o]}", "role", "user", "content", block);

        if (!only)
            return -1;
        json_array_clear(messages);
        return json_array_append_new(messages, only) ? -1 : 0;
    }
    if (json_array_insert_new(json_object_get(json_array_get(messages, cut), "content"), 0, block))
        return -1;
    while (cut--)
        json_array_remove(messages, 0);
    return 0;
}
