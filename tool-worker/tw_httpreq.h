/* tw_httpreq: the http_request tool (libcurl, blocking: it runs alone in its
 * own sandboxed helper process).
 *
 * Input as in the Strands tool: {"method","url","headers","body"}. Every
 * connection's address is checked by tw_netpolicy after DNS resolution;
 * redirects are followed here, one at a time (at most 5), each target's host
 * checked against the allow-list and each connection's address again. Caps:
 * 32 request headers of 8 KiB in all, a 1 MiB request body, a 1 MiB response
 * body (the rest is cut and the model is told). */
#ifndef TW_HTTPREQ_H
#define TW_HTTPREQ_H

#include "tw_netpolicy.h"

#include <jansson.h>

#define TW_HTTP_MAX_HEADERS 32
#define TW_HTTP_MAX_HEADER_BYTES 8192
#define TW_HTTP_MAX_BODY (1024 * 1024)
#define TW_HTTP_MAX_RESPONSE (1024 * 1024)
#define TW_HTTP_MAX_REDIRECTS 5

/* Runs the request. |*is_error| and |*text| (malloc'd) carry the result for
 * the model; returns -1 only on allocation failure. |timeout_ms| bounds the
 * whole exchange. */
int tw_http_request(const struct tw_netpolicy *policy, json_t *input, long timeout_ms,
                    int *is_error, char **text);

#endif
