/* aw_aws: endpoints, error parsing and the redaction every AWS message passes
 * through before a log line or an HTTP body sees it. Data-driven. */
#include "aw_aws.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* A temporary credential as an AWS error might quote it. */
#define TOKEN "IQoJb3JpZ2luX2VjEOr//////////wEaCXVzLWVhc3QtMSJHMEUCIQDexampletoken+/="
#define SECRET "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

/* |in| redacted must keep |keep| and lose every one of |gone|. */
static const struct {
    const char *in, *keep, *gone[3];
} redact_cases[] = {
    {"The request signature we calculated does not match the signature you provided.",
     "The request signature we calculated does not match the signature you provided.",
     {NULL}},
    {"Canonical String:\nPOST\n/\nhost:bedrock\nx-amz-security-token:" TOKEN "\n\nhost",
     "x-amz-security-token:[redacted]\n",
     {TOKEN, "IQoJ"}},
    {"The security token included in the request is invalid. X-Amz-Security-Token=" TOKEN
     "&X-Amz-Signature=abcdef0123",
     "X-Amz-Signature=[redacted]",
     {TOKEN, "abcdef0123"}},
    {"Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261201/us-east-1/bedrock"
     "/aws4_request, SignedHeaders=host, Signature=fe5f80f77d5fa3beca038a248ff027d04453\nnext",
     "Authorization: [redacted]\nnext",
     {"AKIAIOSFODNN7EXAMPLE", "fe5f80f7", "HMAC"}},
    {"The access key ASIAY34FZKBOKMUTVV7A is not valid",
     "The access key [redacted] is not valid",
     {"ASIAY34FZKBOKMUTVV7A"}},
    {"secret " SECRET " leaked", "secret [redacted] leaked", {SECRET}},
    {"{\"SecretAccessKey\": \"abc\", \"x\":1}", "[redacted]", {"abc"}},
    {"Signature expired: 20261201T120000Z is now earlier than 20261201T121500Z",
     "Signature expired: 20261201T120000Z is now earlier than 20261201T121500Z",
     {NULL}},
};

static void test_redact_credentials(void **state)
{
    size_t i, k;

    (void)state;
    for (i = 0; i < sizeof(redact_cases) / sizeof(redact_cases[0]); i++) {
        char buf[768];

        snprintf(buf, sizeof(buf), "%s", redact_cases[i].in);
        aw_redact_credentials(buf, sizeof(buf));
        if (!strstr(buf, redact_cases[i].keep))
            fail_msg("case %zu: '%s' lacks '%s'", i, buf, redact_cases[i].keep);
        for (k = 0; k < 3 && redact_cases[i].gone[k]; k++)
            if (strstr(buf, redact_cases[i].gone[k]))
                fail_msg("case %zu: '%s' still holds '%s'", i, buf, redact_cases[i].gone[k]);
    }
}

/* A short value replaced by the longer "[redacted]" is cut at the buffer. */
static void test_redact_respects_cap(void **state)
{
    char buf[16] = "Signature=ab";

    (void)state;
    aw_redact_credentials(buf, sizeof(buf));
    assert_string_equal(buf, "Signature=[reda");
}

static const struct {
    const char *in, *out;
} public_cases[] = {
    {"User: arn:aws:sts::123456789012:assumed-role/agent/session is not authorized to perform: "
     "bedrock:InvokeModel on resource: arn:aws:bedrock:us-east-1::foundation-model/x",
     "User: arn:(hidden) is not authorized to perform: bedrock:InvokeModel on resource: "
     "arn:(hidden)"},
    {"Secrets Manager GetSecretValue of secret 'prod/agent/keys' failed; secret 'prod/agent/keys' "
     "does not hold AWS_ACCESS_KEY_ID",
     "Secrets Manager GetSecretValue of secret (named in the agent-worker log) failed; secret "
     "(named in the agent-worker log) does not hold AWS_ACCESS_KEY_ID"},
    {"account 123456789012 is suspended; request 1234567890123 ok",
     "account (account) is suspended; request 1234567890123 ok"},
    {"Too many tokens, please wait before trying again.",
     "Too many tokens, please wait before trying again."},
};

static void test_public_message(void **state)
{
    size_t i;
    char out[768], small[12];

    (void)state;
    for (i = 0; i < sizeof(public_cases) / sizeof(public_cases[0]); i++) {
        aw_public_message(public_cases[i].in, out, sizeof(out));
        assert_string_equal(out, public_cases[i].out);
    }
    aw_public_message("x-amz-security-token=" TOKEN, out, sizeof(out));
    assert_null(strstr(out, "IQoJ"));
    aw_public_message("a long message that does not fit", small, sizeof(small));
    assert_string_equal(small, "a long mess");
}

/* Every error parsed from a service is redacted already. */
static void test_parse_error_redacts(void **state)
{
    static const char body[] = "{\"__type\":\"UnrecognizedClientException\",\"message\":\"The "
                               "security token included in the request is invalid: "
                               "x-amz-security-token:" TOKEN "\"}";
    struct aw_model_error e;

    (void)state;
    aw_parse_error(403, NULL, body, strlen(body), &e);
    assert_string_equal(e.type, "UnrecognizedClientException");
    assert_non_null(strstr(e.message, "is invalid"));
    assert_null(strstr(e.message, "IQoJ"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redact_credentials),
        cmocka_unit_test(test_redact_respects_cap),
        cmocka_unit_test(test_public_message),
        cmocka_unit_test(test_parse_error_redacts),
    };
    return cmocka_run_group_tests_name("aw_aws", tests, NULL, NULL);
}
