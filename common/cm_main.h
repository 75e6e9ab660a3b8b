/* cm_main: the start-up and signal policy the three binaries share. Only main()
 * functions call this module; it is the one place besides them that may print
 * to stdout (for --help) and decide exit codes. */
#ifndef CM_MAIN_H
#define CM_MAIN_H

#include "cm_config.h"

/* A command-line flag a binary takes besides --help and --version (main
 * looks for it in argv itself). Lists end with a NULL name. */
struct cm_main_flag {
    const char *name; /* "--check-credentials" */
    const char *help;
};

/* Handles --help (prints the table and |flags|, returns 0) and --version
 * (prints "<program> <version>", returns 0); any other argument not in
 * |flags| (may be NULL) gets a usage line on stderr and 2: a mistyped flag
 * must not start a server. Then loads |tab| into |vals| (on a bad value logs
 * one clear error line and returns 2), starts logging as |logger| at the
 * level of the table's LOG_LEVEL entry and applies the INTERNAL_* entries.
 * Returns -1 when main should go on. */
int cm_main_boot(int argc, char **argv, const char *logger, const char *summary,
                 const struct cm_main_flag *flags, const struct cm_cfg_entry *tab, int n,
                 struct cm_cfg_value *vals);

/* 1 when argv holds |flag|. */
int cm_main_has_flag(int argc, char **argv, const char *flag);

/* --healthcheck of a gRPC worker: asks grpc.health.v1 of the server that
 * listens on |listen| (its own *_LISTEN value; 0.0.0.0 and [::] are asked on
 * loopback), 2 s at most, with the internal transport cm_main_boot set up.
 * Prints "healthy" or "unhealthy" and returns the exit status (0 or 1), so a
 * container HEALTHCHECK needs no other tool. Call after cm_main_boot. */
int cm_main_rpc_healthcheck(const char *listen);

/* Removes credential-looking variables from the process environment: every
 * AWS_* variable and any name containing SECRET, TOKEN, PASSWORD, CREDENTIAL
 * or ending in _KEY / _KEY_ID. For processes that never need credentials (the
 * tool-worker, whose tools must not find them, and the gateway). Returns how
 * many were removed. Call before any thread starts. */
int cm_main_drop_secrets(void);

/* Removes every environment variable whose name is not in |keep| (exact
 * names, or prefixes ending in '*': "TOOL_*"). For the tool-worker, which
 * needs nothing of the environment it was started with but its own
 * configuration: it starts from an allow-list whoever starts it. Returns how
 * many were removed. Call before any thread starts. */
int cm_main_keep_env(const char *const *keep);

/* Keeps what this process knows from other processes of its uid: moves the
 * environment off the block the kernel shows as /proc/<pid>/environ (and
 * zeroes that block: unsetenv alone leaves the keys readable there), turns
 * core dumps off (RLIMIT_CORE 0) and makes the process non-dumpable, so no
 * process of the same uid can ptrace it or read its memory. Call before any
 * thread starts; cm_main_boot does. 0, or -1 when memory ran out (the
 * environment is then left where it was). */
int cm_main_harden(void);

/* Blocks SIGINT/SIGTERM (to be collected by cm_main_wait_signal), ignores
 * SIGPIPE and raises the open-file limit (cm_main_raise_nofile). Call before
 * any thread starts, so every thread inherits the mask. */
void cm_main_block_signals(void);
/* Raises the soft RLIMIT_NOFILE to the hard limit. */
void cm_main_raise_nofile(void);
/* Waits for SIGINT or SIGTERM and returns its number. With |trim_after_ms|
 * > 0, once that long has passed (the process is serving and past its
 * start), calls cm_main_trim_resident() and logs what it gave back. */
int cm_main_wait_signal(int trim_after_ms);

/* The configuration entry of the three binaries for that. */
#define CM_CFG_RESIDENT_TRIM                                                                       \
    {                                                                                              \
        "RESIDENT_TRIM_MS", NULL, CM_CFG_INT, "1000", 0, 3600000,                                  \
            "ms after start when the pages only start-up used are given back (0: never)", 0        \
    }

/* Once the process serves: gives back the pages of read-only file mappings
 * (code, constants, the symbol and relocation tables of the shared
 * libraries) that start-up touched, so the resident set holds what serving
 * uses; whatever is needed again comes back from the page cache on first
 * use (a minor fault, no I/O). Mappings that hold copied-on-write pages
 * (RELRO) are never touched. Returns the KiB given back (0 when
 * /proc/self/smaps cannot be read). */
long cm_main_trim_resident(void);

struct cm_otel;
struct cm_metrics;
/* Tracing and metrics from the configuration: the exporter (NULL when
 * neither spans nor OTLP metrics leave) from |otel_values| (the CM_CFG_OTEL
 * block) with |hooks| (NULL: none; see cm_otel_new), and, when OTLP metrics
 * are on or |metrics_listen| is set, the registry with the spans-lost gauge
 * (its /metrics endpoint serving when |metrics_listen| is set; the exporter
 * sending its series when OTLP metrics are on); the caller adds its own
 * families. 0, or the exit code (2 a bad setting, 1 out of memory) after
 * logging why; what was made is in |*otel| / |*metrics| either way.
 * At the end: cm_otel_stop (it reads the registry), cm_metrics_free (its
 * endpoint reads the exporter), cm_otel_free. */
struct cm_otel_hooks;
int cm_main_observe(const struct cm_cfg_value *otel_values, const char *metrics_listen,
                    const char *process, const struct cm_otel_hooks *hooks, struct cm_otel **otel,
                    struct cm_metrics **metrics);

#endif
