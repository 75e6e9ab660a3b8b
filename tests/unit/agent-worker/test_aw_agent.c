/* The agent loop driven by a scripted fake model and fake tools. */
#include "aw_agent.h"
#include "cm_err.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* The fake model answers from a script: each entry is "text" or "tool:NAME" or
 * "fail"; the last entry repeats. */
struct fake {
    const char *const *script;
    int calls, tool_calls, cancel_after_calls;
    char last_tool_input[256];
};

static int fake_converse(void *ud, const json_t *messages, struct aw_turn *out,
                         struct aw_model_error *err)
{
    struct fake *f = ud;
    const char *step;
    int i = 0;

    (void)messages;
    while (f->script[i + 1] && i < f->calls)
        i++;
    step = f->script[i];
    f->calls++;
    memset(out, 0, sizeof(*out));
    if (!strcmp(step, "fail")) {
        err->http_status = 429;
        snprintf(err->type, sizeof(err->type), "ThrottlingException");
        snprintf(err->message, sizeof(err->message), "slow down");
        return CM_EUPSTREAM;
    }
    out->input_tokens = 10;
    out->output_tokens = 5;
    out->total_tokens = 15;
    if (!strncmp(step, "tool:", 5)) {
        char id[32];

        snprintf(id, sizeof(id), "tu_%d", f->calls);
        out->message = json_pack("{s:s,s:[{s:s},{s:{s:s,s:s,s:{s:i}}}]}", "role", "assistant",
                                 "content", "text", "thinking", "toolUse", "toolUseId", id, "name",
                                 step + 5, "input", "x", f->calls);
        snprintf(out->stop_reason, sizeof(out->stop_reason), "tool_use");
    } else {
        out->message = json_pack("{s:s,s:[{s:s}]}", "role", "assistant", "content", "text", step);
        snprintf(out->stop_reason, sizeof(out->stop_reason), "%s",
                 !strcmp(step, "cut") ? "max_tokens" : "end_turn");
    }
    return 0;
}

static void fake_tool(void *ud, const char *id, const char *name, const json_t *input,
                      struct aw_tool_result *out)
{
    struct fake *f = ud;
    char *s = json_dumps(input, JSON_COMPACT);

    f->tool_calls++;
    snprintf(f->last_tool_input, sizeof(f->last_tool_input), "%s", s);
    free(s);
    out->is_error = !strcmp(name, "broken");
    out->text = malloc(64);
    snprintf(out->text, 64, "result of %s for %s", name, id);
}

static int fake_cancelled(void *ud)
{
    struct fake *f = ud;

    return f->cancel_after_calls && f->calls >= f->cancel_after_calls;
}

static int run(struct fake *f, json_t *history, const char *prompt, int max_it,
               struct aw_agent_result *res, struct aw_model_error *err)
{
    struct aw_agent_io io = {fake_converse, fake_tool, fake_cancelled, NULL, NULL, f};

    return aw_agent_run(history, prompt, max_it, &io, res, err);
}

static void test_single_turn(void **state)
{
    const char *script[] = {"hello back", NULL};
    struct fake f = {script, 0, 0, 0, ""};
    json_t *h = json_array();
    struct aw_agent_result r;
    struct aw_model_error e;

    (void)state;
    assert_int_equal(run(&f, h, "hello", 10, &r, &e), 0);
    assert_string_equal(r.response, "hello back");
    assert_string_equal(r.stop_reason, "EndTurn");
    assert_int_equal(r.iterations, 1);
    assert_int_equal(r.total_tokens, 15);
    assert_int_equal(json_array_size(h), 2);
    aw_agent_result_clear(&r);
    json_decref(h);
}

static void test_tool_round_trip(void **state)
{
    const char *script[] = {"tool:calculator", "the answer is 80", NULL};
    struct fake f = {script, 0, 0, 0, ""};
    json_t *h = json_array(), *results;
    struct aw_agent_result r;
    struct aw_model_error e;

    (void)state;
    assert_int_equal(run(&f, h, "compute", 10, &r, &e), 0);
    assert_int_equal(r.iterations, 2);
    assert_int_equal(f.tool_calls, 1);
    assert_string_equal(f.last_tool_input, "{\"x\":1}");
    /* Every turn's text, joined by a blank line: what a stream showed. */
    assert_string_equal(r.response, "thinking\n\nthe answer is 80");
    assert_int_equal(r.input_tokens, 20); /* usage accumulates over both calls */
    /* user, assistant(toolUse), user(toolResult), assistant */
    assert_int_equal(json_array_size(h), 4);
    results = json_object_get(json_array_get(h, 2), "content");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_array_get(results, 0), "toolResult"), "status")),
                        "success");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(json_array_get(results, 0), "toolResult"),
                                          "toolUseId")),
        "tu_1");
    aw_agent_result_clear(&r);
    json_decref(h);
}

