#include "tw_schema.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ctx {
    char *err;
    size_t errlen, used;
    int count;
    char path[512];
};

static void violation(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void violation(struct ctx *c, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (c->count++ >= TW_SCHEMA_MAX_ERRORS || c->used + 1 >= c->errlen)
        return;
    n = snprintf(c->err + c->used, c->errlen - c->used, "%s%s: ", c->used ? "\n" : "", c->path);
    if (n > 0)
        c->used = c->used + (size_t)n < c->errlen ? c->used + (size_t)n : c->errlen - 1;
    va_start(ap, fmt);
    n = vsnprintf(c->err + c->used, c->errlen - c->used, fmt, ap);
    va_end(ap);
    if (n > 0)
        c->used = c->used + (size_t)n < c->errlen ? c->used + (size_t)n : c->errlen - 1;
}

static const char *type_of(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    default:
        return "null";
    }
}

static int is_type(const json_t *v, const char *t)
{
    if (!strcmp(t, "number"))
        return json_is_number(v);
    if (!strcmp(t, "integer"))
        return json_is_integer(v) ||
               (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)));
    return !strcmp(type_of(v), t);
}

static int type_ok(const json_t *type, const json_t *v, char *names, size_t len)
{
    size_t i;
    json_t *t;

    if (json_is_string(type)) {
        snprintf(names, len, "%s", json_string_value(type));
        return is_type(v, json_string_value(type));
    }
    names[0] = '\0';
    json_array_foreach(type, i, t)
    {
        if (!json_is_string(t))
            continue;
        if (is_type(v, json_string_value(t)))
            return 1;
        snprintf(names + strlen(names), len - strlen(names), "%s%s", i ? " or " : "",
                 json_string_value(t));
    }
    return !json_is_array(type); /* an unknown "type" form constrains nothing */
}

/* Characters, not bytes: JSON Schema counts code points. */
static size_t utf8_len(const char *s, size_t bytes)
{
    size_t i, n = 0;

    for (i = 0; i < bytes; i++)
        n += ((unsigned char)s[i] & 0xc0) != 0x80;
    return n;
}

static void number_rules(struct ctx *c, const json_t *s, const json_t *v)
{
    double x = json_number_value(v);
    json_t *k;

    if ((k = json_object_get(s, "minimum")) && json_is_number(k) && x < json_number_value(k))
        violation(c, "must be at least %g (got %g)", json_number_value(k), x);
    if ((k = json_object_get(s, "maximum")) && json_is_number(k) && x > json_number_value(k))
        violation(c, "must be at most %g (got %g)", json_number_value(k), x);
    if ((k = json_object_get(s, "exclusiveMinimum")) && json_is_number(k) &&
        x <= json_number_value(k))
        violation(c, "must be greater than %g (got %g)", json_number_value(k), x);
    if ((k = json_object_get(s, "exclusiveMaximum")) && json_is_number(k) &&
        x >= json_number_value(k))
        violation(c, "must be less than %g (got %g)", json_number_value(k), x);
}

static void check(struct ctx *c, const json_t *s, const json_t *v);

static void descend(struct ctx *c, const json_t *s, const json_t *v, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void descend(struct ctx *c, const json_t *s, const json_t *v, const char *fmt, ...)
{
    size_t len = strlen(c->path);
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->path + len, sizeof(c->path) - len, fmt, ap);
    va_end(ap);
    check(c, s, v);
    c->path[len] = '\0';
}

static void object_rules(struct ctx *c, const json_t *s, const json_t *v)
{
    json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required"),
           *extra = json_object_get(s, "additionalProperties"), *k, *sub;
    const char *key;
    size_t i;

    json_array_foreach(req, i, k)
    {
        if (json_is_string(k) && !json_object_get(v, json_string_value(k)))
            violation(c, "'%s' is required", json_string_value(k));
    }
    json_object_foreach((json_t *)v, key, sub)
    {
        json_t *ps = json_is_object(props) ? json_object_get(props, key) : NULL;

        if (ps)
            descend(c, ps, sub, ".%.64s", key);
        else if (json_is_false(extra))
            violation(c, "'%.64s' is not allowed (allowed: see the tool's input schema)", key);
        else if (json_is_object(extra))
            descend(c, extra, sub, ".%.64s", key);
    }
}

static void array_rules(struct ctx *c, const json_t *s, const json_t *v)
{
    json_t *items = json_object_get(s, "items"), *k, *item;
    size_t i, n = json_array_size(v);

    if ((k = json_object_get(s, "minItems")) && json_is_integer(k) &&
        (json_int_t)n < json_integer_value(k))
        violation(c, "must have at least %lld items (has %zu)", (long long)json_integer_value(k),
                  n);
    if ((k = json_object_get(s, "maxItems")) && json_is_integer(k) &&
        (json_int_t)n > json_integer_value(k))
        violation(c, "must have at most %lld items (has %zu)", (long long)json_integer_value(k), n);
    if (json_is_object(items)) {
        json_array_foreach(v, i, item) descend(c, items, item, "[%zu]", i);
    }
}

static void check(struct ctx *c, const json_t *s, const json_t *v)
{
    json_t *type, *k;
    char names[128];

    if (!json_is_object(s) || c->count >= TW_SCHEMA_MAX_ERRORS)
        return;
    if ((type = json_object_get(s, "type")) && !type_ok(type, v, names, sizeof(names))) {
        violation(c, "must be %s %s (got %s)", strchr("aeiou", names[0]) ? "an" : "a", names,
                  type_of(v));
        return; /* the other rules would only repeat the same mistake */
    }
    if ((k = json_object_get(s, "enum")) && json_is_array(k)) {
        size_t i;
        json_t *e;
        int found = 0;

        json_array_foreach(k, i, e) found |= json_equal(e, (json_t *)v);
        if (!found) {
            char *list = json_dumps(k, JSON_COMPACT | JSON_ENCODE_ANY);

            violation(c, "must be one of %.200s", list ? list : "the listed values");
            free(list);
        }
    }
    if ((k = json_object_get(s, "const")) && !json_equal(k, (json_t *)v))
        violation(c, "must equal the constant the schema gives");
    if (json_is_number(v))
        number_rules(c, s, v);
    if (json_is_string(v)) {
        size_t len = utf8_len(json_string_value(v), json_string_length(v));

        if ((k = json_object_get(s, "minLength")) && json_is_integer(k) &&
            (json_int_t)len < json_integer_value(k))
            violation(c, "must be at least %lld characters long (is %zu)",
                      (long long)json_integer_value(k), len);
        if ((k = json_object_get(s, "maxLength")) && json_is_integer(k) &&
            (json_int_t)len > json_integer_value(k))
            violation(c, "must be at most %lld characters long (is %zu)",
                      (long long)json_integer_value(k), len);
    }
    if (json_is_object(v))
        object_rules(c, s, v);
    if (json_is_array(v))
        array_rules(c, s, v);
}

int tw_schema_check(const json_t *schema, const json_t *input, char *err, size_t errlen)
{
    struct ctx c;

    memset(&c, 0, sizeof(c));
    c.err = err;
    c.errlen = errlen;
    strcpy(c.path, "input");
    if (errlen)
        err[0] = '\0';
    check(&c, schema, input);
    return c.count;
}
