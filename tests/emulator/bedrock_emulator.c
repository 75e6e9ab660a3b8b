/* agentcore-bedrock-emulator: a Bedrock Runtime stand-in for tests and offline use.
 *
 * It speaks the Converse wire format (POST /model/{id}/converse, JSON shapes,
 * errors as {"message"} with x-amzn-ErrorType), verifies every request's SigV4
 * signature against its configured credentials exactly as AWS does (403 with
 * AWS's error bodies otherwise), and plays a deterministic scripted model:
 *
 *   [[tool:NAME {json}]]       answer with a toolUse of NAME with that input; after
 *                              the toolResult, answer with text holding the result
 *                              (several in one prompt: one toolUse each, one turn)
 *   [[tool-loop:NAME {json}]]  keep asking for that tool, whatever comes back
 *   [[recall]]                 list the user's earlier prompts in this conversation
 *   "Summarize the conversation above" (the summarizing manager's request)
 *                              a summary: the user's earlier prompts
 *   [[max_tokens]]             stop with stopReason max_tokens
 *   [[fail:STATUS]]            answer with that error status
 *   [[sleep:MS]]               wait before answering
 *   [[slow-stream:MS]]         (ConverseStream) one frame every MS
 *   [[pause:MS]]               (ConverseStream) go silent for MS after the first
 *                              text delta, then finish
 *   anything else              "Echo: <prompt>"
 *
 * It also serves one S3 bucket (EMU_S3_BUCKET, path-style PUT and GET of
 * objects) for the S3 session store: SigV4 for service s3 (the decoded path,
 * not normalised; x-amz-content-sha256 checked against the body),
 * If-None-Match on GET (304), If-Match / If-None-Match: * on PUT (412), XML
 * errors; the objects live in memory (EMU_S3_MAX_OBJECTS).
 *
 * And AWS's OTLP endpoints: POST /v1/traces as X-Ray takes it (SigV4 for
 * service xray) and POST /v1/metrics (SigV4 for monitoring), protobuf
 * bodies; each accepted export is kept as <EMU_OTLP_DIR>/<n>.bin (metrics:
 * m<n>.bin) with a line "POST /v1/traces n=<n> bytes=<len> service=xray" in
 * requests.log there (the OTLP test receiver's layout), for tests to decode
 * with protoc.
 *
 * Fault injection (environment): EMU_THROTTLE_FIRST=N answers the first N model
 * calls with 429 ThrottlingException, EMU_FAIL_FIRST=N the next N with
 * EMU_FAIL_STATUS (500), EMU_LATENCY_MS delays every answer. Credentials from
 * the container and metadata endpoints live EMU_CREDENTIALS_TTL_S; after
 * EMU_CREDENTIALS_FAIL_AFTER answers those endpoints fail with 500.
 * EMU_CONTEXT_LIMIT_BYTES answers a model call whose messages are larger with
 * Bedrock's context overflow. EMU_STALL_FIRST=N makes the first N model calls send nothing for
 * EMU_STALL_MS (a silent connection); EMU_CLOCK_SKEW_S runs the emulator's
 * clock that far ahead (signature checks and the Date header use it).
 * GET /_emu/stats returns counters for tests. */
#define _GNU_SOURCE
#include "cm_buf.h"
#include "cm_evstream.h"
#include "cm_json.h"
#include "cm_log.h"
#include "cm_main.h"
#include "cm_sigv4.h"
#include "cm_util.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_BODY (256 * 1024 * 1024) /* the benchmark sends 90 MB prompts */
#define ECHO_MAX (64 * 1024)         /* longer prompts get a shortened echo */
#define TYPE_SUFFIX ":http://internal.amazon.com/coral/com.amazon.bedrock/"

enum {
    C_HOST,
    C_PORT,
    C_AKID,
    C_SECRET,
    C_REGION,
    C_THROTTLE,
    C_FAIL,
    C_FAIL_STATUS,
    C_LATENCY,
    C_STREAM_EXC_FIRST,
    C_STREAM_EXC,
    C_BOOT_AKID,
    C_BOOT_SECRET,
    C_SECRET_ID,
    C_BEARER,
    C_CONTAINER_TOKEN,
    C_IMDS_PUT_STATUS,
    C_CREDS_TTL,
    C_CREDS_FAIL_AFTER,
    C_STALL_FIRST,
    C_STALL_MS,
    C_CONTEXT_LIMIT,
    C_CLOCK_SKEW,
    C_S3_BUCKET,
    C_S3_MAX_OBJECTS,
    C_OTLP_DIR,
    C_LOG_LEVEL,
    C_COUNT
};

static const struct cm_cfg_entry config[C_COUNT] = {
    [C_HOST] = {"EMU_HOST", NULL, CM_CFG_STR, "127.0.0.1", 0, 64, "IPv4 address to listen on", 0},
    [C_PORT] = {"EMU_PORT", NULL, CM_CFG_INT, "0", 0, 65535, "port (0 = any free port)", 0},
    [C_AKID] = {"EMU_ACCESS_KEY_ID", NULL, CM_CFG_STR, "AKIDEMULATOR0000000", 0, 128,
                "the only access key id accepted", 0},
    [C_SECRET] = {"EMU_SECRET_ACCESS_KEY", NULL, CM_CFG_STR, "emulator-secret-key", 0, 128,
                  "its secret key (test credentials, not an AWS secret)", 0},
    [C_REGION] = {"EMU_REGION", NULL, CM_CFG_STR, "us-east-1", 0, 64, "signing region", 0},
    [C_THROTTLE] = {"EMU_THROTTLE_FIRST", NULL, CM_CFG_INT, "0", 0, 1000000,
                    "answer the first N model calls with 429 ThrottlingException", 0},
    [C_FAIL] = {"EMU_FAIL_FIRST", NULL, CM_CFG_INT, "0", 0, 1000000,
                "then answer N calls with EMU_FAIL_STATUS", 0},
    [C_FAIL_STATUS] = {"EMU_FAIL_STATUS", NULL, CM_CFG_INT, "500", 400, 599,
                       "status of the injected failures", 0},
    [C_LATENCY] = {"EMU_LATENCY_MS", NULL, CM_CFG_INT, "0", 0, 600000,
                   "delay before every model answer", 0},
    [C_STREAM_EXC_FIRST] = {"EMU_STREAM_EXCEPTION_FIRST", NULL, CM_CFG_INT, "0", 0, 1000000,
                            "end the first N ConverseStream calls with an in-stream exception "
                            "frame, before any content",
                            0},
    [C_STREAM_EXC] = {"EMU_STREAM_EXCEPTION", NULL, CM_CFG_STR, "throttlingException", 0, 64,
                      "the exception's :exception-type", 0},
    [C_BOOT_AKID] = {"EMU_BOOTSTRAP_ACCESS_KEY_ID", NULL, CM_CFG_STR, "AKIDBOOTSTRAP000000", 0, 128,
                     "a second key pair: it may read the secret, not call Bedrock", 0},
    [C_BOOT_SECRET] = {"EMU_BOOTSTRAP_SECRET_ACCESS_KEY", NULL, CM_CFG_STR,
                       "emulator-bootstrap-secret", 0, 128, "its secret key", 0},
    [C_SECRET_ID] = {"EMU_SECRET_ID", NULL, CM_CFG_STR, "agentcore/bedrock", 0, 256,
                     "the Secrets Manager secret that holds the Bedrock key pair", 0},
    [C_BEARER] = {"EMU_BEARER_TOKEN", NULL, CM_CFG_STR, NULL, 0, 1024,
                  "a Bedrock API key accepted as Authorization: Bearer (none by default)", 0},
    [C_CONTAINER_TOKEN] = {"EMU_CONTAINER_TOKEN", NULL, CM_CFG_STR, "emulator-container-token", 0,
                           1024, "Authorization the container credentials endpoint wants", 0},
    [C_IMDS_PUT_STATUS] = {"EMU_IMDS_PUT_STATUS", NULL, CM_CFG_INT, "200", 200, 599,
                           "status of PUT /latest/api/token (405 imitates metadata services "
                           "without tokens)",
                           0},
    [C_CREDS_TTL] = {"EMU_CREDENTIALS_TTL_S", NULL, CM_CFG_INT, "3600", 1, 43200,
                     "lifetime (Expiration) of the container and metadata credentials", 0},
    [C_CREDS_FAIL_AFTER] = {"EMU_CREDENTIALS_FAIL_AFTER", NULL, CM_CFG_INT, "0", 0, 1000000,
                            "after N credential answers, answer 500 (0 = never)", 0},
    [C_STALL_FIRST] = {"EMU_STALL_FIRST", NULL, CM_CFG_INT, "0", 0, 1000000,
                       "the first N model calls send nothing for EMU_STALL_MS", 0},
    [C_STALL_MS] = {"EMU_STALL_MS", NULL, CM_CFG_INT, "3000", 0, 600000,
                    "how long a stalled call stays silent", 0},
    [C_CONTEXT_LIMIT] = {"EMU_CONTEXT_LIMIT_BYTES", NULL, CM_CFG_INT, "0", 0, 1000000000,
                         "a model call whose messages pass this many bytes gets Bedrock's "
                         "context overflow (400 ValidationException; 0: no limit)",
                         0},
    [C_CLOCK_SKEW] = {"EMU_CLOCK_SKEW_S", NULL, CM_CFG_INT, "0", -86400, 86400,
                      "the emulator's clock runs this many seconds ahead of the machine's", 0},
    [C_S3_BUCKET] = {"EMU_S3_BUCKET", NULL, CM_CFG_STR, "agentcore-sessions", 0, 63,
                     "the one S3 bucket served (path-style PUT/GET of objects, SigV4 for s3, "
                     "If-Match / If-None-Match as S3 does them)",
                     0},
    [C_S3_MAX_OBJECTS] = {"EMU_S3_MAX_OBJECTS", NULL, CM_CFG_INT, "100000", 1, 10000000,
                          "objects the bucket holds at most (past it: 507)", 0},
    [C_OTLP_DIR] = {"EMU_OTLP_DIR", NULL, CM_CFG_STR, NULL, 0, 1000,
                    "where accepted X-Ray OTLP exports are kept (unset: counted only)", 0},
    [C_LOG_LEVEL] = CM_CFG_LOG_LEVEL,
};

