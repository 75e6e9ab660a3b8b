#include "cm_err.h"
#include "tw_tools.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static struct tw_catalog_config config(const char *manifest, int test_tools)
{
    struct tw_catalog_config c;

    memset(&c, 0, sizeof(c));
    c.manifest = manifest;
    c.test_tools = test_tools;
    c.defaults = (struct tw_limits){10, 1LL << 30, 64LL << 20, 256, 64, 30000, 262144};
    c.max = (struct tw_limits){60, 8LL << 30, 1LL << 30, 4096, 1024, 600000, 1 << 20};
    return c;
}

/* Runs an in-process tool the way tw_runner does: input check, then the function. */
static void run(const struct tw_catalog *cat, const char *name, const char *input, int want_error,
                const char *text_has)
{
    const struct tw_tool *t = tw_catalog_find(cat, name);
    struct tw_result r = {NULL, 0, 0};
    json_t *in;

    assert_non_null(t);
    in = tw_tool_input(t, input, &r);
    if (in) {
        assert_int_equal(t->kind, TW_INPROC);
        assert_int_equal(t->fn(in, &r), 0);
        json_decref(in);
    }
    assert_non_null(r.text);
    if (r.is_error != want_error || !strstr(r.text, text_has))
        fail_msg("%s(%s) -> error=%d '%s'; want error=%d and '%s'", name, input, r.is_error, r.text,
                 want_error, text_has);
    tw_result_free(&r);
}

static void test_builtins_have_valid_schemas(void **state)
{
    struct tw_catalog_config cfg = config(NULL, 0);
    struct tw_catalog *cat;
    char err[256];
    size_t i;
    static const char *const want[] = {"calculator", "current_time", "shell",       "file_read",
                                       "file_write", "file_list",    "http_request"};

    (void)state;
    cat = tw_catalog_new(&cfg, err, sizeof(err));
    assert_non_null(cat);
    assert_int_equal(tw_catalog_count(cat), sizeof(want) / sizeof(want[0]));
    for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const struct tw_tool *t = tw_catalog_find(cat, want[i]);
        json_t *schema;

        assert_non_null(t);
        schema = json_loads(t->schema_text, 0, NULL);
        assert_string_equal(json_string_value(json_object_get(schema, "type")), "object");
        json_decref(schema);
    }
    /* what runs code, files or network is sandboxed; only http_request has a network */
    assert_int_equal(tw_catalog_find(cat, "shell")->kind, TW_SANDBOXED);
    assert_int_equal(tw_catalog_find(cat, "file_write")->kind, TW_SANDBOXED);
    assert_false(tw_catalog_find(cat, "shell")->network);
    assert_true(tw_catalog_find(cat, "http_request")->network);
    assert_int_equal(tw_catalog_find(cat, "calculator")->kind, TW_INPROC);
    assert_null(tw_catalog_find(cat, "slow")); /* test tools only when asked */
    tw_catalog_free(cat);
    cfg.test_tools = 1;
    cat = tw_catalog_new(&cfg, err, sizeof(err));
    assert_non_null(tw_catalog_find(cat, "slow"));
    assert_non_null(tw_catalog_find(cat, "background"));
    tw_catalog_free(cat);
}

static void test_calculator_and_input_checks(void **state)
{
    struct tw_catalog_config cfg = config(NULL, 0);
    struct tw_catalog *cat = tw_catalog_new(&cfg, NULL, 0);

    (void)state;
    run(cat, "calculator", "{\"expression\":\"(2+3)*4^2\"}", 0, "80");
    run(cat, "calculator", "{\"expression\":\"1/0\"}", 1, "division by zero");
    run(cat, "calculator", "{\"expression\":42}", 1,
        "input.expression: must be a string (got integer)");
    run(cat, "calculator", "{}", 1, "input: 'expression' is required");
    run(cat, "calculator", "not json", 1, "not valid JSON");
    run(cat, "calculator", "[1,2]", 1, "must be a JSON object");
    tw_catalog_free(cat);
}

