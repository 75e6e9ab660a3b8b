/* aw_stream over the real ConverseStream captures: the turn it assembles. */
#include "aw_stream.h"
#include "cm_err.h"
#include "th_proc.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define DIR AC_TESTDATA_DIR "/eventstream/bedrock"

struct run {
    struct aw_stream s;
    struct aw_model_error err;
    int rc;
    char deltas[4096];
};

static void on_text(void *ud, int block, const char *t, size_t n)
{
    struct run *r = ud;
    size_t have = strlen(r->deltas);

    (void)block;
    snprintf(r->deltas + have, sizeof(r->deltas) - have, "%.*s", (int)n, t);
}

static int on_frame(void *ud, const struct cm_evs_message *m)
{
    struct run *r = ud;

    r->rc = aw_stream_on_frame(&r->s, m, &r->err);
    return r->rc;
}

/* Decodes capture |name| through aw_stream; returns the finish() result. */
static int assemble(const char *name, struct run *r, struct aw_turn *t)
{
    char path[512];
    size_t n;
    char *data;
    struct cm_evs_decoder d;
    int rc;

    snprintf(path, sizeof(path), "%s/%s.bin", DIR, name);
    data = th_read_file(path, &n);
    assert_non_null(data);
    memset(r, 0, sizeof(*r));
    aw_stream_init(&r->s, on_text, r);
    cm_evs_decoder_init(&d, 0, on_frame, r);
    rc = cm_evs_decoder_feed(&d, data, n);
    cm_evs_decoder_cleanup(&d);
    free(data);
    if (rc == 0)
        rc = aw_stream_finish(&r->s, t, &r->err);
    aw_stream_cleanup(&r->s);
    return rc;
}

static json_t *block(const struct aw_turn *t, size_t i)
{
    return json_array_get(json_object_get(t->message, "content"), i);
}

static void test_text(void **state)
{
    struct run r;
    struct aw_turn t;

    (void)state;
    assert_int_equal(assemble("converse_stream_text_nova_micro", &r, &t), 0);
    assert_string_equal(t.stop_reason, "end_turn");
    assert_int_equal(t.input_tokens, 577);
    assert_int_equal(t.output_tokens, 18);
    assert_int_equal(t.total_tokens, 595);
    assert_int_equal(json_array_size(json_object_get(t.message, "content")), 1);
    assert_string_equal(json_string_value(json_object_get(block(&t, 0), "text")),
                        "The current temperature in Paris, the capital of France, is 30\xc2\xb0"
                        "C.");
    /* The deltas handed out as they came add up to the block. */
    assert_string_equal(r.deltas, json_string_value(json_object_get(block(&t, 0), "text")));
    aw_turn_clear(&t);
}

static void test_tool_use(void **state)
{
    struct run r;
    struct aw_turn t;
    json_t *use;

    (void)state;
    assert_int_equal(assemble("converse_stream_tool_use_nova_micro", &r, &t), 0);
    assert_string_equal(t.stop_reason, "tool_use");
    assert_int_equal(json_array_size(json_object_get(t.message, "content")), 2);
    assert_non_null(strstr(json_string_value(json_object_get(block(&t, 0), "text")), "<thinking>"));
    use = json_object_get(block(&t, 1), "toolUse");
    assert_string_equal(json_string_value(json_object_get(use, "toolUseId")),
                        "tooluse_lAG_zP8QRHmSYOwZzzaCqA");
    assert_string_equal(json_string_value(json_object_get(use, "name")), "get_temperature");
    assert_string_equal(json_string_value(json_object_get(json_object_get(use, "input"), "city")),
                        "Paris");
    assert_int_equal(t.total_tokens, 562);
    aw_turn_clear(&t);
}

static void test_reasoning_kept_with_signature(void **state)
{
    struct run r;
    struct aw_turn t;
    json_t *rt;

    (void)state;
    assert_int_equal(assemble("converse_stream_reasoning_claude_sonnet4", &r, &t), 0);
    rt = json_object_get(json_object_get(block(&t, 0), "reasoningContent"), "reasoningText");
    assert_true(strlen(json_string_value(json_object_get(rt, "text"))) > 20);
    assert_non_null(strstr(json_string_value(json_object_get(rt, "signature")), "Eu0CCkgI"));
    assert_string_equal(json_string_value(json_object_get(block(&t, 1), "text")),
                        "Hello! It's nice to meet you. How can I help you today?");
    /* Reasoning text is not forwarded as answer text. */
    assert_string_equal(r.deltas, "Hello! It's nice to meet you. How can I help you today?");
    aw_turn_clear(&t);
}

static void test_server_tool_result(void **state)
{
    struct run r;
    struct aw_turn t;
    json_t *tr;

    (void)state;
    assert_int_equal(assemble("converse_stream_server_tool_nova2_lite", &r, &t), 0);
    assert_int_equal(json_array_size(json_object_get(t.message, "content")), 3);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(block(&t, 0), "toolUse"), "type")),
        "server_tool_use");
    tr = json_object_get(block(&t, 1), "toolResult");
    assert_string_equal(json_string_value(json_object_get(tr, "status")), "success");
    assert_non_null(json_object_get(json_array_get(json_object_get(tr, "content"), 0), "json"));
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(block(&t, 2), "toolUse"), "name")),
        "final_result");
    assert_string_equal(t.stop_reason, "tool_use");
    aw_turn_clear(&t);
}

static void test_exceptions_are_typed(void **state)
{
    struct run r;
    struct aw_turn t;

    (void)state;
    assert_int_equal(assemble("synthetic_stream_then_modelStreamErrorException", &r, &t),
                     CM_EUPSTREAM);
    assert_string_equal(r.err.type, "ModelStreamErrorException");
    assert_string_equal(r.err.message, "Model stream error");
    assert_int_equal(r.err.http_status, 424);
    assert_int_equal(r.s.forwarded, 1); /* "Hello" went out before the failure */
    assert_int_equal(assemble("synthetic_throttlingException_frame", &r, &t), CM_EUPSTREAM);
    assert_string_equal(r.err.type, "ThrottlingException");
    assert_int_equal(r.err.http_status, 429);
    assert_true(aw_bedrock_retryable(r.err.http_status, r.err.type));
    assert_int_equal(r.s.forwarded, 0);
}

static void test_truncated_stream(void **state)
{
    struct aw_stream s;
    struct aw_turn t;
    struct aw_model_error e;

    (void)state;
    aw_stream_init(&s, NULL, NULL);
    assert_int_equal(aw_stream_finish(&s, &t, &e), CM_EINVAL);
    assert_string_equal(e.type, "IncompleteStream");
    aw_stream_cleanup(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_tool_use),
        cmocka_unit_test(test_reasoning_kept_with_signature),
        cmocka_unit_test(test_server_tool_result),
        cmocka_unit_test(test_exceptions_are_typed),
        cmocka_unit_test(test_truncated_stream),
    };
    return cmocka_run_group_tests_name("aw_stream", tests, NULL, NULL);
}
