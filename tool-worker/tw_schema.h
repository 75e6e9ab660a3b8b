/* tw_schema: checks a tool's input against its JSON Schema before the tool
 * runs, so the model hears which field broke which rule and can correct
 * itself, instead of the tool failing somewhere inside.
 *
 * The subset tools use: type (one or a list), required, properties,
 * additionalProperties (false or a schema), enum, const, minimum, maximum,
 * exclusiveMinimum, exclusiveMaximum, minLength, maxLength (in characters),
 * items, minItems, maxItems, nested to any depth the input has (jansson
 * bounds it). Not checked: pattern, format, $ref, the combinators (allOf,
 * anyOf, oneOf, not). Keywords it does not know
 * are ignored, as the JSON Schema rules say. Pure: no I/O, no allocation
 * beyond the message buffer. */
#ifndef TW_SCHEMA_H
#define TW_SCHEMA_H

#include <stddef.h>

#include <jansson.h>

#define TW_SCHEMA_MAX_ERRORS 5

/* 0 when |input| satisfies |schema|; otherwise the number of violations found
 * (at most TW_SCHEMA_MAX_ERRORS are described), one per line in |err|, each
 * naming the field ("input.items[2].name") and the rule. */
int tw_schema_check(const json_t *schema, const json_t *input, char *err, size_t errlen);

#endif
