/* cm_json: typed getters over jansson that report errors instead of crashing.
 *
 * All getters borrow: returned json_t pointers and strings live as long as the
 * object they came from. On failure they write "field 'k': reason" to |err|
 * (when non-NULL) and return CM_ENOENT (missing) or CM_ETYPE (wrong type). */
#ifndef CM_JSON_H
#define CM_JSON_H

#include <jansson.h>
#include <stddef.h>

int cm_json_str(const json_t *obj, const char *key, const char **out, char *err, size_t errlen);
/* Like cm_json_str, but a missing key or JSON null leaves |*out| as NULL and returns 0. */
int cm_json_opt_str(const json_t *obj, const char *key, const char **out, char *err, size_t errlen);
int cm_json_int(const json_t *obj, const char *key, long long *out, char *err, size_t errlen);
int cm_json_opt_bool(const json_t *obj, const char *key, int *out, char *err, size_t errlen);
int cm_json_obj(const json_t *obj, const char *key, json_t **out, char *err, size_t errlen);
int cm_json_arr(const json_t *obj, const char *key, json_t **out, char *err, size_t errlen);

/* Compact dump (no spaces, UTF-8 kept raw). Returns a malloc'd string or NULL. */
char *cm_json_dump(const json_t *v);

#endif