static void test_tool_error_reaches_the_model(void **state)
{
    const char *script[] = {"tool:broken", "sorry", NULL};
    struct fake f = {script, 0, 0, 0, ""};
    json_t *h = json_array(), *tr;
    struct aw_agent_result r;
    struct aw_model_error e;

    (void)state;
    assert_int_equal(run(&f, h, "go", 10, &r, &e), 0);
    tr = json_object_get(json_array_get(json_object_get(json_array_get(h, 2), "content"), 0),
                         "toolResult");
    assert_string_equal(json_string_value(json_object_get(tr, "status")), "error");
    aw_agent_result_clear(&r);
    json_decref(h);
}

static void test_max_iterations_then_next_prompt_joins_user_turn(void **state)
{
    const char *loop[] = {"tool:calculator", NULL};
    const char *done[] = {"ok", NULL};
    struct fake f = {loop, 0, 0, 0, ""};
    json_t *h = json_array(), *last;
    struct aw_agent_result r;
    struct aw_model_error e;

    (void)state;
    assert_int_equal(run(&f, h, "loop", 3, &r, &e), 0);
    assert_string_equal(r.stop_reason, "MaxIterations");
    assert_int_equal(r.iterations, 3);
    assert_int_equal(f.tool_calls, 3);
    assert_int_equal(json_array_size(h), 7); /* ends on a user toolResult turn */
    aw_agent_result_clear(&r);

    f = (struct fake){done, 0, 0, 0, ""};
    assert_int_equal(run(&f, h, "next", 3, &r, &e), 0);
    /* "next" joined the trailing user turn: roles still alternate. */
    assert_int_equal(json_array_size(h), 8);
    last = json_object_get(json_array_get(h, 6), "content");
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(last, json_array_size(last) - 1), "text")),
        "next");
    aw_agent_result_clear(&r);
    json_decref(h);
}

static void test_model_failure_restores_history(void **state)
{
    const char *ok[] = {"first", NULL};
    const char *fail_later[] = {"tool:calculator", "fail", NULL};
    struct fake f = {ok, 0, 0, 0, ""};
    json_t *h = json_array(), *before;
    struct aw_agent_result r;
    struct aw_model_error e;

    (void)state;
    assert_int_equal(run(&f, h, "one", 10, &r, &e), 0);
    aw_agent_result_clear(&r);
    before = json_deep_copy(h);
    f = (struct fake){fail_later, 0, 0, 0, ""};
    assert_int_equal(run(&f, h, "two", 10, &r, &e), CM_EUPSTREAM);
    assert_string_equal(e.type, "ThrottlingException");
    assert_true(json_equal(h, before));
    assert_null(r.response);
    json_decref(before);
    json_decref(h);
}

static void test_cancel_stops_the_loop(void **state)
{
    const char *loop[] = {"tool:calculator", NULL};
    struct fake f = {loop, 0, 0, 2, ""};
    json_t *h = json_array();
    struct aw_agent_result r;
    struct aw_model_error e;

    (void)state;
    assert_int_equal(run(&f, h, "loop", 10, &r, &e), CM_ECANCELED);
    assert_int_equal(f.calls, 2);
    assert_int_equal(json_array_size(h), 0);
    json_decref(h);
}

static void test_stop_reason_names(void **state)
{
    static const char *rows[][2] = {{"end_turn", "EndTurn"},
                                    {"tool_use", "ToolUse"},
                                    {"max_tokens", "MaxTokens"},
                                    {"stop_sequence", "StopSequence"},
                                    {"guardrail_intervened", "GuardrailIntervened"},
                                    {"content_filtered", "ContentFiltered"}};
    char out[64];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        aw_agent_stop_reason(rows[i][0], out, sizeof(out));
        assert_string_equal(out, rows[i][1]);
    }
}

static void test_max_tokens_stop(void **state)
{
    const char *script[] = {"cut", NULL};
    struct fake f = {script, 0, 0, 0, ""};
    json_t *h = json_array();
    struct aw_agent_result r;
    struct aw_model_error e;

    (void)state;
    assert_int_equal(run(&f, h, "x", 10, &r, &e), 0);
    assert_string_equal(r.stop_reason, "MaxTokens");
    aw_agent_result_clear(&r);
    assert_int_equal(run(&f, h, "x", 0, &r, &e), CM_EINVAL);
    json_decref(h);
}

/* ---- the step function, driven directly as the event loop drives it ---- */

static struct aw_turn tool_turn(const char *const *names, int n)
{
    struct aw_turn t;
    json_t *content = json_array();
    int i;