static void test_current_time(void **state)
{
    struct tw_catalog_config cfg = config(NULL, 0);
    struct tw_catalog *cat = tw_catalog_new(&cfg, NULL, 0);
    const struct tw_tool *t = tw_catalog_find(cat, "current_time");
    struct tw_result r;
    json_t *in = json_object(), *o;
    long long now = (long long)time(NULL), unix_s;

    (void)state;
    assert_int_equal(t->fn(in, &r), 0);
    json_decref(in);
    assert_false(r.is_error);
    o = json_loads(r.text, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(o, "timezone")), "UTC");
    unix_s = json_integer_value(json_object_get(o, "unix"));
    assert_true(unix_s >= now - 5 && unix_s <= now + 5);
    json_decref(o);
    tw_result_free(&r);
    run(cat, "current_time", "{\"timezone\":\"Asia/Kolkata\"}", 0, "+05:30");
    run(cat, "current_time", "{\"timezone\":\"Mars/Olympus\"}", 1, "unknown time zone");
    run(cat, "current_time", "{\"timezone\":\"../../etc/passwd\"}", 1, "unknown time zone");
    tw_catalog_free(cat);
}

static void test_example_manifest(void **state)
{
    struct tw_catalog_config cfg = config(AC_SOURCE_DIR "/examples/tools/manifest.json", 0);
    struct tw_catalog *cat;
    const struct tw_tool *t;
    char err[256];

    (void)state;
    cat = tw_catalog_new(&cfg, err, sizeof(err));
    if (!cat)
        fail_msg("%s", err);
    t = tw_catalog_find(cat, "statistics");
    assert_non_null(t);
    assert_int_equal(t->kind, TW_SANDBOXED);
    assert_string_equal(t->argv[0], "python3");
    assert_string_equal(t->argv[2], "/tool/statistics_tool.py"); /* {tool_dir} replaced */
    assert_string_equal(t->env[0], "STATS_PRECISION=4");
    assert_int_equal(t->lim.cpu_s, 5);
    assert_int_equal(t->lim.as_bytes, 512LL << 20);
    assert_int_equal(t->lim.nofile, 256); /* not set: the default */
    assert_int_equal(t->lim.timeout_ms, 10000);
    assert_true(t->idempotent);
    assert_non_null(strstr(t->tool_dir, "/examples/tools"));
    assert_true(tw_catalog_find(cat, "report")->background);
    tw_catalog_free(cat);
}

/* A manifest written by the test, and the error it must produce. */
static void bad_manifest(const char *json, const char *says)
{
    char path[] = "/tmp/tw-manifest-XXXXXX", err[512];
    struct tw_catalog_config cfg;
    struct tw_catalog *cat;
    int fd = mkstemp(path);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, json, strlen(json)), (ssize_t)strlen(json));
    close(fd);
    cfg = config(path, 0);
    err[0] = '\0';
    cat = tw_catalog_new(&cfg, err, sizeof(err));
    unlink(path);
    if (cat || !strstr(err, says))
        fail_msg("%s -> %s '%s'; want failure '%s'", json, cat ? "loaded" : "failed", err, says);
}

#define NAMED(name, extra)                                                                         \
    "{\"tools\":[{\"name\":\"" name "\",\"description\":\"d\",\"input_schema\":{\"type\":"         \
    "\"object\"},\"command\":[\"/bin/true\"]" extra "}]}"
#define TOOL(extra) NAMED("t", extra)

