/* aw_creds: where the agent-worker's AWS credentials come from.
 *
 * Resolution order (first that yields credentials wins):
 *   1. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN
 *   2. shared files: AWS_PROFILE (default "default") in AWS_SHARED_CREDENTIALS_FILE
 *      (~/.aws/credentials), then AWS_CONFIG_FILE (~/.aws/config)
 *   3. container credentials: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI
 *      (http://169.254.170.2<uri>) or _FULL_URI (https, or a loopback / ECS / EKS
 *      address), with the token from AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE or
 *      _TOKEN; 2 s timeout, 3 attempts
 *   4. instance / microVM metadata, token first (PUT a token, then GET), 1 s
 *      timeouts; AWS_EC2_METADATA_DISABLED=true skips it
 * When BEDROCK_CREDENTIALS_SECRET names a secret, the credentials found above
 * are only the bootstrap: Secrets Manager's GetSecretValue (signed with them)
 * returns the JSON {"AWS_ACCESS_KEY_ID","AWS_SECRET_ACCESS_KEY"[,"AWS_SESSION_TOKEN"]}
 * that Bedrock calls are signed with, read again every |secret_ttl_s| (the
 * secret does not expire; it may be rotated).
 *
 * Credentials are refreshed 5 minutes before they expire and after
 * aw_creds_invalidate() (a 403 saying the key is invalid). A failed resolution
 * is not retried for a second, so a missing metadata service is not hammered.
 * Sources are asked without holding the lock: while one thread refreshes,
 * the others keep signing with the current credentials (or wait, in
 * aw_creds_get, when there are none).
 * |notify| hears which source won or why one failed: never a value. */
#ifndef AW_CREDS_H
#define AW_CREDS_H

#include "aw_aws.h"

#include <uv.h>

struct aw_creds_config {
    const char *region;
    const char *access_key_id, *secret_access_key, *session_token;
    const char *secret_id;        /* BEDROCK_CREDENTIALS_SECRET */
    const char *secrets_endpoint; /* NULL: https://secretsmanager.<region>.amazonaws.com */
    int secret_ttl_s;
    const char *profile;                        /* NULL: "default" */
    const char *credentials_file, *config_file; /* NULL: none */
    const char *container_full_uri, *container_relative_uri;
    const char *container_token, *container_token_file;
    int imds_disabled;
    const char *imds_endpoint; /* NULL: http://169.254.169.254 */
    const char *ca_bundle;     /* AWS_CA_BUNDLE for https sources, or NULL (system CAs) */
    /* |level| is 1 for failures, 0 for a new source, -1 for a routine refresh;
     * |text| names a source and what happened. */
    void (*notify)(int level, const char *text);
};

struct aw_creds;

/* Copies |cfg|. NULL only on allocation failure or a bad endpoint (|err|). */
struct aw_creds *aw_creds_new(const struct aw_creds_config *cfg, char *err, size_t errlen);
void aw_creds_free(struct aw_creds *c);

/* Current credentials into |out|, resolving or refreshing first when needed.
 * Thread-safe. 0, or CM_EUPSTREAM with |err| (type "MissingCredentials" or
 * "CredentialsError", the message says which sources were tried). */
int aw_creds_get(struct aw_creds *c, struct aw_credentials *out, struct aw_model_error *err);
/* The same without ever waiting or asking a source (for an event loop):
 * 0 with |out| when usable credentials are at hand; 1 when there are none yet
 * but a resolution runs or may run (call aw_creds_get() off the loop, then
 * peek again); CM_EUPSTREAM with |err| when the sources failed less than a
 * second ago. |*refresh| is 1 when a resolution is due and nobody runs one:
 * the caller should start aw_creds_get() in the background. */
int aw_creds_peek(struct aw_creds *c, struct aw_credentials *out, int *refresh,
                  struct aw_model_error *err);
/* Marks the credentials stale: the next get resolves again. */
void aw_creds_invalidate(struct aw_creds *c);

/* ---- on an event loop, never waiting ----
 * The fast path reads the cached set (aw_creds_peek). A resolution (files,
 * HTTP endpoints, Secrets Manager) runs on libuv's work pool; callers that
 * have nothing to sign with wait for it in a list, holding no thread. One
 * per user (Bedrock, the S3 session store); everything on the loop thread. */
struct aw_creds_waiter {
    struct aw_creds_waiter *next;
    void (*ready)(struct aw_creds_waiter *w); /* the resolution ended: ask again */
};

struct aw_creds_job;

struct aw_creds_async {
    struct aw_creds *creds;
    uv_loop_t *loop;
    struct aw_creds_job *job; /* the resolution on the work pool, or NULL */
    struct aw_creds_waiter *waiting;
};

void aw_creds_async_init(struct aw_creds_async *a, struct aw_creds *creds, uv_loop_t *loop);
/* 0 with |out| (wipe it after use); 1 when none are at hand yet: |w| is
 * queued and its |ready| runs once a resolution ended; CM_EUPSTREAM with
 * |err| when the sources failed. */
int aw_creds_async_get(struct aw_creds_async *a, struct aw_credentials *out,
                       struct aw_creds_waiter *w, struct aw_model_error *err);
/* Takes |w| out of the queue (no-op when not queued). */
void aw_creds_async_cancel(struct aw_creds_async *a, struct aw_creds_waiter *w);
/* Before the owner frees |a|: a resolution still on the work pool is let go
 * of (it ends on its own, touching nothing of |a|); no waiter may be left.
 * The aw_creds must outlive it (the loop runs it to its end). */
void aw_creds_async_cleanup(struct aw_creds_async *a);

/* ---- the parsers, no I/O (unit-tested) ---- */

/* Reads aws_access_key_id / aws_secret_access_key / aws_session_token of
 * |profile| from an INI text; in a config file (|config| 1) the section is
 * "[profile NAME]" except for "[default]". 0 or CM_ENOENT. */
int aw_creds_parse_ini(const char *text, const char *profile, int config,
                       struct aw_credentials *out);
/* {"AccessKeyId","SecretAccessKey","Token","Expiration"} as container and
 * metadata endpoints answer. 0 or CM_EINVAL. */
int aw_creds_parse_json(const char *body, size_t len, struct aw_credentials *out);
/* A secret string {"AWS_ACCESS_KEY_ID","AWS_SECRET_ACCESS_KEY"[,"AWS_SESSION_TOKEN"]}. */
int aw_creds_parse_secret(const char *secret_string, struct aw_credentials *out);
/* 1 when |url| may serve container credentials: https, or http to loopback,
 * 169.254.170.2, 169.254.170.23 or [fd00:ec2::23]; never with a user part.
 * Parsed with curl's URL API. */
int aw_creds_container_url_ok(const char *url);
/* "2026-11-24T15:04:05Z" (fraction and a "+HH:MM" offset up to 14 h allowed)
 * -> unix seconds, or -1. */
long long aw_creds_iso8601(const char *s);

#endif
