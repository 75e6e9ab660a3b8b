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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows),
        cmocka_unit_test(test_not_an_array),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
