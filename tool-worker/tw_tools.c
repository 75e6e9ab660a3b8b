#define _GNU_SOURCE /* vasprintf */
#include "tw_tools.h"
#include "cm_err.h"
#include "cm_json.h"
#include "tw_calc.h"
#include "tw_schema.h"

#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define TW_MAX_MCP 16

struct tw_catalog {
    struct tw_tool tools[TW_MAX_TOOLS];
    size_t n;
    struct tw_mcp_server mcp[TW_MAX_MCP];
    size_t n_mcp;
};

int tw_result_set(struct tw_result *out, int is_error, const char *fmt, ...)
{
    va_list ap;
    char *s;
    int n;

    out->is_error = is_error;
    va_start(ap, fmt);
    n = vasprintf(&s, fmt, ap);
    va_end(ap);
    out->text = n < 0 ? NULL : s;
    return out->text ? 0 : CM_ENOMEM;
}

void tw_result_free(struct tw_result *r)
{
    if (!r)
        return;
    free(r->text);
    r->text = NULL;
}

static int calculator(json_t *input, struct tw_result *out)
{
    const char *expr;
    char err[256], num[64];
    double v;

    if (cm_json_str(input, "expression", &expr, err, sizeof(err)))
        return tw_result_set(out, 1, "invalid input: %s", err);
    if (tw_calc_eval(expr, json_string_length(json_object_get(input, "expression")), &v, err,
                     sizeof(err)))
        return tw_result_set(out, 1, "cannot evaluate '%.200s': %s", expr, err);
    tw_calc_format(v, num, sizeof(num));
    return tw_result_set(out, 0, "%s", num);
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

static int current_time(json_t *input, struct tw_result *out)
{
    const char *tz = NULL;
    char err[256], iso[64], off[8];
    struct tm tm;
    time_t now = time(NULL);
    long gmtoff;

    if (cm_json_opt_str(input, "timezone", &tz, err, sizeof(err)))
        return tw_result_set(out, 1, "invalid input: %s", err);
    if (!tz || !*tz || !strcmp(tz, "UTC") || !strcmp(tz, "Etc/UTC")) {
        gmtime_r(&now, &tm);
        strftime(iso, sizeof(iso), "%Y-%m-%dT%H:%M:%SZ", &tm);
        return tw_result_set(out, 0, "{\"timezone\":\"UTC\",\"iso8601\":\"%s\",\"unix\":%lld}", iso,
                             (long long)now);
    }
    if (!valid_zone(tz))
        return tw_result_set(
            out, 1, "unknown time zone '%.128s' (use an IANA name such as Europe/Paris)", tz);
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
    return tw_result_set(out, 0, "{\"timezone\":\"%s\",\"iso8601\":\"%s%s\",\"unix\":%lld}", tz,
                         iso, off, (long long)now);
}

/* ---- the catalogue ---- */

static const struct builtin {
    const char *name, *description, *schema;
    enum tw_kind kind;
    int (*fn)(json_t *input, struct tw_result *out);
    const char *mode;
    int shell, network, test;
} builtins[] = {
    {"calculator",
     "Evaluate an arithmetic expression. Supports + - * / % ^ (power), parentheses, unary minus "
     "and decimal numbers. Returns the numeric result.",
     "{\"type\":\"object\",\"properties\":{\"expression\":{\"type\":\"string\",\"description\":"
     "\"The expression, e.g. (2 + 3) * 4 ^ 2\"}},\"required\":[\"expression\"]}",
     TW_INPROC, calculator, NULL, 0, 0, 0},
    {"current_time",
     "Get the current date and time, in UTC or in an IANA time zone such as Europe/Paris.",
     "{\"type\":\"object\",\"properties\":{\"timezone\":{\"type\":\"string\",\"description\":"
     "\"IANA time zone name; UTC when omitted\"}}}",
     TW_INPROC, current_time, NULL, 0, 0, 0},
    {"shell",
     "Run a shell command (/bin/sh -c) in a sandbox whose working directory is the session's "
     "workspace (/workspace, kept between calls of the same session). No network. Returns "
     "stdout, stderr and the exit status.",
     "{\"type\":\"object\",\"properties\":{\"command\":{\"type\":\"string\",\"minLength\":1,"
     "\"maxLength\":65536,\"description\":\"The command line, e.g. ls -la\"}},"
     "\"required\":[\"command\"],\"additionalProperties\":false}",
     TW_SANDBOXED, NULL, "exec", 1, 0, 0},
    {"file_read",
     "Read a text file of the session's workspace (paths are relative to it; at most 1 MiB is "
     "returned).",
     "{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\",\"minLength\":1}},"
     "\"required\":[\"path\"],\"additionalProperties\":false}",
     TW_SANDBOXED, NULL, "file_read", 0, 0, 0},
    {"file_write",
     "Write (or with append=true, append to) a text file of the session's workspace, creating "
     "directories as needed.",
     "{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\",\"minLength\":1},"
     "\"content\":{\"type\":\"string\",\"maxLength\":1048576},\"append\":{\"type\":\"boolean\"}},"
     "\"required\":[\"path\",\"content\"],\"additionalProperties\":false}",
     TW_SANDBOXED, NULL, "file_write", 0, 0, 0},
    {"file_list", "List a directory of the session's workspace (type, name and size per line).",
     "{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\",\"description\":"
     "\"Directory relative to the workspace; the workspace itself when omitted\"}},"
     "\"additionalProperties\":false}",
     TW_SANDBOXED, NULL, "file_list", 0, 0, 0},
    {"http_request",
     "Make an HTTP request to a public web address (GET, POST, PUT, PATCH, DELETE, HEAD). "
     "Returns the status, the content type and the body (at most 1 MiB).",
     "{\"type\":\"object\",\"properties\":{\"method\":{\"type\":\"string\",\"enum\":[\"GET\","
     "\"POST\",\"PUT\",\"PATCH\",\"DELETE\",\"HEAD\"]},\"url\":{\"type\":\"string\","
     "\"minLength\":8,\"maxLength\":8192},\"headers\":{\"type\":\"object\","
     "\"additionalProperties\":{\"type\":\"string\"}},\"body\":{\"type\":\"string\"}},"
     "\"required\":[\"url\"],\"additionalProperties\":false}",
     TW_SANDBOXED, NULL, "http_request", 0, 1, 0},
    {"slow", "Test tool: waits the given number of milliseconds, or until cancelled.",
     "{\"type\":\"object\",\"properties\":{\"ms\":{\"type\":\"integer\",\"minimum\":0,"
     "\"maximum\":60000}}}",
     TW_TEST_SLOW, NULL, NULL, 0, 0, 1},
    {"background", "Test tool: runs a background task for the given milliseconds.",
     "{\"type\":\"object\",\"properties\":{\"ms\":{\"type\":\"integer\",\"minimum\":0,"
     "\"maximum\":600000}}}",
     TW_TEST_BACKGROUND, NULL, NULL, 0, 0, 1},
};

static int valid_name(const char *n)
{
    const char *c;

    if (!*n || strlen(n) > 64)
        return 0;
    for (c = n; *c; c++) {
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '_' || *c == '-'))
            return 0;
    }
    return 1;
}