static struct cm_cfg_value cfg[C_COUNT];

/* Which key pair signed a request. */
enum signer { SIGNER_NONE = -1, SIGNER_MAIN = 0, SIGNER_BOOTSTRAP = 1, SIGNER_BEARER = 2 };
static atomic_long n_stream, n_stream_aborted;
static atomic_long n_requests, n_converse, n_auth_rejected, n_faults, n_tool_uses;
static atomic_long n_credentials; /* credential answers, successful or failed */
static atomic_long n_secrets;     /* GetSecretValue answers */

struct answer;

struct req {
    struct cm_buf body;
    struct answer *ready; /* computed, held back until its delay has passed */
};

struct answer {
    int status;
    const char *error_type; /* NULL for 200 */
    char *body;
    size_t len;               /* body length (an event stream holds NUL bytes) */
    int stream;               /* body is application/vnd.amazon.eventstream */
    long slow_ms;             /* [[slow-stream:MS]]: one frame every MS */
    long pause_ms;            /* [[pause:MS]]: silence after the first text delta */
    long delay_ms;            /* the model thinking: held back this long before it is sent */
    int fail_after_text;      /* [[stream-fail-after-text]] */
    char etag[80];            /* S3: sent as ETag when set */
    const char *content_type; /* instead of JSON's, when set */
};

/* The emulator's clock: the machine's, plus EMU_CLOCK_SKEW_S. */
static long long emu_now(void)
{
    return (long long)time(NULL) + cfg[C_CLOCK_SKEW].i;
}

/* ---- delays without a thread each ----
 * The model "thinks" by holding a connection back: the connection is
 * suspended and one thread resumes it when its time has come, so thousands
 * of waiting calls cost no thread each (the benchmark opens 2,000 at once). */

struct wake {
    uint64_t at;
    struct MHD_Connection *c;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct wake *heap; /* a min-heap on |at| */
    size_t n, cap;
    int stop;
    pthread_t thread;
} sleeper = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 0, 0, 0};

static void heap_swap(size_t i, size_t j)
{
    struct wake t = sleeper.heap[i];

    sleeper.heap[i] = sleeper.heap[j];
    sleeper.heap[j] = t;
}

