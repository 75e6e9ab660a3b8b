#include "tw_calc.h"
#include "cm_err.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct parser {
    const char *s;
    size_t len, pos;
    int depth;
    char *err;
    size_t errlen;
    int failed;
};

static double fail(struct parser *p, const char *msg)
{
    if (!p->failed) {
        snprintf(p->err, p->errlen, "%s at position %zu", msg, p->pos + 1);
        p->failed = 1;
    }
    return 0;
}

static void skip_ws(struct parser *p)
{
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                               p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
        p->pos++;
}

static int peek(struct parser *p)
{
    skip_ws(p);
    return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1;
}

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static double expr(struct parser *p);
static double unary(struct parser *p);

static double number(struct parser *p)
{
    char buf[128];
    size_t start = p->pos, n;
    int digits = 0;

    while (p->pos < p->len && is_digit(p->s[p->pos])) {
        p->pos++;
        digits++;
    }
    if (p->pos < p->len && p->s[p->pos] == '.') {
        p->pos++;
        while (p->pos < p->len && is_digit(p->s[p->pos])) {
            p->pos++;
            digits++;
        }
    }
    if (!digits) {
        p->pos = start;
        return fail(p, "expected a number");
    }
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        size_t save = p->pos++;

        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-'))
            p->pos++;
        if (p->pos < p->len && is_digit(p->s[p->pos])) {
            while (p->pos < p->len && is_digit(p->s[p->pos]))
                p->pos++;
        } else {
            p->pos = save; /* "2e" is 2 followed by junk, reported by the caller */
        }
    }
    n = p->pos - start;
    if (n >= sizeof(buf))
        return fail(p, "number too long");
    memcpy(buf, p->s + start, n);
    buf[n] = '\0';
    return strtod(buf, NULL);
}

static double primary(struct parser *p)
{
    int c = peek(p);

    if (c == '(') {
        double v;

        if (++p->depth > TW_CALC_MAX_DEPTH)
            return fail(p, "expression nested too deeply");
        p->pos++;
        v = expr(p);
        if (p->failed)
            return 0;
        if (peek(p) != ')')
            return fail(p, "expected ')'");
        p->pos++;
        p->depth--;
        return v;
    }
    if (is_digit(c) || c == '.')
        return number(p);
    if (c < 0)
        return fail(p, "unexpected end of expression");
    return fail(p, "unexpected character");
}

static double power(struct parser *p)
{
    double base = primary(p), ex;

    if (p->failed || peek(p) != '^')
        return base;
    p->pos++;
    if (++p->depth > TW_CALC_MAX_DEPTH)
        return fail(p, "expression nested too deeply");
    ex = unary(p); /* right-associative: 2^3^2 = 2^(3^2) */
    p->depth--;
    if (p->failed)
        return 0;
    if (base == 0 && ex < 0)
        return fail(p, "zero raised to a negative power");
    if (base < 0 && ex != floor(ex))
        return fail(p, "negative number raised to a fractional power");
    return pow(base, ex);
}

static double unary(struct parser *p)
{
    int c = peek(p);
    double v;

    if (c == '-' || c == '+') {
        if (++p->depth > TW_CALC_MAX_DEPTH)
            return fail(p, "expression nested too deeply");
        p->pos++;
        v = unary(p);
        p->depth--;
        return c == '-' ? -v : v;
    }
    return power(p);
}

static double term(struct parser *p)
{
    double v = unary(p);

    while (!p->failed) {
        int c = peek(p);
        size_t at;
        double r;

        if (c != '*' && c != '/' && c != '%')
            break;
        at = p->pos++;
        r = unary(p);
        if (p->failed)
            break;
        if ((c == '/' || c == '%') && r == 0) {
            p->pos = at;
            return fail(p, c == '/' ? "division by zero" : "modulo by zero");
        }
        v = c == '*' ? v * r : c == '/' ? v / r : fmod(v, r);
    }
    return v;
}

static double expr(struct parser *p)
{
    double v = term(p);

    while (!p->failed) {
        int c = peek(p);
        double r;

        if (c != '+' && c != '-')
            break;
        p->pos++;
        r = term(p);
        v = c == '+' ? v + r : v - r;
    }
    return v;
}

int tw_calc_eval(const char *s, size_t len, double *out, char *err, size_t errlen)
{
    struct parser p = {s, len, 0, 0, err, errlen, 0};
    double v;

    if (len > TW_CALC_MAX_LEN) {
        snprintf(err, errlen, "expression longer than %d characters", TW_CALC_MAX_LEN);
        return CM_EINVAL;
    }
    if (memchr(s, '\0', len)) {
        snprintf(err, errlen, "expression contains a NUL byte");
        return CM_EINVAL;
    }
    if (peek(&p) < 0) {
        snprintf(err, errlen, "empty expression");
        return CM_EINVAL;
    }
    v = expr(&p);
    if (!p.failed && peek(&p) >= 0)
        fail(&p, "unexpected character");
    if (!p.failed && !isfinite(v)) {
        snprintf(err, errlen, "result is not a finite number");
        return CM_EINVAL;
    }
    if (p.failed)
        return CM_EINVAL;
    *out = v;
    return 0;
}

void tw_calc_format(double v, char *out, size_t cap)
{
    if (v == 0)
        v = 0; /* no "-0" */
    if (fabs(v) < 1e15 && v == floor(v))
        snprintf(out, cap, "%.0f", v);
    else
        snprintf(out, cap, "%.15g", v);
}
