/* aw_history_repair, data-driven: each row is a stored conversation, what the
 * repair must leave, and how many repairs it reports (0: left untouched). */
#include "aw_history.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* Short forms, expanded before parsing: U(...) a user turn, A(...) an
 * assistant turn "," T(x) a text block "," TU(id) a toolUse "," TR(id) a toolResult. */
#define U(...) "{\"role\":\"user\",\"content\":[" __VA_ARGS__ "]}"
#define A(...) "{\"role\":\"assistant\",\"content\":[" __VA_ARGS__ "]}"
#define T(x) "{\"text\":\"" x "\"}"
#define TU(id) "{\"toolUse\":{\"toolUseId\":\"" id "\",\"name\":\"calc\",\"input\":{}}}"
#define TR(id)                                                                                     \
    "{\"toolResult\":{\"toolUseId\":\"" id "\",\"content\":[{\"text\":\"42\"}],\"status\":"        \
    "\"success\"}}"
#define TI(id)                                                                                     \
    "{\"toolResult\":{\"toolUseId\":\"" id "\",\"content\":[{\"text\":\"" AW_HISTORY_INTERRUPTED   \
    "\"}],\"status\":\"error\"}}"

static const struct row {
    const char *name, *in, *out;
    int fixes;
} rows[] = {
    {"valid, untouched", "[" U(T("hi")) "," A(T("hello")) "]", "[" U(T("hi")) "," A(T("hello")) "]",
     0},
    {"a tool round trip, untouched",
     "[" U(T("6*7?")) "," A(T("calling") "," TU("t1")) "," U(TR("t1")) "," A(T("42")) "]",
     "[" U(T("6*7?")) "," A(T("calling") "," TU("t1")) "," U(TR("t1")) "," A(T("42")) "]", 0},
    {"empty", "[]", "[]", 0},
    {"killed between the toolUse and its result",
     "[" U(T("6*7?")) "," A(T("calling") "," TU("t1")) "]",
     "[" U(T("6*7?")) "," A(T("calling") "," TU("t1")) "," U(TI("t1")) "]", 1},
    {"one of two results missing, the prompt after kept",
     "[" U(T("go")) "," A(TU("a") "," TU("b")) "," U(TR("b") "," T("next")) "]",
     "[" U(T("go")) "," A(TU("a") "," TU("b")) "," U(TI("a") "," TR("b") "," T("next")) "]", 1},
    {"a result whose toolUse was trimmed away", "[" U(TR("gone") "," T("again")) "," A(T("ok")) "]",
     "[" U(T("again")) "," A(T("ok")) "]", 1},
    {"a result answering another turn's toolUse",
     "[" U(T("go")) "," A(TU("a")) "," U(TR("a")) "," A(T("done")) "," U(TR("a") "," T("more")) "]",
     "[" U(T("go")) "," A(TU("a")) "," U(TR("a")) "," A(T("done")) "," U(T("more")) "]", 1},
    {"empty and blank text blocks", "[" U(T("") "," T("hi")) "," A(T(" \\n") "," T("hello")) "]",
     "[" U(T("hi")) "," A(T("hello")) "]", 2},
    {"a turn left empty, then two of one role merged",
     "[" U(T("a")) "," A(T("")) "," U(T("b")) "," A(T("c")) "]",
     "[" U(T("a") "," T("b")) "," A(T("c")) "]", 3},
    {"starts with the assistant", "[" A(T("hello")) "," U(T("hi")) "]", "[" U(T("hi")) "]", 1},
    {"starts with an assistant toolUse and its result",
     "[" A(TU("x")) "," U(TR("x") "," T("hi")) "," A(T("yo")) "]",
     "[" U(T("hi")) "," A(T("yo")) "]", 2},
    {"not messages", "[1,{\"role\":\"system\",\"content\":[]}," U(T("hi")) ",{\"role\":\"user\"}]",
     "[" U(T("hi")) "]", 3},
};

