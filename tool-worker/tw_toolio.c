#include "tw_toolio.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

json_t *tw_toolio_input(char *err, size_t errlen)
{
    char *buf = malloc(TW_TOOLIO_MAX_INPUT + 1);
    size_t len = 0;
    json_error_t jerr;
    json_t *in;
    ssize_t n;

    if (!buf) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    while (len < TW_TOOLIO_MAX_INPUT && (n = read(0, buf + len, TW_TOOLIO_MAX_INPUT - len))) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        len += (size_t)n;
    }
    in = json_loadb(buf, len, 0, &jerr);
    free(buf);
    if (!json_is_object(in)) {
        snprintf(err, errlen, "tool input must be a JSON object%s%s", in ? "" : ": ",
                 in ? "" : jerr.text);
        json_decref(in);
        return NULL;
    }
    return in;
}

int tw_toolio_answer(int is_error, const char *text)
{
    json_t *o = json_pack("{s:s, s:s}", "status", is_error ? "error" : "success", "content",
                          text ? text : "");
    int rc = o && !json_dumpf(o, stdout, JSON_COMPACT) && !fflush(stdout) ? 0 : -1;

    json_decref(o);
    return rc;
}

int tw_text_ok(const char *p, size_t n)
{
    json_t *s;

    if (memchr(p, '\0', n) || !(s = json_stringn(p, n)))
        return 0;
    json_decref(s);
    return 1;
}
