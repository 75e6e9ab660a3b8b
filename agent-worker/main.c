/* agentcore-agent-worker: runs the agent loop for agentcore.v1.AgentService. */
#include "aw_bedrock.h"
#include "aw_creds.h"
#include "aw_store_s3.h"
#include "aw_retry.h"
#include "aw_service.h"
#include "aw_idem.h"
#include "aw_session.h"
#include "aw_tools.h"
#include "aw_watch.h"
#include "cm_metrics.h"
#include "cm_otel.h"
#include "cm_log.h"
#include "cm_loop.h"
#include "cm_main.h"
#include "cm_rpc.h"
#include "cm_status.h"
#include "cm_util.h"

#include <curl/curl.h>
#include <pthread.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

enum {
    C_LISTEN,
    C_SESSION_WAIT,
    C_TOOL_WORKERS,
    C_MODEL_ID,
    C_REGION,
    C_ENDPOINT,
    C_AKID,
    C_SECRET,
    C_TOKEN,
    C_BEARER,
    C_SECRET_ID,
    C_SECRET_TTL,
    C_SM_ENDPOINT,
    C_PROFILE,
    C_CREDS_FILE,
    C_CONFIG_FILE,
    C_CONTAINER_FULL,
    C_CONTAINER_REL,
    C_CONTAINER_TOKEN,
    C_CONTAINER_TOKEN_FILE,
    C_IMDS_DISABLED,
    C_IMDS_ENDPOINT,
    C_MAX_TOKENS,
    C_MAX_ITERATIONS,
    C_MAX_PARALLEL_TOOLS,
    C_MAX_INV_TOKENS,
    C_MAX_INV_OUTPUT_TOKENS,
    C_SYSTEM_PROMPT,
    C_TEMPERATURE,
    C_TOP_P,
    C_STOP_SEQUENCES,
    C_TOOL_CHOICE,
    C_ADDITIONAL_FIELDS,
    C_PROMPT_CACHING,
    C_GUARDRAIL_ID,
    C_GUARDRAIL_VERSION,
    C_GUARDRAIL_TRACE,
    C_SESSION_MAX,
    C_IDEM_WINDOW,
    C_SESSION_MAX_BYTES,
    C_SESSION_TTL,
    C_SESSION_MAX_MESSAGES,
    C_TOOL_TIMEOUT,
    C_SESSION_STORE,
    C_CONV_MANAGER,
    C_SESSION_DIR,
    C_S3_BUCKET,
    C_S3_PREFIX,
    C_S3_ENDPOINT,
    C_S3_TIMEOUT,
    C_TOOLS_REFRESH,
    C_TOOLS_STATUS,
    C_CONNECT_TIMEOUT,
    C_READ_TIMEOUT,
    C_MAX_ATTEMPTS,
    C_RETRY_BASE,
    C_RETRY_MODE,
    C_CA_BUNDLE,
    C_STREAMING,
    C_MAX_MSG,
    C_GRACE,
    C_AUTH_TOKEN,
    C_AUTH_CA,
    C_AUTH_CERT,
    C_AUTH_KEY,
    C_METRICS,
    C_TRIM,
    C_CAPTURE_CONTENT,
    C_OTEL,
    C_OTEL_LAST = C_OTEL + CM_OTEL_CFG_COUNT - 1,
    C_LOG_LEVEL,
    C_COUNT
};

