/* aw_creds' parsers: shared files, credential JSON, secret strings, expiry. */
#include "aw_creds.h"
#include "cm_err.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const char credentials_file[] = "# comment\n"
                                       "[default]\n"
                                       "aws_access_key_id = AKIDDEFAULT\n"
                                       "aws_secret_access_key=default-secret\n"
                                       "\n"
                                       "[work]\r\n"
                                       "  aws_access_key_id = AKIDWORK  \r\n"
                                       "aws_secret_access_key = work-secret\r\n"
                                       "aws_session_token = work-token\r\n"
                                       "[half]\n"
                                       "aws_access_key_id = AKIDHALF\n";

static const char config_file[] = "[default]\nregion = us-east-1\n"
                                  "[profile work]\naws_access_key_id=AKIDCFG\n"
                                  "aws_secret_access_key=cfg-secret\n";

static void test_ini(void **state)
{
    struct aw_credentials c;

    (void)state;
    assert_int_equal(aw_creds_parse_ini(credentials_file, "default", 0, &c), 0);
    assert_string_equal(c.akid, "AKIDDEFAULT");
    assert_string_equal(c.secret, "default-secret");
    assert_string_equal(c.token, "");
    assert_int_equal(aw_creds_parse_ini(credentials_file, "work", 0, &c), 0);
    assert_string_equal(c.akid, "AKIDWORK");
    assert_string_equal(c.token, "work-token");
    assert_int_equal(aw_creds_parse_ini(credentials_file, "half", 0, &c), CM_ENOENT);
    assert_int_equal(aw_creds_parse_ini(credentials_file, "nope", 0, &c), CM_ENOENT);
    /* The config file names sections "profile NAME". */
    assert_int_equal(aw_creds_parse_ini(config_file, "work", 1, &c), 0);
    assert_string_equal(c.akid, "AKIDCFG");
    assert_int_equal(aw_creds_parse_ini(config_file, "work", 0, &c), CM_ENOENT);
    assert_int_equal(aw_creds_parse_ini(config_file, "default", 1, &c), CM_ENOENT);
}

static void test_json_and_expiry(void **state)
{
    const char *body = "{\"Code\":\"Success\",\"AccessKeyId\":\"ASIAX\",\"SecretAccessKey\":\"s\","
                       "\"Token\":\"t\",\"Expiration\":\"2026-11-24T15:00:00Z\"}";
    struct aw_credentials c;

    (void)state;
    assert_int_equal(aw_creds_parse_json(body, strlen(body), &c), 0);
    assert_string_equal(c.akid, "ASIAX");
    assert_string_equal(c.token, "t");
    assert_int_equal(c.expires_at, 1795532400LL);
    assert_int_equal(aw_creds_parse_json("{\"AccessKeyId\":\"A\"}", 19, &c), CM_EINVAL);
    assert_int_equal(aw_creds_parse_json("nope", 4, &c), CM_EINVAL);
    assert_int_equal(aw_creds_iso8601("2026-11-24T15:00:00.123Z"), 1795532400LL);
    assert_int_equal(aw_creds_iso8601("2026-11-24T16:00:00+01:00"), 1795532400LL);
    assert_int_equal(aw_creds_iso8601("yesterday"), -1);
}

/* Offsets: only +-HH:MM (or HHMM) up to 14 hours; anything else is refused,
 * including numbers that would overflow h * 3600. */
