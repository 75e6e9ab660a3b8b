/* libFuzzer: the gateway's request parsing and validation (gw_api), the
 * streaming decision and the WebSocket handshake checks (gw_ws). */
#include "gw_api.h"
#include "gw_ws.h"

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

    char *text = malloc(size + 1), why[128], accept[GW_WS_ACCEPT_LEN + 1];

    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    /* The same bytes as header values: never a crash, and a key the checks
     * accept always yields an accept value. */
    if (gw_ws_check(text, text, text, text, why, sizeof(why)) == 0 &&
        gw_ws_accept_key(text, accept))
        abort();
    gw_ws_check("websocket", "Upgrade", "13", text, why, sizeof(why));
    gw_api_header_sensitive(text);
    gw_api_header_forwarded(text);
    if (gw_api_parse_invocation((const char *)data, size, &inv, &err) == 0) {
        struct gw_reply e2 = {0, NULL};

        (void)gw_api_wants_stream(&inv, text);

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
    free(text);
    return 0;
}
