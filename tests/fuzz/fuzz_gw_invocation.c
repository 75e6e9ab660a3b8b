/* libFuzzer: the gateway's request parsing and validation (gw_api). */
#include "gw_api.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct gw_invocation inv;
    struct gw_reply err = {0, NULL};
    char session[GW_SESSION_ID_MAX + 1];

    if (gw_api_parse_invocation((const char *)data, size, &inv, &err) == 0) {
        struct gw_reply e2 = {0, NULL};

        /* Whatever the body held, the session id chosen is valid or refused. */
        if (gw_api_session_id(NULL, inv.session_id, session, &e2) == 0 &&
            (strlen(session) == 0 || strlen(session) > GW_SESSION_ID_MAX))
            abort();
        gw_reply_clear(&e2);
        if (!inv.prompt || !inv.prompt[0])
            abort();
        gw_invocation_clear(&inv);
    } else if (err.status != 400 || !err.body) {
        abort();
    }
    gw_reply_clear(&err);
    return 0;
}