    memset(&t, 0, sizeof(t));
    for (i = 0; i < n; i++) {
        char id[16];

        snprintf(id, sizeof(id), "tu_%d", i);
        json_array_append_new(
            content, names[i] ? json_pack("{s:{s:s,s:s,s:{}}}", "toolUse", "toolUseId", id, "name",
                                          names[i], "input")
                              : json_pack("{s:{s:s,s:{}}}", "toolUse", "toolUseId", id, "input"));
    }
    t.message = json_pack("{s:s,s:o}", "role", "assistant", "content", content);
    snprintf(t.stop_reason, sizeof(t.stop_reason), "tool_use");
    t.input_tokens = 1;
    return t;
}

static void test_steps_results_out_of_order(void **state)
{
    const char *names[] = {"a", NULL, "c"};
    struct aw_agent a;
    struct aw_turn t = tool_turn(names, 3), done;
    json_t *h = json_array(), *results;
    const json_t *block;

    (void)state;
    assert_int_equal(aw_agent_begin(&a, h, "go", 5), 0);
    assert_int_equal(aw_agent_on_turn(&a, &t), AW_NEXT_TOOLS);
    aw_turn_clear(&t);
    assert_int_equal(aw_agent_tool_count(&a), 3);
    assert_true(aw_agent_tool_pending(&a, 0));
    assert_false(aw_agent_tool_pending(&a, 1)); /* no name: its error result is in already */
    /* The last tool answers first: still waiting for the first. */
    assert_int_equal(aw_agent_on_tool_result(&a, 2, "third", 0, &block), AW_NEXT_WAIT);
    assert_non_null(block);
    assert_string_equal(json_string_value(json_object_get(block, "toolUseId")), "tu_2");
    /* A result for a slot that has one already is ignored. */
    assert_int_equal(aw_agent_on_tool_result(&a, 2, "again", 0, &block), AW_NEXT_WAIT);
    assert_null(block);
    assert_int_equal(aw_agent_on_tool_result(&a, 0, "first", 1, &block), AW_NEXT_MODEL);
    /* The toolResults are in the order the model asked for them. */
    results = json_object_get(json_array_get(h, 2), "content");
    assert_int_equal(json_array_size(results), 3);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(json_array_get(results, 0), "toolResult"),
                                          "toolUseId")),
        "tu_0");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_array_get(results, 0), "toolResult"), "status")),
                        "error");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_array_get(results, 2), "toolResult"), "status")),
                        "success");
    memset(&done, 0, sizeof(done));
    done.message = json_pack("{s:s,s:[{s:s}]}", "role", "assistant", "content", "text", "ok");
    snprintf(done.stop_reason, sizeof(done.stop_reason), "end_turn");
    assert_int_equal(aw_agent_on_turn(&a, &done), AW_NEXT_DONE);
    aw_turn_clear(&done);
    assert_string_equal(a.res.stop_reason, "EndTurn");
    assert_int_equal(a.res.iterations, 2);
    assert_int_equal(json_array_size(h), 4);
    aw_agent_cleanup(&a);
    json_decref(h);
}

static void test_steps_fail_while_tools_run_restores_history(void **state)
{
    const char *names[] = {"a", "b"};
    struct aw_agent a;
    struct aw_turn t = tool_turn(names, 2);
    json_t *h = json_pack("[{s:s,s:[{s:s}]},{s:s,s:[{s:s}]}]", "role", "user", "content", "text",
                          "earlier", "role", "assistant", "content", "text", "answer"),
           *before = json_deep_copy(h);

    (void)state;
    assert_int_equal(aw_agent_begin(&a, h, "go", 5), 0);
    assert_int_equal(aw_agent_on_turn(&a, &t), AW_NEXT_TOOLS);
    aw_turn_clear(&t);
    assert_int_equal(aw_agent_on_tool_result(&a, 1, "b done", 0, NULL), AW_NEXT_WAIT);
    /* The client left while tool a still ran. */
    assert_int_equal(aw_agent_fail(&a, CM_ECANCELED), AW_NEXT_FAILED);
    assert_int_equal(a.rc, CM_ECANCELED);
    assert_true(json_equal(h, before));
    aw_agent_cleanup(&a);
    json_decref(h);
    json_decref(before);
}

static void test_steps_last_iteration_ends_on_results(void **state)
{
    const char *names[] = {"a"};
    struct aw_agent a;
    struct aw_turn t = tool_turn(names, 1);
    json_t *h = json_array();

    (void)state;
    assert_int_equal(aw_agent_begin(&a, h, "go", 1), 0);
    assert_int_equal(aw_agent_on_turn(&a, &t), AW_NEXT_TOOLS);
    aw_turn_clear(&t);
    assert_int_equal(aw_agent_on_tool_result(&a, 0, "r", 0, NULL), AW_NEXT_DONE);
    assert_string_equal(a.res.stop_reason, "MaxIterations");
    assert_int_equal(json_array_size(h), 3); /* prompt, toolUse, toolResults */
    aw_agent_cleanup(&a);
    assert_int_equal(aw_agent_begin(&a, h, "go", 0), CM_EINVAL);
    json_decref(h);
}

