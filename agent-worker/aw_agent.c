#include "aw_agent.h"
#include "aw_history.h"
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

static void agent_rollback(struct aw_agent *a)
{
    rollback(a->history, a->start_len, a->joined_at);
    aw_agent_result_clear(&a->res);
}

static void tools_clear(struct aw_agent *a)
{
    json_decref(a->uses);
    json_decref(a->results);
    a->uses = a->results = NULL;
    a->pending = 0;
}

int aw_agent_begin(struct aw_agent *a, json_t *history, const char *prompt, int max_iterations)
{
    memset(a, 0, sizeof(*a));
    a->history = history;
    a->start_len = json_array_size(history);
    a->joined_at = (size_t)-1;
    a->max_iterations = max_iterations;
    if (max_iterations < 1)
        return a->rc = CM_EINVAL;
    a->rc = add_prompt(history, prompt, &a->joined_at);
    if (a->rc)
        agent_rollback(a);
    return a->rc;
}

static json_t *result_block(const char *id, const char *text, int is_error)
{
    return json_pack("{s:{s:s,s:[{s:s}],s:s}}", "toolResult", "toolUseId", id, "content", "text",
                     text ? text : "tool produced no output", "status",
                     is_error ? "error" : "success");
}

/* Collects the toolUse blocks of |assistant|; a block without an id is
 * skipped (nothing could refer to its result), one without a name gets its
 * error result at once. */
static int collect_tools(struct aw_agent *a, const json_t *assistant)
{
    json_t *block;
    size_t i;

    a->uses = json_array();
    a->results = json_array();
    if (!a->uses || !a->results)
        return CM_ENOMEM;
    json_array_foreach(json_object_get(assistant, "content"), i, block)
    {
        json_t *use = json_object_get(block, "toolUse");
        const char *id = json_string_value(json_object_get(use, "toolUseId"));

        if (!use || !id)
            continue;
        if (json_array_append(a->uses, use))
            return CM_ENOMEM;
        if (!json_string_value(json_object_get(use, "name"))) {
            if (json_array_append_new(a->results,
                                      result_block(id, "toolUse without a tool name", 1)))
                return CM_ENOMEM;
        } else {
            if (json_array_append_new(a->results, json_null()))
                return CM_ENOMEM;
            a->pending++;
        }
    }
    return 0;
}

/* Every result is in: the user turn of toolResults, in the model's order. */
static enum aw_agent_next tools_complete(struct aw_agent *a)
{
    json_t *turn = json_pack("{s:s,s:O}", "role", "user", "content", a->results);

    tools_clear(a);
    if (!turn || json_array_append_new(a->history, turn))
        return aw_agent_fail(a, CM_ENOMEM);
    if (a->iteration >= a->max_iterations) {
        /* The model still wanted tools after the last allowed call; the history
         * ends on the toolResults, and the next prompt joins that user turn. */
        cm_strlcpy(a->res.stop_reason, "MaxIterations", sizeof(a->res.stop_reason));
        return AW_NEXT_DONE;
    }
    if ((a->max_total_tokens && a->res.total_tokens >= a->max_total_tokens) ||
        (a->max_output_tokens && a->res.output_tokens >= a->max_output_tokens)) {
        cm_strlcpy(a->res.stop_reason, "TokenBudgetExceeded", sizeof(a->res.stop_reason));
        return AW_NEXT_DONE;
    }
    return AW_NEXT_MODEL;
}

int aw_agent_reduce(struct aw_agent *a, char *what, size_t whatlen)
{
    /* The prompt may have joined the turn before it: that one is ours too. */
    size_t keep = a->start_len - (a->joined_at != (size_t)-1 && a->start_len ? 1 : 0);
    int removed = aw_history_reduce(a->history, keep, what, whatlen);

    if (removed < 0)
        return -1;
    a->start_len -= (size_t)removed; /* rollback still finds where we began */
    return 0;
}

void aw_agent_set_budget(struct aw_agent *a, long long max_total_tokens,
                         long long max_output_tokens)
{
    a->max_total_tokens = max_total_tokens > 0 ? max_total_tokens : 0;
    a->max_output_tokens = max_output_tokens > 0 ? max_output_tokens : 0;
}

/* A turn that max_tokens cut off may end inside a toolUse (its input
 * incomplete): such a call must not run, and a toolUse left in the history
 * without its result would make Bedrock refuse the conversation. Each one
 * becomes a text block that says what happened. 0 or CM_ENOMEM. */
static int cut_off_tools(json_t *message)
{
    json_t *content = json_object_get(message, "content"), *block;
    size_t i;

    json_array_foreach(content, i, block)
    {
        json_t *use = json_object_get(block, "toolUse");
        const char *name = json_string_value(json_object_get(use, "name"));
        char text[200];

        if (!use)
            continue;
        snprintf(text, sizeof(text),
                 "[a call of the tool '%.100s' was cut off by the output token limit "
                 "(max_tokens) and did not run]",
                 name ? name : "?");
        if (json_array_set_new(content, i, json_pack("{s:s}", "text", text)))
            return CM_ENOMEM;
    }
    return 0;
}

