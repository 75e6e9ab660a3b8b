/* cm_config: one declarative table per binary (redis' standardConfig model).
 *
 * Each entry names an environment variable, an optional fallback variable, a
 * type, a default, bounds and help text. cm_config_load() validates every entry
 * at start-up and reports the first bad one in |err|; main() then prints it and
 * exits 2. The same table prints --help. Values are read once, at start-up. */
#ifndef CM_CONFIG_H
#define CM_CONFIG_H

#include <stdio.h>

/* CM_CFG_FLOAT uses min/max as whole-number bounds; CM_CFG_JSON checks the
 * text is a JSON value of the kind in |min| (0 any, 1 object, 2 array). */
enum cm_cfg_type { CM_CFG_INT, CM_CFG_STR, CM_CFG_BOOL, CM_CFG_FLOAT, CM_CFG_JSON };

struct cm_cfg_entry {
    const char *env;      /* e.g. "PORT" */
    const char *fallback; /* a second variable read when |env| is unset, or NULL */
    enum cm_cfg_type type;
    const char *def; /* default as text; NULL = unset (strings only) */
    long long min, max;
    const char *help;
    int secret; /* 1: --help never shows the value, only whether it is set */
};

struct cm_cfg_value {
    long long i; /* CM_CFG_INT and CM_CFG_BOOL (0/1) */
    double d;    /* CM_CFG_FLOAT */
    char *s;     /* CM_CFG_STR and CM_CFG_JSON (text), owned; NULL when unset */
    int is_set;  /* 1 when it came from the environment rather than the default */
};

/* Looks a variable up; tests pass their own, main passes NULL for getenv(). */
typedef const char *(*cm_cfg_getenv_fn)(const char *name, void *ud);

/* Fills |vals| (|n| entries, same order as |tab|). Returns 0, or CM_EINVAL with
 * "NAME: reason" in |err|, or CM_ENOMEM. Call cm_config_free() in both cases. */
int cm_config_load(const struct cm_cfg_entry *tab, int n, struct cm_cfg_value *vals,
                   cm_cfg_getenv_fn get, void *ud, char *err, size_t errlen);
void cm_config_free(struct cm_cfg_value *vals, int n);

/* Prints usage and one line per entry: variable, default, bounds, help. */
void cm_config_help(FILE *out, const char *prog, const char *summary,
                    const struct cm_cfg_entry *tab, int n);

/* 1 when argv holds -h or --help. */
int cm_config_wants_help(int argc, char **argv);

/* Entries every binary shares, so their text is written once. */
#define CM_CFG_LOG_LEVEL                                                                           \
    {                                                                                              \
        "LOG_LEVEL", NULL, CM_CFG_STR, "INFO", 0, 0, "DEBUG, INFO, WARN or ERROR", 0               \
    }

/* Internal gRPC authentication (cm_rpc_set_token, cm_rpc_set_tls); every
 * binary lists these four and cm_main_boot applies them. Files, not values,
 * so the secrets stay out of the environment. */
#define CM_CFG_INTERNAL_TOKEN_FILE                                                                 \
    {                                                                                              \
        "INTERNAL_TOKEN_FILE", NULL, CM_CFG_STR, NULL, 0, 4096,                                    \
            "file with the token every internal gRPC call carries and every server requires "      \
            "(16-1024 printable bytes; unset: none, use unix: sockets on one host)",               \
            0                                                                                      \
    }
#define CM_CFG_INTERNAL_TLS_CA                                                                     \
    {                                                                                              \
        "INTERNAL_TLS_CA", NULL, CM_CFG_STR, NULL, 0, 4096,                                        \
            "PEM CA file: internal gRPC uses mutual TLS, peers must present a certificate it "     \
            "signed (unset: no TLS)",                                                              \
            0                                                                                      \
    }
#define CM_CFG_INTERNAL_TLS_CERT                                                                   \
    {                                                                                              \
        "INTERNAL_TLS_CERT", NULL, CM_CFG_STR, NULL, 0, 4096,                                      \
            "PEM certificate file this process presents (with INTERNAL_TLS_CA)", 0                 \
    }
#define CM_CFG_INTERNAL_TLS_KEY                                                                    \
    {                                                                                              \
        "INTERNAL_TLS_KEY", NULL, CM_CFG_STR, NULL, 0, 4096,                                       \
            "PEM private key file of INTERNAL_TLS_CERT", 0                                         \
    }

#endif
