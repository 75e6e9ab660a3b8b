#include "tw_tools.h"
#include "cm_err.h"
#include "cm_json.h"
#include "tw_calc.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

typedef int (*tool_fn)(json_t *input, const struct tw_cancel *cancel, struct tw_result *out);

static int calculator(json_t *input, const struct tw_cancel *cancel, struct tw_result *out);
static int current_time(json_t *input, const struct tw_cancel *cancel, struct tw_result *out);
static int slow(json_t *input, const struct tw_cancel *cancel, struct tw_result *out);
static int background(json_t *input, const struct tw_cancel *cancel, struct tw_result *out);
static int result(struct tw_result *out, int is_error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static const struct tw_tool tools[] = {
    {"calculator",
     "Evaluate an arithmetic expression. Supports + - * / % ^ (power), parentheses, unary minus "
     "and decimal numbers. Returns the numeric result.",
     "{\"type\":\"object\",\"properties\":{\"expression\":{\"type\":\"string\",\"description\":"
     "\"The expression, e.g. (2 + 3) * 4 ^ 2\"}},\"required\":[\"expression\"]}"},
    {"current_time",
     "Get the current date and time, in UTC or in an IANA time zone such as Europe/Paris.",
     "{\"type\":\"object\",\"properties\":{\"timezone\":{\"type\":\"string\",\"description\":"
     "\"IANA time zone name; UTC when omitted\"}}}"},
    /* Test tools: listed only when enabled; keep them last. */
    {"slow", "Test tool: waits the given number of milliseconds, or until cancelled.",
     "{\"type\":\"object\",\"properties\":{\"ms\":{\"type\":\"integer\"}}}"},
    {"background", "Test tool: runs a background task for the given milliseconds.",
     "{\"type\":\"object\",\"properties\":{\"ms\":{\"type\":\"integer\"}}}"},
};

static const tool_fn tool_fns[] = {calculator, current_time, slow, background};
#define N_TEST_TOOLS 2

static atomic_int background_tasks;
static void (*background_hook)(int count, void *ud);
static void *background_hook_ud;

int tw_tools_background_tasks(void)
{
    return atomic_load(&background_tasks);
}

void tw_tools_on_background(void (*hook)(int count, void *ud), void *ud)
{
    background_hook_ud = ud;
    background_hook = hook;
}

/* Every change of the count is announced (tw_tools_on_background). */
static void background_add(int delta)
{
    int now = atomic_fetch_add(&background_tasks, delta) + delta;

    if (background_hook)
        background_hook(now, background_hook_ud);
}

static void *background_task(void *p)
{
    long long ms = (long long)(intptr_t)p;
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts)) /* the background work itself */
        ;
    background_add(-1);
    return NULL;
}

static int background(json_t *input, const struct tw_cancel *cancel, struct tw_result *out)
{
    json_t *jms = json_object_get(input, "ms");
    long long ms = json_is_integer(jms) ? json_integer_value(jms) : 1000;
    pthread_t t;

    (void)cancel;
    if (ms < 0 || ms > 600000)
        return result(out, 1, "ms must be between 0 and 600000");
    background_add(1);
    if (pthread_create(&t, NULL, background_task, (void *)(intptr_t)ms)) {
        background_add(-1);
        return result(out, 1, "cannot start the background task");
    }
    pthread_detach(t);
    return result(out, 0, "background task started for %lld ms", ms);
}

static int test_tools;

void tw_tools_enable_test_tools(int on)
{
    test_tools = on;
}

static size_t n_tools(void)
{
    return sizeof(tools) / sizeof(tools[0]) - (test_tools ? 0 : N_TEST_TOOLS);
}

const struct tw_tool *tw_tools_list(size_t *n)
{
    *n = n_tools();
    return tools;
}

