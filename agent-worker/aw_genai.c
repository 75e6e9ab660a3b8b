/* Converse content blocks to GenAI parts. Strings are shared with the
 * history (json_incref), not copied: the span is packed and the tree freed
 * right after. */
#include "aw_genai.h"

#include <stdlib.h>
#include <string.h>

const char *aw_genai_finish_reason(const char *r)
{
    static const char *const map[][2] = {
        {"end_turn", "stop"},
        {"stop_sequence", "stop"},
        {"tool_use", "tool_call"},
        {"max_tokens", "length"},
        {"model_context_window_exceeded", "length"},
        {"guardrail_intervened", "content_filter"},
        {"content_filtered", "content_filter"},
    };
    size_t i;

    if (!r)
        return "";
    for (i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (!strcmp(r, map[i][0]))
            return map[i][1];
    return r;
}

/* The text of a toolResult's content: its text blocks joined, or its JSON
 * blocks as they are. */
static json_t *tool_response(const json_t *content)
{
    json_t *out = NULL, *b;
    size_t i;

    if (!json_is_array(content))
        return json_null();
    if (json_array_size(content) == 1 && json_object_get(json_array_get(content, 0), "json"))
        return json_incref(json_object_get(json_array_get(content, 0), "json"));
    json_array_foreach(content, i, b)
    {
        const char *t = json_string_value(json_object_get(b, "text"));

        if (!t)
            continue;
        if (!out) {
            out = json_string(t);
        } else {
            size_t a = json_string_length(out), n = strlen(t);
            char *joined = malloc(a + n + 2);

            if (!joined)
                break;
            memcpy(joined, json_string_value(out), a);
            joined[a] = '\n';
            memcpy(joined + a + 1, t, n + 1);
            json_decref(out);
            out = json_stringn(joined, a + n + 1);
            free(joined);
        }
    }
    return out ? out : json_null();
}

static json_t *part(const json_t *block)
{
    const char *key;
    json_t *v;

    json_object_foreach((json_t *)block, key, v)
    {
        if (!strcmp(key, "text"))
            return json_pack("{s:s,s:O}", "type", "text", "content", v);
        if (!strcmp(key, "toolUse"))
            return json_pack("{s:s,s:O?,s:O?,s:O?}", "type", "tool_call", "id",
                             json_object_get(v, "toolUseId"), "name", json_object_get(v, "name"),
                             "arguments", json_object_get(v, "input"));
        if (!strcmp(key, "toolResult"))
            return json_pack("{s:s,s:O?,s:o}", "type", "tool_call_response", "id",
                             json_object_get(v, "toolUseId"), "response",
                             tool_response(json_object_get(v, "content")));
        if (!strcmp(key, "reasoningContent")) {
            json_t *t = json_object_get(json_object_get(v, "reasoningText"), "text");

            return json_pack("{s:s,s:O?}", "type", "reasoning", "content", t);
        }
        /* image, document, video, cachePoint, guardContent...: named only */
        return json_pack("{s:s}", "type", key);
    }
    return NULL;
}

static json_t *message(const json_t *m)
{
    const char *role = json_string_value(json_object_get(m, "role"));
    json_t *parts = json_array(), *content = json_object_get(m, "content"), *b, *p;
    size_t i;
    int only_results = json_array_size(content) > 0;

    if (!parts)
        return NULL;
    json_array_foreach(content, i, b)
    {
        only_results &= json_object_get(b, "toolResult") != NULL;
        if ((p = part(b)))
            json_array_append_new(parts, p);
    }
    return json_pack("{s:s,s:o}", "role",
                     only_results && role && !strcmp(role, "user") ? "tool"
                     : role                                        ? role
                                                                   : "user",
                     "parts", parts);
}

json_t *aw_genai_input(const json_t *messages)
{
    json_t *out = json_array(), *m, *g;
    size_t i;

    if (!out)
        return NULL;
    json_array_foreach(messages, i, m)
    {
        if (!(g = message(m)) || json_array_append_new(out, g)) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

json_t *aw_genai_output(const json_t *msg, const char *stop_reason)
{
    json_t *g = msg ? message(msg) : json_pack("{s:s,s:[]}", "role", "assistant", "parts");

    if (!g)
        return NULL;
    json_object_set_new(g, "finish_reason", json_string(aw_genai_finish_reason(stop_reason)));
    return json_pack("[o]", g);
}

char *aw_genai_dump(const json_t *v, size_t cap)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    size_t n;

    if (!s)
        return NULL;
    n = strlen(s);
    if (n > cap) {
        n = cap;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--; /* s[n] continues a sequence: cut before its lead byte */
        s[n] = '\0';
    }
    return s;
}