/* max_tokens inside a toolUse: the incomplete call never runs, a text block
 * says what happened, and the history is one Bedrock accepts. */
static void test_steps_max_tokens_inside_a_tool_use(void **state)
{
    const char *names[] = {"calculator"};
    struct aw_agent a;
    struct aw_turn t = tool_turn(names, 1);
    json_t *h = json_array(), *content;
    const char *text;

    (void)state;
    snprintf(t.stop_reason, sizeof(t.stop_reason), "max_tokens");
    assert_int_equal(aw_agent_begin(&a, h, "go", 5), 0);
    assert_int_equal(aw_agent_on_turn(&a, &t), AW_NEXT_DONE);
    aw_turn_clear(&t);
    assert_string_equal(a.res.stop_reason, "MaxTokens");
    assert_int_equal(json_array_size(h), 2);
    content = json_object_get(json_array_get(h, 1), "content");
    assert_int_equal(json_array_size(content), 1);
    assert_null(json_object_get(json_array_get(content, 0), "toolUse"));
    text = json_string_value(json_object_get(json_array_get(content, 0), "text"));
    assert_non_null(text);
    assert_non_null(strstr(text, "'calculator' was cut off"));
    assert_non_null(strstr(a.res.response, "cut off")); /* the client hears it too */
    aw_agent_cleanup(&a);
    json_decref(h);
}

/* Token budgets: the loop stops before a model call that would pass one; the
 * tools the last turn asked for still ran. */
static void test_steps_token_budgets(void **state)
{
    static const struct {
        long long total, output;
        int calls;
        const char *stop;
    } rows[] = {
        {0, 0, 4, "EndTurn"},              /* no budget: 3 tool turns then the answer */
        {30, 0, 2, "TokenBudgetExceeded"}, /* 15 tokens a call: stops after 2 */
        {0, 5, 1, "TokenBudgetExceeded"},  /* 5 output tokens a call: stops after 1 */
        {1000, 1000, 4, "EndTurn"},
    };
    const char *names[] = {"calculator"};
    size_t r;

    (void)state;
    for (r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
        struct aw_agent a;
        json_t *h = json_array();
        enum aw_agent_next next;
        int calls = 0;

        assert_int_equal(aw_agent_begin(&a, h, "go", 10), 0);
        aw_agent_set_budget(&a, rows[r].total, rows[r].output);
        do {
            struct aw_turn t;

            if (++calls <= 3) {
                t = tool_turn(names, 1);
            } else {
                memset(&t, 0, sizeof(t));
                t.message =
                    json_pack("{s:s,s:[{s:s}]}", "role", "assistant", "content", "text", "ok");
                snprintf(t.stop_reason, sizeof(t.stop_reason), "end_turn");
            }
            t.input_tokens = 10;
            t.output_tokens = 5;
            t.total_tokens = 15;
            next = aw_agent_on_turn(&a, &t);
            aw_turn_clear(&t);
            if (next == AW_NEXT_TOOLS)
                next = aw_agent_on_tool_result(&a, 0, "42", 0, NULL);
        } while (next == AW_NEXT_MODEL);
        assert_int_equal(next, AW_NEXT_DONE);
        if (calls != rows[r].calls || strcmp(a.res.stop_reason, rows[r].stop))
            fail_msg("budget %lld/%lld: %d calls, %s; want %d, %s", rows[r].total, rows[r].output,
                     calls, a.res.stop_reason, rows[r].calls, rows[r].stop);
        /* A stop on the budget leaves the history on the tools' results. */
        if (!strcmp(rows[r].stop, "TokenBudgetExceeded"))
            assert_int_equal(json_array_size(h), 1 + 2 * (size_t)calls);
        aw_agent_cleanup(&a);
        json_decref(h);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_turn),
        cmocka_unit_test(test_tool_round_trip),
        cmocka_unit_test(test_tool_error_reaches_the_model),
        cmocka_unit_test(test_max_iterations_then_next_prompt_joins_user_turn),
        cmocka_unit_test(test_model_failure_restores_history),
        cmocka_unit_test(test_cancel_stops_the_loop),
        cmocka_unit_test(test_stop_reason_names),
        cmocka_unit_test(test_max_tokens_stop),
        cmocka_unit_test(test_steps_results_out_of_order),
        cmocka_unit_test(test_steps_fail_while_tools_run_restores_history),
        cmocka_unit_test(test_steps_last_iteration_ends_on_results),
        cmocka_unit_test(test_steps_max_tokens_inside_a_tool_use),
        cmocka_unit_test(test_steps_token_budgets),
    };
    return cmocka_run_group_tests_name("aw_agent", tests, NULL, NULL);
}
