#include "gw_ws.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* 1 when the comma-separated |list| holds |token| (case-insensitive). */
static int has_token(const char *list, const char *token)
{
    size_t n = strlen(token);

    while (list && *list) {
        while (*list == ' ' || *list == ',')
            list++;
        if (!strncasecmp(list, token, n) && (list[n] == '\0' || list[n] == ',' || list[n] == ' '))
            return 1;
        list = strchr(list, ',');
    }
    return 0;
}

int gw_ws_check(const char *upgrade, const char *connection, const char *version, const char *key,
                char *why, size_t whylen)
{
    unsigned char raw[32];

    if (!upgrade || strcasecmp(upgrade, "websocket")) {
        snprintf(why, whylen, "expected 'Upgrade: websocket'");
        return -1;
    }
    if (!has_token(connection, "upgrade")) {
        snprintf(why, whylen, "expected 'Connection: Upgrade'");
        return -1;
    }
    if (!version || strcmp(version, "13")) {
        snprintf(why, whylen, "only Sec-WebSocket-Version 13 is supported");
        return -1;
    }
    /* The key is 16 random bytes in base64: 24 characters. */
    if (!key || strlen(key) != 24 || EVP_DecodeBlock(raw, (const unsigned char *)key, 24) != 18) {
        snprintf(why, whylen, "Sec-WebSocket-Key must be 16 bytes in base64");
        return -1;
    }
    return 0;
}

int gw_ws_accept_key(const char *key, char *out)
{
    char buf[128];
    unsigned char md[SHA_DIGEST_LENGTH];
    int n = snprintf(buf, sizeof(buf), "%s%s", key, WS_GUID);

    if (n < 0 || n >= (int)sizeof(buf))
        return -1;
    SHA1((const unsigned char *)buf, (size_t)n, md);
    return EVP_EncodeBlock((unsigned char *)out, md, sizeof(md)) == GW_WS_ACCEPT_LEN ? 0 : -1;
}