static int add(struct tw_catalog *c, const char *name, const char *description, json_t *schema,
               char *err, size_t errlen, struct tw_tool **out)
{
    struct tw_tool *t;
    json_t *type;

    if (!valid_name(name)) {
        snprintf(err, errlen, "tool name '%.80s' (letters, digits, _ and -, at most 64)", name);
        return -1;
    }
    if (tw_catalog_find(c, name)) {
        snprintf(err, errlen, "tool '%s' is defined twice", name);
        return -1;
    }
    if (c->n == TW_MAX_TOOLS) {
        snprintf(err, errlen, "more than %d tools", TW_MAX_TOOLS);
        return -1;
    }
    type = json_object_get(schema, "type");
    if (!json_is_object(schema) ||
        (type && (!json_is_string(type) || strcmp(json_string_value(type), "object")))) {
        snprintf(err, errlen, "tool '%s': input_schema must be a JSON Schema of type object", name);
        return -1;
    }
    t = &c->tools[c->n];
    memset(t, 0, sizeof(*t));
    t->name = strdup(name);
    t->description = strdup(description);
    t->schema_text = json_dumps(schema, JSON_COMPACT);
    t->schema = json_incref(schema);
    c->n++; /* counted now so that tw_catalog_free releases it on any failure below */
    if (!t->name || !t->description || !t->schema_text) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    *out = t;
    return 0;
}

