/* aw_store: the document, the file names, the file backend on a real
 * directory (driven by a libuv loop), and S3's error bodies. */
#include "aw_store.h"
#include "aw_store_s3.h"
#include "th_proc.h"

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

static void test_document_round_trip(void **state)
{
    json_t *msgs = json_loads("[{\"role\":\"user\",\"content\":[{\"text\":\"hi\"}]}]", 0, NULL);
    json_t *back;
    char err[200];
    size_t len;
    char *doc = aw_store_encode("s-1", msgs, 1700000000, &len);

    (void)state;
    assert_non_null(doc);
    assert_int_equal(len, strlen(doc));
    back = aw_store_decode("s-1", doc, len, err, sizeof(err));
    assert_non_null(back);
    assert_true(json_equal(back, msgs));
    json_decref(back);
    free(doc);
    json_decref(msgs);
}

static void test_document_refusals(void **state)
{
    static const struct {
        const char *doc, *why;
    } cases[] = {
        {"not json", "not JSON"},
        {"{\"format\":\"other/1\",\"sessionId\":\"s\",\"messages\":[]}", "not an agentcore"},
        {"{\"format\":\"agentcore-session/1\",\"sessionId\":\"t\",\"messages\":[]}", "another"},
        {"{\"format\":\"agentcore-session/1\",\"sessionId\":\"s\",\"messages\":{}}", "no messages"},
        {"{\"format\":\"agentcore-session/1\",\"sessionId\":\"s\"}", "no messages"},
        {"{\"format\":\"agentcore-session/1\",\"sessionId\":\"s\",\"sessionId\":\"s\","
         "\"messages\":[]}",
         "not JSON"},
        {"[1,2", "not JSON"},
    };
    char err[200];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = '\0';
        assert_null(aw_store_decode("s", cases[i].doc, strlen(cases[i].doc), err, sizeof(err)));
        if (!strstr(err, cases[i].why))
            fail_msg("case %zu: '%s' does not say '%s'", i, err, cases[i].why);
    }
}

static void test_file_names(void **state)
{
    static const struct {
        const char *id, *name;
    } cases[] = {
        {"abc-DEF_123", "abc-DEF_123.json"},
        {"a/b", "a%2Fb.json"},
        {"..", "%2E%2E.json"},
        {"x:y z", "x%3Ay%20z.json"},
    };
    char out[256], big[257];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        aw_store_file_name(cases[i].id, out, sizeof(out));
        assert_string_equal(out, cases[i].name);
    }
    memset(big, '/', 256);
    big[256] = '\0';
    aw_store_file_name(big, out, sizeof(out));
    assert_int_equal(strncmp(out, "h-", 2), 0);
    assert_int_equal(strlen(out), 2 + 64 + 5);
    assert_null(strchr(out, '/'));
}

/* ---- the file backend ---- */

struct result {
    int rc, calls;
};

static void on_done(struct aw_store_op *op, int rc)
{
    struct result *r = op->data;

    r->rc = rc;
    r->calls++;
}

/* Runs one request to its end on |loop|; its result. */
static int run(uv_loop_t *loop, struct aw_store *s, struct aw_store_op *op, int save)
{
    struct result r = {-100, 0};

    op->data = &r;
    op->done = on_done;
    assert_int_equal(save ? aw_store_save(s, op) : aw_store_load(s, op), 0);
    while (!r.calls)
        uv_run(loop, UV_RUN_ONCE);
    assert_int_equal(r.calls, 1);
    return r.rc;
}

static int save_doc(uv_loop_t *loop, struct aw_store *s, const char *id, const char *text,
                    char *version)
{
    json_t *msgs = json_pack("[{s:s,s:[{s:s}]}]", "role", "user", "content", "text", text);
    struct aw_store_op op;
    int rc;

    memset(&op, 0, sizeof(op));
    op.id = id;
    strcpy(op.version, version);
    op.body = aw_store_encode(id, msgs, 1, &op.len);
    rc = run(loop, s, &op, 1);
    if (rc == AW_STORE_OK)
        strcpy(version, op.version);
    free(op.body);
    json_decref(msgs);
    return rc;
}

static int load_doc(uv_loop_t *loop, struct aw_store *s, const char *id, char *version,
                    json_t **msgs, char *err, size_t errlen)
{
    struct aw_store_op op;
    int rc;

    memset(&op, 0, sizeof(op));
    op.id = id;
    strcpy(op.version, version);
    rc = run(loop, s, &op, 0);
    strcpy(version, op.version);
    *msgs = op.messages;
    snprintf(err, errlen, "%s", op.error);
    return rc;
}

static int count_prefix(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    while (d && (e = readdir(d)))
        n += !strncmp(e->d_name, prefix, strlen(prefix));
    if (d)
        closedir(d);
    return n;
}

