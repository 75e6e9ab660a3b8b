/* tw_calc: the calculator tool's arithmetic parser (recursive descent, no I/O).
 *
 * Grammar (usual precedence; ^ is right-associative and binds tighter than
 * unary minus, so -2^2 = -4):
 *   expr    := term (('+' | '-') term)*
 *   term    := unary (('*' | '/' | '%') unary)*
 *   unary   := ('-' | '+') unary | power
 *   power   := primary ('^' unary)?
 *   primary := number | '(' expr ')'
 *   number  := digits ['.' digits] [('e'|'E') ['+'|'-'] digits]  (or '.' digits)
 *
 * Caps: TW_CALC_MAX_LEN input bytes, TW_CALC_MAX_DEPTH nesting. */
#ifndef TW_CALC_H
#define TW_CALC_H

#include <stddef.h>

#define TW_CALC_MAX_LEN 4096
#define TW_CALC_MAX_DEPTH 64

/* Evaluates |expr| (|len| bytes, need not be terminated). Returns 0 and the value
 * in |*out|, or CM_EINVAL with a message for the model in |err| (division by
 * zero, junk, an unbalanced parenthesis, a non-finite result, ...). */
int tw_calc_eval(const char *expr, size_t len, double *out, char *err, size_t errlen);

/* Formats a result the way a person writes it: integers without a fraction,
 * others with up to 15 significant digits. */
void tw_calc_format(double v, char *out, size_t cap);

#endif
