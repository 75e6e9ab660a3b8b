/* aw_bedrock's no-I/O half: paths, request bodies, response and error mapping. */
#include "aw_bedrock.h"
#include "cm_err.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void test_model_path_encoding(void **state)
{
    struct cm_buf b;

    (void)state;
    cm_buf_init(&b, 4096);
    assert_int_equal(
        aw_bedrock_model_path("us.anthropic.claude-sonnet-4-20250514-v1:0", "converse", &b), 0);
    assert_string_equal(b.data, "/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse");
    cm_buf_reset(&b);
    aw_bedrock_model_path("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.x-v1:0",
                          "converse", &b);
    assert_string_equal(b.data, "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3A"
                                "inference-profile%2Fus.x-v1%3A0/converse");
    cm_buf_free(&b);
}

static void test_build_body(void **state)
{
    json_t *msgs = json_loads("[{\"role\":\"user\",\"content\":[{\"text\":\"hi\"}]}]", 0, NULL);
    json_t *tools = json_loads("{\"tools\":[{\"toolSpec\":{\"name\":\"t\"}}]}", 0, NULL);
    json_t *o;
    char *s;

    (void)state;
    s = aw_bedrock_build_body(msgs, "be brief", 123, tools);
    o = json_loads(s, 0, NULL);
    assert_non_null(o);
    assert_true(json_equal(json_object_get(o, "messages"), msgs));
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(json_object_get(o, "system"), 0), "text")),
        "be brief");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(o, "inferenceConfig"), "maxTokens")),
        123);
    assert_true(json_equal(json_object_get(o, "toolConfig"), tools));
    json_decref(o);
    free(s);
    /* No system prompt, no tools, no tool blocks: neither key is sent. */
    s = aw_bedrock_build_body(msgs, NULL, 10, NULL);
    o = json_loads(s, 0, NULL);
    assert_null(json_object_get(o, "system"));
    assert_null(json_object_get(o, "toolConfig"));
    json_decref(o);
    free(s);
    json_decref(msgs);
    json_decref(tools);
}

static void test_placeholder_tool_when_history_has_tool_blocks(void **state)
{
    json_t *msgs = json_loads(
        "[{\"role\":\"user\",\"content\":[{\"text\":\"x\"}]},"
        "{\"role\":\"assistant\",\"content\":[{\"toolUse\":{\"toolUseId\":\"a\",\"name\":\"t\","
        "\"input\":{}}}]},"
        "{\"role\":\"user\",\"content\":[{\"toolResult\":{\"toolUseId\":\"a\",\"content\":[]}}]}]",
        0, NULL);
    char *s = aw_bedrock_build_body(msgs, NULL, 10, NULL);
    json_t *o = json_loads(s, 0, NULL);
    json_t *spec = json_object_get(
        json_array_get(json_object_get(json_object_get(o, "toolConfig"), "tools"), 0), "toolSpec");

    (void)state;
    assert_string_equal(json_string_value(json_object_get(spec, "name")), "noop");
    json_decref(o);
    json_decref(msgs);
    free(s);
}

static void test_parse_response(void **state)
{
    /* A real capture's shape, with undocumented keys that must be ignored. */
    const char *body =
        "{\"metrics\":{\"latencyMs\":268},\"output\":{\"message\":{\"content\":[{\"text\":"
        "\"Hello!\"},{\"toolUse\":{\"toolUseId\":\"t1\",\"name\":\"calc\",\"input\":{\"a\":1}}}],"
        "\"role\":\"assistant\",\"extra\":1}},\"stopReason\":\"tool_use\",\"usage\":{"
        "\"inputTokens\":7,\"outputTokens\":30,\"totalTokens\":37,\"cacheReadInputTokenCount\":0,"
        "\"serverToolUsage\":{}},\"newTopLevelKey\":true}";
    struct aw_turn t;
    char err[256];

    (void)state;
    assert_int_equal(aw_bedrock_parse_response(body, strlen(body), &t, err, sizeof(err)), 0);
    assert_string_equal(t.stop_reason, "tool_use");
    assert_int_equal(t.input_tokens, 7);
    assert_int_equal(t.output_tokens, 30);
    assert_int_equal(t.total_tokens, 37);
    assert_string_equal(json_string_value(json_object_get(t.message, "role")), "assistant");
    assert_int_equal(json_array_size(json_object_get(t.message, "content")), 2);
    assert_null(json_object_get(t.message, "extra"));
    aw_turn_clear(&t);
}