static const struct cm_cfg_entry config[C_COUNT] = {
    [C_LISTEN] = {"AGENT_WORKER_LISTEN", NULL, CM_CFG_STR, "127.0.0.1:50051", 0, 256,
                  "gRPC listen address (port 0 = any free port)", 0},
    [C_SESSION_WAIT] = {"SESSION_WAIT_MS", NULL, CM_CFG_INT, "30000", 0, 3600000,
                        "how long an invocation waits while another one of its session runs, "
                        "then 409",
                        0},
    [C_TOOL_WORKERS] = {"TOOL_WORKERS", NULL, CM_CFG_STR, "127.0.0.1:50061", 0, 4096,
                        "tool-worker addresses: host:port list (comma-separated) or a DNS name "
                        "that resolves to every replica",
                        0},
    [C_MODEL_ID] = {"MODEL_ID", NULL, CM_CFG_STR, "us.anthropic.claude-sonnet-4-20250514-v1:0", 0,
                    2048, "Bedrock model id, inference profile id or ARN", 0},
    [C_REGION] = {"AWS_REGION", "AWS_DEFAULT_REGION", CM_CFG_STR, "us-east-1", 0, 64,
                  "AWS region for Bedrock and signing", 0},
    [C_ENDPOINT] = {"AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_ENDPOINT_URL", CM_CFG_STR, NULL, 0,
                    2048,
                    "Bedrock Runtime endpoint (default https://bedrock-runtime.<region>."
                    "amazonaws.com)",
                    0},
    [C_AKID] = {"AWS_ACCESS_KEY_ID", NULL, CM_CFG_STR, NULL, 0, 256, "AWS access key id", 1},
    [C_SECRET] = {"AWS_SECRET_ACCESS_KEY", NULL, CM_CFG_STR, NULL, 0, 256, "AWS secret key", 1},
    [C_TOKEN] = {"AWS_SESSION_TOKEN", NULL, CM_CFG_STR, NULL, 0, 8192,
                 "AWS session token (temporary credentials)", 1},
    [C_BEARER] = {"AWS_BEARER_TOKEN_BEDROCK", NULL, CM_CFG_STR, NULL, 0, 8192,
                  "Bedrock API key: sent as Authorization: Bearer instead of SigV4", 1},
    [C_SECRET_ID] = {"BEDROCK_CREDENTIALS_SECRET", NULL, CM_CFG_STR, NULL, 0, 2048,
                     "Secrets Manager secret holding the keys Bedrock calls are signed with; "
                     "the credentials found otherwise only read it",
                     0},
    [C_SECRET_TTL] = {"BEDROCK_CREDENTIALS_SECRET_TTL_S", NULL, CM_CFG_INT, "3600", 60, 86400,
                      "how long the secret's keys are used before it is read again", 0},
    [C_SM_ENDPOINT] = {"AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_ENDPOINT_URL", CM_CFG_STR, NULL, 0,
                       2048,
                       "Secrets Manager endpoint (default https://secretsmanager.<region>"
                       ".amazonaws.com)",
                       0},
    [C_PROFILE] = {"AWS_PROFILE", NULL, CM_CFG_STR, NULL, 0, 256,
                   "profile of the shared credentials/config files (default 'default')", 0},
    [C_CREDS_FILE] = {"AWS_SHARED_CREDENTIALS_FILE", NULL, CM_CFG_STR, NULL, 0, 4096,
                      "shared credentials file (default ~/.aws/credentials)", 0},
    [C_CONFIG_FILE] = {"AWS_CONFIG_FILE", NULL, CM_CFG_STR, NULL, 0, 4096,
                       "shared config file (default ~/.aws/config)", 0},
    [C_CONTAINER_FULL] = {"AWS_CONTAINER_CREDENTIALS_FULL_URI", NULL, CM_CFG_STR, NULL, 0, 2048,
                          "container credentials endpoint (https or a local address)", 0},
    [C_CONTAINER_REL] = {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", NULL, CM_CFG_STR, NULL, 0, 2048,
                         "container credentials path on 169.254.170.2 (wins over FULL_URI)", 0},
    [C_CONTAINER_TOKEN] = {"AWS_CONTAINER_AUTHORIZATION_TOKEN", NULL, CM_CFG_STR, NULL, 0, 8192,
                           "Authorization header for the container endpoint", 1},
    [C_CONTAINER_TOKEN_FILE] = {"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", NULL, CM_CFG_STR, NULL, 0,
                                4096, "file holding that token (wins over the variable)", 0},
    [C_IMDS_DISABLED] = {"AWS_EC2_METADATA_DISABLED", NULL, CM_CFG_BOOL, "false", 0, 1,
                         "never ask the instance/microVM metadata service", 0},
    [C_IMDS_ENDPOINT] = {"AWS_EC2_METADATA_SERVICE_ENDPOINT", NULL, CM_CFG_STR, NULL, 0, 2048,
                         "metadata service (default http://169.254.169.254)", 0},
    [C_MAX_TOKENS] = {"MAX_TOKENS", NULL, CM_CFG_INT, "4096", 1, 1000000,
                      "maxTokens for each model call", 0},
    [C_MAX_ITERATIONS] = {"MAX_ITERATIONS", NULL, CM_CFG_INT, "10", 1, 1000,
                          "model calls allowed per invocation", 0},
    [C_MAX_PARALLEL_TOOLS] = {"MAX_PARALLEL_TOOLS", NULL, CM_CFG_INT, "8", 1, 256,
                              "tool calls of one model turn that run at once (the rest wait; "
                              "results go back in the model's order)",
                              0},
    [C_MAX_INV_TOKENS] = {"MAX_INVOCATION_TOKENS", NULL, CM_CFG_INT, "0", 0, 1000000000000LL,
                          "total tokens one invocation may use across its model calls, then "
                          "stop reason TokenBudgetExceeded (0: no budget; a request's "
                          "max_total_tokens may ask for less)",
                          0},
    [C_MAX_INV_OUTPUT_TOKENS] = {"MAX_INVOCATION_OUTPUT_TOKENS", NULL, CM_CFG_INT, "0", 0,
                                 1000000000000LL,
                                 "output tokens one invocation may use (0: no budget; a "
                                 "request's max_output_tokens may ask for less)",
                                 0},
    [C_SYSTEM_PROMPT] = {"SYSTEM_PROMPT", NULL, CM_CFG_STR, NULL, 0, 1048576,
                         "system prompt (none by default)", 0},
    [C_TEMPERATURE] = {"TEMPERATURE", NULL, CM_CFG_FLOAT, NULL, 0, 1,
                       "inferenceConfig.temperature (unset: the model's default)", 0},
    [C_TOP_P] = {"TOP_P", NULL, CM_CFG_FLOAT, NULL, 0, 1,
                 "inferenceConfig.topP (unset: the model's default)", 0},
    [C_STOP_SEQUENCES] = {"STOP_SEQUENCES", NULL, CM_CFG_JSON, NULL, 2, 0,
                          "inferenceConfig.stopSequences as a JSON array of strings", 0},
    [C_TOOL_CHOICE] = {"TOOL_CHOICE", NULL, CM_CFG_STR, "auto", 0, 128,
                       "toolChoice: auto, any, or tool:<name>", 0},
    [C_ADDITIONAL_FIELDS] = {"ADDITIONAL_MODEL_REQUEST_FIELDS", NULL, CM_CFG_JSON, NULL, 1, 0,
                             "additionalModelRequestFields as a JSON object, e.g. "
                             "{\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":1024}}",
                             0},
    [C_PROMPT_CACHING] = {"PROMPT_CACHING", NULL, CM_CFG_BOOL, "false", 0, 1,
                          "add a cachePoint after the system prompt and after the tools", 0},
    [C_GUARDRAIL_ID] = {"GUARDRAIL_ID", NULL, CM_CFG_STR, NULL, 0, 2048,
                        "guardrailConfig.guardrailIdentifier (unset: no guardrail)", 0},
    [C_GUARDRAIL_VERSION] = {"GUARDRAIL_VERSION", NULL, CM_CFG_STR, "DRAFT", 0, 64,
                             "guardrailConfig.guardrailVersion", 0},
    [C_GUARDRAIL_TRACE] = {"GUARDRAIL_TRACE", NULL, CM_CFG_STR, "disabled", 0, 16,
                           "guardrailConfig.trace: enabled, disabled or enabled_full", 0},
    [C_SESSION_MAX] = {"SESSION_MAX", NULL, CM_CFG_INT, "10000", 1, 10000000,
                       "sessions kept in memory; the least recently used idle one is evicted", 0},
    [C_IDEM_WINDOW] = {"IDEMPOTENCY_WINDOW_S", NULL, CM_CFG_INT, "300", 0, 86400,
                       "how long a finished invocation's answer is kept for retries of its "
                       "request id (X-Amzn-Bedrock-AgentCore-Runtime-Request-Id or the body's "
                       "idempotency_key): a retry gets it instead of a second run (0: never)",
                       0},
    [C_SESSION_MAX_BYTES] = {"SESSION_MAX_BYTES", NULL, CM_CFG_INT, "268435456", 0, 1099511627776LL,
                             "bytes of conversations kept in memory in all (their JSON); past "
                             "it the least recently used idle sessions go (0: no cap)",
                             0},
    [C_SESSION_TTL] = {"SESSION_TTL_S", NULL, CM_CFG_INT, "3600", 0, 31536000,
                       "a session idle this long is forgotten (0: kept until evicted)", 0},
    [C_SESSION_MAX_MESSAGES] = {"SESSION_MAX_MESSAGES", NULL, CM_CFG_INT, "40", 2, 100000,
                                "the sliding window: messages kept per session after each "
                                "invocation (the oldest whole turns dropped; 40 as in the "
                                "Strands SDKs)",
                                0},
    [C_TOOL_TIMEOUT] = {"TOOL_TIMEOUT_MS", NULL, CM_CFG_INT, "60000", 100, 3600000,
                        "deadline of one tool call", 0},
    [C_SESSION_STORE] = {"SESSION_STORE", NULL, CM_CFG_STR, "memory", 0, 16,
                         "where sessions persist: memory (this process only), file "
                         "(SESSION_DIR: survives restarts) or s3 (SESSION_S3_BUCKET: shared by "
                         "every agent-worker); memory stays the cache",
                         0},
    [C_CONV_MANAGER] = {"CONVERSATION_MANAGER", NULL, CM_CFG_STR, "sliding", 0, 16,
                        "sliding: the window drops the oldest turns; summarizing: the model "
                        "summarizes them first (one more model call when the window is full)",
                        0},
    [C_SESSION_DIR] = {"SESSION_DIR", NULL, CM_CFG_STR, NULL, 0, 1000,
                       "the file store's directory, e.g. AgentCore's session storage mount", 0},
    [C_S3_BUCKET] = {"SESSION_S3_BUCKET", NULL, CM_CFG_STR, NULL, 0, 63,
                     "the S3 store's bucket (signed with the agent-worker's AWS credentials)", 0},
    [C_S3_PREFIX] = {"SESSION_S3_PREFIX", NULL, CM_CFG_STR, "sessions/", 0, 200,
                     "key prefix of the session objects", 0},
    [C_S3_ENDPOINT] = {"SESSION_S3_ENDPOINT", NULL, CM_CFG_STR, NULL, 0, 400,
                       "S3 endpoint, path-style (unset: https://s3.<AWS_REGION>.amazonaws.com)", 0},
    [C_S3_TIMEOUT] = {"SESSION_S3_TIMEOUT_MS", NULL, CM_CFG_INT, "10000", 100, 600000,
                      "deadline of one S3 request", 0},
    [C_TOOLS_REFRESH] = {"TOOLS_REFRESH_MS", NULL, CM_CFG_INT, "60000", 1000, 86400000,
                         "how often the tool list is fetched again", 0},
    [C_TOOLS_STATUS] = {"TOOLS_STATUS_INTERVAL_MS", NULL, CM_CFG_INT, "1000", 50, 60000,
                        "tool-worker names are resolved again this often (compose --scale), and "
                        "a lost status watch is opened again after this long",
                        0},
    [C_CONNECT_TIMEOUT] = {"BEDROCK_CONNECT_TIMEOUT_MS", NULL, CM_CFG_INT, "10000", 100, 600000,
                           "connect timeout to Bedrock", 0},
    [C_READ_TIMEOUT] = {"BEDROCK_READ_TIMEOUT_MS", NULL, CM_CFG_INT, "120000", 100, 3600000,
                        "time limit of one Bedrock request", 0},
    [C_MAX_ATTEMPTS] = {"AWS_MAX_ATTEMPTS", NULL, CM_CFG_INT, "3", 1, 20,
                        "attempts per model call, first included (standard retry mode)", 0},
    [C_RETRY_BASE] = {"BEDROCK_RETRY_BASE_MS", NULL, CM_CFG_INT, "1000", 0, 20000,
                      "backoff base: attempt n waits up to base*2^(n-1) ms, capped at 20 s", 0},
    [C_RETRY_MODE] = {"AWS_RETRY_MODE", NULL, CM_CFG_STR, "standard", 0, 16,
                      "standard (retry budget), legacy (no budget; 5 attempts unless "
                      "AWS_MAX_ATTEMPTS), adaptive (standard + client-side rate limiting "
                      "after throttling)",
                      0},
    [C_CA_BUNDLE] = {"AWS_CA_BUNDLE", NULL, CM_CFG_STR, NULL, 0, 4096,
                     "CA certificates file for TLS to AWS (default: the system's)", 0},
    [C_STREAMING] = {"BEDROCK_STREAMING", NULL, CM_CFG_BOOL, "true", 0, 1,
                     "call ConverseStream (true, as the SDKs) or Converse (false)", 0},
    [C_MAX_MSG] = {"GRPC_MAX_MESSAGE_BYTES", NULL, CM_CFG_INT, "104857600", 65536, 1073741824,
                   "largest gRPC message accepted", 0},
    [C_GRACE] = {"SHUTDOWN_GRACE_MS", NULL, CM_CFG_INT, "8000", 0, 600000,
                 "on SIGTERM, how long in-flight invocations may finish before cancellation", 0},
    [C_AUTH_TOKEN] = CM_CFG_INTERNAL_TOKEN_FILE,
    [C_AUTH_CA] = CM_CFG_INTERNAL_TLS_CA,
    [C_AUTH_CERT] = CM_CFG_INTERNAL_TLS_CERT,
    [C_AUTH_KEY] = CM_CFG_INTERNAL_TLS_KEY,
    [C_METRICS] = CM_CFG_METRICS_LISTEN,
    [C_TRIM] = CM_CFG_RESIDENT_TRIM,
    [C_CAPTURE_CONTENT] = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", NULL, CM_CFG_BOOL,
                           "false", 0, 1,
                           "true: chat spans carry the messages sent and received (an event "
                           "gen_ai.client.inference.operation.details, 64 KiB per side at most)",
                           0},
    CM_CFG_OTEL(C_OTEL),
    [C_LOG_LEVEL] = CM_CFG_LOG_LEVEL,
};

