/* gw_mhd: which headers become gRPC metadata (forwarded only, keys
 * lowercased, caps on count and value length), and the JSON answer's
 * headers. A libmicrohttpd daemon on a loopback port answers with what it
 * collected. */
#include "gw_api.h"
#include "gw_mhd.h"
#include "th_http.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static struct MHD_Daemon *daemon_;
static char url[64];

/* Answers every request with {"key": "value", ...} of the collected context. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *u,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    const char *extra[] = {"Retry-After", "1", NULL};
    struct gw_mhd_fwd *f = calloc(1, sizeof(*f));
    json_t *o = json_object();
    enum MHD_Result ret;
    size_t i;

    (void)cls, (void)u, (void)method, (void)version, (void)upload, (void)upload_size, (void)con_cls;
    char rid[64];

    gw_mhd_fwd_collect(f, c);
    for (i = 0; i < f->n; i++)
        json_object_set_new(o, f->meta[i].key, json_string(f->meta[i].value));
    json_object_set_new(o, "_dropped", json_string(f->dropped));
    gw_mhd_request_id(c, rid, sizeof(rid));
    json_object_set_new(o, "_request_id", json_string(rid));
    ret = gw_mhd_send_json(c, 207, json_dumps(o, JSON_SORT_KEYS), "sess-1", "req-1", extra);
    json_decref(o);
    gw_mhd_fwd_clear(f);
    free(f);
    return ret;
}

static int setup(void **state)
{
    const union MHD_DaemonInfo *info;

    (void)state;
    daemon_ = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, 0, NULL, NULL,
                               on_request, NULL, MHD_OPTION_END);
    if (!daemon_)
        return -1;
    info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/", info->port);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    MHD_stop_daemon(daemon_);
    return 0;
}

static void test_forwarded_headers_only_and_lowercased(void **state)
{
    const char *h[] = {"Authorization: Bearer t",
                       "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Tenant: acme",
                       "X-Amzn-Bedrock-AgentCore-Runtime-Custom-: nameless",
                       "traceparent: 00-abc-def-01",
                       "X-Not-Forwarded: no",
                       "Cookie: c=1",
                       NULL};
    struct th_resp r;
    char v[64];

    (void)state;
    assert_int_equal(th_http("GET", url, h, NULL, 0, &r), 0);
    assert_int_equal(r.status, 207);
    assert_non_null(r.json);
    assert_int_equal(json_object_size(r.json), 3 + 2);
    assert_string_equal(json_string_value(json_object_get(r.json, "authorization")), "Bearer t");
    assert_string_equal(json_string_value(json_object_get(
                            r.json, "x-amzn-bedrock-agentcore-runtime-custom-tenant")),
                        "acme");
    assert_string_equal(json_string_value(json_object_get(r.json, "traceparent")), "00-abc-def-01");
    /* The JSON answer's headers. */
    assert_int_equal(th_resp_header(&r, "Content-Type", v, sizeof(v)), 0);
    assert_string_equal(v, "application/json");
    assert_int_equal(th_resp_header(&r, GW_SESSION_HEADER, v, sizeof(v)), 0);
    assert_string_equal(v, "sess-1");
    assert_int_equal(th_resp_header(&r, GW_REQUEST_HEADER, v, sizeof(v)), 0);
    assert_string_equal(v, "req-1");
    assert_int_equal(th_resp_header(&r, "Retry-After", v, sizeof(v)), 0);
    assert_string_equal(v, "1");
    assert_int_equal(gw_mhd_sent_bytes(), 0); /* counted on the daemon's thread, not this one */
    th_resp_free(&r);
}