static void test_rows(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        json_t *in = json_loads(rows[i].in, 0, NULL), *want = json_loads(rows[i].out, 0, NULL);
        char what[200];
        int n;

        if (!in || !want)
            fail_msg("%s: bad row JSON", rows[i].name);
        n = aw_history_repair(in, what, sizeof(what));
        if (!json_equal(in, want)) {
            char *got = json_dumps(in, JSON_COMPACT);

            fail_msg("%s: got %s", rows[i].name, got);
        }
        if (n != rows[i].fixes)
            fail_msg("%s: %d repairs reported, want %d (first: %s)", rows[i].name, n, rows[i].fixes,
                     what);
        if ((n == 0) != (what[0] == '\0'))
            fail_msg("%s: description '%s' with %d repairs", rows[i].name, what, n);
        /* Repaired is a fixed point. */
        assert_int_equal(aw_history_repair(in, NULL, 0), 0);
        json_decref(in);
        json_decref(want);
    }
}

static void test_not_an_array(void **state)
{
    json_t *o = json_object();

    (void)state;
    assert_int_equal(aw_history_repair(o, NULL, 0), -1);
    json_decref(o);
}

static json_t *tool_result_with(size_t len, const char *fill)
{
    char *t = malloc(len + 1);
    size_t i, f = strlen(fill);
    json_t *m;

    for (i = 0; i + f <= len; i += f)
        memcpy(t + i, fill, f);
    t[i] = '\0';
    m = json_pack("{s:s,s:[{s:{s:s,s:[{s:s}],s:s}}]}", "role", "user", "content", "toolResult",
                  "toolUseId", "t1", "content", "text", t, "status", "success");
    free(t);
    return m;
}

/* Overflow: long tool results first (oldest first, once each, cut between
 * UTF-8 characters), then the oldest turns, never the current ones. */
static void test_reduce(void **state)
{
    json_t *h = json_loads("[" U(T("one")) "," A(T("a") "," TU("t1")) "]", 0, NULL);
    const char *t;
    char what[200];
    int rc;

    (void)state;
    json_array_append_new(h, tool_result_with(3000, "\xc3\xa9")); /* 1500 two-byte characters */
    json_array_append_new(h, json_loads(A(T("b")), 0, NULL));
    json_array_append_new(h, json_loads(U(T("two")), 0, NULL));
    json_array_append_new(h, json_loads(A(T("c")), 0, NULL));
    json_array_append_new(h, json_loads(U(T("three")), 0, NULL)); /* the current turn: 6 */
    assert_int_equal(aw_history_repair(h, NULL, 0), 0);

    assert_int_equal(aw_history_reduce(h, 6, what, sizeof(what)), 0);
    assert_non_null(strstr(what, "shortened a tool result of message 2"));
    t = json_string_value(json_object_get(
        json_array_get(
            json_object_get(
                json_object_get(json_array_get(json_object_get(json_array_get(h, 2), "content"), 0),
                                "toolResult"),
                "content"),
            0),
        "text"));
    assert_non_null(t);
    assert_true(strlen(t) < AW_HISTORY_CUT_OVER);
    assert_non_null(strstr(t, "... [truncated: 2600 bytes removed] ..."));
    assert_int_equal(aw_history_repair(h, NULL, 0), 0); /* still valid, still UTF-8 */

    /* Nothing long is left: the oldest exchange goes, up to "two". */
    rc = aw_history_reduce(h, 6, what, sizeof(what));
    assert_int_equal(rc, 4);
    assert_int_equal(json_array_size(h), 3);
    assert_string_equal(
        json_string_value(json_object_get(
            json_array_get(json_object_get(json_array_get(h, 0), "content"), 0), "text")),
        "two");
    assert_int_equal(aw_history_repair(h, NULL, 0), 0);
    /* Up to the current turn itself, when that starts a conversation. */
    json_array_append_new(h, json_loads(A(T("d")), 0, NULL));
    json_array_append_new(h, json_loads(U(T("four")), 0, NULL));
    assert_int_equal(aw_history_reduce(h, 2, what, sizeof(what)), 2);
    assert_int_equal(json_array_size(h), 3);
    /* Less than one exchange before the protected part: nothing can go. */
    assert_int_equal(aw_history_reduce(h, 1, what, sizeof(what)), -1);
    assert_non_null(strstr(what, "nothing left"));
    json_decref(h);
}