/* Numbers of the manifest's "limits" object, each within the configured
 * maximum. */
static int limits_of(json_t *tool, const struct tw_catalog_config *cfg, struct tw_limits *l,
                     char *err, size_t errlen)
{
    static const struct {
        const char *key;
        long long scale;
        size_t off;
        int is_long;
    } keys[] = {
        {"cpu_s", 1, offsetof(struct tw_limits, cpu_s), 1},
        {"memory_mb", 1024 * 1024, offsetof(struct tw_limits, as_bytes), 0},
        {"file_size_mb", 1024 * 1024, offsetof(struct tw_limits, fsize_bytes), 0},
        {"open_files", 1, offsetof(struct tw_limits, nofile), 1},
        {"processes", 1, offsetof(struct tw_limits, nproc), 1},
    };
    json_t *lim = json_object_get(tool, "limits"), *v;
    size_t i;

    *l = cfg->defaults;
    if ((v = json_object_get(tool, "timeout_ms"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            json_integer_value(v) > cfg->max.timeout_ms) {
            snprintf(err, errlen, "timeout_ms must be an integer from 1 to %d",
                     cfg->max.timeout_ms);
            return -1;
        }
        l->timeout_ms = (int)json_integer_value(v);
    }
    if (lim && !json_is_object(lim)) {
        snprintf(err, errlen, "limits must be an object");
        return -1;
    }
    for (i = 0; lim && i < sizeof(keys) / sizeof(keys[0]); i++) {
        char *field = (char *)l + keys[i].off;
        const char *maxf = (const char *)&cfg->max + keys[i].off;
        long long max = keys[i].is_long ? *(const long *)maxf : *(const long long *)maxf;
        long long want;

        if (!(v = json_object_get(lim, keys[i].key)))
            continue;
        want = json_is_integer(v) ? json_integer_value(v) * keys[i].scale : -1;
        if (want < 1 || want > max) {
            snprintf(err, errlen, "limits.%s must be a positive integer of at most %lld",
                     keys[i].key, max / keys[i].scale);
            return -1;
        }
        if (keys[i].is_long)
            *(long *)field = (long)want;
        else
            *(long long *)field = want;
    }
    if ((v = json_object_get(lim, "output_kb"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            (size_t)json_integer_value(v) * 1024 > cfg->max.output_bytes) {
            snprintf(err, errlen, "limits.output_kb must be from 1 to %zu",
                     cfg->max.output_bytes / 1024);
            return -1;
        }
        l->output_bytes = (size_t)json_integer_value(v) * 1024;
    }
    return 0;
}

static char *replace_dir(const char *arg)
{
    const char *at = strstr(arg, "{tool_dir}");
    char *s;

    if (!at)
        return strdup(arg);
    if (asprintf(&s, "%.*s/tool%s", (int)(at - arg), arg, at + 10) < 0)
        return NULL;
    return s;
}

static char **strv_new(size_t n)
{
    return calloc(n + 1, sizeof(char *));
}

static void strv_free(char **v)
{
    size_t i;

    for (i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/* An environment variable a tool may be given: never one that looks like a
 * credential (the same rule that removed them from the worker). */
static int env_name_ok(const char *k)
{
    static const char *const bad[] = {"SECRET", "TOKEN", "PASSWORD", "CREDENTIAL", "AWS_"};
    size_t i, n = strlen(k);

    if (!n || n > 128 || !valid_name(k) || strchr(k, '-'))
        return 0;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (strcasestr(k, bad[i]))
            return 0;
    }
    return !(n > 4 && !strcasecmp(k + n - 4, "_KEY")) &&
           !(n > 7 && !strcasecmp(k + n - 7, "_KEY_ID"));
}

/* "command" and "env" of a manifest entry, shared by command tools and MCP
 * servers. */
static int command_and_env(json_t *jt, const char *name, char ***argv, char ***envp, char *err,
                           size_t errlen)
{
    json_t *cmd = json_object_get(jt, "command"), *env = json_object_get(jt, "env"), *v;
    const char *k;
    size_t i, n = 0;

    if (!json_is_array(cmd) || !json_array_size(cmd) || json_array_size(cmd) > 64) {
        snprintf(err, errlen, "'%s': \"command\" must be an array of 1 to 64 strings", name);
        return -1;
    }
    if (!(*argv = strv_new(json_array_size(cmd))))
        goto oom;
    json_array_foreach(cmd, i, v)
    {
        if (!json_is_string(v) || !json_string_length(v)) {
            snprintf(err, errlen, "'%s': command[%zu] must be a non-empty string", name, i);
            return -1;
        }
        if (!((*argv)[i] = replace_dir(json_string_value(v))))
            goto oom;
    }
    if (env && !json_is_object(env)) {
        snprintf(err, errlen, "'%s': \"env\" must be an object of strings", name);
        return -1;
    }
    if (!(*envp = strv_new(json_object_size(env))))
        goto oom;
    json_object_foreach(env, k, v)
    {
        if (!json_is_string(v) || !env_name_ok(k)) {
            snprintf(err, errlen,
                     "'%s': env '%.64s' refused (a string value; names that look like "
                     "credentials are never passed to tools)",
                     name, k);
            return -1;
        }
        if (asprintf(&(*envp)[n], "%s=%s", k, json_string_value(v)) < 0) {
            (*envp)[n] = NULL;
            goto oom;
        }
        n++;
    }
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

static int mcp_server(struct tw_catalog *c, json_t *js, const char *dir,
                      const struct tw_catalog_config *cfg, char *err, size_t errlen)
{
    const char *name = json_string_value(json_object_get(js, "name"));
    const char *prefix = json_string_value(json_object_get(js, "prefix"));
    json_t *st = json_object_get(js, "start_timeout_ms");
    struct tw_mcp_server *m;
    char sub[200];

    if (!name || !valid_name(name)) {
        snprintf(err, errlen, "every MCP server needs a \"name\" (letters, digits, _ and -)");
        return -1;
    }
    if (c->n_mcp == TW_MAX_MCP) {
        snprintf(err, errlen, "more than %d MCP servers", TW_MAX_MCP);
        return -1;
    }
    m = &c->mcp[c->n_mcp++];
    memset(m, 0, sizeof(*m));
    /* "fs" offers fs_read_file...; "prefix": "" offers the names as they are */
    if (!(m->name = strdup(name)) || !(m->tool_dir = strdup(dir)) ||
        asprintf(&m->prefix, "%s%s", prefix ? prefix : name, prefix ? "" : "_") < 0) {
        m->prefix = NULL;
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (m->prefix[0] && !valid_name(m->prefix)) {
        snprintf(err, errlen, "MCP server '%s': prefix must be letters, digits, _ and -", name);
        return -1;
    }
    if (command_and_env(js, name, &m->argv, &m->env, err, errlen))
        return -1;
    if (limits_of(js, cfg, &m->lim, sub, sizeof(sub))) {
        snprintf(err, errlen, "MCP server '%s': %s", name, sub);
        return -1;
    }
    m->network = json_is_true(json_object_get(js, "network"));
    m->start_timeout_ms =
        json_is_integer(st) && json_integer_value(st) > 0 && json_integer_value(st) <= 300000
            ? (int)json_integer_value(st)
            : 20000;
    return 0;
}

size_t tw_catalog_mcp_count(const struct tw_catalog *c)
{
    return c->n_mcp;
}

const struct tw_mcp_server *tw_catalog_mcp_at(const struct tw_catalog *c, size_t i)
{
    return i < c->n_mcp ? &c->mcp[i] : NULL;
}

int tw_catalog_add_mcp_tools(struct tw_catalog *c, size_t i, json_t *tools, char *skipped,
                             size_t skippedlen, char *err, size_t errlen)
{
    const struct tw_mcp_server *m = tw_catalog_mcp_at(c, i);
    json_t *jt;
    size_t k, argc;
    int added = 0;

    skipped[0] = '\0';
    if (!m || !json_is_array(tools)) {
        snprintf(err, errlen, "no tools array");
        return -1;
    }
    for (argc = 0; m->argv[argc]; argc++)
        ;
    json_array_foreach(tools, k, jt)
    {
        const char *mname = json_string_value(json_object_get(jt, "name"));
        const char *desc = json_string_value(json_object_get(jt, "description"));
        json_t *schema = json_object_get(jt, "inputSchema"),
               *ann = json_object_get(jt, "annotations");
        char name[160], why[200];
        struct tw_tool *t;
        size_t a;

        snprintf(name, sizeof(name), "%s%s", m->prefix, mname ? mname : "");
        if (!mname || c->n == TW_MAX_TOOLS ||
            add(c, name, desc && *desc ? desc : mname, schema, why, sizeof(why), &t)) {
            if (c->n == TW_MAX_TOOLS) {
                snprintf(err, errlen, "more than %d tools", TW_MAX_TOOLS);
                return -1;
            }
            snprintf(skipped + strlen(skipped), skippedlen - strlen(skipped), "%s%s",
                     skipped[0] ? ", " : "", mname ? mname : "(no name)");
            continue;
        }
        t->kind = TW_SANDBOXED;
        t->mode = "mcp_call";
        t->lim = m->lim;
        t->network = m->network;
        /* what the server itself says is safe to repeat */
        t->idempotent = json_is_true(json_object_get(ann, "readOnlyHint")) ||
                        json_is_true(json_object_get(ann, "idempotentHint"));
        if (!(t->argv = strv_new(argc + 1)) || !(t->argv[0] = strdup(mname)) ||
            !(t->tool_dir = strdup(m->tool_dir)) || !(t->env = strv_new(0)))
            goto oom;
        for (a = 0; a < argc; a++) {
            if (!(t->argv[a + 1] = strdup(m->argv[a])))
                goto oom;
        }
        for (a = 0; m->env[a]; a++)
            ;
        strv_free(t->env);
        if (!(t->env = strv_new(a)))
            goto oom;
        for (a = 0; m->env[a]; a++) {
            if (!(t->env[a] = strdup(m->env[a])))
                goto oom;
        }
        added++;
    }
    return added;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

static int command_tool(struct tw_catalog *c, json_t *jt, const char *dir,
                        const struct tw_catalog_config *cfg, char *err, size_t errlen)
{
    const char *name = json_string_value(json_object_get(jt, "name"));
    const char *desc = json_string_value(json_object_get(jt, "description"));
    struct tw_tool *t;
    char sub[200];

    if (!name || !desc) {
        snprintf(err, errlen, "every tool needs a \"name\" and a \"description\"");
        return -1;
    }
    if (!json_is_array(json_object_get(jt, "command")) ||
        !json_array_size(json_object_get(jt, "command"))) {
        snprintf(err, errlen, "tool '%s': \"command\" must be an array of 1 to 64 strings", name);
        return -1;
    }
    if (add(c, name, desc, json_object_get(jt, "input_schema"), err, errlen, &t))
        return -1;
    t->kind = TW_SANDBOXED;
    t->mode = "exec";
    if (limits_of(jt, cfg, &t->lim, sub, sizeof(sub))) {
        snprintf(err, errlen, "tool '%s': %s", name, sub);
        return -1;
    }
    t->network = json_is_true(json_object_get(jt, "network"));
    t->background = json_is_true(json_object_get(jt, "background"));
    t->idempotent = json_is_true(json_object_get(jt, "idempotent"));
    if (!(t->tool_dir = strdup(dir))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (command_and_env(jt, name, &t->argv, &t->env, sub, sizeof(sub))) {
        snprintf(err, errlen, "tool %s", sub);
        return -1;
    }
    return 0;
}

static int load_manifest(struct tw_catalog *c, const struct tw_catalog_config *cfg, char *err,
                         size_t errlen)
{
    char dir[PATH_MAX], sub[256], *slash;
    json_error_t jerr;
    json_t *m, *tools, *jt, *servers;
    size_t i;
    int rc = -1;

    if (!realpath(cfg->manifest, dir)) {
        snprintf(err, errlen, "tool manifest %s: cannot open it", cfg->manifest);
        return -1;
    }
    m = json_load_file(dir, JSON_REJECT_DUPLICATES, &jerr);
    if ((slash = strrchr(dir, '/')))
        *(slash == dir ? slash + 1 : slash) = '\0';
    tools = json_object_get(m, "tools");
    servers = json_object_get(m, "mcp_servers");
    if (!m || (tools && !json_is_array(tools)) || (servers && !json_is_array(servers))) {
        snprintf(err, errlen, "tool manifest %s: %s", cfg->manifest,
                 m ? "\"tools\" and \"mcp_servers\" must be arrays" : jerr.text);
        goto out;
    }
    json_array_foreach(servers, i, jt)
    {
        if (!json_is_object(jt) || mcp_server(c, jt, dir, cfg, sub, sizeof(sub))) {
            snprintf(err, errlen, "tool manifest %s, mcp_servers[%zu]: %s", cfg->manifest, i,
                     json_is_object(jt) ? sub : "must be an object");
            goto out;
        }
    }
    json_array_foreach(tools, i, jt)
    {
        if (!json_is_object(jt) || command_tool(c, jt, dir, cfg, sub, sizeof(sub))) {
            snprintf(err, errlen, "tool manifest %s, tools[%zu]: %s", cfg->manifest, i,
                     json_is_object(jt) ? sub : "must be an object");
            goto out;
        }
    }
    rc = 0;
out:
    json_decref(m);
    return rc;
}

struct tw_catalog *tw_catalog_new(const struct tw_catalog_config *cfg, char *err, size_t errlen)
{
    struct tw_catalog *c = calloc(1, sizeof(*c));
    struct tw_tool *t;
    size_t i;

    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++) {
        const struct builtin *b = &builtins[i];
        json_t *schema;

        if (b->test && !cfg->test_tools)
            continue;
        schema = json_loads(b->schema, 0, NULL);
        if (add(c, b->name, b->description, schema, err, errlen, &t)) {
            json_decref(schema);
            goto fail;
        }
        json_decref(schema);
        t->kind = b->kind;
        t->fn = b->fn;
        t->mode = b->mode;
        t->shell = b->shell;
        t->network = b->network;
        /* safe to run again elsewhere after a replica died mid-call */
        t->idempotent = b->kind == TW_INPROC || b->kind == TW_TEST_SLOW ||
                        !strcmp(b->name, "file_read") || !strcmp(b->name, "file_list");
        t->lim = cfg->defaults;
    }
    if (cfg->manifest && *cfg->manifest && load_manifest(c, cfg, err, errlen))
        goto fail;
    return c;
fail:
    tw_catalog_free(c);
    return NULL;
}

void tw_catalog_free(struct tw_catalog *c)
{
    size_t i;

    if (!c)
        return;
    for (i = 0; i < c->n; i++) {
        struct tw_tool *t = &c->tools[i];

        free(t->name);
        free(t->description);
        free(t->schema_text);
        json_decref(t->schema);
        strv_free(t->argv);
        strv_free(t->env);
        free(t->tool_dir);
    }
    for (i = 0; i < c->n_mcp; i++) {
        free(c->mcp[i].name);
        free(c->mcp[i].prefix);
        strv_free(c->mcp[i].argv);
        strv_free(c->mcp[i].env);
        free(c->mcp[i].tool_dir);
    }
    free(c);
}

size_t tw_catalog_count(const struct tw_catalog *c)
{
    return c->n;
}

const struct tw_tool *tw_catalog_at(const struct tw_catalog *c, size_t i)
{
    return i < c->n ? &c->tools[i] : NULL;
}

const struct tw_tool *tw_catalog_find(const struct tw_catalog *c, const char *name)
{
    size_t i;

    for (i = 0; i < c->n; i++) {
        if (!strcmp(c->tools[i].name, name))
            return &c->tools[i];
    }
    return NULL;
}

json_t *tw_tool_input(const struct tw_tool *t, const char *input_json, struct tw_result *out)
{
    char why[1024];
    json_error_t jerr;
    json_t *input;

    out->text = NULL;
    out->cancelled = 0;
    if (strlen(input_json) > TW_MAX_INPUT_BYTES) {
        tw_result_set(out, 1, "tool input larger than %d bytes", TW_MAX_INPUT_BYTES);
        return NULL;
    }
    input = json_loads(*input_json ? input_json : "{}", 0, &jerr);
    if (!input) {
        tw_result_set(out, 1, "tool input is not valid JSON: %s", jerr.text);
        return NULL;
    }
    if (!json_is_object(input)) {
        json_decref(input);
        tw_result_set(out, 1, "tool input must be a JSON object");
        return NULL;
    }
    if (tw_schema_check(t->schema, input, why, sizeof(why))) {
        json_decref(input);
        tw_result_set(out, 1, "invalid input for tool '%s' (fix these fields and call again):\n%s",
                      t->name, why);
        return NULL;
    }
    return input;
}