static void test_caps_skip_never_truncate(void **state)
{
    char *h[GW_MHD_MAX_FORWARDED + 3], *big = malloc(GW_MHD_MAX_HEADER_VALUE + 64);
    struct th_resp r;
    size_t i;

    (void)state;
    /* One value just over the cap, then more forwarded headers than fit. */
    memcpy(big, "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Big: ", 45);
    memset(big + 45, 'v', GW_MHD_MAX_HEADER_VALUE + 1);
    big[45 + GW_MHD_MAX_HEADER_VALUE + 1] = '\0';
    h[0] = big;
    for (i = 1; i < GW_MHD_MAX_FORWARDED + 2; i++) {
        h[i] = malloc(80);
        snprintf(h[i], 80, "X-Amzn-Bedrock-AgentCore-Runtime-Custom-H%02zu: %zu", i, i);
    }
    h[GW_MHD_MAX_FORWARDED + 2] = NULL;
    assert_int_equal(th_http("GET", url, (const char *const *)h, NULL, 0, &r), 0);
    assert_int_equal(r.status, 207);
    assert_non_null(r.json);
    assert_int_equal(json_object_size(r.json), GW_MHD_MAX_FORWARDED + 2);
    assert_null(json_object_get(r.json, "x-amzn-bedrock-agentcore-runtime-custom-big"));
    assert_string_equal(
        json_string_value(json_object_get(r.json, "x-amzn-bedrock-agentcore-runtime-custom-h01")),
        "1");
    /* The 25th forwarded header is skipped whole. */
    assert_null(json_object_get(r.json, "x-amzn-bedrock-agentcore-runtime-custom-h25"));
    th_resp_free(&r);
    for (i = 0; i < GW_MHD_MAX_FORWARDED + 2; i++)
        free(h[i]);
}

/* Values gRPC metadata cannot carry are dropped by name, and a request id
 * that is not printable ASCII is replaced, before anything reaches gRPC. */
static void test_unsendable_values_are_dropped(void **state)
{
    const char *h[] = {"X-Amzn-Bedrock-AgentCore-Runtime-Custom-Ok: fine",
                       "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Utf8: caf\xc3\xa9",
                       "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Ctl: a\x01b",
                       "X-Amzn-Bedrock-AgentCore-Runtime-Request-Id: id\x7f", NULL};
    const char *good[] = {"X-Amzn-Bedrock-AgentCore-Runtime-Request-Id: my-request-1", NULL};
    struct th_resp r;
    const char *rid;

    (void)state;
    assert_int_equal(th_http("GET", url, h, NULL, 0, &r), 0);
    assert_int_equal(r.status, 207);
    assert_string_equal(
        json_string_value(json_object_get(r.json, "x-amzn-bedrock-agentcore-runtime-custom-ok")),
        "fine");
    assert_null(json_object_get(r.json, "x-amzn-bedrock-agentcore-runtime-custom-utf8"));
    assert_null(json_object_get(r.json, "x-amzn-bedrock-agentcore-runtime-custom-ctl"));
    assert_string_equal(json_string_value(json_object_get(r.json, "_dropped")),
                        "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Utf8, "
                        "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Ctl");
    rid = json_string_value(json_object_get(r.json, "_request_id"));
    assert_int_equal(strlen(rid), 36); /* a new UUID, not the refused value */
    th_resp_free(&r);
    assert_int_equal(th_http("GET", url, good, NULL, 0, &r), 0);
    assert_string_equal(json_string_value(json_object_get(r.json, "_request_id")), "my-request-1");
    th_resp_free(&r);
}

static void test_fwd_clear_accepts_null(void **state)
{
    struct gw_mhd_fwd f;

    (void)state;
    memset(&f, 0, sizeof(f));
    gw_mhd_fwd_clear(NULL);
    gw_mhd_fwd_clear(&f);
    assert_int_equal(f.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forwarded_headers_only_and_lowercased),
        cmocka_unit_test(test_caps_skip_never_truncate),
        cmocka_unit_test(test_unsendable_values_are_dropped),
        cmocka_unit_test(test_fwd_clear_accepts_null),
    };

    return cmocka_run_group_tests_name("gw_mhd", tests, setup, teardown);
}