static void test_overflow_messages(void **state)
{
    (void)state;
    assert_true(aw_history_is_overflow("Input is too long for requested model."));
    assert_true(aw_history_is_overflow(
        "The model returned: input length and `max_tokens` exceed context limit: 190000 + 4096"));
    assert_true(aw_history_is_overflow("too many total text bytes: 9000000"));
    assert_true(aw_history_is_overflow("prompt is too long: 210000 tokens > 200000 maximum"));
    assert_false(aw_history_is_overflow("Too many requests, please wait"));
    assert_false(aw_history_is_overflow(NULL));
}

/* The window's cut and the summarizing manager's request and result, on
 * rows: a history, the window, where it cuts. */
static void test_window_and_summary(void **state)
{
    static const struct {
        const char *in;
        size_t max, cut;
    } cuts[] = {
        {"[" U(T("a")) "," A(T("b")) "]", 4, 0},
        {"[" U(T("a")) "," A(T("b")) "," U(T("c")) "," A(T("d")) "]", 2, 2},
        /* never after a toolUse: the cut moves to the next user text turn */
        {"[" U(T("a")) "," A(TU("t")) "," U(TR("t")) "," A(T("b")) "," U(T("c")) "," A(T("d")) "]",
         3, 4},
        /* no user text turn left: everything goes */
        {"[" U(T("a")) "," A(TU("t")) "," U(TR("t")) "," A(T("b")) "]", 1, 4},
    };
    json_t *h, *req, *last;
    size_t i;
    const char *t;

    (void)state;
    for (i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        h = json_loads(cuts[i].in, 0, NULL);
        assert_non_null(h);
        if (aw_history_cut(h, cuts[i].max) != cuts[i].cut)
            fail_msg("row %zu: cut %zu, want %zu", i, aw_history_cut(h, cuts[i].max), cuts[i].cut);
        json_decref(h);
    }

    /* The request: what goes, then the ask, valid for Bedrock. */
    h = json_loads(cuts[2].in, 0, NULL);
    req = aw_history_summary_request(h, 4);
    assert_non_null(req);
    assert_int_equal(json_array_size(req), 5);
    assert_int_equal(aw_history_repair(req, NULL, 0), 0);
    last = json_array_get(req, 4);
    assert_string_equal(json_string_value(json_object_get(last, "role")), "user");
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(last, "content"), 0), "text")),
                        AW_HISTORY_SUMMARY_ASK);
    json_decref(req);
    assert_int_equal(json_array_size(h), 6); /* the history itself is untouched */

    /* The result: the summary opens the first kept turn. */
    assert_int_equal(aw_history_apply_summary(h, 4, "the user said a"), 0);
    assert_int_equal(json_array_size(h), 2);
    t = json_string_value(json_object_get(
        json_array_get(json_object_get(json_array_get(h, 0), "content"), 0), "text"));
    assert_string_equal(t, AW_HISTORY_SUMMARY_HEAD "the user said a");
    assert_int_equal(aw_history_repair(h, NULL, 0), 0);
    json_decref(h);

    /* Nothing kept: the summary is the whole history. */
    h = json_loads(cuts[3].in, 0, NULL);
    assert_int_equal(aw_history_apply_summary(h, 4, "s"), 0);
    assert_int_equal(json_array_size(h), 1);
    assert_int_equal(aw_history_repair(h, NULL, 0), 0);
    json_decref(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows),
        cmocka_unit_test(test_not_an_array),
        cmocka_unit_test(test_reduce),
        cmocka_unit_test(test_overflow_messages),
        cmocka_unit_test(test_window_and_summary),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