/* What the loop thread starts and stops; see main() for the order. */
struct loop_side {
    struct aw_service *svc;
    struct cm_rpc_events *events;
    const char *tool_workers;
    int status_interval_ms, max_msg;
    struct aw_watch *watch;
};

/* The tool-workers' background tasks are ours to report too. */
static void on_tools_busy(int sum, void *ud)
{
    cm_status_set(ud, sum);
}

static void bind_tools(void *p)
{
    struct loop_side *ls = p;

    aw_tools_bind(ls->svc->tools, ls->events, ls->svc->loop);
    ls->watch = aw_watch_start(ls->tool_workers, ls->status_interval_ms, ls->max_msg, ls->events,
                               ls->svc->loop, on_tools_busy, ls->svc->status);
}

/* What invocations use goes last: the server is down, but the cancellation
 * of an invocation may still be on its way to the loop (the events thread
 * delivers it after the server reported its shutdown). */
static void release_model(void *p)
{
    struct loop_side *ls = p;

    aw_bedrock_free(ls->svc->bedrock);
    ls->svc->bedrock = NULL;
    aw_store_free(ls->svc->store); /* every invocation saved before it ended */
    ls->svc->store = NULL;
}

static void stop_loop_side(void *p)
{
    struct loop_side *ls = p;

    aw_watch_stop(ls->watch); /* frees itself once its streams ended */
    ls->watch = NULL;
    aw_tools_stop(ls->svc->tools);
    if (ls->svc->live) {
        ls->svc->on_idle = release_model; /* when the last invocation is freed */
        ls->svc->idle_ud = ls;
    } else {
        release_model(ls);
    }
}