static void test_file_backend(void **state)
{
    uv_loop_t loop;
    char dir[512], err[600], v1[AW_STORE_VERSION_MAX] = "", v2[AW_STORE_VERSION_MAX],
                             seen[AW_STORE_VERSION_MAX] = "", path[700];
    struct aw_store *s;
    json_t *msgs = NULL;
    FILE *f;

    (void)state;
    snprintf(dir, sizeof(dir), "%s/store-unit-%ld", th_log_dir(), (long)getpid());
    assert_int_equal(mkdir(dir, 0700), 0);
    uv_loop_init(&loop);
    assert_null(aw_store_file_new(&loop, "/nonexistent/dir", err, sizeof(err)));
    assert_non_null(strstr(err, "not a writable directory"));
    s = aw_store_file_new(&loop, dir, err, sizeof(err));
    assert_non_null(s);
    assert_string_equal(aw_store_name(s), "file");

    /* Missing, then created; creating it again is a conflict. */
    assert_int_equal(load_doc(&loop, s, "sess-1", seen, &msgs, err, sizeof(err)),
                     AW_STORE_NOT_FOUND);
    assert_int_equal(save_doc(&loop, s, "sess-1", "one", v1), AW_STORE_OK);
    assert_true(v1[0] != '\0');
    strcpy(v2, "");
    assert_int_equal(save_doc(&loop, s, "sess-1", "not me", v2), AW_STORE_CONFLICT);

    /* Loaded; loaded again with its version: unchanged, nothing read. */
    strcpy(seen, "");
    assert_int_equal(load_doc(&loop, s, "sess-1", seen, &msgs, err, sizeof(err)), AW_STORE_OK);
    assert_string_equal(seen, v1);
    assert_string_equal(
        json_string_value(json_object_get(
            json_array_get(json_object_get(json_array_get(msgs, 0), "content"), 0), "text")),
        "one");
    json_decref(msgs);
    assert_int_equal(load_doc(&loop, s, "sess-1", seen, &msgs, err, sizeof(err)),
                     AW_STORE_UNCHANGED);
    assert_null(msgs);

    /* A save that names the current version wins and makes a new one; a
     * save that names the old one loses. */
    strcpy(v2, v1);
    assert_int_equal(save_doc(&loop, s, "sess-1", "two", v2), AW_STORE_OK);
    assert_string_not_equal(v2, v1);
    assert_int_equal(save_doc(&loop, s, "sess-1", "stale", v1), AW_STORE_CONFLICT);
    assert_int_equal(load_doc(&loop, s, "sess-1", seen, &msgs, err, sizeof(err)), AW_STORE_OK);
    assert_string_equal(seen, v2);
    assert_string_equal(
        json_string_value(json_object_get(
            json_array_get(json_object_get(json_array_get(msgs, 0), "content"), 0), "text")),
        "two");
    json_decref(msgs);
    assert_int_equal(count_prefix(dir, "sess-1.json.tmp"), 0); /* no temporary left */

    /* A corrupt file: reported, moved aside, the session starts afresh. */
    snprintf(path, sizeof(path), "%s/sess-2.json", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"format\":\"agentcore-session/1\",\"sessionId\":\"sess-2\",\"messages\":[", f);
    fclose(f);
    strcpy(seen, "");
    assert_int_equal(load_doc(&loop, s, "sess-2", seen, &msgs, err, sizeof(err)),
                     AW_STORE_NOT_FOUND);
    assert_non_null(strstr(err, "moved aside"));
    assert_string_equal(seen, "");
    assert_int_equal(count_prefix(dir, "sess-2.json.corrupt-"), 1);
    assert_int_equal(save_doc(&loop, s, "sess-2", "fresh", seen), AW_STORE_OK);

    aw_store_free(s);
    aw_store_free(NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_s3_error_bodies(void **state)
{
    char out[512];

    (void)state;
    aw_store_s3_error(403,
                      "<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature "
                      "we calculated does not match. AKIAIOSFODNN7EXAMPLE</Message></Error>",
                      150, out, sizeof(out));
    assert_non_null(strstr(out, "403 SignatureDoesNotMatch: The request signature"));
    assert_null(strstr(out, "AKIAIOSFODNN7EXAMPLE"));
    aw_store_s3_error(500, "", 0, out, sizeof(out));
    assert_string_equal(out, "S3 answered 500");
    aw_store_s3_error(503, "<Error><Code>SlowDown</Code>", 28, out, sizeof(out));
    assert_string_equal(out, "S3 answered 503 SlowDown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_document_round_trip), cmocka_unit_test(test_document_refusals),
        cmocka_unit_test(test_file_names),          cmocka_unit_test(test_file_backend),
        cmocka_unit_test(test_s3_error_bodies),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