/* |c| is already suspended; it is resumed |ms| from now. */
static void sleeper_add(struct MHD_Connection *c, long ms)
{
    size_t i;

    pthread_mutex_lock(&sleeper.lock);
    if (sleeper.stop) {
        /* Shutting down: nobody would wake it. */
        pthread_mutex_unlock(&sleeper.lock);
        MHD_resume_connection(c);
        return;
    }
    if (sleeper.n == sleeper.cap) {
        size_t cap = sleeper.cap ? sleeper.cap * 2 : 256;
        struct wake *h = realloc(sleeper.heap, cap * sizeof(*h));

        if (!h) {
            pthread_mutex_unlock(&sleeper.lock);
            MHD_resume_connection(c); /* no room to wait: answer at once */
            return;
        }
        sleeper.heap = h;
        sleeper.cap = cap;
    }
    i = sleeper.n++;
    sleeper.heap[i].at = cm_now_ms() + (uint64_t)(ms > 0 ? ms : 0);
    sleeper.heap[i].c = c;
    while (i && sleeper.heap[(i - 1) / 2].at > sleeper.heap[i].at) {
        heap_swap(i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    pthread_cond_signal(&sleeper.cond);
    pthread_mutex_unlock(&sleeper.lock);
}

static struct MHD_Connection *heap_pop(void)
{
    struct MHD_Connection *c = sleeper.heap[0].c;
    size_t i = 0;

    sleeper.heap[0] = sleeper.heap[--sleeper.n];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;

        if (l < sleeper.n && sleeper.heap[l].at < sleeper.heap[m].at)
            m = l;
        if (r < sleeper.n && sleeper.heap[r].at < sleeper.heap[m].at)
            m = r;
        if (m == i)
            break;
        heap_swap(i, m);
        i = m;
    }
    return c;
}

static void *sleeper_main(void *p)
{
    (void)p;
    pthread_mutex_lock(&sleeper.lock);
    while (!sleeper.stop) {
        uint64_t now = cm_now_ms();

        if (!sleeper.n) {
            pthread_cond_wait(&sleeper.cond, &sleeper.lock);
        } else if (sleeper.heap[0].at <= now) {
            struct MHD_Connection *c = heap_pop();

            pthread_mutex_unlock(&sleeper.lock);
            MHD_resume_connection(c);
            pthread_mutex_lock(&sleeper.lock);
        } else {
            struct timespec until = cm_deadline_ms((int)(sleeper.heap[0].at - now));

            pthread_cond_timedwait(&sleeper.cond, &sleeper.lock, &until);
        }
    }
    /* Shutting down: nothing may stay suspended, or MHD cannot stop. */
    while (sleeper.n) {
        struct MHD_Connection *c = heap_pop();

        MHD_resume_connection(c);
    }
    pthread_mutex_unlock(&sleeper.lock);
    return NULL;
}

static void sleeper_stop(void)
{
    pthread_mutex_lock(&sleeper.lock);
    sleeper.stop = 1;
    pthread_cond_signal(&sleeper.cond);
    pthread_mutex_unlock(&sleeper.lock);
    pthread_join(sleeper.thread, NULL);
    free(sleeper.heap);
}

static void error_answer(struct answer *a, int status, const char *type, const char *message)
{
    json_t *o = json_pack("{s:s}", "message", message);

    a->status = status;
    a->error_type = type;
    a->body = cm_json_dump(o);
    json_decref(o);
}

/* ---- SigV4 verification, as the service does it ---- */

static int parse_auth(const char *auth, char *akid, char *date, char *region, char *service,
                      char *signed_headers, char *signature)
{
    const char *cred, *sh, *sig;

    if (strncmp(auth, "AWS4-HMAC-SHA256 ", 17))
        return -1;
    cred = strstr(auth, "Credential=");
    sh = strstr(auth, "SignedHeaders=");
    sig = strstr(auth, "Signature=");
    if (!cred || !sh || !sig)
        return -1;
    if (sscanf(cred + 11, "%127[^/]/%15[^/]/%63[^/]/%63[^/]/aws4_request", akid, date, region,
               service) != 4)
        return -1;
    if (sscanf(sh + 14, "%1023[^,]", signed_headers) != 1 ||
        sscanf(sig + 10, "%64[0-9a-f]", signature) != 1)
        return -1;
    return 0;
}

static int verify(struct MHD_Connection *c, const char *method, const char *raw_path,
                  const struct cm_buf *body, const char *want_service, struct answer *a);
static int verify_path(struct MHD_Connection *c, const char *method, const char *raw_path,
                       const struct cm_buf *body, const char *want_service, int normalize,
                       struct answer *a);

static int verify(struct MHD_Connection *c, const char *method, const char *raw_path,
                  const struct cm_buf *body, const char *want_service, struct answer *a)
{
    return verify_path(c, method, raw_path, body, want_service, 1, a);
}

/* Each MHD thread keeps the last signing key it derived. */
static __thread struct cm_sigv4_key sign_key;

/* |normalize| 0: S3's rules (the decoded path, signed as it is). */
static int verify_path(struct MHD_Connection *c, const char *method, const char *raw_path,
                       const struct cm_buf *body, const char *want_service, int normalize,
                       struct answer *a)
{
    const char *secret_key;
    int signer;
    char akid[128], date[16], region[64], service[64], signed_headers[1024], signature[65];
    struct cm_sigv4_header hdrs[CM_SIGV4_MAX_HEADERS];
    struct cm_sigv4_request req;
    struct cm_sigv4_params p;
    struct cm_sigv4_out out;
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    const char *amz_date = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Amz-Date");
    char *save = NULL, *name, names[1024];
    size_t n = 0;
    struct tm tm;
    int ok;

    if (!auth) {
        error_answer(a, 403, "MissingAuthenticationTokenException", "Missing Authentication Token");
        return -1;
    }
    if (!strncmp(auth, "Bearer ", 7)) {
        if (cfg[C_BEARER].s && !strcmp(want_service, "bedrock") &&
            cm_sigv4_equal(auth + 7, cfg[C_BEARER].s))
            return SIGNER_BEARER;
        error_answer(a, 403, "AccessDeniedException", "Invalid API Key format or API key.");
        return -1;
    }
    if (parse_auth(auth, akid, date, region, service, signed_headers, signature)) {
        error_answer(a, 403, "IncompleteSignatureException",
                     "Authorization header requires 'Credential', 'Signature' and "
                     "'SignedHeaders' parameters.");
        return -1;
    }
    if (!strcmp(akid, cfg[C_AKID].s)) {
        signer = SIGNER_MAIN;
        secret_key = cfg[C_SECRET].s;
    } else if (!strcmp(akid, cfg[C_BOOT_AKID].s)) {
        signer = SIGNER_BOOTSTRAP;
        secret_key = cfg[C_BOOT_SECRET].s;
    } else {
        error_answer(a, 403, "UnrecognizedClientException",
                     "The security token included in the request is invalid.");
        return -1;
    }
    if (strcmp(service, want_service) || strcmp(region, cfg[C_REGION].s)) {
        error_answer(a, 403, "InvalidSignatureException",
                     "Credential should be scoped to a valid region and to the right service.");
        return -1;
    }
    memset(&tm, 0, sizeof(tm));
    if (!amz_date || strlen(amz_date) != 16 || !strptime(amz_date, "%Y%m%dT%H%M%SZ", &tm) ||
        strncmp(amz_date, date, 8) || llabs((long long)timegm(&tm) - emu_now()) > 300) {
        error_answer(a, 403, "InvalidSignatureException",
                     "Signature expired or X-Amz-Date missing: the request time must be within "
                     "5 minutes of the server time.");
        return -1;
    }
    cm_strlcpy(names, signed_headers, sizeof(names));
    for (name = strtok_r(names, ";", &save); name && n < CM_SIGV4_MAX_HEADERS;
         name = strtok_r(NULL, ";", &save)) {
        const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);

        hdrs[n].name = name;
        hdrs[n].value = v ? v : "";
        n++;
    }
    if (!strstr(signed_headers, "host") || !strstr(signed_headers, "x-amz-date")) {
        error_answer(a, 403, "InvalidSignatureException",
                     "'Host' and 'X-Amz-Date' must be signed headers.");
        return -1;
    }
    req = (struct cm_sigv4_request){method, raw_path, NULL, hdrs, n, body->data, body->len};
    p = (struct cm_sigv4_params){akid, secret_key, region, service, amz_date, normalize, &sign_key};
    ok = cm_sigv4_sign(&p, &req, &out) == 0 && cm_sigv4_equal(out.signature, signature);
    cm_sigv4_out_free(&out);
    if (!ok) {
        error_answer(a, 403, "InvalidSignatureException",
                     "The request signature we calculated does not match the signature you "
                     "provided. Check your AWS Secret Access Key and signing method. Consult the "
                     "service documentation for details.");
        return -1;
    }
    return signer;
}

/* ---- the scripted model ---- */

static size_t piece(const char *s, size_t n);

static const char *last_user_text(const json_t *messages)
{
    size_t i = json_array_size(messages);

    while (i-- > 0) {
        json_t *m = json_array_get(messages, i), *block;
        size_t k;
        const char *role = json_string_value(json_object_get(m, "role"));
        const char *found = NULL;

        if (!role || strcmp(role, "user"))
            continue;
        json_array_foreach(json_object_get(m, "content"), k, block)
        {
            const char *t = json_string_value(json_object_get(block, "text"));

            if (t)
                found = t; /* the last text block of that turn is the newest prompt */
        }
        if (found)
            return found;
    }
    return NULL;
}

/* Parses "[[tool:NAME {json}]]" or "[[tool-loop:...]]" out of |text|. */
static json_t *tool_directive(const char *text, char *name, size_t cap, int *loop)
{
    const char *p = strstr(text, "[[tool:"), *q, *end;
    json_t *input;
    size_t n;

    *loop = 0;
    if (!p) {
        p = strstr(text, "[[tool-loop:");
        if (!p)
            return NULL;
        *loop = 1;
        p += 12;
    } else {
        p += 7;
    }
    q = strchr(p, ' ');
    end = strstr(p, "]]");
    if (!q || !end || q > end)
        return NULL;
    n = (size_t)(q - p);
    if (n == 0 || n >= cap)
        return NULL;
    memcpy(name, p, n);
    name[n] = '\0';
    input = json_loadb(q + 1, (size_t)(end - q - 1), 0, NULL);
    return json_is_object(input) ? input : (json_decref(input), NULL);
}

static char *tool_results_text(const json_t *last)
{
    struct cm_buf b;
    json_t *block, *c;
    size_t i, k;

    cm_buf_init(&b, 1024 * 1024);
    cm_buf_addstr(&b, "Tool result: ");
    json_array_foreach(json_object_get(last, "content"), i, block)
    {
        json_t *tr = json_object_get(block, "toolResult");

        json_array_foreach(json_object_get(tr, "content"), k, c)
        {
            const char *t = json_string_value(json_object_get(c, "text"));

            if (t) {
                if (b.len > 13)
                    cm_buf_addstr(&b, "; ");
                cm_buf_addstr(&b, t);
            }
        }
    }
    return cm_buf_steal(&b);
}