/* SESSION_STORE's backend; 0 with |*out| (NULL for memory), or -1 with |err|. */
static int store_new(const struct cm_cfg_value *cfg, uv_loop_t *loop, struct aw_creds *creds,
                     struct aw_store **out, char *err, size_t errlen)
{
    const char *kind = cfg[C_SESSION_STORE].s;

    *out = NULL;
    if (!strcmp(kind, "memory"))
        return 0;
    if (!strcmp(kind, "file")) {
        *out = aw_store_file_new(loop, cfg[C_SESSION_DIR].s, err, errlen);
    } else if (!strcmp(kind, "s3")) {
        struct aw_store_s3_config sc = {loop,
                                        cfg[C_S3_ENDPOINT].s,
                                        cfg[C_S3_BUCKET].s,
                                        cfg[C_S3_PREFIX].s,
                                        cfg[C_REGION].s,
                                        creds,
                                        cfg[C_CA_BUNDLE].s,
                                        (int)cfg[C_S3_TIMEOUT].i};

        *out = aw_store_s3_new(&sc, err, errlen);
    } else {
        snprintf(err, errlen, "SESSION_STORE: '%s' is not memory, file or s3", kind);
    }
    return *out ? 0 : -1;
}

static void on_creds(int level, const char *text)
{
    if (level > 0)
        cm_warn("%s", text);
    else if (level == 0)
        cm_info("%s", text);
    else
        cm_debug("%s", text);
}