static const struct {
    const char *body;
    const char *err_has;
} bad_responses[] = {
    {"", "not JSON"},
    {"{", "not JSON"},
    {"[]", "field 'output'"},
    {"{\"output\":{}}", "field 'message': missing"},
    {"{\"output\":{\"message\":{\"content\":{}}},\"stopReason\":\"end_turn\"}",
     "field 'content': must be an array"},
    {"{\"output\":{\"message\":{\"content\":[]}}}", "field 'stopReason': missing"},
};

static void test_parse_bad_responses(void **state)
{
    struct aw_turn t;
    char err[256];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad_responses) / sizeof(bad_responses[0]); i++) {
        const char *b = bad_responses[i].body;

        assert_int_equal(aw_bedrock_parse_response(b, strlen(b), &t, err, sizeof(err)), CM_EINVAL);
        if (!strstr(err, bad_responses[i].err_has))
            fail_msg("'%s': '%s' lacks '%s'", b, err, bad_responses[i].err_has);
        assert_null(t.message);
    }
}

static const struct {
    int status;
    const char *header;
    const char *body;
    const char *type, *msg_has;
    int retry;
} errors[] = {
    {429, "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
     "{\"message\":\"Too many requests\"}", "ThrottlingException", "Too many requests", 1},
    {400, NULL, "{\"__type\":\"com.amazon.coral#ValidationException\",\"Message\":\"bad\"}",
     "ValidationException", "bad", 0},
    {403, NULL, "{\"code\":\"AccessDeniedException\",\"message\":\"no\"}", "AccessDeniedException",
     "no", 0},
    {500, NULL, "<html>oops</html>", "HTTP500", "<html>oops</html>", 1},
    {503, "ServiceUnavailableException", "", "ServiceUnavailableException", "HTTP status 503", 1},
    {429, "ModelNotReadyException", "{}", "ModelNotReadyException", "HTTP status 429", 1},
    {408, "ModelTimeoutException", "{\"message\":\"t\"}", "ModelTimeoutException", "t", 0},
    {400, NULL, "{\"__type\":\"com.amazon#\",\"Message\":\"slow\"}", "HTTP400", "slow", 0},
    {500, NULL, "{\"Message\":\"\"}", "HTTP500", "HTTP status 500", 1},
    {424, "ModelErrorException", "{\"message\":\"m\"}", "ModelErrorException", "m", 0},
    {400, "ValidationException",
     "{\"message\":\"Invocation of model ID x with on-demand throughput isn\xe2\x80\x99t supported."
     "\"}",
     "ValidationException", "fix: set MODEL_ID to a cross-region inference profile", 0},
};

static void test_error_mapping(void **state)
{
    struct aw_model_error e;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(errors) / sizeof(errors[0]); i++) {
        aw_bedrock_parse_error(errors[i].status, errors[i].header, errors[i].body,
                               strlen(errors[i].body), &e);
        assert_int_equal(e.http_status, errors[i].status);
        assert_string_equal(e.type, errors[i].type);
        if (!strstr(e.message, errors[i].msg_has))
            fail_msg("row %zu: '%s' lacks '%s'", i, e.message, errors[i].msg_has);
        assert_int_equal(aw_bedrock_retryable(e.http_status, e.type), errors[i].retry);
    }
    assert_int_equal(aw_bedrock_retryable(0, "TransportError"), 1);
    assert_int_equal(aw_bedrock_retryable(403, "InvalidSignatureException"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_path_encoding),
        cmocka_unit_test(test_build_body),
        cmocka_unit_test(test_placeholder_tool_when_history_has_tool_blocks),
        cmocka_unit_test(test_parse_response),
        cmocka_unit_test(test_parse_bad_responses),
        cmocka_unit_test(test_error_mapping),
    };
    return cmocka_run_group_tests_name("aw_bedrock", tests, NULL, NULL);
}
