/* cm_sigv4 against the official AWS SigV4 suite (38 cases) and the botocore
 * Bedrock/Secrets Manager vectors (6): canonical request, string to sign and
 * signature must match byte for byte. One cmocka test per case, built from
 * the data at run time. */
#include "cm_err.h"
#include "cm_sigv4.h"
#include "th_proc.h"

#include <dirent.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#define MAX_CASES 64

struct vcase {
    char name[300];
    char dir[1024]; /* suite case folder, or "" for a bedrock vector */
    json_t *vector; /* bedrock vector, or NULL */
};

static struct vcase cases[MAX_CASES];

static char *slurp(const char *dir, const char *file)
{
    char path[1200];

    snprintf(path, sizeof(path), "%.1023s/%.64s", dir, file);
    return th_read_file(path, NULL);
}

struct parsed {
    char method[16];
    char *path, *query;
    struct cm_sigv4_header h[CM_SIGV4_MAX_HEADERS];
    size_t nh;
    char *body;
    char *storage[CM_SIGV4_MAX_HEADERS * 2 + 4];
    size_t nstore;
};

static char *keep(struct parsed *p, char *s)
{
    p->storage[p->nstore++] = s;
    return s;
}

/* request.txt: "METHOD PATH HTTP/1.1", "Name:value" lines (obs-fold continuation
 * lines start with spaces), a blank line, then the body. Paths may hold spaces. */
static void parse_request(const char *txt, struct parsed *p)
{
    const char *eol = strchr(txt, '\n'), *sp = strchr(txt, ' '), *ver, *line;
    char *target;

    memset(p, 0, sizeof(*p));
    assert_non_null(eol);
    assert_non_null(sp);
    snprintf(p->method, sizeof(p->method), "%.*s", (int)(sp - txt), txt);
    ver = eol;
    while (ver > sp && *ver != ' ')
        ver--;
    target = keep(p, strndup(sp + 1, (size_t)(ver - sp - 1)));
    p->query = strchr(target, '?');
    if (p->query)
        *p->query++ = '\0';
    p->path = target;
    line = eol + 1;
    while (*line && *line != '\n') {
        const char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);

        if ((line[0] == ' ' || line[0] == '\t') && p->nh) {
            /* continuation: append to the previous value */
            const char *prev = p->h[p->nh - 1].value;
            char *joined = malloc(strlen(prev) + n + 2);

            sprintf(joined, "%s %.*s", prev, (int)n, line);
            p->h[p->nh - 1].value = keep(p, joined);
        } else {
            const char *colon = memchr(line, ':', n);

            assert_non_null(colon);
            p->h[p->nh].name = keep(p, strndup(line, (size_t)(colon - line)));
            p->h[p->nh].value = keep(p, strndup(colon + 1, n - (size_t)(colon - line) - 1));
            p->nh++;
        }
        line = end ? end + 1 : line + n;
    }
    p->body = keep(p, strdup(*line == '\n' ? line + 1 : ""));
}

static void parsed_free(struct parsed *p)
{
    size_t i;

    for (i = 0; i < p->nstore; i++)
        free(p->storage[i]);
}

static void check(const struct cm_sigv4_out *out, const char *creq, const char *sts,
                  const char *sig)
{
    assert_string_equal(out->canonical_request.data, creq);
    assert_string_equal(out->string_to_sign.data, sts);
    assert_string_equal(out->signature, sig);
}

/* The key the cases below keep between signatures (the order the cases run
 * in decides when it is replaced and when reused). */
static struct cm_sigv4_key shared_key;

static void run_suite_case(const struct vcase *c)
{
    char *ctxs = slurp(c->dir, "context.json"), *req = slurp(c->dir, "request.txt");
    char *creq = slurp(c->dir, "header-canonical-request.txt");
    char *sts = slurp(c->dir, "header-string-to-sign.txt");
    char *sig = slurp(c->dir, "header-signature.txt");
    json_t *ctx;
    struct parsed p;
    struct cm_sigv4_params sp;
    struct cm_sigv4_request r;
    struct cm_sigv4_out out;
    char body_hash[65];
    const char *token;

    assert_non_null(ctxs);
    assert_non_null(req);
    assert_non_null(creq);
    ctx = json_loads(ctxs, 0, NULL);
    assert_non_null(ctx);
    parse_request(req, &p);
    p.h[p.nh++] = (struct cm_sigv4_header){"X-Amz-Date", "20150830T123600Z"};
    token = json_string_value(json_object_get(json_object_get(ctx, "credentials"), "token"));
    if (token && !json_is_true(json_object_get(ctx, "omit_session_token")))
        p.h[p.nh++] = (struct cm_sigv4_header){"X-Amz-Security-Token", token};
    if (json_is_true(json_object_get(ctx, "sign_body"))) {
        cm_sigv4_sha256_hex(p.body, strlen(p.body), body_hash);
        p.h[p.nh++] = (struct cm_sigv4_header){"x-amz-content-sha256", body_hash};
    }
    sp.access_key_id = "AKIDEXAMPLE";
    sp.secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    sp.region = "us-east-1";
    sp.service = "service";
    sp.amz_date = "20150830T123600Z";
    sp.normalize_path = json_is_true(json_object_get(ctx, "normalize"));
    sp.key = &shared_key; /* one secret and scope: every case after the first reuses the key */
    r = (struct cm_sigv4_request){p.method, p.path, p.query, p.h, p.nh, p.body, strlen(p.body)};
    assert_int_equal(cm_sigv4_sign(&sp, &r, &out), 0);
    check(&out, creq, sts, sig);
    cm_sigv4_out_free(&out);
    parsed_free(&p);
    json_decref(ctx);
    free(ctxs), free(req), free(creq), free(sts), free(sig);
}