/* Span export to AWS (X-Ray's OTLP endpoint): signed with the runtime's
 * credentials, as ADOT signs it. On the exporter thread, which may wait for
 * a resolution. */
struct span_signer {
    struct aw_creds *creds;
    const char *region;
};

static struct curl_slist *sign_spans(void *ud, const char *url, const char *service,
                                     const char *region, const uint8_t *body, size_t len)
{
    struct span_signer *s = ud;
    struct aw_endpoint ep;
    struct aw_credentials cr;
    struct aw_model_error e;
    struct curl_slist *l;
    char err[256];

    if (aw_endpoint_parse(url, &ep, err, sizeof(err)) || aw_creds_get(s->creds, &cr, &e))
        return NULL;
    l = aw_sign_post(&ep, ep.base_path[0] ? ep.base_path : "/", service,
                     region ? region : s->region, &cr, NULL, "application/x-protobuf", NULL, 0,
                     (const char *)body, len, (long long)time(NULL));
    aw_credentials_clear(&cr);
    return l;
}

/* Resolves the credentials once, off the start-up path, so the source that
 * won is logged at start and the first invocation does not pay for it. */
static void *warm_up(void *p)
{
    struct aw_credentials cr;
    struct aw_model_error e;

    if (!aw_creds_get(p, &cr, &e))
        aw_credentials_clear(&cr);
    return NULL;
}

static struct aw_creds *creds_new(const struct cm_cfg_value *cfg, char *err, size_t errlen)
{
    struct aw_creds_config c;
    char creds_file[4200], config_file[4200];
    const char *home = getenv("HOME");

    memset(&c, 0, sizeof(c));
    c.region = cfg[C_REGION].s;
    c.access_key_id = cfg[C_AKID].s;
    c.secret_access_key = cfg[C_SECRET].s;
    c.session_token = cfg[C_TOKEN].s;
    c.secret_id = cfg[C_SECRET_ID].s;
    c.secret_ttl_s = (int)cfg[C_SECRET_TTL].i;
    c.secrets_endpoint = cfg[C_SM_ENDPOINT].s;
    c.profile = cfg[C_PROFILE].s;
    snprintf(creds_file, sizeof(creds_file), "%s/.aws/credentials", home ? home : "/nonexistent");
    snprintf(config_file, sizeof(config_file), "%s/.aws/config", home ? home : "/nonexistent");
    c.credentials_file = cfg[C_CREDS_FILE].s ? cfg[C_CREDS_FILE].s : creds_file;
    c.config_file = cfg[C_CONFIG_FILE].s ? cfg[C_CONFIG_FILE].s : config_file;
    c.container_full_uri = cfg[C_CONTAINER_FULL].s;
    c.container_relative_uri = cfg[C_CONTAINER_REL].s;
    c.container_token = cfg[C_CONTAINER_TOKEN].s;
    c.container_token_file = cfg[C_CONTAINER_TOKEN_FILE].s;
    c.imds_disabled = (int)cfg[C_IMDS_DISABLED].i;
    c.imds_endpoint = cfg[C_IMDS_ENDPOINT].s;
    c.ca_bundle = cfg[C_CA_BUNDLE].s;
    c.notify = on_creds;
    return aw_creds_new(&c, err, errlen);
}

/* The request options from the table; the JSON values are new references
 * (aw_bedrock_new takes its own). */
