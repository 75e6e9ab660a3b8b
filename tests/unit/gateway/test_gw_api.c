/* gw_api, data-driven: request bodies and the answers they must get. */
#include "cm_rpc.h"
#include "gw_api.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const struct {
    const char *body;
    int status; /* 0 = accepted */
    const char *error, *details_has;
} rows[] = {
    {"{\"prompt\":\"hi\"}", 0, NULL, NULL},
    {"{\"prompt\":\"h\xc3\xa9\",\"session_id\":\"s\",\"stream\":false,\"extra\":[1]}", 0, NULL,
     NULL},
    {"", 400, "Invalid JSON", "empty"},
    {"{bad", 400, "Invalid JSON", "line 1"},
    {"{\"prompt\":\"hi\"} trailing", 400, "Invalid JSON", NULL},
    {"{\"prompt\":\"a\",\"prompt\":\"b\"}", 400, "Invalid JSON", "duplicate"},
    {"\xff\xfe", 400, "Invalid encoding", "UTF-8"},
    {"[1,2]", 400, "Invalid request", "JSON object"},
    {"\"just a string\"", 400, "Invalid request", "JSON object"},
    {"{}", 400, "Invalid request", "field 'prompt': missing"},
    {"{\"prompt\":5}", 400, "Invalid request", "field 'prompt': must be a string"},
    {"{\"prompt\":null}", 400, "Invalid request", "must be a string"},
    {"{\"prompt\":\"\"}", 400, "Invalid request", "must not be empty"},
    {"{\"prompt\":\"a\\u0000b\"}", 400, "Invalid JSON", "u0000"},
    {"{\"prompt\":\"x\",\"session_id\":7}", 400, "Invalid request", "session_id"},
    {"{\"prompt\":\"x\",\"stream\":\"yes\"}", 400, "Invalid request", "must be a boolean"},
    {"{\"prompt\":\"x\",\"max_total_tokens\":1000,\"max_output_tokens\":null}", 0, NULL, NULL},
    {"{\"prompt\":\"x\",\"max_total_tokens\":0}", 400, "Invalid request", "max_total_tokens"},
    {"{\"prompt\":\"x\",\"max_output_tokens\":-5}", 400, "Invalid request", "max_output_tokens"},
    {"{\"prompt\":\"x\",\"max_output_tokens\":1.5}", 400, "Invalid request", "from 1 to"},
    {"{\"prompt\":\"x\",\"max_total_tokens\":\"9\"}", 400, "Invalid request", "integer"},
    {"{\"prompt\":\"x\",\"max_total_tokens\":1000000000001}", 400, "Invalid request", "10^12"},
    {"{\"prompt\":\"x\",\"idempotency_key\":\"order-42\"}", 0, NULL, NULL},
    {"{\"prompt\":\"x\",\"idempotency_key\":\"\"}", 400, "Invalid request", "idempotency_key"},
    {"{\"prompt\":\"x\",\"idempotency_key\":\"a\\nb\"}", 400, "Invalid request", "printable"},
    {"{\"prompt\":\"x\",\"idempotency_key\":7}", 400, "Invalid request", "must be a string"},
};

/* The budgets a body asks for reach the invocation. */
static void test_budgets(void **state)
{
    static const char body[] = "{\"prompt\":\"x\",\"max_total_tokens\":1000,"
                               "\"max_output_tokens\":200}";
    struct gw_invocation inv;
    struct gw_reply err = {0, NULL};

    (void)state;
    assert_int_equal(gw_api_parse_invocation(body, strlen(body), &inv, &err), 0);
    assert_int_equal(inv.max_total_tokens, 1000);
    assert_int_equal(inv.max_output_tokens, 200);
    gw_invocation_clear(&inv);
    assert_int_equal(gw_api_parse_invocation("{\"prompt\":\"x\"}", 14, &inv, &err), 0);
    assert_int_equal(inv.max_total_tokens, 0);
    assert_int_equal(inv.max_output_tokens, 0);
    gw_invocation_clear(&inv);
}

static void test_parse_rows(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct gw_invocation inv;
        struct gw_reply err = {0, NULL};
        int rc = gw_api_parse_invocation(rows[i].body, strlen(rows[i].body), &inv, &err);
        json_t *o;

        if (rows[i].status == 0) {
            if (rc)
                fail_msg("row %zu rejected: %s", i, err.body);
            assert_non_null(inv.prompt);
            gw_invocation_clear(&inv);
            continue;
        }
        if (!rc)
            fail_msg("row %zu accepted", i);
        assert_int_equal(err.status, rows[i].status);
        o = json_loads(err.body, 0, NULL);
        assert_non_null(o);
        if (strcmp(json_string_value(json_object_get(o, "error")), rows[i].error))
            fail_msg("row %zu: %s", i, err.body);
        if (rows[i].details_has &&
            !strstr(json_string_value(json_object_get(o, "details")), rows[i].details_has))
            fail_msg("row %zu: details '%s' lack '%s'", i,
                     json_string_value(json_object_get(o, "details")), rows[i].details_has);
        json_decref(o);
        gw_reply_clear(&err);
        assert_null(inv.root);
    }
}

