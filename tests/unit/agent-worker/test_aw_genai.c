/* aw_genai: Converse messages in the GenAI conventions' form, row by row
 * (Bedrock JSON in, the conventions' JSON out), the finish reasons, and the
 * capped dump that never splits a UTF-8 sequence. */
#include "aw_genai.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void assert_json(json_t *got, const char *want_text)
{
    json_t *want = json_loads(want_text, 0, NULL);

    assert_non_null(want);
    assert_non_null(got);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_COMPACT);

        fail_msg("got %s\nwant %s", g, want_text);
    }
    json_decref(want);
    json_decref(got);
}

static void test_input_messages(void **state)
{
    static const struct {
        const char *bedrock, *genai;
    } rows[] = {
        {"[{\"role\":\"user\",\"content\":[{\"text\":\"hi\"}]}]",
         "[{\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"content\":\"hi\"}]}]"},
        /* a tool call and its answer: the answer's turn is the tool's */
        {"[{\"role\":\"assistant\",\"content\":[{\"text\":\"let me\"},{\"toolUse\":{\"toolUseId\":"
         "\"t1\",\"name\":\"calculator\",\"input\":{\"expression\":\"6*7\"}}}]},"
         "{\"role\":\"user\",\"content\":[{\"toolResult\":{\"toolUseId\":\"t1\",\"content\":"
         "[{\"text\":\"42\"}],\"status\":\"success\"}}]}]",
         "[{\"role\":\"assistant\",\"parts\":[{\"type\":\"text\",\"content\":\"let me\"},"
         "{\"type\":\"tool_call\",\"id\":\"t1\",\"name\":\"calculator\",\"arguments\":"
         "{\"expression\":\"6*7\"}}]},{\"role\":\"tool\",\"parts\":[{\"type\":"
         "\"tool_call_response\",\"id\":\"t1\",\"response\":\"42\"}]}]"},
        /* a JSON result stays JSON; several text blocks are joined */
        {"[{\"role\":\"user\",\"content\":[{\"toolResult\":{\"toolUseId\":\"a\",\"content\":"
         "[{\"json\":{\"n\":1}}]}},{\"toolResult\":{\"toolUseId\":\"b\",\"content\":"
         "[{\"text\":\"x\"},{\"text\":\"y\"}]}}]}]",
         "[{\"role\":\"tool\",\"parts\":[{\"type\":\"tool_call_response\",\"id\":\"a\","
         "\"response\":{\"n\":1}},{\"type\":\"tool_call_response\",\"id\":\"b\","
         "\"response\":\"x\\ny\"}]}]"},
        /* a user turn with text besides a result stays the user's */
        {"[{\"role\":\"user\",\"content\":[{\"toolResult\":{\"toolUseId\":\"a\",\"content\":[]}},"
         "{\"text\":\"and?\"}]}]",
         "[{\"role\":\"user\",\"parts\":[{\"type\":\"tool_call_response\",\"id\":\"a\","
         "\"response\":null},{\"type\":\"text\",\"content\":\"and?\"}]}]"},
        /* reasoning is kept; bytes are not */
        {"[{\"role\":\"assistant\",\"content\":[{\"reasoningContent\":{\"reasoningText\":"
         "{\"text\":\"hmm\",\"signature\":\"sig\"}}}]},{\"role\":\"user\",\"content\":"
         "[{\"image\":{\"format\":\"png\",\"source\":{\"bytes\":\"iVBORw0K\"}}}]}]",
         "[{\"role\":\"assistant\",\"parts\":[{\"type\":\"reasoning\",\"content\":\"hmm\"}]},"
         "{\"role\":\"user\",\"parts\":[{\"type\":\"image\"}]}]"},
        {"[]", "[]"},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        json_t *in = json_loads(rows[i].bedrock, 0, NULL);

        assert_non_null(in);
        assert_json(aw_genai_input(in), rows[i].genai);
        json_decref(in);
    }
}

static void test_output_and_finish_reasons(void **state)
{
    static const char *const reasons[][2] = {
        {"end_turn", "stop"},
        {"tool_use", "tool_call"},
        {"max_tokens", "length"},
        {"guardrail_intervened", "content_filter"},
        {"content_filtered", "content_filter"},
        {"stop_sequence", "stop"},
        {"something_new", "something_new"},
    };
    json_t *msg = json_loads("{\"role\":\"assistant\",\"content\":[{\"text\":\"42\"}]}", 0, NULL);
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
        assert_string_equal(aw_genai_finish_reason(reasons[i][0]), reasons[i][1]);
    assert_string_equal(aw_genai_finish_reason(NULL), "");
    assert_json(aw_genai_output(msg, "end_turn"),
                "[{\"role\":\"assistant\",\"parts\":[{\"type\":\"text\",\"content\":\"42\"}],"
                "\"finish_reason\":\"stop\"}]");
    assert_json(aw_genai_output(NULL, "max_tokens"),
                "[{\"role\":\"assistant\",\"parts\":[],\"finish_reason\":\"length\"}]");
    json_decref(msg);
}

static void test_dump_is_capped_on_a_character(void **state)
{
    json_t *v = json_string("h\xc3\xa9llo"); /* "héllo": é is two bytes */
    char *s;

    (void)state;
    s = aw_genai_dump(v, 100);
    assert_string_equal(s, "\"h\xc3\xa9llo\"");
    free(s);
    s = aw_genai_dump(v, 3); /* would end inside é */
    assert_string_equal(s, "\"h");
    free(s);
    s = aw_genai_dump(v, 4);
    assert_string_equal(s, "\"h\xc3\xa9");
    free(s);
    json_decref(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_input_messages),
        cmocka_unit_test(test_output_and_finish_reasons),
        cmocka_unit_test(test_dump_is_capped_on_a_character),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