static int request_options(const struct cm_cfg_value *cfg, struct aw_request_options *o, char *err,
                           size_t errlen)
{
    const char *choice = cfg[C_TOOL_CHOICE].s, *trace = cfg[C_GUARDRAIL_TRACE].s;

    memset(o, 0, sizeof(*o));
    if (strcmp(choice, "auto") && strcmp(choice, "any") &&
        (strncmp(choice, "tool:", 5) || !choice[5])) {
        snprintf(err, errlen, "TOOL_CHOICE: '%s' is not auto, any or tool:<name>", choice);
        return -1;
    }
    if (strcmp(trace, "enabled") && strcmp(trace, "disabled") && strcmp(trace, "enabled_full")) {
        snprintf(err, errlen, "GUARDRAIL_TRACE: '%s' is not enabled, disabled or enabled_full",
                 trace);
        return -1;
    }
    o->system_prompt = cfg[C_SYSTEM_PROMPT].s;
    o->max_tokens = (int)cfg[C_MAX_TOKENS].i;
    o->has_temperature = cfg[C_TEMPERATURE].is_set;
    o->temperature = cfg[C_TEMPERATURE].d;
    o->has_top_p = cfg[C_TOP_P].is_set;
    o->top_p = cfg[C_TOP_P].d;
    o->stop_sequences =
        cfg[C_STOP_SEQUENCES].s ? json_loads(cfg[C_STOP_SEQUENCES].s, 0, NULL) : NULL;
    o->additional_fields =
        cfg[C_ADDITIONAL_FIELDS].s ? json_loads(cfg[C_ADDITIONAL_FIELDS].s, 0, NULL) : NULL;
    o->tool_choice = choice;
    o->prompt_caching = (int)cfg[C_PROMPT_CACHING].i;
    o->guardrail_id = cfg[C_GUARDRAIL_ID].s;
    o->guardrail_version = cfg[C_GUARDRAIL_VERSION].s;
    o->guardrail_trace = trace;
    return 0;
}

/* --check-credentials: asks the same chain the agent-worker signs with and
 * prints one JSON line on stdout, {"credentials":"found","source":...} (exit
 * 0) or {"credentials":"missing","details":...} (exit 1); never a value.
 * scripts/run.sh asks it whether to start the emulator. */
static int check_credentials(const struct cm_cfg_value *cfg)
{
    struct aw_credentials cr;
    struct aw_model_error e;
    struct aw_creds *creds;
    char err[512];
    json_t *o;
    int rc;

    if (cfg[C_BEARER].s) {
        o = json_pack("{s:s,s:s}", "credentials", "found", "source", "AWS_BEARER_TOKEN_BEDROCK");
        rc = 0;
    } else if (!(creds = creds_new(cfg, err, sizeof(err)))) {
        o = json_pack("{s:s,s:s}", "credentials", "missing", "details", err);
        rc = 2;
    } else if (aw_creds_get(creds, &cr, &e)) {
        o = json_pack("{s:s,s:s}", "credentials", "missing", "details", e.message);
        aw_creds_free(creds);
        rc = 1;
    } else {
        o = json_pack("{s:s,s:s}", "credentials", "found", "source", cr.source);
        aw_credentials_clear(&cr);
        aw_creds_free(creds);
        rc = 0;
    }
    {
        char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;

        printf("%s\n", line ? line : "{\"credentials\":\"missing\"}");
        free(line);
    }
    json_decref(o);
    return rc;
}

static const struct cm_main_flag aw_flags[] = {
    {"--check-credentials", "ask the credential chain once, print what it found as one JSON "
                            "line (never a value) and exit 0 (found) or 1"},
    {"--healthcheck", "ask grpc.health.v1 of the worker on AGENT_WORKER_LISTEN and exit 0 "
                      "when it is serving, else 1 (a container HEALTHCHECK)"},
    {NULL, NULL},
};

static int64_t background_tasks(void *ud)
{
    return ud ? cm_status_get(ud) : 0;
}

