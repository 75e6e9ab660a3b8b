/* tw_tools: the tool-worker's catalogue: what each tool is, how it runs, and
 * the in-process tools themselves.
 *
 * Kinds: pure in-process functions (calculator, current_time: no files, no
 * network, no code of the model's, so no process); sandboxed built-ins
 * (shell, file_read, file_write, file_list, http_request); command tools from
 * a manifest (any language: JSON input on stdin, {"status","content"} JSON or
 * plain text on stdout); and the test tools (slow, background) that exist
 * only with TOOL_WORKER_TEST_TOOLS. tw_runner executes them; this module only
 * describes them, so it is tested without processes.
 *
 * Manifest (TOOL_MANIFEST, JSON):
 *   {"tools": [{"name", "description", "input_schema": {...},
 *               "command": ["python3", "{tool_dir}/x.py"],   // {tool_dir} = /tool
 *               "timeout_ms", "limits": {"cpu_s", "memory_mb", "file_size_mb",
 *               "open_files", "processes", "output_kb"},
 *               "network": false, "env": {"NAME": "value"},
 *               "background": false, "idempotent": false}]}
 *    "mcp_servers": [{"name": "fs", "command": ["node", "{tool_dir}/server.js",
 *                     "/workspace"], "prefix": "fs_", "network": false, "env": {},
 *                     "timeout_ms", "limits", "start_timeout_ms": 20000}]}
 * The directory holding the manifest is shown read-only at /tool. An MCP
 * server's tools are listed once at start-up (tw_catalog_add_mcp_tools) and
 * offered as <prefix><tool>; each call starts the server in the sandbox of
 * the caller's session, so one session never sees another's state. */
#ifndef TW_TOOLS_H
#define TW_TOOLS_H

#include "tw_confine.h"

#include <jansson.h>
#include <stddef.h>

#define TW_MAX_INPUT_BYTES (1024 * 1024)
#define TW_MAX_TOOLS 256

enum tw_kind {
    TW_INPROC,         /* a function, run on the loop thread */
    TW_SANDBOXED,      /* a process in the sandbox */
    TW_TEST_SLOW,      /* test tool: answers after {"ms"} unless cancelled */
    TW_TEST_BACKGROUND /* test tool: a background task of {"ms"} */
};

struct tw_result {
    char *text; /* malloc'd, never NULL after a 0 return; free with tw_result_free */
    int is_error;
    int cancelled; /* the tool stopped because the caller went away */
};

struct tw_tool {
    char *name, *description, *schema_text;
    json_t *schema;
    enum tw_kind kind;
    int (*fn)(json_t *input, struct tw_result *out); /* TW_INPROC */
    const char *mode; /* TW_SANDBOXED: "exec", "file_read", ..., "http_request" */
    int shell;        /* argv is /bin/sh -c <input.command> */
    char **argv;      /* manifest command ({tool_dir} already replaced) */
    char **env;       /* "NAME=VALUE" */
    char *tool_dir;   /* host directory shown at /tool */
    struct tw_limits lim;
    int network, background, idempotent;
};

/* An MCP server from the manifest. */
struct tw_mcp_server {
    char *name, *prefix;
    char **argv, **env;
    char *tool_dir;
    struct tw_limits lim;
    int network, start_timeout_ms;
};

struct tw_catalog_config {
    const char *manifest; /* path or NULL */
    int test_tools;
    struct tw_limits defaults; /* for tools that set no limits of their own */
    struct tw_limits max;      /* a manifest may not ask for more */
};

struct tw_catalog;

/* Built-ins plus the manifest's tools. NULL with a reason in |err| when the
 * manifest is unreadable or wrong (the worker refuses to start: a tool that
 * silently vanished would be worse). */
struct tw_catalog *tw_catalog_new(const struct tw_catalog_config *cfg, char *err, size_t errlen);
void tw_catalog_free(struct tw_catalog *c);
size_t tw_catalog_count(const struct tw_catalog *c);
const struct tw_tool *tw_catalog_at(const struct tw_catalog *c, size_t i);
const struct tw_tool *tw_catalog_find(const struct tw_catalog *c, const char *name);

/* Parses and checks a tool call's input: a JSON object within
 * TW_MAX_INPUT_BYTES that satisfies the tool's schema. Returns the input, or
 * NULL with |out| holding the error result for the model. */
/* The manifest's MCP servers. */
size_t tw_catalog_mcp_count(const struct tw_catalog *c);
const struct tw_mcp_server *tw_catalog_mcp_at(const struct tw_catalog *c, size_t i);
/* Adds server |i|'s tools from its tools/list answer, as <prefix><name>
 * (mode "mcp_call", argv = the MCP name then the server's command). A tool
 * with an unusable name or schema is skipped and named in |skipped|. Returns
 * how many were added, or -1 with |err| (the catalogue is full, or memory). */
int tw_catalog_add_mcp_tools(struct tw_catalog *c, size_t i, json_t *tools, char *skipped,
                             size_t skippedlen, char *err, size_t errlen);

json_t *tw_tool_input(const struct tw_tool *t, const char *input_json, struct tw_result *out);

/* Fills |out| from a printf format. 0 or CM_ENOMEM. */
int tw_result_set(struct tw_result *out, int is_error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void tw_result_free(struct tw_result *r);

#endif