static void run_bedrock_vector(const struct vcase *c)
{
    json_t *v = c->vector, *sent = json_object_get(v, "headers_sent");
    const char *url = json_string_value(json_object_get(v, "url"));
    const char *hs = strstr(url, "://") + 3, *path = strchr(hs, '/');
    char host[256], names[512], *save = NULL, *name;
    struct cm_sigv4_header h[8];
    struct cm_sigv4_params sp;
    struct cm_sigv4_request r;
    struct cm_sigv4_out out;
    const char *body = json_string_value(json_object_get(v, "body"));
    size_t n = 0;
    int k;

    snprintf(host, sizeof(host), "%.*s", (int)(path - hs), hs);
    snprintf(names, sizeof(names), "%s", json_string_value(json_object_get(v, "signed_headers")));
    for (name = strtok_r(names, ";", &save); name; name = strtok_r(NULL, ";", &save)) {
        const char *key;
        json_t *val;

        h[n].name = name;
        h[n].value = NULL;
        if (!strcmp(name, "host"))
            h[n].value = host;
        json_object_foreach(sent, key, val)
        {
            if (!strcasecmp(key, name))
                h[n].value = json_string_value(val);
        }
        assert_non_null(h[n].value);
        n++;
    }
    sp.access_key_id =
        json_string_value(json_object_get(json_object_get(v, "credentials"), "access_key_id"));
    sp.secret_access_key =
        json_string_value(json_object_get(json_object_get(v, "credentials"), "secret_access_key"));
    sp.region = json_string_value(json_object_get(v, "region"));
    sp.service = json_string_value(json_object_get(v, "service"));
    sp.amz_date = "20150830T123600Z";
    sp.normalize_path = 1;
    sp.key = NULL;
    r = (struct cm_sigv4_request){
        json_string_value(json_object_get(v, "method")), path, NULL, h, n, body, strlen(body)};
    assert_int_equal(cm_sigv4_sign(&sp, &r, &out), 0);
    check(&out, json_string_value(json_object_get(v, "canonical_request")),
          json_string_value(json_object_get(v, "string_to_sign")),
          json_string_value(json_object_get(v, "signature")));
    /* The Authorization header the client sends carries the same signature. */
    assert_non_null(
        strstr(json_string_value(json_object_get(sent, "Authorization")), out.signature));
    cm_sigv4_out_free(&out);
    /* With the kept key: the vectors differ in credentials, region and
     * service, so the key kept from the vector before is replaced, then
     * reused. */
    sp.key = &shared_key;
    for (k = 0; k < 2; k++) {
        assert_int_equal(cm_sigv4_sign(&sp, &r, &out), 0);
        assert_string_equal(out.signature, json_string_value(json_object_get(v, "signature")));
        cm_sigv4_out_free(&out);
    }
}

/* A kept key is used only for its own secret key and scope: each change
 * signs as a fresh derivation does. */
static void test_kept_key_follows_secret_and_scope(void **state)
{
    static const struct {
        const char *secret, *region, *service, *date;
    } steps[] = {{"S1", "us-east-1", "bedrock", "20150830T123600Z"},
                 {"S1", "us-east-1", "bedrock", "20150830T235959Z"}, /* same day: reused */
                 {"S2", "us-east-1", "bedrock", "20150830T123600Z"},
                 {"S2", "us-west-2", "bedrock", "20150830T123600Z"},
                 {"S2", "us-west-2", "s3", "20150830T123600Z"},
                 {"S2", "us-west-2", "s3", "20150831T000000Z"},
                 {"S1", "us-east-1", "bedrock", "20150830T123600Z"},
                 /* the same "date/region/service" text, other parts */
                 {"S1", "us-east-1/x", "bedrock", "20150830T123600Z"},
                 {"S1", "us-east-1", "x/bedrock", "20150830T123600Z"}};
    struct cm_sigv4_header h = {"host", "example.amazonaws.com"};
    struct cm_sigv4_request r = {"POST", "/", NULL, &h, 1, "{}", 2};
    struct cm_sigv4_key key = {0};
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        struct cm_sigv4_params p = {
            "AKID", steps[i].secret, steps[i].region, steps[i].service, steps[i].date, 1, NULL};
        struct cm_sigv4_out fresh, kept;

        assert_int_equal(cm_sigv4_sign(&p, &r, &fresh), 0);
        p.key = &key;
        assert_int_equal(cm_sigv4_sign(&p, &r, &kept), 0);
        assert_string_equal(kept.signature, fresh.signature);
        assert_true(key.valid);
        cm_sigv4_out_free(&fresh);
        cm_sigv4_out_free(&kept);
    }
    cm_sigv4_key_clear(&key);
    assert_false(key.valid);
    assert_int_equal(key.secret[0], 0);
    cm_sigv4_key_clear(NULL);
}