static char *recall_text(const json_t *messages)
{
    struct cm_buf b;
    json_t *m, *block;
    size_t i, k, n = json_array_size(messages), count = 0;

    cm_buf_init(&b, 1024 * 1024);
    cm_buf_addstr(&b, "You said:");
    json_array_foreach(messages, i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));

        if (!role || strcmp(role, "user") || i + 1 == n)
            continue;
        json_array_foreach(json_object_get(m, "content"), k, block)
        {
            const char *t = json_string_value(json_object_get(block, "text"));

            if (t) {
                cm_buf_printf(&b, "%s %s", count++ ? " |" : "", t);
            }
        }
    }
    if (!count)
        cm_buf_addstr(&b, " nothing yet");
    return cm_buf_steal(&b);
}

/* NULL when |messages| is a conversation Bedrock accepts, else its message
 * (the wording of Bedrock's ValidationExceptions): it starts with the user,
 * roles alternate, no text block is blank, and the toolResults of a user
 * turn answer exactly the toolUses of the assistant turn before it. */
static const char *conversation_invalid(const json_t *messages)
{
    const json_t *m, *prev = NULL;
    size_t i;

    json_array_foreach(messages, i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        const json_t *b;
        size_t k, uses = 0, results = 0;

        if (!role || (strcmp(role, "user") && strcmp(role, "assistant")))
            return "A conversation must alternate between user and assistant roles.";
        if (i == 0 && strcmp(role, "user"))
            return "A conversation must start with a user message. Try again with a "
                   "conversation that starts with a user message.";
        if (prev && !strcmp(role, json_string_value(json_object_get(prev, "role"))))
            return "A conversation must alternate between user and assistant roles. Make sure "
                   "the conversation alternates between user and assistant roles and try again.";
        json_array_foreach(json_object_get(m, "content"), k, b)
        {
            const json_t *t = json_object_get(b, "text");
            const char *id;

            if (t && (!json_string_value(t) || !json_string_value(t)[0]))
                return "The text field in the ContentBlock object is blank. Add text to the "
                       "text field, and try again.";
            if ((id = json_string_value(
                     json_object_get(json_object_get(b, "toolResult"), "toolUseId")))) {
                const json_t *u;
                size_t j;
                int found = 0;

                results++;
                json_array_foreach(json_object_get(prev, "content"), j, u)
                {
                    const char *uid = json_string_value(
                        json_object_get(json_object_get(u, "toolUse"), "toolUseId"));

                    found |= uid && !strcmp(uid, id);
                }
                if (!found)
                    return "The number of toolResult blocks at messages.N.content exceeds the "
                           "number of toolUse blocks of previous turn.";
            }
        }
        if (prev && !strcmp(role, "user")) {
            json_array_foreach(json_object_get(prev, "content"), k, b) uses +=
                json_object_get(b, "toolUse") != NULL;
            if (uses != results)
                return "Expected toolResult blocks at messages.N.content for the following "
                       "Ids: the toolUse blocks of the previous turn";
        }
        prev = m;
    }
    return NULL;
}

static void model_answer(const json_t *req, size_t req_len, struct answer *a)
{
    json_t *messages = json_object_get(req, "messages"), *last, *content, *input;
    const char *prompt, *p;
    char tool[128], *text = NULL;
    const char *stop = "end_turn";
    int loop, after_tool = 0;
    size_t k;
    json_t *block;

    if (!json_is_array(messages) || !json_array_size(messages)) {
        error_answer(a, 400, "ValidationException",
                     "1 validation error detected: Value at 'messages' failed to satisfy "
                     "constraint: Member must not be empty");
        return;
    }
    {
        /* Bedrock's own rules on a conversation, which refuse it whole. */
        const char *why = conversation_invalid(messages);

        if (why) {
            error_answer(a, 400, "ValidationException", why);
            return;
        }
    }
    if (cfg[C_CONTEXT_LIMIT].i > 0) {
        char *dumped = cm_json_dump(messages);
        size_t n = dumped ? strlen(dumped) : 0;

        free(dumped);
        if ((long long)n > cfg[C_CONTEXT_LIMIT].i) {
            error_answer(a, 400, "ValidationException", "Input is too long for requested model.");
            return;
        }
    }
    last = json_array_get(messages, json_array_size(messages) - 1);
    if (!json_is_object(last) ||
        strcmp(json_string_value(json_object_get(last, "role")) ?: "", "user")) {
        error_answer(a, 400, "ValidationException",
                     "A conversation must end with a user message. Try again with a "
                     "conversation that ends with a user message.");
        return;
    }
    json_array_foreach(json_object_get(last, "content"), k, block)
    {
        if (json_object_get(block, "toolResult"))
            after_tool = 1;
    }
    prompt = last_user_text(messages);
    if (!prompt)
        prompt = "";
    if ((p = strstr(prompt, "[[fail:"))) {
        /* Bedrock's error catalogue, by status (or by name for ModelNotReady). */
        static const struct {
            int status;
            const char *type, *message;
        } catalogue[] = {
            {400, "ValidationException", "injected: the request is invalid"},
            {403, "AccessDeniedException", "injected: you do not have access"},
            {404, "ResourceNotFoundException", "injected: the model was not found"},
            {408, "ModelTimeoutException", "injected: the model took too long"},
            {424, "ModelErrorException", "injected: the model failed"},
            {429, "ThrottlingException", "injected: too many requests"},
            {500, "InternalServerException", "injected: internal error"},
            {503, "ServiceUnavailableException", "injected: service unavailable"},
        };
        int status = atoi(p + 7);
        size_t e;

        if (!strncmp(p + 7, "model-not-ready", 15)) {
            error_answer(a, 429, "ModelNotReadyException", "injected: the model is not ready");
            return;
        }
        for (e = 0; e < sizeof(catalogue) / sizeof(catalogue[0]); e++) {
            if (catalogue[e].status == status) {
                error_answer(a, status, catalogue[e].type, catalogue[e].message);
                return;
            }
        }
    }
    if ((p = strstr(prompt, "[[sleep:")))
        a->delay_ms += atol(p + 8);
    if ((p = strstr(prompt, "[[slow-stream:")))
        a->slow_ms = atol(p + 14);
    if ((p = strstr(prompt, "[[pause:")))
        a->pause_ms = atol(p + 8);
    a->fail_after_text = strstr(prompt, "[[stream-fail-after-text]]") != NULL;
    input = tool_directive(prompt, tool, sizeof(tool), &loop);
    content = json_array();
    if (input && (!after_tool || loop)) {
        const char *next = prompt;

        json_array_append_new(content, json_pack("{s:s+}", "text", "Calling ", tool));
        do { /* every [[tool:...]] of the prompt: parallel tool calls in one turn */
            char id[64];

            snprintf(id, sizeof(id), "tooluse_emu_%ld", atomic_fetch_add(&n_tool_uses, 1) + 1);
            json_array_append_new(content, json_pack("{s:{s:s,s:s,s:O}}", "toolUse", "toolUseId",
                                                     id, "name", tool, "input", input));
            json_decref(input);
            input = NULL;
            next = strstr(next, "[[tool"); /* the directive just used, then its end */
            next = next ? strstr(next, "]]") : NULL;
            if (loop || !next)
                break;
            next += 2;
            input = tool_directive(next, tool, sizeof(tool), &loop);
        } while (input && !loop);
        json_decref(input);
        input = NULL;
        stop = "tool_use";
    } else {
        if (strstr(prompt, "Summarize the conversation above")) {
            /* The summarizing conversation manager's request: the user's
             * prompts, as a model's summary would keep them. */
            char *said = recall_text(messages);
            size_t n = strlen(said) + 32;

            text = malloc(n);
            snprintf(text, n, "The user asked: %s", said + strlen("You said:"));
            free(said);
        } else if (after_tool)
            text = tool_results_text(last);
        else if (strstr(prompt, "[[recall]]"))
            text = recall_text(messages);
        else if (strlen(prompt) > ECHO_MAX) {
            /* A huge prompt (the benchmark's 90 MB ones) gets a bounded
             * answer, as a model's would be: its start and its length. */
            size_t n = ECHO_MAX + 64;

            text = malloc(n);
            snprintf(text, n, "Echo: %.*s... (%zu bytes)", (int)piece(prompt, ECHO_MAX), prompt,
                     strlen(prompt));
        } else {
            size_t n = strlen(prompt) + 7;

            text = malloc(n);
            snprintf(text, n, "Echo: %s", prompt);
        }
        if (strstr(prompt, "[[max_tokens]]"))
            stop = "max_tokens";
        json_array_append_new(content, json_pack("{s:s}", "text", text));
    }
    json_decref(input);
    {
        long long in_tok = (long long)req_len / 4 + 1;
        long long out_tok = text ? (long long)strlen(text) / 4 + 1 : 12;
        json_t *resp =
            json_pack("{s:{s:{s:s,s:o}},s:s,s:{s:I,s:I,s:I},s:{s:i}}", "output", "message", "role",
                      "assistant", "content", content, "stopReason", stop, "usage", "inputTokens",
                      (json_int_t)in_tok, "outputTokens", (json_int_t)out_tok, "totalTokens",
                      (json_int_t)(in_tok + out_tok), "metrics", "latencyMs", 1);

        a->status = 200;
        a->error_type = NULL;
        a->body = cm_json_dump(resp);
        json_decref(resp);
    }
    free(text);
}