int main(int argc, char **argv)
{
    struct cm_metrics *metrics = NULL;
    struct cm_cfg_value cfg[C_COUNT];
    struct cm_rpc_server_config scfg;
    struct cm_rpc_server *srv = NULL;
    struct aw_bedrock_config bcfg;
    struct aw_service svc = {0};
    struct aw_creds *creds = NULL;
    struct span_signer signer = {NULL, NULL};
    struct cm_otel_hooks hooks = {sign_spans, aw_slist_free_secure, NULL, NULL, &signer};
    struct cm_loop *loop = NULL;
    struct loop_side ls = {NULL, NULL, NULL, 0, 0, NULL};
    pthread_t warm;
    int warming = 0;
    char endpoint[2200], err[512], portstr[16];
    int rc, port, sig;

    rc = cm_main_boot(argc, argv, "agentcore.agent_worker",
                      "Agent worker: runs the agent loop (agentcore.v1.AgentService), calls "
                      "Bedrock Converse and the tool-workers.",
                      aw_flags, config, C_COUNT, cfg);
    if (rc >= 0)
        goto out_cfg;
    if (cm_main_has_flag(argc, argv, "--healthcheck")) {
        rc = cm_main_rpc_healthcheck(cfg[C_LISTEN].s);
        goto out_cfg;
    }
    if (cm_main_has_flag(argc, argv, "--check-credentials")) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        rc = check_credentials(cfg);
        curl_global_cleanup();
        goto out_cfg;
    }
    cm_main_block_signals();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    cm_rpc_init();
    rc = 1;
    /* The loop thread inherits the blocked signals: only main takes them. */
    loop = cm_loop_new();
    ls.svc = &svc;
    ls.events = loop ? cm_rpc_events_new(loop) : NULL;
    if (!ls.events) {
        cm_error("out of memory at start-up");
        goto out;
    }

    if (cfg[C_ENDPOINT].s)
        snprintf(endpoint, sizeof(endpoint), "%s", cfg[C_ENDPOINT].s);
    else
        snprintf(endpoint, sizeof(endpoint), "https://bedrock-runtime.%s.amazonaws.com",
                 cfg[C_REGION].s);
    memset(&bcfg, 0, sizeof(bcfg));
    bcfg.endpoint = endpoint;
    bcfg.region = cfg[C_REGION].s;
    bcfg.model_id = cfg[C_MODEL_ID].s;
    creds = creds_new(cfg, err, sizeof(err));
    if (!creds) {
        cm_error("invalid configuration: %s", err);
        rc = 2;
        goto out;
    }
    bcfg.creds = creds;
    bcfg.bearer_token = cfg[C_BEARER].s;
    if (request_options(cfg, &bcfg.request, err, sizeof(err))) {
        cm_error("invalid configuration: %s", err);
        rc = 2;
        goto out;
    }
    bcfg.connect_timeout_ms = (int)cfg[C_CONNECT_TIMEOUT].i;
    bcfg.read_timeout_ms = (int)cfg[C_READ_TIMEOUT].i;
    bcfg.max_attempts = (int)cfg[C_MAX_ATTEMPTS].i;
    bcfg.retry_base_ms = (int)cfg[C_RETRY_BASE].i;
    bcfg.retry_mode = aw_retry_mode_parse(cfg[C_RETRY_MODE].s);
    if (bcfg.retry_mode < 0) {
        cm_error("invalid configuration: AWS_RETRY_MODE: '%s' is not standard, legacy or adaptive",
                 cfg[C_RETRY_MODE].s);
        rc = 2;
        goto out;
    }
    if (bcfg.retry_mode == AW_RETRY_LEGACY && !cfg[C_MAX_ATTEMPTS].is_set)
        bcfg.max_attempts = 5; /* legacy mode's own default */
    bcfg.ca_bundle = cfg[C_CA_BUNDLE].s;
    bcfg.streaming = (int)cfg[C_STREAMING].i;
    bcfg.loop = cm_loop_uv(loop);
    bcfg.on_log = on_creds;
    svc.bedrock = aw_bedrock_new(&bcfg, err, sizeof(err));
    json_decref((json_t *)bcfg.request.stop_sequences); /* the client holds its own */
    json_decref((json_t *)bcfg.request.additional_fields);
    if (!svc.bedrock) {
        cm_error("invalid configuration: %s", err);
        rc = 2;
        goto out;
    }
    svc.tools = aw_tools_new(cfg[C_TOOL_WORKERS].s, (int)cfg[C_TOOL_TIMEOUT].i,
                             (int)cfg[C_TOOLS_REFRESH].i, (int)cfg[C_MAX_MSG].i, err, sizeof(err));
    if (!svc.tools) {
        cm_error("invalid configuration: TOOL_WORKERS: %s", err);
        rc = 2;
        goto out;
    }
    if (store_new(cfg, cm_loop_uv(loop), creds, &svc.store, err, sizeof(err))) {
        cm_error("invalid configuration: %s", err);
        rc = 2;
        goto out;
    }
    svc.sessions =
        aw_sessions_new((size_t)cfg[C_SESSION_MAX].i, (size_t)cfg[C_SESSION_MAX_MESSAGES].i);
    /* 4096 answers, 64 MiB at most: a retry comes within seconds. */
    if (cfg[C_IDEM_WINDOW].i > 0 &&
        !(svc.answers =
              aw_idem_new(4096, (size_t)64 << 20, (uint64_t)cfg[C_IDEM_WINDOW].i * 1000))) {
        cm_error("out of memory at start-up");
        goto out;
    }
    if (svc.sessions)
        aw_sessions_set_limits(svc.sessions, (size_t)cfg[C_SESSION_MAX_BYTES].i,
                               (uint64_t)cfg[C_SESSION_TTL].i * 1000, NULL);
    signer.creds = creds;
    signer.region = cfg[C_REGION].s;
    if ((rc = cm_main_observe(&cfg[C_OTEL], cfg[C_METRICS].s, "agentcore-agent-worker", &hooks,
                              &svc.otel, &metrics)))
        goto out;
    aw_tools_set_otel(svc.tools, svc.otel);
    rc = 1;
    svc.model_id = cfg[C_MODEL_ID].s;
    svc.capture_content = (int)cfg[C_CAPTURE_CONTENT].i;
    if (metrics) {
        if (aw_service_metrics(&svc, metrics)) {
            cm_error("out of memory at start-up");
            goto out;
        }
        cm_metrics_gauge_fn(metrics, "agentcore_background_tasks",
                            "Background tasks behind this agent-worker (its tool-workers')",
                            background_tasks, svc.status);
    }
    svc.max_iterations = (int)cfg[C_MAX_ITERATIONS].i;
    svc.max_parallel_tools = (int)cfg[C_MAX_PARALLEL_TOOLS].i;
    svc.max_invocation_tokens = cfg[C_MAX_INV_TOKENS].i;
    svc.max_invocation_output_tokens = cfg[C_MAX_INV_OUTPUT_TOKENS].i;
    svc.session_wait_ms = (int)cfg[C_SESSION_WAIT].i;
    if (strcmp(cfg[C_CONV_MANAGER].s, "sliding") && strcmp(cfg[C_CONV_MANAGER].s, "summarizing")) {
        cm_error("invalid configuration: CONVERSATION_MANAGER: '%s' is not sliding or summarizing",
                 cfg[C_CONV_MANAGER].s);
        rc = 2;
        goto out;
    }
    svc.summarize = !strcmp(cfg[C_CONV_MANAGER].s, "summarizing");
    svc.loop = cm_loop_uv(loop);
    svc.status = cm_status_new(loop);
    ls.tool_workers = cfg[C_TOOL_WORKERS].s;
    ls.status_interval_ms = (int)cfg[C_TOOLS_STATUS].i;
    ls.max_msg = (int)cfg[C_MAX_MSG].i;
    scfg.listen = cfg[C_LISTEN].s;
    scfg.threads = 0; /* every invocation is an event on the loop, not a thread */
    scfg.max_msg_bytes = (int)cfg[C_MAX_MSG].i;
    srv = cm_rpc_server_new(&scfg);
    if (!svc.sessions || !svc.status || !srv || aw_service_register(srv, ls.events, &svc) ||
        cm_loop_start(loop)) {
        cm_error("out of memory at start-up");
        goto out;
    }
    port = cm_rpc_server_start(srv);
    if (port <= 0) {
        cm_error("cannot listen on %s (address in use or invalid)", cfg[C_LISTEN].s);
        goto out;
    }
    snprintf(portstr, sizeof(portstr), "%d", port);
    {
        /* Names the credential source, never a value. */
        const char *kv[] = {"listen",
                            cfg[C_LISTEN].s,
                            "port",
                            portstr,
                            "model",
                            cfg[C_MODEL_ID].s,
                            "endpoint",
                            endpoint,
                            "toolWorkers",
                            cfg[C_TOOL_WORKERS].s,
                            "auth",
                            cfg[C_BEARER].s ? "bearer token" : "sigv4",
                            "sessionStore",
                            cfg[C_SESSION_STORE].s,
                            NULL};
        CM_LOGF(CM_LOG_INFO, kv, "agent-worker ready");
    }
    cm_loop_call(loop, bind_tools, &ls);
    cm_notify_ready(port);
    if (!cfg[C_BEARER].s)
        warming = !pthread_create(&warm, NULL, warm_up, creds);
    sig = cm_main_wait_signal((int)cfg[C_TRIM].i);
    cm_info("signal %d: shutting down (grace %lld ms)", sig, cfg[C_GRACE].i);
    cm_status_close(svc.status); /* watches never end by themselves */
    cm_rpc_server_shutdown(srv, (int)cfg[C_GRACE].i);
    rc = 0;
