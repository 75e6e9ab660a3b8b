/* gw_mhd: the libmicrohttpd pieces gw_http and gw_wss share.
 *
 * JSON answers with the AgentCore id headers, and the request context (the
 * headers passed on to the agent-worker as gRPC metadata). No state beyond
 * one thread-local byte count for the access line. */
#ifndef GW_MHD_H
#define GW_MHD_H

#include <stddef.h>

#include <microhttpd.h>

#include "cm_rpc.h"

#define GW_MHD_MAX_FORWARDED 24 /* context headers passed on per request */
#define GW_MHD_MAX_HEADER_VALUE 4096

/* The request context to pass on. Owns copies of the values (a WebSocket
 * outlives the upgrade request its headers came with); |meta| has room for
 * the forwarded headers and 3 more entries the caller adds. Zero it before
 * use; gw_mhd_fwd_clear frees. */
struct gw_mhd_fwd {
    struct cm_rpc_meta meta[GW_MHD_MAX_FORWARDED + 3];
    char keys[GW_MHD_MAX_FORWARDED][128];
    char *vals[GW_MHD_MAX_FORWARDED];
    size_t n, owned;
    char dropped[256]; /* names of forwarded headers gRPC metadata cannot carry */
};

/* Collects |c|'s forwarded headers (gw_api_header_forwarded) into |f|;
 * beyond the caps, or out of memory, headers are skipped, never truncated.
 * A value gRPC metadata cannot carry (bytes outside 0x20-0x7E) is dropped
 * and its header named in |f->dropped| and in one WARN line (never the
 * value). */
void gw_mhd_fwd_collect(struct gw_mhd_fwd *f, struct MHD_Connection *c);
void gw_mhd_fwd_clear(struct gw_mhd_fwd *f);

/* The request id of |c|'s request into |out|: the client's
 * X-Amzn-Bedrock-AgentCore-Runtime-Request-Id when given, else a new UUID.
 * Returns -1 when the client's cannot travel as gRPC metadata (not printable
 * ASCII, or |cap| bytes or more): |out| then holds a new UUID for the error
 * answer, which the caller sends (400). */
int gw_mhd_request_id(struct MHD_Connection *c, char *out, size_t cap);

/* 1 when a forwarded header of |c| has a value gRPC metadata cannot carry
 * (bytes outside 0x20-0x7E): the request gets a 400 naming the headers in
 * |names|, never their values, before anything reaches gRPC. */
int gw_mhd_headers_refused(struct MHD_Connection *c, char *names, size_t len);

/* Adds the session and request id headers (either may be NULL). */
void gw_mhd_add_ids(struct MHD_Response *r, const char *session_id, const char *request_id);

/* Queues a JSON answer. Takes |body| (malloc'd; NULL answers a generic
 * internal error). |extra|: NULL-terminated name, value pairs, or NULL. */
enum MHD_Result gw_mhd_send_json(struct MHD_Connection *c, int status, char *body,
                                 const char *session_id, const char *request_id,
                                 const char *const *extra);

/* Bytes of the last JSON body this thread queued, for the access line. */
size_t gw_mhd_sent_bytes(void);

#endif
