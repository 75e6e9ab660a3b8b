#include "cm_config.h"
#include "cm_err.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *env_get(const char *name, void *ud)
{
    (void)ud;
    return getenv(name);
}

static int parse_bool(const char *s, long long *out)
{
    if (!strcasecmp(s, "1") || !strcasecmp(s, "true") || !strcasecmp(s, "yes") ||
        !strcasecmp(s, "on"))
        *out = 1;
    else if (!strcasecmp(s, "0") || !strcasecmp(s, "false") || !strcasecmp(s, "no") ||
             !strcasecmp(s, "off"))
        *out = 0;
    else
        return CM_EINVAL;
    return 0;
}

static int load_one(const struct cm_cfg_entry *e, struct cm_cfg_value *v, const char *raw,
                    char *err, size_t errlen)
{
    char *end;

    switch (e->type) {
    case CM_CFG_INT:
        errno = 0;
        v->i = strtoll(raw, &end, 10);
        if (errno || end == raw || *end) {
            snprintf(err, errlen, "%s: '%s' is not an integer", e->env, raw);
            return CM_EINVAL;
        }
        if (v->i < e->min || v->i > e->max) {
            snprintf(err, errlen, "%s: %lld is out of range [%lld, %lld]", e->env, v->i, e->min,
                     e->max);
            return CM_EINVAL;
        }
        return 0;
    case CM_CFG_BOOL:
        if (parse_bool(raw, &v->i)) {
            snprintf(err, errlen, "%s: '%s' is not a boolean (true/false)", e->env, raw);
            return CM_EINVAL;
        }
        return 0;
    case CM_CFG_FLOAT:
        errno = 0;
        v->d = strtod(raw, &end);
        if (errno || end == raw || *end || v->d != v->d) {
            snprintf(err, errlen, "%s: '%s' is not a number", e->env, raw);
            return CM_EINVAL;
        }
        if (v->d < (double)e->min || v->d > (double)e->max) {
            snprintf(err, errlen, "%s: %g is out of range [%lld, %lld]", e->env, v->d, e->min,
                     e->max);
            return CM_EINVAL;
        }
        return 0;
    case CM_CFG_JSON: {
        json_error_t jerr;
        json_t *j = json_loads(raw, JSON_DECODE_ANY, &jerr);
        int ok = j && (e->min == 0 || (e->min == 1 && json_is_object(j)) ||
                       (e->min == 2 && json_is_array(j)));

        json_decref(j);
        if (!ok) {
            snprintf(err, errlen, "%s: not a JSON %s (%s)", e->env,
                     e->min == 1   ? "object"
                     : e->min == 2 ? "array"
                                   : "value",
                     j ? "wrong kind" : jerr.text);
            return CM_EINVAL;
        }
        v->s = strdup(raw);
        return v->s ? 0 : CM_ENOMEM;
    }
    case CM_CFG_STR:
        if (e->max > 0 && (long long)strlen(raw) > e->max) {
            snprintf(err, errlen, "%s: longer than %lld bytes", e->env, e->max);
            return CM_EINVAL;
        }
        v->s = strdup(raw);
        return v->s ? 0 : CM_ENOMEM;
    }
    return CM_EINVAL;
}

int cm_config_load(const struct cm_cfg_entry *tab, int n, struct cm_cfg_value *vals,
                   cm_cfg_getenv_fn get, void *ud, char *err, size_t errlen)
{
    int i, rc;

    memset(vals, 0, sizeof(*vals) * (size_t)n);
    if (!get)
        get = env_get;
    for (i = 0; i < n; i++) {
        const struct cm_cfg_entry *e = &tab[i];
        const char *raw = get(e->env, ud);

        if ((!raw || !*raw) && e->fallback)
            raw = get(e->fallback, ud);
        if (raw && *raw) {
            vals[i].is_set = 1;
        } else {
            raw = e->def;
            if (!raw)
                continue; /* an unset optional string */
        }
        rc = load_one(e, &vals[i], raw, err, errlen);
        if (rc)
            return rc;
    }
    return 0;
}

void cm_config_free(struct cm_cfg_value *vals, int n)
{
    int i;

    if (!vals)
        return;
    for (i = 0; i < n; i++) {
        free(vals[i].s);
        vals[i].s = NULL;
    }
}

void cm_config_help(FILE *out, const char *prog, const char *summary,
                    const struct cm_cfg_entry *tab, int n)
{
    int i;

    fprintf(out, "usage: %s [--help]\n\n%s\n\nConfiguration (environment variables):\n", prog,
            summary);
    for (i = 0; i < n; i++) {
        const struct cm_cfg_entry *e = &tab[i];

        fprintf(out, "  %-34s %s\n", e->env, e->help);
        if (e->fallback)
            fprintf(out, "  %-34s   falls back to %s\n", "", e->fallback);
        if (e->type == CM_CFG_INT || (e->type == CM_CFG_FLOAT && e->def))
            fprintf(out, "  %-34s   default %s, range %lld..%lld\n", "", e->def, e->min, e->max);
        else if (e->type == CM_CFG_FLOAT)
            fprintf(out, "  %-34s   unset by default, range %lld..%lld\n", "", e->min, e->max);
        else if (e->def && !e->secret)
            fprintf(out, "  %-34s   default %s\n", "", e->def);
    }
}

int cm_config_wants_help(int argc, char **argv)
{
    int i;

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
            return 1;
    }
    return 0;
}