static void test_stream_flag(void **state)
{
    struct gw_invocation inv;
    struct gw_reply err = {0, NULL};
    const char *b = "{\"prompt\":\"x\",\"stream\":true}";

    (void)state;
    assert_int_equal(gw_api_parse_invocation(b, strlen(b), &inv, &err), 0);
    assert_int_equal(inv.stream, 1);
    gw_invocation_clear(&inv);
}

static void test_session_id_precedence(void **state)
{
    char out[GW_SESSION_ID_MAX + 1];
    struct gw_reply err = {0, NULL};

    (void)state;
    assert_int_equal(gw_api_session_id("from-header", "from-body", out, &err), 0);
    assert_string_equal(out, "from-header");
    assert_int_equal(gw_api_session_id(NULL, "from-body", out, &err), 0);
    assert_string_equal(out, "from-body");
    assert_int_equal(gw_api_session_id("", "from-body", out, &err), 0);
    assert_string_equal(out, "from-body");
    assert_int_equal(gw_api_session_id(NULL, NULL, out, &err), 0);
    assert_int_equal(strlen(out), 36); /* generated UUID */
    assert_int_equal(gw_api_session_id("has space", NULL, out, &err), -1);
    assert_int_equal(err.status, 400);
    gw_reply_clear(&err);
}

static void test_response_shape(void **state)
{
    char *s = gw_api_response_body("inv", "sess", "h\xc3\xa9llo", "EndTurn", 3, 4, 7, 2);
    json_t *o = json_loads(s, 0, NULL), *u = json_object_get(o, "usage");

    (void)state;
    assert_int_equal(json_object_size(o), 6);
    assert_string_equal(json_string_value(json_object_get(o, "invocation_id")), "inv");
    assert_string_equal(json_string_value(json_object_get(o, "session_id")), "sess");
    assert_string_equal(json_string_value(json_object_get(o, "response")), "h\xc3\xa9llo");
    assert_string_equal(json_string_value(json_object_get(o, "stop_reason")), "EndTurn");
    assert_int_equal(json_integer_value(json_object_get(u, "input_tokens")), 3);
    assert_int_equal(json_integer_value(json_object_get(u, "output_tokens")), 4);
    assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")), 7);
    assert_int_equal(json_integer_value(json_object_get(o, "iterations")), 2);
    json_decref(o);
    free(s);
}

static void test_agent_error_mapping(void **state)
{
    static const struct {
        int code;
        const char *type;
        int status;
    } map[] = {
        {CM_RPC_UNAVAILABLE, "", 503},
        {CM_RPC_RESOURCE_EXHAUSTED, "SessionLimit", 503},
        {CM_RPC_ABORTED, "SessionBusy", 409},
        {CM_RPC_UNAVAILABLE, "ShuttingDown", 503},
        {CM_RPC_CANCELLED, "ShuttingDown", 503},
        {CM_RPC_ABORTED, "", 500},
        {CM_RPC_DEADLINE_EXCEEDED, "", 504},
        {CM_RPC_INVALID_ARGUMENT, "", 400},
        {CM_RPC_FAILED_PRECONDITION, "ModelError", 502},
        {CM_RPC_INTERNAL, "AgentError", 500},
        {CM_RPC_UNKNOWN, NULL, 500},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        struct gw_reply r = {0, NULL};
        json_t *o;

        gw_api_agent_error(map[i].code, map[i].type, "d", &r);
        assert_int_equal(r.status, map[i].status);
        o = json_loads(r.body, 0, NULL);
        assert_non_null(json_object_get(o, "error"));
        assert_string_equal(json_string_value(json_object_get(o, "details")), "d");
        json_decref(o);
        gw_reply_clear(&r);
    }
}

/* Found by the fuzzer: details quoting a broken UTF-8 input still give a body. */
static void test_error_body_with_invalid_utf8_details(void **state)
{
    char *s = gw_api_error_body("Invalid JSON", "near '\xee\x91'");
    json_t *o = json_loads(s, 0, NULL);

    (void)state;
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "details")), "near '?"
                                                                          "?'");
    json_decref(o);
    free(s);
}

static void test_ping_body(void **state)
{
    char *s = gw_api_ping_body("Healthy", 1795531304);

    (void)state;
    assert_string_equal(s, "{\"status\":\"Healthy\",\"time_of_last_update\":1795531304}");
    free(s);
}

