/* End to end, one stack per credential source: every source signs Bedrock
 * calls the emulator accepts; Secrets Manager hands out the real keys while a
 * runtime that kept the bootstrap keys is refused; a metadata service without
 * tokens is reported, not bypassed; credentials are refreshed once inside five
 * minutes of their expiry, and a failed refresh leaves the current ones
 * signing; nothing secret reaches a log. */
#include "th_stack.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define BEARER "bedrock-api-key-must-never-be-logged"
#define CONTAINER_TOKEN "container-token-must-never-be-logged"

/* Inside the agent-worker's 5-minute refresh margin, still valid. */
#define SHORT_TTL "EMU_CREDENTIALS_TTL_S=240"

static struct th_proc tool, emu, emu405, emu_short, emu_flaky;
static struct th_stack secret_s, nosecret_s, bootstrap_s, profile_s, container_s, imds_s, imds405_s,
    bearer_s, badbearer_s, short_s, flaky_s;
static char creds_file[512], token_file[512];
static int teardown_failed;

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    if (!f)
        return -1;
    fputs(text, f);
    return fclose(f);
}

/* "AWS_CONTAINER_CREDENTIALS_FULL_URI=" pointing at |server|. */
static void container_uri(char *buf, size_t cap, const struct th_proc *server)
{
    snprintf(buf, cap,
             "AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:%d/container-credentials",
             server->port);
}

static int setup(void **state)
{
    char sm[96], full[128], full_short[128], full_flaky[128], tokf[600], credf[600], imds[96],
        imds405[96];

    (void)state;
    snprintf(creds_file, sizeof(creds_file), "%s/e2e-credentials", th_log_dir());
    snprintf(token_file, sizeof(token_file), "%s/e2e-container-token", th_log_dir());
    if (write_file(creds_file, "[default]\naws_access_key_id = AKIDWRONG\n"
                               "aws_secret_access_key = wrong\n"
                               "[e2e]\naws_access_key_id = " TH_EMU_AKID "\n"
                               "aws_secret_access_key = " TH_EMU_SECRET "\n") ||
        write_file(token_file, CONTAINER_TOKEN "\n"))
        return -1;
    if (th_tool_start(&tool, "cred-tool-worker") ||
        th_emulator_start(&emu, "cred-emulator",
                          (const char *[]){"EMU_BEARER_TOKEN=" BEARER,
                                           "EMU_CONTAINER_TOKEN=" CONTAINER_TOKEN, NULL}) ||
        th_emulator_start(&emu405, "cred-emulator-405",
                          (const char *[]){"EMU_IMDS_PUT_STATUS=405", NULL}) ||
        th_emulator_start(
            &emu_short, "cred-emulator-short",
            (const char *[]){"EMU_CONTAINER_TOKEN=" CONTAINER_TOKEN, SHORT_TTL, NULL}) ||
        th_emulator_start(&emu_flaky, "cred-emulator-flaky",
                          (const char *[]){"EMU_CONTAINER_TOKEN=" CONTAINER_TOKEN, SHORT_TTL,
                                           "EMU_CREDENTIALS_FAIL_AFTER=1", NULL}))
        return -1;
    snprintf(sm, sizeof(sm), "AWS_ENDPOINT_URL_SECRETS_MANAGER=http://127.0.0.1:%d", emu.port);
    container_uri(full, sizeof(full), &emu);
    container_uri(full_short, sizeof(full_short), &emu_short);
    container_uri(full_flaky, sizeof(full_flaky), &emu_flaky);
    snprintf(tokf, sizeof(tokf), "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=%s", token_file);
    snprintf(credf, sizeof(credf), "AWS_SHARED_CREDENTIALS_FILE=%s", creds_file);
    snprintf(imds, sizeof(imds), "AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:%d", emu.port);
    snprintf(imds405, sizeof(imds405), "AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:%d",
             emu405.port);
    return th_stack_start(&secret_s, "secret", &emu, &tool,
                          (const char *[]){"AWS_ACCESS_KEY_ID=" TH_EMU_BOOT_AKID,
                                           "AWS_SECRET_ACCESS_KEY=" TH_EMU_BOOT_SECRET,
                                           "BEDROCK_CREDENTIALS_SECRET=agentcore/bedrock", sm,
                                           "BEDROCK_CREDENTIALS_SECRET_TTL_S=120", NULL}) ||
           th_stack_start(&nosecret_s, "missing-secret", &emu, &tool,
                          (const char *[]){"AWS_ACCESS_KEY_ID=" TH_EMU_BOOT_AKID,
                                           "AWS_SECRET_ACCESS_KEY=" TH_EMU_BOOT_SECRET,
                                           "BEDROCK_CREDENTIALS_SECRET=prod/missing-secret", sm,
                                           NULL}) ||
           th_stack_start(&bootstrap_s, "bootstrap-only", &emu, &tool,
                          (const char *[]){"AWS_ACCESS_KEY_ID=" TH_EMU_BOOT_AKID,
                                           "AWS_SECRET_ACCESS_KEY=" TH_EMU_BOOT_SECRET, NULL}) ||
           th_stack_start(&profile_s, "profile", &emu, &tool,
                          (const char *[]){"AWS_PROFILE=e2e", credf, NULL}) ||
           th_stack_start(&container_s, "container", &emu, &tool,
                          (const char *[]){full, tokf, NULL}) ||
           th_stack_start(&imds_s, "imds", &emu, &tool,
                          (const char *[]){"AWS_EC2_METADATA_DISABLED=false", imds, NULL}) ||
           th_stack_start(&imds405_s, "imds405", &emu405, &tool,
                          (const char *[]){"AWS_EC2_METADATA_DISABLED=false", imds405, NULL}) ||
           th_stack_start(&bearer_s, "bearer", &emu, &tool,
                          (const char *[]){"AWS_BEARER_TOKEN_BEDROCK=" BEARER, NULL}) ||
           th_stack_start(&badbearer_s, "bad-bearer", &emu, &tool,
                          (const char *[]){"AWS_BEARER_TOKEN_BEDROCK=not-the-key", NULL}) ||
           th_stack_start(&short_s, "short-lived", &emu_short, &tool,
                          (const char *[]){full_short, tokf, NULL}) ||
           th_stack_start(&flaky_s, "flaky-refresh", &emu_flaky, &tool,
                          (const char *[]){full_flaky, tokf, NULL});
}