/* ---- ConverseStream framing ---- */

static int frame(struct cm_buf *out, const char *event, json_t *payload)
{
    static const char pad[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    const char *names[] = {":event-type", ":content-type", ":message-type"};
    const char *values[] = {event, "application/json", "event"};
    char *js;
    int rc;

    /* Real frames carry a random-length padding field "p" that clients ignore. */
    json_object_set_new(payload, "p", json_stringn(pad, (size_t)(out->len % 40)));
    js = cm_json_dump(payload);
    rc = cm_evs_encode(out, names, values, 3, js, strlen(js));
    free(js);
    json_decref(payload);
    return rc;
}

static int exception_frame(struct cm_buf *out, const char *type, const char *message)
{
    const char *names[] = {":exception-type", ":content-type", ":message-type"};
    const char *values[] = {type, "application/json", "exception"};
    json_t *p = json_pack("{s:s}", "message", message);
    char *js = cm_json_dump(p);
    int rc = cm_evs_encode(out, names, values, 3, js, strlen(js));

    free(js);
    json_decref(p);
    return rc;
}

/* Splits |s| into pieces of |n| bytes without cutting a UTF-8 sequence
 * (looks no further than the piece: a long text is split in linear time). */
static size_t piece(const char *s, size_t n)
{
    size_t len = strnlen(s, n + 4);

    if (len <= n)
        return len;
    while (n < len && ((unsigned char)s[n] & 0xc0) == 0x80)
        n++;
    return n;
}

/* Re-expresses a Converse answer as the ConverseStream events Bedrock sends:
 * text in several deltas (no contentBlockStart), toolUse with a start event
 * and its input JSON in fragments, then messageStop and metadata. */
static void stream_answer(const json_t *resp, struct answer *a)
{
    json_t *content = json_object_get(json_object_get(json_object_get(resp, "output"), "message"),
                                      "content"),
           *block, *usage = json_object_get(resp, "usage");
    struct cm_buf b;
    size_t i;
    long call = atomic_fetch_add(&n_stream, 1) + 1;

    cm_buf_init(&b, MAX_BODY);
    frame(&b, "messageStart", json_pack("{s:s}", "role", "assistant"));
    if (call <= cfg[C_STREAM_EXC_FIRST].i) {
        atomic_fetch_add(&n_faults, 1);
        exception_frame(&b, cfg[C_STREAM_EXC].s,
                        "Too many requests, please wait before trying again.");
        goto done;
    }
    json_array_foreach(content, i, block)
    {
        const char *text = json_string_value(json_object_get(block, "text"));
        json_t *use = json_object_get(block, "toolUse");

        if (text) {
            while (*text) {
                size_t n = piece(text, 7);

                frame(&b, "contentBlockDelta",
                      json_pack("{s:i,s:{s:s%}}", "contentBlockIndex", (int)i, "delta", "text",
                                text, n));
                text += n;
            }
        } else if (use) {
            char *input = cm_json_dump(json_object_get(use, "input"));
            const char *p = input;

            frame(&b, "contentBlockStart",
                  json_pack("{s:i,s:{s:{s:O,s:O}}}", "contentBlockIndex", (int)i, "start",
                            "toolUse", "toolUseId", json_object_get(use, "toolUseId"), "name",
                            json_object_get(use, "name")));
            while (*p) {
                size_t n = piece(p, 5);

                frame(&b, "contentBlockDelta",
                      json_pack("{s:i,s:{s:{s:s%}}}", "contentBlockIndex", (int)i, "delta",
                                "toolUse", "input", p, n));
                p += n;
            }
            free(input);
        }
        frame(&b, "contentBlockStop", json_pack("{s:i}", "contentBlockIndex", (int)i));
        if (a->fail_after_text) {
            /* Content already went out: the client must not retry this one. */
            const char *names[] = {":exception-type", ":content-type", ":message-type"};
            const char *values[] = {"modelStreamErrorException", "application/json", "exception"};
            const char *msg = "{\"message\":\"Model stream error\",\"originalStatusCode\":500}";

            cm_evs_encode(&b, names, values, 3, msg, strlen(msg));
            goto done;
        }
    }
    frame(&b, "messageStop", json_pack("{s:O}", "stopReason", json_object_get(resp, "stopReason")));
    frame(&b, "metadata", json_pack("{s:O,s:{s:i}}", "usage", usage, "metrics", "latencyMs", 1));
done:
    a->status = 200;
    a->error_type = NULL;
    a->stream = 1;
    a->len = b.len;
    a->body = cm_buf_steal(&b);
}

/* ---- credential sources ---- */

static void creds_json(struct answer *a)
{
    char exp[32];
    time_t t = time(NULL) + cfg[C_CREDS_TTL].i;
    struct tm tm;
    json_t *o;
    long n = atomic_fetch_add(&n_credentials, 1) + 1;

    if (cfg[C_CREDS_FAIL_AFTER].i && n > cfg[C_CREDS_FAIL_AFTER].i) {
        a->status = 500;
        a->body = strdup("{\"message\":\"credential service failure (injected)\"}");
        return;
    }

    gmtime_r(&t, &tm);
    strftime(exp, sizeof(exp), "%Y-%m-%dT%H:%M:%SZ", &tm);
    o = json_pack("{s:s,s:s,s:s,s:s,s:s}", "Code", "Success", "AccessKeyId", cfg[C_AKID].s,
                  "SecretAccessKey", cfg[C_SECRET].s, "Token", "", "Expiration", exp);
    a->status = 200;
    a->body = cm_json_dump(o);
    json_decref(o);
}

static void secrets_manager(struct MHD_Connection *c, const struct cm_buf *body, struct answer *a)
{
    const char *target = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Amz-Target");
    json_t *req, *resp;
    const char *id = NULL;
    char *secret;

    if (!target || strcmp(target, "secretsmanager.GetSecretValue")) {
        error_answer(a, 400, "UnknownOperationException", "Unknown operation");
        return;
    }
    if (verify(c, "POST", "/", body, "secretsmanager", a) == SIGNER_NONE) {
        atomic_fetch_add(&n_auth_rejected, 1);
        return;
    }
    atomic_fetch_add(&n_secrets, 1);
    req = json_loadb(body->data ? body->data : "", body->len, 0, NULL);
    cm_json_opt_str(req, "SecretId", &id, NULL, 0);
    if (!id || strcmp(id, cfg[C_SECRET_ID].s)) {
        json_decref(req);
        error_answer(a, 400, "ResourceNotFoundException",
                     "Secrets Manager can't find the specified secret.");
        return;
    }
    resp = json_pack("{s:s,s:s}", "AWS_ACCESS_KEY_ID", cfg[C_AKID].s, "AWS_SECRET_ACCESS_KEY",
                     cfg[C_SECRET].s);
    secret = cm_json_dump(resp);
    json_decref(resp);
    resp =
        json_pack("{s:s,s:s,s:s,s:s,s:[s],s:f}", "ARN",
                  "arn:aws:secretsmanager:us-east-1:123456789012:secret:agentcore-AbCdEf", "Name",
                  id, "VersionId", "EXAMPLE1-90ab-cdef-fedc-ba987SECRET1", "SecretString", secret,
                  "VersionStages", "AWSCURRENT", "CreatedDate", 1523477145.713);
    a->status = 200;
    a->body = cm_json_dump(resp);
    json_decref(resp);
    json_decref(req);
    free(secret);
}

#define IMDS_TOKEN "emulator-imds-token"

static void metadata(struct MHD_Connection *c, const char *method, const char *url,
                     struct answer *a)
{
    const char *tok = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-aws-ec2-metadata-token");

    if (!strcmp(url, "/latest/api/token")) {
        if (strcmp(method, "PUT") || cfg[C_IMDS_PUT_STATUS].i != 200) {
            a->status = strcmp(method, "PUT") ? 405 : (int)cfg[C_IMDS_PUT_STATUS].i;
            a->body = strdup("");
            return;
        }
        a->status = 200;
        a->body = strdup(IMDS_TOKEN);
        return;
    }
    if (!tok || strcmp(tok, IMDS_TOKEN)) {
        a->status = 401;
        a->body = strdup("");
        return;
    }
    if (!strcmp(url, "/latest/meta-data/iam/security-credentials/")) {
        a->status = 200;
        a->body = strdup("agentcore-role");
    } else if (!strcmp(url, "/latest/meta-data/iam/security-credentials/agentcore-role")) {
        creds_json(a);
    } else {
        a->status = 404;
        a->body = strdup("");
    }
}

/* ---- X-Ray's OTLP endpoint ---- */

static atomic_long n_otlp, n_otlp_metrics, n_otlp_rejected;

static void otlp_export(struct MHD_Connection *c, const char *url, const struct cm_buf *body,
                        struct answer *a)
{
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    int metrics = !strcmp(url, "/v1/metrics");
    const char *service = metrics ? "monitoring" : "xray";
    long n;

    if (verify(c, "POST", url, body, service, a) < 0) {
        atomic_fetch_add(&n_otlp_rejected, 1);
        return;
    }
    if (!ct || strcmp(ct, "application/x-protobuf")) {
        atomic_fetch_add(&n_otlp_rejected, 1);
        error_answer(a, 415, "UnsupportedMediaTypeException",
                     "Content-Type must be application/x-protobuf");
        return;
    }
    n = atomic_fetch_add(metrics ? &n_otlp_metrics : &n_otlp, 1) + 1;
    if (cfg[C_OTLP_DIR].s) {
        char path[1100], line[200];
        FILE *f;

        /* The body first, then the line that announces it. */
        snprintf(path, sizeof(path), "%s/%s%ld.bin", cfg[C_OTLP_DIR].s, metrics ? "m" : "", n);
        pthread_mutex_lock(&lock);
        if ((f = fopen(path, "wb"))) {
            fwrite(body->data, 1, body->len, f);
            fclose(f);
        }
        snprintf(path, sizeof(path), "%s/requests.log", cfg[C_OTLP_DIR].s);
        snprintf(line, sizeof(line), "POST %s n=%ld bytes=%zu service=%s\n", url, n, body->len,
                 service);
        if ((f = fopen(path, "a"))) {
            fputs(line, f);
            fclose(f);
        }
        pthread_mutex_unlock(&lock);
    }
    a->status = 200;
    a->body = strdup(""); /* an empty ExportTraceServiceResponse */
    a->content_type = "application/x-protobuf";
}

/* ---- S3: one bucket of objects, as S3 answers PutObject and GetObject ---- */

struct object {
    char *key, *data;
    size_t len;
    char etag[80];
    struct object *next;
};

static struct {
    pthread_mutex_t lock;
    struct object *head;
    long count;
} bucket = {PTHREAD_MUTEX_INITIALIZER, NULL, 0};

static atomic_long n_s3_put, n_s3_get, n_s3_conflict, n_s3_not_modified;

static void s3_error(struct answer *a, int status, const char *code, const char *message)
{
    char *xml = NULL;

    if (asprintf(&xml,
                 "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s</Code>"
                 "<Message>%s</Message></Error>",
                 code, message) < 0)
        xml = NULL;
    free(a->body);
    a->status = status;
    a->error_type = NULL; /* S3 says it in the XML, not in x-amzn-ErrorType */
    a->body = xml;
}

/* %XX -> bytes: S3 signs the decoded path. */
static void percent_decode(const char *in, char *out, size_t cap)
{
    size_t n = 0;
    unsigned int v;

    while (*in && n + 1 < cap) {
        if (in[0] == '%' && in[1] && in[2] && sscanf(in + 1, "%2x", &v) == 1) {
            out[n++] = (char)v;
            in += 3;
        } else {
            out[n++] = *in++;
        }
    }
    out[n] = '\0';
}

static struct object *object_find(const char *key)
{
    struct object *o;

    for (o = bucket.head; o && strcmp(o->key, key); o = o->next)
        ;
    return o;
}

static void s3_object(struct MHD_Connection *c, const char *method, const char *raw_path,
                      const struct cm_buf *body, struct answer *a)
{
    const char *if_match = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "If-Match");
    const char *if_none = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "If-None-Match");
    const char *sha = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-amz-content-sha256");
    char path[2048], want[65];
    const char *key;
    struct object *o;

    percent_decode(raw_path, path, sizeof(path));
    key = path + 2 + strlen(cfg[C_S3_BUCKET].s);
    if (verify_path(c, method, path, body, "s3", 0, a) == SIGNER_NONE) {
        char msg[512];

        atomic_fetch_add(&n_auth_rejected, 1);
        snprintf(msg, sizeof(msg), "%s", a->error_type ? a->error_type : "AccessDenied");
        s3_error(a, 403, strstr(msg, "Signature") ? "SignatureDoesNotMatch" : "AccessDenied", msg);
        return;
    }
    cm_sigv4_sha256_hex(body->data ? body->data : "", body->len, want);
    if (!sha || strcmp(sha, want)) {
        s3_error(a, 400, "XAmzContentSHA256Mismatch",
                 "The provided 'x-amz-content-sha256' header does not match what was computed.");
        return;
    }
    pthread_mutex_lock(&bucket.lock);
    o = object_find(key);
    if (!strcmp(method, "GET")) {
        atomic_fetch_add(&n_s3_get, 1);
        if (!o) {
            s3_error(a, 404, "NoSuchKey", "The specified key does not exist.");
        } else if (if_none && !strcmp(if_none, o->etag)) {
            atomic_fetch_add(&n_s3_not_modified, 1);
            a->status = 304;
            a->body = strdup("");
            cm_strlcpy(a->etag, o->etag, sizeof(a->etag));
        } else {
            a->status = 200;
            a->body = malloc(o->len + 1);
            if (a->body) {
                memcpy(a->body, o->data, o->len);
                a->body[o->len] = '\0';
            }
            cm_strlcpy(a->etag, o->etag, sizeof(a->etag));
        }
    } else if ((if_none && !strcmp(if_none, "*") && o) ||
               (if_match && o && strcmp(if_match, o->etag))) {
        atomic_fetch_add(&n_s3_conflict, 1);
        s3_error(a, 412, "PreconditionFailed",
                 "At least one of the pre-conditions you specified did not hold");
    } else if (if_match && !o) {
        atomic_fetch_add(&n_s3_conflict, 1);
        s3_error(a, 404, "NoSuchKey", "The specified key does not exist.");
    } else if (!o && bucket.count >= cfg[C_S3_MAX_OBJECTS].i) {
        s3_error(a, 507, "InsufficientStorage", "The bucket is full (EMU_S3_MAX_OBJECTS).");
    } else {
        char *data = malloc(body->len + 1);
        char hex[65];
        int created = 0;

        atomic_fetch_add(&n_s3_put, 1);
        if (!o && data && (o = calloc(1, sizeof(*o))) && !(o->key = strdup(key))) {
            free(o);
            o = NULL;
        }
        created = o && !o->data;
        if (!o || !data) {
            if (created) {
                free(o->key);
                free(o);
            }
            free(data);
            s3_error(a, 500, "InternalError", "out of memory");
        } else {
            if (created) {
                o->next = bucket.head;
                bucket.head = o;
                bucket.count++;
            }
            memcpy(data, body->data ? body->data : "", body->len);
            free(o->data);
            o->data = data;
            o->len = body->len;
            /* A new ETag per write, even for the same bytes (S3's are
             * content MD5s; what matters here is that versions differ). */
            cm_sigv4_sha256_hex(data, body->len, hex);
            snprintf(o->etag, sizeof(o->etag), "\"%.24s%08lx\"", hex,
                     (unsigned long)atomic_load(&n_s3_put));
            a->status = 200;
            a->body = strdup("");
            cm_strlcpy(a->etag, o->etag, sizeof(a->etag));
        }
    }
    pthread_mutex_unlock(&bucket.lock);
}