static void test_metadata_rules(void **state)
{
    static const struct {
        const char *name, *value;
        int ok;
    } mrows[] = {
        {"X-Amzn-Bedrock-AgentCore-Runtime-Custom-Tenant", "acme corp", 1},
        {"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", 1},
        {"x-custom", "~!@#$%^&*()_+ printable", 1},
        {"x-custom", "caf\xc3\xa9", 0}, /* UTF-8 */
        {"x-custom", "a\tb", 0},        /* control */
        {"x-custom", "del\x7f", 0},     /* DEL */
        {"x custom", "v", 0},           /* a key gRPC refuses */
        {"x:custom", "v", 0},
        {"", "v", 0},
        {"x-custom", "0123456789", 0}, /* over the length given below */
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(mrows) / sizeof(mrows[0]); i++) {
        if (gw_api_metadata_ok(mrows[i].name, mrows[i].value, i == 9 ? 9 : 4096) != mrows[i].ok)
            fail_msg("row %zu: '%s: %s' should be %s", i, mrows[i].name, mrows[i].value,
                     mrows[i].ok ? "accepted" : "refused");
    }
}

/* Built bodies: nesting and element counts around the caps, brackets and
 * commas inside strings (which do not count), and the 400 it becomes. */
static char *repeat(const char *head, const char *unit, size_t n, const char *tail)
{
    size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail), i;
    char *s = malloc(hl + ul * n + tl + 1), *p = s;

    memcpy(p, head, hl);
    p += hl;
    for (i = 0; i < n; i++, p += ul)
        memcpy(p, unit, ul);
    memcpy(p, tail, tl + 1);
    return s;
}

static void test_json_shape_caps(void **state)
{
    struct gw_invocation inv;
    struct gw_reply err = {0, NULL};
    char why[128],
        *deep_ok = repeat("", "[", GW_JSON_MAX_DEPTH, ""),
        *deep = repeat("", "[", GW_JSON_MAX_DEPTH + 1, ""),
        *wide_ok = repeat("{\"prompt\":\"x\",\"a\":[0", ",0", GW_JSON_MAX_ELEMENTS - 3, "]}"),
        *wide = repeat("{\"prompt\":\"x\",\"a\":[", "[],", GW_JSON_MAX_ELEMENTS, "0]}"),
        *strings = repeat("{\"prompt\":\"", "[[,{\\\"", 200000, "\"}");

    (void)state;
    assert_int_equal(gw_api_json_shape(deep_ok, strlen(deep_ok), why, sizeof(why)), 0);
    assert_int_equal(gw_api_json_shape(deep, strlen(deep), why, sizeof(why)), -1);
    assert_string_equal(why, "JSON nested deeper than 64 levels");
    assert_int_equal(gw_api_json_shape(wide_ok, strlen(wide_ok), why, sizeof(why)), 0);
    assert_int_equal(gw_api_json_shape(wide, strlen(wide), why, sizeof(why)), -1);
    assert_string_equal(why, "JSON with more than 100000 elements");
    /* inside a string nothing counts, escaped quotes included */
    assert_int_equal(gw_api_json_shape(strings, strlen(strings), why, sizeof(why)), 0);
    assert_int_equal(gw_api_parse_invocation(strings, strlen(strings), &inv, &err), 0);
    gw_invocation_clear(&inv);
    /* and a refused shape is the parser's 400 */
    assert_int_equal(gw_api_parse_invocation(wide, strlen(wide), &inv, &err), -1);
    assert_int_equal(err.status, 400);
    assert_non_null(strstr(err.body, "\"Invalid JSON\""));
    assert_non_null(strstr(err.body, "more than 100000 elements"));
    free(err.body);
    free(deep_ok);
    free(deep);
    free(wide_ok);
    free(wide);
    free(strings);
}

static void test_origin_allow_list(void **state)
{
    (void)state;
    assert_true(gw_api_origin_allowed(NULL, NULL)); /* not a browser */
    assert_false(gw_api_origin_allowed("https://evil.example", NULL));
    assert_false(gw_api_origin_allowed("https://evil.example", ""));
    assert_true(gw_api_origin_allowed("https://app.example", "https://app.example"));
    assert_true(gw_api_origin_allowed("HTTPS://App.Example", "http://x, https://app.example"));
    assert_false(gw_api_origin_allowed("https://app.example.evil", "https://app.example"));
    assert_false(gw_api_origin_allowed("https://app.exampl", "https://app.example"));
    assert_true(gw_api_origin_allowed("null", "*"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_rows),
        cmocka_unit_test(test_budgets),
        cmocka_unit_test(test_stream_flag),
        cmocka_unit_test(test_session_id_precedence),
        cmocka_unit_test(test_response_shape),
        cmocka_unit_test(test_agent_error_mapping),
        cmocka_unit_test(test_error_body_with_invalid_utf8_details),
        cmocka_unit_test(test_ping_body),
        cmocka_unit_test(test_metadata_rules),
        cmocka_unit_test(test_json_shape_caps),
        cmocka_unit_test(test_origin_allow_list),
    };
    return cmocka_run_group_tests_name("gw_api", tests, NULL, NULL);
}
