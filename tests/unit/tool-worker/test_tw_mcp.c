#include "tw_mcp.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const struct {
    const char *line;
    enum tw_mcp_kind kind;
    long long id;
} messages[] = {
    {"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}", TW_MCP_RESPONSE, 1},
    {"{\"jsonrpc\":\"2.0\",\"id\":7,\"error\":{\"code\":-32602,\"message\":\"bad\"}}",
     TW_MCP_RESPONSE, 7},
    {"{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"result\":{}}", TW_MCP_RESPONSE, -1},
    {"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"roots/list\"}", TW_MCP_REQUEST, -1},
    {"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}",
     TW_MCP_NOTIFICATION, -1},
    {"{\"jsonrpc\":\"1.0\",\"id\":1,\"result\":{}}", TW_MCP_INVALID, -1},
    {"{\"id\":1,\"result\":{}}", TW_MCP_INVALID, -1},
    {"{\"jsonrpc\":\"2.0\",\"id\":1}", TW_MCP_INVALID, 1},
    {"Secure MCP Filesystem Server running on stdio", TW_MCP_INVALID, -1},
    {"[1,2]", TW_MCP_INVALID, -1},
};

static void test_messages(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(messages) / sizeof(messages[0]); i++) {
        json_t *m, *result, *error;
        long long id;
        enum tw_mcp_kind k =
            tw_mcp_message(messages[i].line, strlen(messages[i].line), &m, &id, &result, &error);

        if (k != messages[i].kind || (k == TW_MCP_RESPONSE && id != messages[i].id))
            fail_msg("%s -> kind %d id %lld; want %d %lld", messages[i].line, k, id,
                     messages[i].kind, messages[i].id);
        json_decref(m);
    }
}

static void test_replies(void **state)
{
    json_t *ping = json_loads("{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"ping\"}", 0, NULL);
    json_t *roots =
        json_loads("{\"jsonrpc\":\"2.0\",\"id\":\"r\",\"method\":\"roots/list\"}", 0, NULL);
    json_t *a = tw_mcp_reply_to(ping), *b = tw_mcp_reply_to(roots);

    (void)state;
    assert_int_equal(json_integer_value(json_object_get(a, "id")), 9);
    assert_true(json_is_object(json_object_get(a, "result")));
    assert_string_equal(json_string_value(json_object_get(b, "id")), "r");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(b, "error"), "code")),
                     -32601);
    json_decref(ping);
    json_decref(roots);
    json_decref(a);
    json_decref(b);
}

static const struct {
    const char *result, *text;
    int is_error;
} results[] = {
    {"{\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]}",
     "a\nb", 0},
    {"{\"content\":[{\"type\":\"text\",\"text\":\"no such file\"}],\"isError\":true}",
     "no such file", 1},
    {"{\"content\":[{\"type\":\"image\",\"mimeType\":\"image/png\",\"data\":\"QUJD\"}]}",
     "[image image/png, 4 bytes of base64 not shown]", 0},
    {"{\"content\":[{\"type\":\"resource\",\"resource\":{\"uri\":\"file:///a\",\"text\":\"hi\"}}]}",
     "hi", 0},
    {"{\"content\":[{\"type\":\"resource_link\",\"uri\":\"file:///b\"}]}", "[resource file:///b]",
     0},
    {"{\"content\":[],\"structuredContent\":{\"n\":1}}", "{\"n\":1}", 0},
    {"{\"content\":[{\"type\":\"hologram\"}]}", "[hologram content not shown]", 0},
    {"{}", "", 0},
};

static void test_result_text(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(results) / sizeof(results[0]); i++) {
        json_t *r = json_loads(results[i].result, 0, NULL);
        int is_error = -1;
        char *text = tw_mcp_result_text(r, &is_error);

        assert_non_null(text);
        if (strcmp(text, results[i].text) || is_error != results[i].is_error)
            fail_msg("%s -> '%s' %d; want '%s' %d", results[i].result, text, is_error,
                     results[i].text, results[i].is_error);
        free(text);
        json_decref(r);
    }
}

/* The client against a scripted server (a shell script speaking the
 * protocol), without a sandbox: the session logic itself. */
static void test_a_scripted_server(void **state)
{
    char *const list_argv[] = {
        "/bin/sh", "-c",
        "read init; echo 'starting up'; "
        "echo '{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"protocolVersion\":\"2025-06-18\"}}'; "
        "read initialized; read list1; "
        "echo '{\"jsonrpc\":\"2.0\",\"id\":99,\"method\":\"ping\"}'; read pong; "
        "echo '{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":[{\"name\":\"a\"}],"
        "\"nextCursor\":\"p2\"}}'; read list2; "
        "case \"$list2\" in *p2*) echo '{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"tools\":"
        "[{\"name\":\"b\"}]}}';; esac",
        NULL};
    char *const call_argv[] = {
        "/bin/sh", "-c",
        "read init; echo '{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}'; read initialized; "
        "read call; case \"$call\" in *'\"name\":\"echo\"'*'\"x\":1'*) "
        "echo '{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"content\":[{\"type\":\"text\","
        "\"text\":\"got x\"}]}}';; *) echo '{\"jsonrpc\":\"2.0\",\"id\":2,\"error\":{\"code\":"
        "-32602,\"message\":\"unexpected\"}}';; esac",
        NULL};
    char *const dead_argv[] = {"/bin/sh", "-c", "exit 0", NULL};
    json_t *tools = NULL, *args = json_pack("{s:i}", "x", 1);
    char err[256], *text = NULL;
    int is_error = -1;

    (void)state;
    if (tw_mcp_list(list_argv, &tools, err, sizeof(err)))
        fail_msg("list: %s", err);
    assert_int_equal(json_array_size(tools), 2); /* both pages */
    assert_string_equal(json_string_value(json_object_get(json_array_get(tools, 1), "name")), "b");
    json_decref(tools);
    if (tw_mcp_call(call_argv, "echo", args, &text, &is_error, err, sizeof(err)))
        fail_msg("call: %s", err);
    assert_string_equal(text, "got x");
    assert_int_equal(is_error, 0);
    free(text);
    assert_int_equal(tw_mcp_call(call_argv, "other", args, &text, &is_error, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "tools/call failed: MCP error -32602: unexpected"));
    /* a server that is gone: met on writing or on reading, said alike */
    assert_int_equal(tw_mcp_list(dead_argv, &tools, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "(it exited or crashed)"));
    json_decref(args);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_messages),
        cmocka_unit_test(test_replies),
        cmocka_unit_test(test_result_text),
        cmocka_unit_test(test_a_scripted_server),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