static int result(struct tw_result *out, int is_error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int result(struct tw_result *out, int is_error, const char *fmt, ...)
{
    va_list ap;
    int n;

    out->is_error = is_error;
    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    out->text = malloc((size_t)n + 1);
    if (!out->text)
        return CM_ENOMEM;
    va_start(ap, fmt);
    vsnprintf(out->text, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return 0;
}

static int calculator(json_t *input, const struct tw_cancel *cancel, struct tw_result *out)
{
    const char *expr;
    char err[256], num[64];
    double v;

    (void)cancel;
    if (cm_json_str(input, "expression", &expr, err, sizeof(err)))
        return result(out, 1, "invalid input: %s", err);
    if (tw_calc_eval(expr, json_string_length(json_object_get(input, "expression")), &v, err,
                     sizeof(err)))
        return result(out, 1, "cannot evaluate '%.200s': %s", expr, err);
    tw_calc_format(v, num, sizeof(num));
    return result(out, 0, "%s", num);
}

/* TZ is process-global, so zone conversions are serialised. Log timestamps use
 * gmtime_r, which does not read TZ, so nothing else is disturbed. */
static pthread_mutex_t tz_lock = PTHREAD_MUTEX_INITIALIZER;

static int valid_zone(const char *tz)
{
    char path[512];
    struct stat st;
    const char *c;

    if (!*tz || strlen(tz) > 128 || tz[0] == '/' || strstr(tz, ".."))
        return 0;
    for (c = tz; *c; c++) {
        if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
              *c == '/' || *c == '_' || *c == '-' || *c == '+'))
            return 0;
    }
    snprintf(path, sizeof(path), "/usr/share/zoneinfo/%s", tz);
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int slow(json_t *input, const struct tw_cancel *cancel, struct tw_result *out)
{
    json_t *jms = json_object_get(input, "ms");
    long long ms = json_is_integer(jms) ? json_integer_value(jms) : 1000, waited;

    if (ms < 0 || ms > 60000)
        return result(out, 1, "ms must be between 0 and 60000");
    for (waited = 0; waited < ms; waited += 10) {
        struct timespec ts = {0, 10 * 1000000L};

        if (cancel && cancel->cancelled && cancel->cancelled(cancel->ud)) {
            out->cancelled = 1;
            return result(out, 1, "cancelled after %lld ms", waited);
        }
        nanosleep(&ts, NULL);
    }
    return result(out, 0, "waited %lld ms", ms);
}

static int current_time(json_t *input, const struct tw_cancel *cancel, struct tw_result *out)
{
    const char *tz = NULL;
    char err[256], iso[64], off[8];
    struct tm tm;
    time_t now = time(NULL);
    long gmtoff;

    (void)cancel;
    if (cm_json_opt_str(input, "timezone", &tz, err, sizeof(err)))
        return result(out, 1, "invalid input: %s", err);
    if (!tz || !*tz || !strcmp(tz, "UTC") || !strcmp(tz, "Etc/UTC")) {
        gmtime_r(&now, &tm);
        strftime(iso, sizeof(iso), "%Y-%m-%dT%H:%M:%SZ", &tm);
        return result(out, 0, "{\"timezone\":\"UTC\",\"iso8601\":\"%s\",\"unix\":%lld}", iso,
                      (long long)now);
    }
    if (!valid_zone(tz))
        return result(out, 1, "unknown time zone '%.128s' (use an IANA name such as Europe/Paris)",
                      tz);
    pthread_mutex_lock(&tz_lock);
    {
        char *old = getenv("TZ") ? strdup(getenv("TZ")) : NULL;

        setenv("TZ", tz, 1);
        tzset();
        localtime_r(&now, &tm);
        if (old) {
            setenv("TZ", old, 1);
            free(old);
        } else {
            unsetenv("TZ");
        }
        tzset();
    }
    pthread_mutex_unlock(&tz_lock);
    strftime(iso, sizeof(iso), "%Y-%m-%dT%H:%M:%S", &tm);
    gmtoff = tm.tm_gmtoff;
    snprintf(off, sizeof(off), "%c%02ld:%02ld", gmtoff < 0 ? '-' : '+', labs(gmtoff) / 3600 % 100,
             labs(gmtoff) % 3600 / 60);
    return result(out, 0, "{\"timezone\":\"%s\",\"iso8601\":\"%s%s\",\"unix\":%lld}", tz, iso, off,
                  (long long)now);
}

int tw_execute(const char *name, const char *input_json, const struct tw_cancel *cancel,
               struct tw_result *out)
{
    size_t i, n = n_tools();
    json_error_t jerr;
    json_t *input;
    int rc;

    out->text = NULL;
    out->is_error = 1;
    out->cancelled = 0;
    for (i = 0; i < n && strcmp(tools[i].name, name); i++)
        ;
    if (i == n) {
        rc = result(out, 1, "unknown tool '%.64s'", name);
        return rc ? rc : CM_ENOENT;
    }
    if (strlen(input_json) > TW_MAX_INPUT_BYTES)
        return result(out, 1, "tool input larger than %d bytes", TW_MAX_INPUT_BYTES);
    input = json_loads(*input_json ? input_json : "{}", 0, &jerr);
    if (!input)
        return result(out, 1, "tool input is not valid JSON: %s", jerr.text);
    if (!json_is_object(input)) {
        json_decref(input);
        return result(out, 1, "tool input must be a JSON object");
    }
    rc = tool_fns[i](input, cancel, out);
    json_decref(input);
    return rc;
}

void tw_result_free(struct tw_result *r)
{
    if (!r)
        return;
    free(r->text);
    r->text = NULL;
}
