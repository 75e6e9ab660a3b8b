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

static json_t *body_of(const json_t *msgs, const struct aw_request_options *o, const json_t *tools)
{
    char *s = aw_bedrock_build_body(msgs, o, tools);
    json_t *b = json_loads(s, 0, NULL);

    assert_non_null(b);
    free(s);
    return b;
}

static struct aw_request_options opts(void)
{
    struct aw_request_options o;

    memset(&o, 0, sizeof(o));
    o.max_tokens = 10;
    o.tool_result_status = 1;
    return o;
}

/* The catalogue's text made once gives the same request as serialising it
 * every time, in each shape of request; a tool choice or prompt caching
 * (which change the configuration) never take the ready text. */
static void test_build_body_with_the_catalogue_text(void **state)
{
    json_t *msgs = json_loads("[{\"role\":\"user\",\"content\":[{\"text\":\"hi\"}]}]", 0, NULL);
    json_t *tools = json_loads("{\"tools\":[{\"toolSpec\":{\"name\":\"t\",\"inputSchema\":"
                               "{\"json\":{\"type\":\"object\"}}}}]}",
                               0, NULL);
    json_t *add = json_loads("{\"thinking\":{\"type\":\"enabled\"}}", 0, NULL);
    char *text = json_dumps(tools, JSON_COMPACT);
    struct aw_request_options op = opts();
    int shape;

    (void)state;
    for (shape = 0; shape < 5; shape++) {
        char *plain, *with;
        json_t *a, *b;

        op = opts();
        if (shape >= 1)
            op.system_prompt = "be brief";
        if (shape >= 2) {
            op.guardrail_id = "g1";
            op.additional_fields = add;
        }
        if (shape == 3)
            op.tool_choice = "any";
        if (shape == 4)
            op.prompt_caching = 1;
        plain = aw_bedrock_build_body(msgs, &op, tools);
        with = aw_bedrock_build_body_with(msgs, &op, tools, text);
        a = json_loads(plain, 0, NULL);
        b = json_loads(with, 0, NULL);
        if (!a || !b || !json_equal(a, b))
            fail_msg("shape %d: %s\nagainst %s", shape, with, plain);
        assert_non_null(json_object_get(b, "toolConfig"));
        /* the ready text went in only where the configuration is the shared one */
        assert_int_equal(strstr(with, text) != NULL, shape < 3);
        json_decref(a);
        json_decref(b);
        free(plain);
        free(with);
    }
    free(text);
    json_decref(add);
    json_decref(tools);
    json_decref(msgs);
}

static void test_build_body(void **state)
{
    json_t *msgs = json_loads("[{\"role\":\"user\",\"content\":[{\"text\":\"hi\"}]}]", 0, NULL);
    json_t *tools = json_loads("{\"tools\":[{\"toolSpec\":{\"name\":\"t\"}}]}", 0, NULL);
    json_t *stops = json_loads("[\"STOP\"]", 0, NULL), *o, *inf;
    struct aw_request_options op = opts();

    (void)state;
    op.system_prompt = "be brief";
    op.max_tokens = 123;
    op.has_temperature = 1;
    op.temperature = 0.5;
    op.has_top_p = 1;
    op.top_p = 0.25;
    op.stop_sequences = stops;
    o = body_of(msgs, &op, tools);
    assert_true(json_equal(json_object_get(o, "messages"), msgs));
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(json_object_get(o, "system"), 0), "text")),
        "be brief");
    inf = json_object_get(o, "inferenceConfig");
    assert_int_equal(json_integer_value(json_object_get(inf, "maxTokens")), 123);
    assert_true(json_real_value(json_object_get(inf, "temperature")) == 0.5);
    assert_true(json_real_value(json_object_get(inf, "topP")) == 0.25);
    assert_true(json_equal(json_object_get(inf, "stopSequences"), stops));
    assert_true(json_equal(json_object_get(o, "toolConfig"), tools));
    assert_null(json_object_get(o, "guardrailConfig"));
    json_decref(o);
    /* No system prompt, no tools, no tool blocks: none of those keys. */
    op = opts();
    o = body_of(msgs, &op, NULL);
    assert_null(json_object_get(o, "system"));
    assert_null(json_object_get(o, "toolConfig"));
    assert_null(json_object_get(json_object_get(o, "inferenceConfig"), "temperature"));
    json_decref(o);
    json_decref(msgs);
    json_decref(tools);
    json_decref(stops);
}