/* The traceparent of the last model call (tests check that a trace reaches
 * Bedrock); "" when it had none. */
static struct {
    pthread_mutex_t lock;
    char value[64];
} last_trace = {PTHREAD_MUTEX_INITIALIZER, ""};

static void converse(struct MHD_Connection *c, const char *raw_path, const struct cm_buf *body,
                     struct answer *a)
{
    const char *id = raw_path + 7, *end = strstr(id, "/converse");
    int streaming = end && !strcmp(end, "/converse-stream"), signer;
    char model[2048];
    json_t *req;
    long call;
    size_t n = end ? (size_t)(end - id) : 0;

    {
        const char *tp = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "traceparent");

        pthread_mutex_lock(&last_trace.lock);
        snprintf(last_trace.value, sizeof(last_trace.value), "%s", tp ? tp : "");
        pthread_mutex_unlock(&last_trace.lock);
    }
    signer = verify(c, "POST", raw_path, body, "bedrock", a);
    if (signer == SIGNER_NONE) {
        atomic_fetch_add(&n_auth_rejected, 1);
        return;
    }
    if (signer == SIGNER_BOOTSTRAP) {
        /* A valid key without the permission: what a runtime that kept its
         * bootstrap keys would meet. */
        atomic_fetch_add(&n_auth_rejected, 1);
        error_answer(a, 403, "AccessDeniedException",
                     "User: arn:aws:iam::123456789012:user/agentcore-bootstrap is not authorized "
                     "to perform: bedrock:InvokeModel");
        return;
    }
    if (!end || n == 0 || n >= sizeof(model) || (strcmp(end, "/converse") && !streaming)) {
        error_answer(a, 404, "UnknownOperationException", "Unknown operation");
        return;
    }
    memcpy(model, id, n);
    model[n] = '\0';
    if (strchr(model, ':')) {
        /* A ':' on the wire means the client did not percent-encode the id. */
        error_answer(a, 400, "ValidationException", "The provided model identifier is invalid.");
        return;
    }
    if (!strncmp(model, "anthropic.", 10)) {
        error_answer(a, 400, "ValidationException",
                     "Invocation of model ID with on-demand throughput isn\xe2\x80\x99t supported. "
                     "Retry your request with the ID or ARN of an inference profile that "
                     "contains this model.");
        return;
    }
    call = atomic_fetch_add(&n_converse, 1) + 1;
    a->delay_ms += (long)cfg[C_LATENCY].i;
    if (call <= cfg[C_STALL_FIRST].i) {
        atomic_fetch_add(&n_faults, 1);
        a->delay_ms += (long)cfg[C_STALL_MS].i; /* the client's read timeout fires first */
    }
    if (call <= cfg[C_THROTTLE].i) {
        atomic_fetch_add(&n_faults, 1);
        error_answer(a, 429, "ThrottlingException",
                     "Too many requests, please wait before trying again.");
        return;
    }
    if (call <= cfg[C_THROTTLE].i + cfg[C_FAIL].i) {
        int st = (int)cfg[C_FAIL_STATUS].i;

        atomic_fetch_add(&n_faults, 1);
        error_answer(a, st, st == 503 ? "ServiceUnavailableException" : "InternalServerException",
                     "injected failure");
        return;
    }
    req = json_loadb(body->data ? body->data : "", body->len, 0, NULL);
    if (!json_is_object(req)) {
        json_decref(req);
        error_answer(a, 400, "ValidationException", "Malformed input request: not JSON.");
        return;
    }
    model_answer(req, body->len, a);
    json_decref(req);
    if (streaming && a->status == 200) {
        json_t *resp = json_loads(a->body, 0, NULL);

        free(a->body);
        stream_answer(resp, a);
        json_decref(resp);
    }
}