static void test_case(void **state)
{
    const struct vcase *c = *state;

    if (c->vector)
        run_bedrock_vector(c);
    else
        run_suite_case(c);
}

/* The model id is percent-encoded once on the wire... */
static void test_uri_encode(void **state)
{
    struct cm_buf b;

    (void)state;
    cm_buf_init(&b, 1024);
    assert_int_equal(cm_sigv4_uri_encode(&b, "a:b/c d~", 8, 0), 0);
    assert_string_equal(b.data, "a%3Ab%2Fc%20d~");
    cm_buf_free(&b);
}

static void test_rejects_bad_date(void **state)
{
    struct cm_sigv4_header h = {"host", "x"};
    struct cm_sigv4_request r = {"GET", "/", NULL, &h, 1, NULL, 0};
    struct cm_sigv4_params p = {"A", "S", "us-east-1", "svc", "2015-08-30", 1, NULL};
    struct cm_sigv4_out out;

    (void)state;
    assert_int_not_equal(cm_sigv4_sign(&p, &r, &out), 0);
    cm_sigv4_out_free(&out);
}

/* An invalid header after valid ones fails cleanly (the fuzzer found a leak here). */
static void test_rejects_empty_header_name(void **state)
{
    struct cm_sigv4_header h[] = {{"host", "x"}, {"x-a", "1"}, {"", "v"}};
    struct cm_sigv4_request r = {"GET", "/", NULL, h, 3, NULL, 0};
    struct cm_sigv4_params p = {"A", "S", "us-east-1", "svc", "20150830T123600Z", 1, NULL};
    struct cm_sigv4_out out;

    (void)state;
    assert_int_equal(cm_sigv4_sign(&p, &r, &out), CM_EINVAL);
    cm_sigv4_out_free(&out);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct vcase *)a)->name, ((const struct vcase *)b)->name);
}

int main(void)
{
    struct CMUnitTest tests[MAX_CASES + 4];
    const char *root = AC_TESTDATA_DIR;
    char dir[512], file[700];
    size_t n = 0, nsuite, i;
    DIR *d;
    struct dirent *e;
    json_t *vectors;
    int rc;

    snprintf(dir, sizeof(dir), "%s/sigv4", root);
    d = opendir(dir);
    if (!d) {
        fprintf(stderr, "test data not found at %s (tests/data/)\n", dir);
        return 1;
    }
    while ((e = readdir(d)) && n < MAX_CASES) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, "README.md"))
            continue;
        snprintf(cases[n].name, sizeof(cases[n].name), "suite/%.255s", e->d_name);
        snprintf(cases[n].dir, sizeof(cases[n].dir), "%.511s/%.255s", dir, e->d_name);
        n++;
    }
    closedir(d);
    nsuite = n;
    qsort(cases, n, sizeof(cases[0]), by_name);
    snprintf(file, sizeof(file), "%s/sigv4-bedrock/botocore_vectors.json", root);
    vectors = json_load_file(file, 0, NULL);
    for (i = 0; i < json_array_size(vectors) && n < MAX_CASES; i++) {
        json_t *v = json_array_get(vectors, i);

        snprintf(cases[n].name, sizeof(cases[n].name), "bedrock/%s",
                 json_string_value(json_object_get(v, "name")));
        cases[n].vector = v;
        n++;
    }
    /* The numbers: all 38 suite cases and all 6 Bedrock vectors. */
    if (nsuite != 38 || n - nsuite != 6) {
        fprintf(stderr, "expected 38 suite cases and 6 vectors, found %zu and %zu\n", nsuite,
                n - nsuite);
        return 1;
    }
    for (i = 0; i < n; i++)
        tests[i] = (struct CMUnitTest){cases[i].name, test_case, NULL, NULL, &cases[i]};
    tests[n++] = (struct CMUnitTest){"uri_encode", test_uri_encode, NULL, NULL, NULL};
    tests[n++] = (struct CMUnitTest){"rejects_bad_date", test_rejects_bad_date, NULL, NULL, NULL};
    tests[n++] = (struct CMUnitTest){"rejects_empty_header_name", test_rejects_empty_header_name,
                                     NULL, NULL, NULL};
    tests[n++] = (struct CMUnitTest){"kept_key_follows_secret_and_scope",
                                     test_kept_key_follows_secret_and_scope, NULL, NULL, NULL};
    rc = _cmocka_run_group_tests("cm_sigv4", tests, n, NULL, NULL);
    json_decref(vectors);
    return rc;
}