static void test_tool_choice_caching_guardrail_fields(void **state)
{
    json_t *msgs = json_loads("[{\"role\":\"user\",\"content\":[{\"text\":\"hi\"}]}]", 0, NULL);
    json_t *tools = json_loads("{\"tools\":[{\"toolSpec\":{\"name\":\"t\"}}]}", 0, NULL);
    json_t *fields = json_loads("{\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":1024},"
                                "\"top_k\":5}",
                                0, NULL);
    struct aw_request_options op = opts();
    json_t *o, *tc, *sys, *add;

    (void)state;
    op.system_prompt = "sys";
    op.prompt_caching = 1;
    op.tool_choice = "tool:t";
    op.additional_fields = fields;
    op.guardrail_id = "gr-1";
    op.guardrail_version = "3";
    op.guardrail_trace = "enabled";
    o = body_of(msgs, &op, tools);
    sys = json_object_get(o, "system");
    assert_int_equal(json_array_size(sys), 2);
    assert_non_null(json_object_get(json_array_get(sys, 1), "cachePoint"));
    tc = json_object_get(o, "toolConfig");
    assert_int_equal(json_array_size(json_object_get(tc, "tools")), 2);
    assert_non_null(json_object_get(json_array_get(json_object_get(tc, "tools"), 1), "cachePoint"));
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(tc, "toolChoice"), "tool"), "name")),
                        "t");
    /* A forced tool drops "thinking" but keeps the other fields. */
    add = json_object_get(o, "additionalModelRequestFields");
    assert_null(json_object_get(add, "thinking"));
    assert_int_equal(json_integer_value(json_object_get(add, "top_k")), 5);
    assert_string_equal(json_string_value(json_object_get(json_object_get(o, "guardrailConfig"),
                                                          "guardrailIdentifier")),
                        "gr-1");
    /* The shared tool config itself was not modified. */
    assert_int_equal(json_array_size(json_object_get(tools, "tools")), 1);
    json_decref(o);
    /* toolChoice auto keeps thinking. */
    op.tool_choice = "auto";
    o = body_of(msgs, &op, tools);
    assert_non_null(
        json_object_get(json_object_get(o, "additionalModelRequestFields"), "thinking"));
    json_decref(o);
    json_decref(msgs);
    json_decref(tools);
    json_decref(fields);
}

static void test_history_rules(void **state)
{
    json_t *msgs = json_loads(
        "[{\"role\":\"user\",\"content\":[{\"text\":\"x\"}]},"
        "{\"role\":\"assistant\",\"content\":[{\"text\":\"\"},{\"toolUse\":{\"toolUseId\":\"a\","
        "\"name\":\"t\",\"input\":{}}}]},"
        "{\"role\":\"user\",\"content\":[{\"toolResult\":{\"toolUseId\":\"a\",\"content\":[],"
        "\"status\":\"error\"}}]},"
        "{\"role\":\"assistant\",\"content\":[{\"text\":\"\"}]}]",
        0, NULL);
    json_t *before = json_deep_copy(msgs), *o, *sent, *spec;
    struct aw_request_options op = opts();

    (void)state;
    op.tool_result_status = 0; /* a model that rejects toolResult.status */
    o = body_of(msgs, &op, NULL);
    sent = json_object_get(o, "messages");
    /* Empty text blocks are gone; a turn left empty gets a placeholder. */
    assert_int_equal(json_array_size(json_object_get(json_array_get(sent, 1), "content")), 1);
    assert_string_equal(
        json_string_value(json_object_get(
            json_array_get(json_object_get(json_array_get(sent, 3), "content"), 0), "text")),
        "[blank text]");
    assert_null(json_object_get(
        json_object_get(json_array_get(json_object_get(json_array_get(sent, 2), "content"), 0),
                        "toolResult"),
        "status"));
    /* No tools configured but tool blocks in the history: a placeholder tool. */
    spec = json_object_get(
        json_array_get(json_object_get(json_object_get(o, "toolConfig"), "tools"), 0), "toolSpec");
    assert_string_equal(json_string_value(json_object_get(spec, "name")), "noop");
    /* The session's own history is untouched. */
    assert_true(json_equal(msgs, before));
    json_decref(o);
    assert_true(aw_bedrock_supports_tool_status("us.anthropic.claude-sonnet-4-20250514-v1:0"));
    assert_true(aw_bedrock_supports_tool_status("us.amazon.nova-micro-v1:0"));
    assert_false(aw_bedrock_supports_tool_status("meta.llama3-70b-instruct-v1:0"));
    json_decref(msgs);
    json_decref(before);
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

static void test_clock_skew_rows(void **state)
{
    static const struct {
        int status;
        const char *type, *message;
        int skewed;
    } rows[] = {
        {403, "InvalidSignatureException",
         "Signature expired: 20261201T150000Z is now earlier than 20261201T151000Z "
         "(20261201T155500Z - 5 min.)",
         1},
        {403, "InvalidSignatureException", "Signature not yet current: 20261201T160000Z", 1},
        {400, "RequestTimeTooSkewed", "The difference is too large.", 1},
        {403, "RequestExpired", "Request has expired.", 1},
        {403, "InvalidSignatureException",
         "The request signature we calculated does not match the signature you provided.", 0},
        {403, "AccessDeniedException", "You do not have access", 0},
        {500, "InternalServerException", "Signature expired", 0},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        assert_int_equal(aw_bedrock_clock_skewed(rows[i].status, rows[i].type, rows[i].message),
                         rows[i].skewed);
}

static void test_http_date(void **state)
{
    (void)state;
    assert_true(aw_bedrock_http_date("Tue, 01 Dec 2026 15:04:05 GMT") == 1796137445LL);
    assert_true(aw_bedrock_http_date("Thu, 01 Jan 1970 00:00:00 GMT") == 0);
    assert_true(aw_bedrock_http_date("2026-12-01T15:04:05Z") == -1);
    assert_true(aw_bedrock_http_date("") == -1);
    assert_true(aw_bedrock_http_date(NULL) == -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_path_encoding),
        cmocka_unit_test(test_build_body),
        cmocka_unit_test(test_build_body_with_the_catalogue_text),
        cmocka_unit_test(test_tool_choice_caching_guardrail_fields),
        cmocka_unit_test(test_history_rules),
        cmocka_unit_test(test_parse_response),
        cmocka_unit_test(test_parse_bad_responses),
        cmocka_unit_test(test_error_mapping),
        cmocka_unit_test(test_clock_skew_rows),
        cmocka_unit_test(test_http_date),
    };
    return cmocka_run_group_tests_name("aw_bedrock", tests, NULL, NULL);
}
