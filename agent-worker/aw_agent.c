#include "aw_agent.h"
#include "cm_buf.h"
#include "cm_err.h"
#include "cm_util.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

void aw_agent_result_clear(struct aw_agent_result *r)
{
    if (!r)
        return;
    free(r->response);
    memset(r, 0, sizeof(*r));
}

void aw_agent_stop_reason(const char *bedrock, char *out, size_t cap)
{
    size_t o = 0;
    int up = 1;

    for (; *bedrock && o + 1 < cap; bedrock++) {
        if (*bedrock == '_') {
            up = 1;
            continue;
        }
        out[o++] = up ? (char)toupper((unsigned char)*bedrock) : *bedrock;
        up = 0;
    }
    out[o] = '\0';
}

static const char *role_of(const json_t *m)
{
    return json_string_value(json_object_get(m, "role"));
}

/* Appends the prompt as a user turn, or joins it to a trailing user turn. */
static int add_prompt(json_t *history, const char *prompt, size_t *joined_at)
{
    size_t n = json_array_size(history);
    json_t *last = n ? json_array_get(history, n - 1) : NULL;
    json_t *block = json_pack("{s:s}", "text", prompt);

    if (!block)
        return CM_ENOMEM;
    if (last && role_of(last) && !strcmp(role_of(last), "user")) {
        json_t *content = json_object_get(last, "content");

        *joined_at = json_array_size(content);
        return json_array_append_new(content, block) ? CM_ENOMEM : 0;
    }
    return json_array_append_new(history,
                                 json_pack("{s:s,s:[o]}", "role", "user", "content", block))
               ? CM_ENOMEM
               : 0;
}

/* Puts |history| back to |len| messages (and the joined turn back to its size). */
static void rollback(json_t *history, size_t len, size_t joined_at)
{
    while (json_array_size(history) > len)
        json_array_remove(history, json_array_size(history) - 1);
    if (joined_at != (size_t)-1 && len) {
        json_t *content = json_object_get(json_array_get(history, len - 1), "content");

        while (json_array_size(content) > joined_at)
            json_array_remove(content, json_array_size(content) - 1);
    }
}

static char *text_of(const json_t *message)
{
    struct cm_buf b;
    json_t *block;
    size_t i;

    cm_buf_init(&b, AW_BEDROCK_MAX_RESPONSE);
    json_array_foreach(json_object_get(message, "content"), i, block)
    {
        const char *t = json_string_value(json_object_get(block, "text"));

        if (t && cm_buf_addstr(&b, t))
            break;
    }
    return cm_buf_steal(&b);
}

/* Adds a turn's text to the response, after a blank line when both hold text:
 * exactly what a streaming client was shown (aw_service streams the same
 * separator). */
static int append_text(struct aw_agent_result *res, const json_t *message)
{
    char *t = text_of(message), *joined;
    size_t a, b;

    if (!t)
        return CM_ENOMEM;
    if (!res->response || !*res->response || !*t) {
        if (!res->response || !*res->response) {
            free(res->response);
            res->response = t;
        } else {
            free(t);
        }
        return 0;
    }
    a = strlen(res->response);
    b = strlen(t);
    joined = malloc(a + b + 3);
    if (!joined) {
        free(t);
        return CM_ENOMEM;
    }
    memcpy(joined, res->response, a);
    memcpy(joined + a, "\n\n", 2);
    memcpy(joined + a + 2, t, b + 1);
    free(res->response);
    free(t);
    res->response = joined;
    return 0;
}

/* Runs every toolUse of |assistant| and builds the user turn of toolResults. */
static json_t *run_tools(const json_t *assistant, const struct aw_agent_io *io)
{
    json_t *results = json_array(), *block;
    size_t i;

    if (!results)
        return NULL;
    json_array_foreach(json_object_get(assistant, "content"), i, block)
    {
        json_t *use = json_object_get(block, "toolUse");
        const char *id, *name;
        struct aw_tool_result tr = {NULL, 1};
        json_t *res;

        if (!use)
            continue;
        id = json_string_value(json_object_get(use, "toolUseId"));
        name = json_string_value(json_object_get(use, "name"));
        if (!id)
            continue; /* no id: nothing could refer to a result */
        if (io->on_tool_use)
            io->on_tool_use(io->ud, use);
        if (!name) {
            tr.text = strdup("toolUse without a tool name");
        } else {
            io->run_tool(io->ud, id, name, json_object_get(use, "input"), &tr);
        }
        res = json_pack("{s:{s:s,s:[{s:s}],s:s}}", "toolResult", "toolUseId", id, "content", "text",
                        tr.text ? tr.text : "tool produced no output", "status",
                        tr.is_error ? "error" : "success");
        free(tr.text);
        if (res && io->on_tool_result)
            io->on_tool_result(io->ud, json_object_get(res, "toolResult"));
        if (!res || json_array_append_new(results, res)) {
            json_decref(results);
            return NULL;
        }
    }
    return json_pack("{s:s,s:o}", "role", "user", "content", results);
}

int aw_agent_run(json_t *history, const char *prompt, int max_iterations,
                 const struct aw_agent_io *io, struct aw_agent_result *res,
                 struct aw_model_error *err)
{
    size_t start_len = json_array_size(history), joined_at = (size_t)-1;
    int rc, it;

    memset(res, 0, sizeof(*res));
    memset(err, 0, sizeof(*err));
    if (max_iterations < 1)
        return CM_EINVAL;
    rc = add_prompt(history, prompt, &joined_at);
    if (rc)
        goto fail;
    for (it = 1; it <= max_iterations; it++) {
        struct aw_turn turn;
        json_t *results;

        if (io->cancelled && io->cancelled(io->ud)) {
            rc = CM_ECANCELED;
            goto fail;
        }
        rc = io->converse(io->ud, history, &turn, err);
        if (rc)
            goto fail;
        res->iterations = it;
        res->input_tokens += turn.input_tokens;
        res->output_tokens += turn.output_tokens;
        res->total_tokens += turn.total_tokens;
        if (append_text(res, turn.message)) {
            aw_turn_clear(&turn);
            rc = CM_ENOMEM;
            goto fail;
        }
        aw_agent_stop_reason(turn.stop_reason, res->stop_reason, sizeof(res->stop_reason));
        if (json_array_append(history, turn.message)) {
            aw_turn_clear(&turn);
            rc = CM_ENOMEM;
            goto fail;
        }
        if (strcmp(turn.stop_reason, "tool_use")) {
            aw_turn_clear(&turn);
            return 0;
        }
        results = run_tools(turn.message, io);
        aw_turn_clear(&turn);
        if (!results || json_array_append_new(history, results)) {
            rc = CM_ENOMEM;
            goto fail;
        }
        if (io->cancelled && io->cancelled(io->ud)) {
            rc = CM_ECANCELED;
            goto fail;
        }
    }
    /* The model still wanted tools after the last allowed call; the history ends
     * on the toolResults, and the next prompt joins that user turn. */
    cm_strlcpy(res->stop_reason, "MaxIterations", sizeof(res->stop_reason));
    return 0;
fail:
    rollback(history, start_len, joined_at);
    aw_agent_result_clear(res);
    return rc;
}