/* ---- HTTP plumbing ---- */

static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls, (void)c;
    return strlen(s); /* keep the path exactly as sent: it is what was signed */
}

/* A stream sent one frame at a time, |delay_ms| apart; a client that leaves
 * before the end is counted and logged (what the cancellation tests look for). */
struct slow {
    struct MHD_Connection *c;
    char *data;
    size_t len, off;
    long delay_ms;
    long pause_ms;    /* once, after the first text delta */
    uint64_t next_at; /* when the next frame may go */
    int frames, sent;
};

static ssize_t slow_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct slow *s = cls;
    const uint8_t *p;
    size_t n;

    (void)pos;
    if (s->off >= s->len)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (!s->next_at)
        s->next_at = cm_now_ms() + (uint64_t)s->delay_ms; /* the model thinking */
    if (s->pause_ms && s->sent == 2) {
        /* messageStart and one delta are out: a long silence mid-stream. */
        s->next_at += (uint64_t)s->pause_ms;
        s->pause_ms = 0;
    }
    if (cm_now_ms() < s->next_at) {
        /* Not yet: park the connection (no thread waits). */
        MHD_suspend_connection(s->c);
        sleeper_add(s->c, (long)(s->next_at - cm_now_ms()));
        return 0;
    }
    s->next_at = cm_now_ms() + (uint64_t)s->delay_ms;
    p = (const uint8_t *)s->data + s->off;
    n = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
    if (n > s->len - s->off)
        n = s->len - s->off;
    if (n > max)
        n = max;
    memcpy(buf, p, n);
    s->off += n;
    s->sent++;
    return (ssize_t)n;
}

static void slow_free(void *cls)
{
    struct slow *s = cls;

    if (s->off < s->len) {
        char sent[16];
        const char *kv[] = {"framesSent", sent, NULL};

        snprintf(sent, sizeof(sent), "%d", s->sent);
        atomic_fetch_add(&n_stream_aborted, 1);
        CM_LOGF(CM_LOG_INFO, kv, "stream aborted by the client");
    }
    free(s->data);
    free(s);
}

/* Date from the emulator's own (possibly skewed) clock, as AWS sends its own:
 * what a client learns the service's time from. */
static void add_date(struct MHD_Response *r)
{
    char date[64];
    time_t t = (time_t)emu_now();
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    MHD_add_response_header(r, "Date", date);
}