static int teardown(void **state)
{
    struct th_stack *all[] = {&secret_s,    &nosecret_s, &bootstrap_s, &profile_s,
                              &container_s, &imds_s,     &imds405_s,   &bearer_s,
                              &badbearer_s, &short_s,    &flaky_s};
    size_t i;
    int bad = 0;

    (void)state;
    for (i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        bad += th_stack_stop(all[i]);
    bad += th_stop(&emu) + th_stop(&emu405) + th_stop(&emu_short) + th_stop(&emu_flaky) +
           th_stop(&tool);
    teardown_failed = bad != 0;
    return bad ? -1 : 0;
}

/* An invocation through |s| answers |status|; for 200 the echo comes back.
 * Returns the response details (static) for error checks. */
static void expect(const struct th_stack *s, int status, const char *details_has)
{
    struct th_resp r;

    assert_int_equal(th_invoke(s, "{\"prompt\":\"signed\"}", NULL, &r), 0);
    if (r.status != status)
        fail_msg("%s: got %ld %s", s->gw.name, r.status, r.body);
    if (status == 200)
        assert_string_equal(json_string_value(json_object_get(r.json, "response")), "Echo: signed");
    if (details_has && !strstr(json_string_value(json_object_get(r.json, "details")), details_has))
        fail_msg("%s: details lack '%s': %s", s->gw.name, details_has, r.body);
    th_resp_free(&r);
}

static void assert_logged(const struct th_stack *s, const char *text)
{
    char *log = th_read_file(s->agent.log_path, NULL);

    assert_non_null(log);
    if (!strstr(log, text))
        fail_msg("%s does not say '%s'", s->agent.log_path, text);
    free(log);
}

static void test_secrets_manager_flow(void **state)
{
    (void)state;
    expect(&secret_s, 200, NULL);
    assert_logged(&secret_s, "AWS credentials from secrets-manager");
}

/* A TTL under the 5-minute refresh margin still means "read it once per
 * TTL", not "read it on every call". */
static void test_secret_read_once_per_ttl(void **state)
{
    long long before;

    (void)state;
    expect(&secret_s, 200, NULL);
    before = th_emu_stat(&emu, "secrets");
    assert_true(before >= 1);
    expect(&secret_s, 200, NULL);
    expect(&secret_s, 200, NULL);
    assert_int_equal(th_emu_stat(&emu, "secrets"), before);
}

/* The HTTP client learns that the credentials failed, not the secret's name
 * (the agent-worker's log keeps it). */
static void test_secret_name_stays_in_the_log(void **state)
{
    struct th_resp r;

    (void)state;
    assert_int_equal(th_invoke(&nosecret_s, "{\"prompt\":\"signed\"}", NULL, &r), 0);
    assert_int_equal(r.status, 502);
    assert_non_null(strstr(r.body, "CredentialsError"));
    if (!strstr(r.body, "can't find the specified secret"))
        fail_msg("%s", r.body);
    if (strstr(r.body, "missing-secret"))
        fail_msg("the HTTP answer names the secret: %s", r.body);
    th_resp_free(&r);
    assert_logged(&nosecret_s, "prod/missing-secret");
}

static void test_bootstrap_keys_alone_are_refused(void **state)
{
    (void)state;
    expect(&bootstrap_s, 502, "AccessDeniedException");
}

static void test_shared_credentials_file_profile(void **state)
{
    (void)state;
    expect(&profile_s, 200, NULL);
    assert_logged(&profile_s, "AWS credentials from shared-config");
}

static void test_container_credentials(void **state)
{
    (void)state;
    expect(&container_s, 200, NULL);
    assert_logged(&container_s, "AWS credentials from container");
}

/* An hour-long credential is fetched once and then reused. */
static void test_credentials_reused_until_refresh_point(void **state)
{
    long long before;

    (void)state;
    expect(&container_s, 200, NULL);
    before = th_emu_stat(&emu, "credentials");
    assert_true(before >= 1);
    expect(&container_s, 200, NULL);
    expect(&container_s, 200, NULL);
    assert_int_equal(th_emu_stat(&emu, "credentials"), before);
}

/* One that expires in 4 minutes is inside the refresh margin: a call starts a
 * refresh in the background (never making the call wait for it, the current
 * keys still sign) whenever none is running. */
static void test_credentials_refreshed_before_expiry(void **state)
{
    long long before, after;

    (void)state;
    expect(&short_s, 200, NULL);
    assert_true(
        th_wait_log(short_s.agent.log_path, "AWS credentials refreshed from container", 5000) >= 0);
    before = th_emu_stat(&emu_short, "credentials");
    assert_true(before >= 2); /* the start-up fetch and at least one refresh */
    expect(&short_s, 200, NULL);
    expect(&short_s, 200, NULL);
    assert_true(th_wait_log_count(short_s.agent.log_path,
                                  "AWS credentials refreshed from container", 2, 5000) >= 0);
    after = th_emu_stat(&emu_short, "credentials");
    assert_true(after > before && after <= before + 2);
}

/* The endpoint fails after its first answer (the agent-worker's start-up
 * fetch): the next call's refresh is attempted three times, reported, and the
 * still-valid credentials keep signing. */
static void test_failed_refresh_keeps_current_credentials(void **state)
{
    (void)state;
    assert_int_equal(th_emu_stat(&emu_flaky, "credentials"), 1);
    expect(&flaky_s, 200, NULL);
    /* The refresh runs beside the call: wait for its verdict. */
    assert_true(th_wait_log(flaky_s.agent.log_path, "AWS credentials refresh failed", 5000) >= 0);
    assert_int_equal(th_emu_stat(&emu_flaky, "credentials"), 4);
    assert_logged(&flaky_s, "AWS credentials refresh failed, the current ones sign until they "
                            "expire: container credentials endpoint answered 500");
}

static void test_instance_metadata_token_first(void **state)
{
    (void)state;
    expect(&imds_s, 200, NULL);
    assert_logged(&imds_s, "AWS credentials from instance-metadata");
}

static void test_metadata_without_tokens_is_reported(void **state)
{
    (void)state;
    expect(&imds405_s, 502, "PUT /latest/api/token answered 405");
    assert_logged(&imds405_s, "instance metadata unavailable: PUT /latest/api/token answered 405");
}

static void test_bedrock_api_key(void **state)
{
    (void)state;
    expect(&bearer_s, 200, NULL);
    expect(&badbearer_s, 502, "AccessDeniedException");
}

static void test_no_credential_in_any_log(void **state)
{
    const char *secrets[] = {TH_EMU_SECRET,   TH_EMU_BOOT_SECRET, BEARER,
                             CONTAINER_TOKEN, "AWS4-HMAC-SHA256", "emulator-imds-token",
                             TH_EMU_AKID,     TH_EMU_BOOT_AKID};
    struct th_stack *all[] = {&secret_s,    &nosecret_s, &bootstrap_s, &profile_s,
                              &container_s, &imds_s,     &imds405_s,   &bearer_s,
                              &badbearer_s, &short_s,    &flaky_s};
    size_t i, k;

    (void)state;
    for (i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        const struct th_proc *p[] = {&all[i]->agent, &all[i]->gw};

        for (k = 0; k < 2; k++) {
            char *log = th_read_file(p[k]->log_path, NULL);
            size_t j;

            assert_non_null(log);
            for (j = 0; j < sizeof(secrets) / sizeof(secrets[0]); j++) {
                if (strstr(log, secrets[j]))
                    fail_msg("'%s' appears in %s", secrets[j], p[k]->log_path);
            }
            free(log);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secrets_manager_flow),
        cmocka_unit_test(test_secret_read_once_per_ttl),
        cmocka_unit_test(test_secret_name_stays_in_the_log),
        cmocka_unit_test(test_bootstrap_keys_alone_are_refused),
        cmocka_unit_test(test_shared_credentials_file_profile),
        cmocka_unit_test(test_container_credentials),
        cmocka_unit_test(test_credentials_reused_until_refresh_point),
        cmocka_unit_test(test_credentials_refreshed_before_expiry),
        cmocka_unit_test(test_failed_refresh_keeps_current_credentials),
        cmocka_unit_test(test_instance_metadata_token_first),
        cmocka_unit_test(test_metadata_without_tokens_is_reported),
        cmocka_unit_test(test_bedrock_api_key),
        cmocka_unit_test(test_no_credential_in_any_log),
    };
    int rc = cmocka_run_group_tests_name("e2e_credentials", tests, setup, teardown);

    return rc ? rc : teardown_failed;
}