static void test_iso8601_offsets(void **state)
{
    static const struct {
        const char *in;
        long long want;
    } cases[] = {
        {"2026-11-24T15:00:00Z", 1795532400LL},
        {"2026-11-24T15:00:00", 1795532400LL},
        {"2026-11-24T10:30:00-0430", 1795532400LL},
        {"2026-11-25T05:00:00+14:00", 1795532400LL},
        {"2026-11-24T15:00:00+15:00", -1},
        {"2026-11-24T15:00:00+01:60", -1},
        {"2026-11-24T15:00:00+99999999999:00", -1},
        {"2026-11-24T15:00:00+2147483647", -1},
        {"2026-11-24T15:00:00+01:00junk", -1},
        {"2026-11-24T15:00:00+1", -1},
        {"2026-11-24T15:00:00.999999999999999999999Z", 1795532400LL},
        {NULL, -1},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (aw_creds_iso8601(cases[i].in) != cases[i].want)
            fail_msg("'%s': got %lld, want %lld", cases[i].in ? cases[i].in : "(null)",
                     aw_creds_iso8601(cases[i].in), cases[i].want);
}

/* Container credential URLs are parsed, not prefix-matched. */
static void test_container_url(void **state)
{
    static const struct {
        const char *url;
        int ok;
    } cases[] = {
        {"http://127.0.0.1:8080/creds", 1},
        {"http://127.1.2.3/creds", 1},
        {"http://localhost/creds", 1},
        {"http://[::1]:9/creds", 1},
        {"http://169.254.170.2/v2/credentials/abc", 1},
        {"http://169.254.170.23/v1/credentials", 1},
        {"http://[fd00:ec2::23]/v1/credentials", 1},
        {"https://creds.example.com/x", 1},
        {"http://127.0.0.1@other-host/", 0},
        {"http://169.254.170.2@evil.example/x", 0},
        {"http://user:pw@127.0.0.1/x", 0},
        {"http://127.0.0.1.evil.example/x", 0},
        {"http://localhost.evil.example/x", 0},
        {"http://169.254.170.22/x", 0},
        {"http://10.0.0.1/x", 0},
        {"ftp://127.0.0.1/x", 0},
        {"file:///etc/passwd", 0},
        {"not a url", 0},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (aw_creds_container_url_ok(cases[i].url) != cases[i].ok)
            fail_msg("'%s': want %d", cases[i].url, cases[i].ok);
}

static void test_secret_string(void **state)
{
    struct aw_credentials c;

    (void)state;
    assert_int_equal(aw_creds_parse_secret("{\"AWS_ACCESS_KEY_ID\":\"AKID\","
                                           "\"AWS_SECRET_ACCESS_KEY\":\"sk\","
                                           "\"AWS_SESSION_TOKEN\":\"tok\"}",
                                           &c),
                     0);
    assert_string_equal(c.akid, "AKID");
    assert_string_equal(c.secret, "sk");
    assert_string_equal(c.token, "tok");
    assert_int_equal(aw_creds_parse_secret("{\"username\":\"david\"}", &c), CM_EINVAL);
    assert_int_equal(aw_creds_parse_secret("not json", &c), CM_EINVAL);
}

static void test_environment_source_and_missing(void **state)
{
    struct aw_creds_config cfg;
    struct aw_creds *cr;
    struct aw_credentials c;
    struct aw_model_error e;

    (void)state;
    memset(&cfg, 0, sizeof(cfg));
    cfg.region = "us-east-1";
    cfg.access_key_id = "AKIDENV";
    cfg.secret_access_key = "env-secret";
    cr = aw_creds_new(&cfg, e.message, sizeof(e.message));
    assert_non_null(cr);
    assert_int_equal(aw_creds_get(cr, &c, &e), 0);
    assert_string_equal(c.akid, "AKIDENV");
    assert_string_equal(c.source, "environment");
    aw_creds_free(cr);
    /* Nothing configured and metadata disabled: a clear error, no network. */
    memset(&cfg, 0, sizeof(cfg));
    cfg.region = "us-east-1";
    cfg.imds_disabled = 1;
    cr = aw_creds_new(&cfg, e.message, sizeof(e.message));
    assert_int_equal(aw_creds_get(cr, &c, &e), CM_EUPSTREAM);
    assert_string_equal(e.type, "MissingCredentials");
    aw_creds_free(cr);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ini),
        cmocka_unit_test(test_json_and_expiry),
        cmocka_unit_test(test_iso8601_offsets),
        cmocka_unit_test(test_container_url),
        cmocka_unit_test(test_secret_string),
        cmocka_unit_test(test_environment_source_and_missing),
    };
    return cmocka_run_group_tests_name("aw_creds", tests, NULL, NULL);
}