static enum MHD_Result send_answer(struct MHD_Connection *c, struct answer *a)
{
    if (a->stream && (a->slow_ms > 0 || a->pause_ms > 0) && a->status == 200) {
        struct slow *s = calloc(1, sizeof(*s));
        struct MHD_Response *r;
        enum MHD_Result ret;

        if (!s)
            return MHD_NO;
        s->c = c;
        s->data = a->body;
        s->len = a->len;
        s->delay_ms = a->slow_ms;
        s->pause_ms = a->pause_ms;
        r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, slow_read, s, slow_free);
        MHD_add_response_header(r, "Content-Type", "application/vnd.amazon.eventstream");
        add_date(r);
        ret = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        return ret;
    }

    char type[256];
    struct MHD_Response *r;
    enum MHD_Result ret;

    if (!a->body)
        a->body = strdup("{}");
    r = MHD_create_response_from_buffer(a->stream ? a->len : strlen(a->body), a->body,
                                        MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type",
                            a->content_type ? a->content_type
                            : a->stream     ? "application/vnd.amazon.eventstream"
                                            : "application/json");
    MHD_add_response_header(r, "x-amzn-RequestId", "00000000-0000-4000-8000-000000000000");
    if (a->etag[0])
        MHD_add_response_header(r, "ETag", a->etag);
    add_date(r);
    if (a->error_type) {
        snprintf(type, sizeof(type), "%s%s", a->error_type, TYPE_SUFFIX);
        MHD_add_response_header(r, "x-amzn-ErrorType", type);
    }
    ret = MHD_queue_response(c, (unsigned)a->status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *size, void **con_cls)
{
    struct req *rq = *con_cls;
    struct answer a = {0};

    (void)cls, (void)version;
    if (!rq) {
        rq = calloc(1, sizeof(*rq));
        if (!rq)
            return MHD_NO;
        cm_buf_init(&rq->body, MAX_BODY);
        *con_cls = rq;
        return MHD_YES;
    }
    if (*size) {
        if (cm_buf_add(&rq->body, data, *size))
            return MHD_NO;
        *size = 0;
        return MHD_YES;
    }
    if (rq->ready) {
        /* Its delay has passed (the sleeper resumed us). */
        enum MHD_Result ret = send_answer(c, rq->ready);

        free(rq->ready);
        rq->ready = NULL;
        return ret;
    }
    atomic_fetch_add(&n_requests, 1);
    if (!strcmp(url, "/_emu/stats")) {
        json_t *o = json_pack(
            "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "s3_put", (json_int_t)n_s3_put,
            "s3_get", (json_int_t)n_s3_get, "s3_conflict", (json_int_t)n_s3_conflict,
            "s3_not_modified", (json_int_t)n_s3_not_modified, "requests", (json_int_t)n_requests,
            "secrets", (json_int_t)n_secrets, "converse", (json_int_t)n_converse, "streams",
            (json_int_t)n_stream, "streams_aborted", (json_int_t)n_stream_aborted, "auth_rejected",
            (json_int_t)n_auth_rejected, "faults", (json_int_t)n_faults, "credentials",
            (json_int_t)n_credentials);

        json_object_set_new(o, "otlp_exports", json_integer((json_int_t)n_otlp));
        json_object_set_new(o, "otlp_metrics_exports", json_integer((json_int_t)n_otlp_metrics));
        json_object_set_new(o, "otlp_rejected", json_integer((json_int_t)n_otlp_rejected));
        pthread_mutex_lock(&last_trace.lock);
        json_object_set_new(o, "last_traceparent", json_string(last_trace.value));
        pthread_mutex_unlock(&last_trace.lock);
        a.status = 200;
        a.body = cm_json_dump(o);
        json_decref(o);
    } else if ((!strcmp(method, "PUT") || !strcmp(method, "GET")) && url[0] == '/' &&
               !strncmp(url + 1, cfg[C_S3_BUCKET].s, strlen(cfg[C_S3_BUCKET].s)) &&
               url[1 + strlen(cfg[C_S3_BUCKET].s)] == '/') {
        s3_object(c, method, url, &rq->body, &a);
    } else if (!strcmp(method, "POST") && !strncmp(url, "/model/", 7)) {
        converse(c, url, &rq->body, &a);
    } else if (!strcmp(method, "POST") &&
               (!strcmp(url, "/v1/traces") || !strcmp(url, "/v1/metrics"))) {
        otlp_export(c, url, &rq->body, &a);
    } else if (!strcmp(method, "POST") && !strcmp(url, "/")) {
        secrets_manager(c, &rq->body, &a);
    } else if (!strncmp(url, "/latest/", 8)) {
        metadata(c, method, url, &a);
    } else if (!strcmp(url, "/container-credentials")) {
        const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");

        if (auth && !strcmp(auth, cfg[C_CONTAINER_TOKEN].s)) {
            creds_json(&a);
        } else {
            a.status = 403;
            a.body = strdup("{\"message\":\"not authorized\"}");
        }
    } else {
        error_answer(&a, 404, "UnknownOperationException", "Unknown operation");
    }
    if (a.status != 200 && a.status != 304) {
        const char *kv[] = {"path", url, "errorType", a.error_type, NULL};
        CM_LOGF(CM_LOG_INFO, kv, "answered %d", a.status);
    }
    if (a.delay_ms > 0 && (rq->ready = malloc(sizeof(a)))) {
        char ms[24];
        const char *kv[] = {"delayMs", ms, NULL};

        /* Tests wait for this line to act while a call is in flight. */
        snprintf(ms, sizeof(ms), "%ld", a.delay_ms);
        CM_LOGF(CM_LOG_INFO, kv, "model thinking");
        *rq->ready = a;
        MHD_suspend_connection(c);
        sleeper_add(c, a.delay_ms);
        return MHD_YES;
    }
    return send_answer(c, &a);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct req *rq = *con_cls;

    (void)cls, (void)c, (void)toe;
    if (rq) {
        cm_buf_free(&rq->body);
        if (rq->ready)
            free(rq->ready->body);
        free(rq->ready);
        free(rq);
    }
}

int main(int argc, char **argv)
{
    struct MHD_Daemon *d;
    struct sockaddr_in sa;
    const union MHD_DaemonInfo *info;
    char portstr[16];
    int rc;

    rc = cm_main_boot(argc, argv, "agentcore.bedrock_emulator",
                      "Bedrock Runtime emulator: Converse wire format, SigV4 verification, a "
                      "scripted deterministic model and fault injection. For tests and offline "
                      "use only.",
                      NULL, config, C_COUNT, cfg);
    if (rc >= 0)
        return rc;
    cm_main_block_signals();
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)cfg[C_PORT].i);
    if (inet_pton(AF_INET, cfg[C_HOST].s, &sa.sin_addr) != 1) {
        cm_error("EMU_HOST '%s' is not an IPv4 address", cfg[C_HOST].s);
        return 2;
    }
    if (pthread_create(&sleeper.thread, NULL, sleeper_main, NULL)) {
        cm_error("cannot start the sleeper thread");
        return 1;
    }
    d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
            MHD_USE_SUPPRESS_DATE_NO_CLOCK, /* our own Date: the clock may be skewed */
        0, NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_UNESCAPE_CALLBACK,
        no_unescape, NULL, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        MHD_OPTION_CONNECTION_LIMIT, 8192u, MHD_OPTION_THREAD_POOL_SIZE, 2u, MHD_OPTION_END);
    if (!d) {
        cm_error("cannot listen on %s:%lld", cfg[C_HOST].s, cfg[C_PORT].i);
        return 1;
    }
    info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    snprintf(portstr, sizeof(portstr), "%u", info ? info->port : 0);
    {
        const char *kv[] = {"port", portstr, NULL};
        CM_LOGF(CM_LOG_INFO, kv, "bedrock emulator ready");
    }
    cm_notify_ready(info ? info->port : 0);
    cm_main_wait_signal(0);
    MHD_quiesce_daemon(d);
    sleeper_stop(); /* resumes what still waits, so MHD can stop */
    MHD_stop_daemon(d);
    cm_config_free(cfg, C_COUNT);
    return 0;
}