enum aw_agent_next aw_agent_on_turn(struct aw_agent *a, struct aw_turn *turn)
{
    a->iteration++;
    a->res.iterations = a->iteration;
    a->res.input_tokens += turn->input_tokens;
    a->res.output_tokens += turn->output_tokens;
    a->res.total_tokens += turn->total_tokens;
    if (!strcmp(turn->stop_reason, "max_tokens") && cut_off_tools(turn->message))
        return aw_agent_fail(a, CM_ENOMEM);
    if (append_text(&a->res, turn->message))
        return aw_agent_fail(a, CM_ENOMEM);
    aw_agent_stop_reason(turn->stop_reason, a->res.stop_reason, sizeof(a->res.stop_reason));
    if (json_array_append(a->history, turn->message))
        return aw_agent_fail(a, CM_ENOMEM);
    if (strcmp(turn->stop_reason, "tool_use"))
        return AW_NEXT_DONE;
    if (collect_tools(a, turn->message))
        return aw_agent_fail(a, CM_ENOMEM);
    return a->pending ? AW_NEXT_TOOLS : tools_complete(a);
}

size_t aw_agent_tool_count(const struct aw_agent *a)
{
    return json_array_size(a->uses);
}

const json_t *aw_agent_tool_use(const struct aw_agent *a, size_t i)
{
    return json_array_get(a->uses, i);
}

int aw_agent_tool_pending(const struct aw_agent *a, size_t i)
{
    return json_is_null(json_array_get(a->results, i));
}

enum aw_agent_next aw_agent_on_tool_result(struct aw_agent *a, size_t i, const char *text,
                                           int is_error, const json_t **block)
{
    const char *id = json_string_value(json_object_get(json_array_get(a->uses, i), "toolUseId"));
    json_t *res;

    if (block)
        *block = NULL;
    if (!id || !aw_agent_tool_pending(a, i))
        return AW_NEXT_WAIT; /* not ours, or already in */
    res = result_block(id, text, is_error);
    if (!res || json_array_set_new(a->results, i, res))
        return aw_agent_fail(a, CM_ENOMEM);
    if (block)
        *block = json_object_get(res, "toolResult");
    a->pending--;
    return a->pending ? AW_NEXT_WAIT : tools_complete(a);
}

enum aw_agent_next aw_agent_fail(struct aw_agent *a, int rc)
{
    tools_clear(a);
    agent_rollback(a);
    a->rc = rc;
    return AW_NEXT_FAILED;
}

void aw_agent_cleanup(struct aw_agent *a)
{
    if (!a)
        return;
    tools_clear(a);
    aw_agent_result_clear(&a->res);
}

/* The synchronous driver: the same steps, one call at a time. */
int aw_agent_run(json_t *history, const char *prompt, int max_iterations,
                 const struct aw_agent_io *io, struct aw_agent_result *res,
                 struct aw_model_error *err)
{
    struct aw_agent a;
    enum aw_agent_next next = AW_NEXT_MODEL;
    int rc;

    memset(res, 0, sizeof(*res));
    memset(err, 0, sizeof(*err));
    rc = aw_agent_begin(&a, history, prompt, max_iterations);
    if (rc)
        return rc;
    for (;;) {
        if (next == AW_NEXT_MODEL) {
            struct aw_turn turn;

            if (io->cancelled && io->cancelled(io->ud)) {
                aw_agent_fail(&a, CM_ECANCELED);
                break;
            }
            rc = io->converse(io->ud, history, &turn, err);
            if (rc) {
                aw_agent_fail(&a, rc);
                break;
            }
            next = aw_agent_on_turn(&a, &turn);
            aw_turn_clear(&turn);
        } else if (next == AW_NEXT_TOOLS) {
            size_t i, n = aw_agent_tool_count(&a);

            for (i = 0; i < n && next != AW_NEXT_FAILED; i++) {
                const json_t *use = aw_agent_tool_use(&a, i), *block;
                struct aw_tool_result tr = {NULL, 1};

                if (io->on_tool_use)
                    io->on_tool_use(io->ud, use);
                if (!aw_agent_tool_pending(&a, i))
                    continue;
                io->run_tool(io->ud, json_string_value(json_object_get(use, "toolUseId")),
                             json_string_value(json_object_get(use, "name")),
                             json_object_get(use, "input"), &tr);
                next = aw_agent_on_tool_result(&a, i, tr.text, tr.is_error, &block);
                free(tr.text);
                if (block && io->on_tool_result)
                    io->on_tool_result(io->ud, block);
            }
            if (next == AW_NEXT_MODEL && io->cancelled && io->cancelled(io->ud)) {
                aw_agent_fail(&a, CM_ECANCELED);
                break;
            }
        } else {
            break;
        }
    }
    if (a.rc) {
        aw_agent_cleanup(&a);
        return a.rc;
    }
    *res = a.res;
    memset(&a.res, 0, sizeof(a.res));
    aw_agent_cleanup(&a);
    return 0;
}
