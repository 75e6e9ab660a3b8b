#include "gw_mhd.h"
#include "gw_api.h"

#include "cm_log.h"
#include "cm_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static __thread size_t tl_bytes;

static enum MHD_Result collect(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *value)
{
    struct gw_mhd_fwd *f = cls;
    size_t i, n = strlen(key);

    (void)kind;
    if (!value || f->n >= GW_MHD_MAX_FORWARDED || n >= sizeof(f->keys[0]) ||
        strlen(value) > GW_MHD_MAX_HEADER_VALUE || !gw_api_header_forwarded(key))
        return MHD_YES;
    if (!gw_api_metadata_ok(key, value, GW_MHD_MAX_HEADER_VALUE)) {
        size_t used = strlen(f->dropped);

        if (used + n + 3 < sizeof(f->dropped))
            snprintf(f->dropped + used, sizeof(f->dropped) - used, "%s%s", used ? ", " : "", key);
        return MHD_YES;
    }
    f->vals[f->n] = strdup(value);
    if (!f->vals[f->n])
        return MHD_YES;
    for (i = 0; i <= n; i++) /* gRPC metadata keys are lowercase */
        f->keys[f->n][i] = (char)((key[i] >= 'A' && key[i] <= 'Z') ? key[i] + 32 : key[i]);
    f->meta[f->n].key = f->keys[f->n];
    f->meta[f->n].value = f->vals[f->n];
    f->n++;
    f->owned++;
    return MHD_YES;
}

void gw_mhd_fwd_collect(struct gw_mhd_fwd *f, struct MHD_Connection *c)
{
    MHD_get_connection_values(c, MHD_HEADER_KIND, collect, f);
    if (f->dropped[0])
        cm_warn("forwarded header(s) dropped: %s: gRPC metadata carries printable ASCII "
                "(0x20-0x7E) only",
                f->dropped);
}

int gw_mhd_request_id(struct MHD_Connection *c, char *out, size_t cap)
{
    const char *hdr = MHD_lookup_connection_value(c, MHD_HEADER_KIND, GW_REQUEST_HEADER);

    if (hdr && *hdr && strlen(hdr) < cap && gw_api_metadata_ok("x", hdr, cap)) {
        cm_strlcpy(out, hdr, cap);
        return 0;
    }
    if (cm_uuid4(out))
        cm_strlcpy(out, "unknown", cap);
    return hdr && *hdr ? -1 : 0;
}

struct refused {
    char *names;
    size_t len;
    int any;
};

static enum MHD_Result check_one(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    struct refused *r = cls;
    size_t used = strlen(r->names);

    (void)kind;
    if (value && gw_api_header_forwarded(key) &&
        !gw_api_metadata_ok(key, value, GW_MHD_MAX_HEADER_VALUE + 1000000)) {
        r->any = 1;
        if (used + strlen(key) + 3 < r->len)
            snprintf(r->names + used, r->len - used, "%s%s", used ? ", " : "", key);
    }
    return MHD_YES;
}

int gw_mhd_headers_refused(struct MHD_Connection *c, char *names, size_t len)
{
    struct refused r = {names, len, 0};

    names[0] = '\0';
    MHD_get_connection_values(c, MHD_HEADER_KIND, check_one, &r);
    return r.any;
}

void gw_mhd_fwd_clear(struct gw_mhd_fwd *f)
{
    size_t i;

    if (!f)
        return;
    for (i = 0; i < f->owned; i++)
        free(f->vals[i]);
    f->n = f->owned = 0;
}

void gw_mhd_add_ids(struct MHD_Response *r, const char *session_id, const char *request_id)
{
    if (session_id)
        MHD_add_response_header(r, GW_SESSION_HEADER, session_id);
    if (request_id)
        MHD_add_response_header(r, GW_REQUEST_HEADER, request_id);
}

enum MHD_Result gw_mhd_send_json(struct MHD_Connection *c, int status, char *body,
                                 const char *session_id, const char *request_id,
                                 const char *const *extra)
{
    struct MHD_Response *r;
    enum MHD_Result ret;

    if (!body)
        body = strdup("{\"error\":\"Internal error\"}");
    tl_bytes = body ? strlen(body) : 0;
    r = MHD_create_response_from_buffer(tl_bytes, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    gw_mhd_add_ids(r, session_id, request_id);
    for (; extra && extra[0]; extra += 2)
        MHD_add_response_header(r, extra[0], extra[1]);
    ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

size_t gw_mhd_sent_bytes(void)
{
    return tl_bytes;
}