static void test_bad_manifests_are_refused(void **state)
{
    (void)state;
    bad_manifest("{", "tool manifest");
    bad_manifest("{\"tools\":{}}", "\"tools\" and \"mcp_servers\" must be arrays");
    bad_manifest(NAMED("calculator", ""), "defined twice");
    bad_manifest(NAMED("a b", ""), "tool name");
    bad_manifest("{\"tools\":[{\"name\":\"t\",\"description\":\"d\",\"command\":[]}]}",
                 "\"command\" must be an array");
    bad_manifest("{\"tools\":[{\"name\":\"t\",\"description\":\"d\",\"command\":[\"x\"],"
                 "\"input_schema\":{\"type\":\"string\"}}]}",
                 "type object");
    bad_manifest(TOOL(",\"timeout_ms\":0"), "timeout_ms");
    bad_manifest(TOOL(",\"limits\":{\"memory_mb\":999999}"), "limits.memory_mb");
    bad_manifest(TOOL(",\"env\":{\"AWS_SECRET_ACCESS_KEY\":\"x\"}"), "credentials");
    bad_manifest(TOOL(",\"env\":{\"GITHUB_TOKEN\":\"x\"}"), "credentials");
    bad_manifest(TOOL(",\"env\":{\"OPENAI_API_KEY\":\"x\"}"), "credentials");
    bad_manifest("{\"tools\":[{\"name\":\"x\",\"command\":[\"a\"]}]}", "\"description\"");
}

static void test_mcp_server_tools(void **state)
{
    char path[] = "/tmp/tw-manifest-XXXXXX", err[256], skipped[256];
    const char *json = "{\"mcp_servers\":[{\"name\":\"fs\",\"command\":[\"node\","
                       "\"{tool_dir}/s.js\",\"/workspace\"],\"env\":{\"MODE\":\"x\"},"
                       "\"limits\":{\"memory_mb\":2048}},{\"name\":\"raw\",\"prefix\":\"\","
                       "\"command\":[\"srv\"]}]}";
    struct tw_catalog_config cfg;
    struct tw_catalog *cat;
    const struct tw_mcp_server *m;
    const struct tw_tool *t;
    json_t *tools;
    int fd = mkstemp(path);

    (void)state;
    assert_int_equal(write(fd, json, strlen(json)), (ssize_t)strlen(json));
    close(fd);
    cfg = config(path, 0);
    cat = tw_catalog_new(&cfg, err, sizeof(err));
    unlink(path);
    if (!cat)
        fail_msg("%s", err);
    assert_int_equal(tw_catalog_mcp_count(cat), 2);
    m = tw_catalog_mcp_at(cat, 0);
    assert_string_equal(m->prefix, "fs_");
    assert_string_equal(m->argv[1], "/tool/s.js");
    assert_int_equal(m->lim.as_bytes, 2048LL << 20);
    assert_string_equal(tw_catalog_mcp_at(cat, 1)->prefix, "");
    tools = json_loads("[{\"name\":\"read\",\"description\":\"reads\",\"inputSchema\":"
                       "{\"type\":\"object\"},\"annotations\":{\"readOnlyHint\":true}},"
                       "{\"name\":\"write\",\"inputSchema\":{\"type\":\"object\"}},"
                       "{\"name\":\"bad name!\",\"inputSchema\":{}},"
                       "{\"name\":\"noschema\"}]",
                       0, NULL);
    assert_int_equal(
        tw_catalog_add_mcp_tools(cat, 0, tools, skipped, sizeof(skipped), err, sizeof(err)), 2);
    assert_string_equal(skipped, "bad name!, noschema");
    t = tw_catalog_find(cat, "fs_read");
    assert_non_null(t);
    assert_string_equal(t->mode, "mcp_call");
    assert_string_equal(t->argv[0], "read"); /* the server's own name, then its command */
    assert_string_equal(t->argv[1], "node");
    assert_string_equal(t->env[0], "MODE=x");
    assert_true(t->idempotent); /* readOnlyHint */
    assert_false(tw_catalog_find(cat, "fs_write")->idempotent);
    assert_string_equal(tw_catalog_find(cat, "fs_write")->description, "write");
    /* the same tools again collide with themselves: skipped, not duplicated */
    assert_int_equal(
        tw_catalog_add_mcp_tools(cat, 0, tools, skipped, sizeof(skipped), err, sizeof(err)), 0);
    json_decref(tools);
    tw_catalog_free(cat);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtins_have_valid_schemas),
        cmocka_unit_test(test_calculator_and_input_checks),
        cmocka_unit_test(test_current_time),
        cmocka_unit_test(test_example_manifest),
        cmocka_unit_test(test_bad_manifests_are_refused),
        cmocka_unit_test(test_mcp_server_tools),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
