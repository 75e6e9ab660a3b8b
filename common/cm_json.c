#include "cm_json.h"
#include "cm_err.h"

#include <stdio.h>

static int fail(char *err, size_t errlen, const char *key, const char *why, int code)
{
    if (err && errlen)
        snprintf(err, errlen, "field '%s': %s", key, why);
    return code;
}

static int get(const json_t *obj, const char *key, json_t **v, char *err, size_t errlen)
{
    if (!json_is_object(obj))
        return fail(err, errlen, key, "parent is not an object", CM_ETYPE);
    *v = json_object_get(obj, key);
    if (!*v)
        return fail(err, errlen, key, "missing", CM_ENOENT);
    return 0;
}

int cm_json_str(const json_t *obj, const char *key, const char **out, char *err, size_t errlen)
{
    json_t *v;
    int rc = get(obj, key, &v, err, errlen);

    if (rc)
        return rc;
    if (!json_is_string(v))
        return fail(err, errlen, key, "must be a string", CM_ETYPE);
    *out = json_string_value(v);
    return 0;
}

int cm_json_opt_str(const json_t *obj, const char *key, const char **out, char *err, size_t errlen)
{
    json_t *v;
    int rc = get(obj, key, &v, err, errlen);

    *out = NULL;
    if (rc == CM_ENOENT || (!rc && json_is_null(v)))
        return 0;
    if (rc)
        return rc;
    if (!json_is_string(v))
        return fail(err, errlen, key, "must be a string", CM_ETYPE);
    *out = json_string_value(v);
    return 0;
}

int cm_json_int(const json_t *obj, const char *key, long long *out, char *err, size_t errlen)
{
    json_t *v;
    int rc = get(obj, key, &v, err, errlen);

    if (rc)
        return rc;
    if (!json_is_integer(v))
        return fail(err, errlen, key, "must be an integer", CM_ETYPE);
    *out = json_integer_value(v);
    return 0;
}

int cm_json_opt_bool(const json_t *obj, const char *key, int *out, char *err, size_t errlen)
{
    json_t *v;
    int rc = get(obj, key, &v, err, errlen);

    if (rc == CM_ENOENT || (!rc && json_is_null(v)))
        return 0; /* |*out| keeps the caller's default */
    if (rc)
        return rc;
    if (!json_is_boolean(v))
        return fail(err, errlen, key, "must be a boolean", CM_ETYPE);
    *out = json_is_true(v);
    return 0;
}

int cm_json_obj(const json_t *obj, const char *key, json_t **out, char *err, size_t errlen)
{
    int rc = get(obj, key, out, err, errlen);

    if (rc)
        return rc;
    if (!json_is_object(*out))
        return fail(err, errlen, key, "must be an object", CM_ETYPE);
    return 0;
}

int cm_json_arr(const json_t *obj, const char *key, json_t **out, char *err, size_t errlen)
{
    int rc = get(obj, key, out, err, errlen);

    if (rc)
        return rc;
    if (!json_is_array(*out))
        return fail(err, errlen, key, "must be an array", CM_ETYPE);
    return 0;
}

char *cm_json_dump(const json_t *v)
{
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}