out:
    /* Order: the server is down (every invocation answered) -> the loop side
     * lets go of Bedrock and stops listing tools -> the event queue drains into
     * the loop -> the loop runs until its last handle closed -> the rest. */
    if (loop)
        cm_status_close(svc.status);
    cm_rpc_server_shutdown(srv, 0);
    if (loop) /* runs inline when the loop never started */
        cm_loop_call(loop, stop_loop_side, &ls);
    cm_rpc_server_free(srv);
    cm_rpc_events_free(ls.events);
    cm_loop_free(loop);
    aw_tools_free(svc.tools);
    aw_sessions_free(svc.sessions);
    aw_idem_free(svc.answers);
    cm_otel_stop(svc.otel, 2000); /* every span is recorded: the invocations have ended */
    cm_metrics_free(metrics);     /* its server reads the status hub and the exporter */
    cm_status_free(svc.status);
    cm_otel_free(svc.otel, 0);
    if (warming)
        pthread_join(warm, NULL); /* it uses |creds|: bounded by the sources' timeouts */
    aw_creds_free(creds);
    cm_rpc_thread_done();
    cm_rpc_shutdown();
    curl_global_cleanup();
    if (rc == 0)
        cm_info("stopped");
out_cfg:
    cm_config_free(cfg, C_COUNT);
    return rc;
}
