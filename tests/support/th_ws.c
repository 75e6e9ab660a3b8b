#include "th_ws.h"
#include "th_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <unistd.h>

static int read_full(int fd, uint8_t *p, size_t n, int timeout_ms)
{
    struct pollfd pf = {fd, POLLIN, 0};

    while (n) {
        ssize_t r;

        if (poll(&pf, 1, timeout_ms) <= 0)
            return -1;
        r = read(fd, p, n);
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int th_ws_connect(int port, const char *path, const char *headers)
{
    static const char key[] = "dGhlIHNhbXBsZSBub25jZQ=="; /* RFC 6455's example key */
    char req[2048], resp[4096] = "";
    int fd = th_connect_loopback(port), n;

    if (fd < 0)
        return -1;
    n = snprintf(req, sizeof(req),
                 "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                 "%s\r\n",
                 path, key, headers);
    if (write(fd, req, (size_t)n) != n ||
        th_raw_read_until(fd, resp, sizeof(resp), "\r\n\r\n", 10000) ||
        strncmp(resp, "HTTP/1.1 101", 12) ||
        !strstr(resp, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")) {
        close(fd);
        return -1;
    }
    return fd;
}

int th_ws_send(int fd, uint8_t opcode, const void *payload, size_t len)
{
    uint8_t head[14], mask[4];
    const uint8_t *p = payload;
    size_t n = 0, i;
    uint8_t *masked;
    int rc;

    head[n++] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        head[n++] = (uint8_t)(0x80 | len);
    } else if (len < 65536) {
        head[n++] = 0x80 | 126;
        head[n++] = (uint8_t)(len >> 8);
        head[n++] = (uint8_t)len;
    } else {
        head[n++] = 0x80 | 127;
        for (i = 0; i < 8; i++)
            head[n++] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    }
    RAND_bytes(mask, 4);
    memcpy(head + n, mask, 4);
    n += 4;
    masked = malloc(len ? len : 1);
    if (!masked)
        return -1;
    for (i = 0; i < len; i++)
        masked[i] = p[i] ^ mask[i % 4];
    rc = write(fd, head, n) == (ssize_t)n && write(fd, masked, len) == (ssize_t)len ? 0 : -1;
    free(masked);
    return rc;
}

long th_ws_recv(int fd, uint8_t *opcode, char *buf, size_t cap, int timeout_ms)
{
    uint8_t h[2], ext[8];
    uint64_t len;
    int i;

    if (read_full(fd, h, 2, timeout_ms))
        return -1;
    *opcode = h[0] & 0x0f;
    len = h[1] & 0x7f;
    if (len == 126) {
        if (read_full(fd, ext, 2, timeout_ms))
            return -1;
        len = (uint64_t)ext[0] << 8 | ext[1];
    } else if (len == 127) {
        if (read_full(fd, ext, 8, timeout_ms))
            return -1;
        for (len = 0, i = 0; i < 8; i++)
            len = len << 8 | ext[i];
    }
    if (h[1] & 0x80 || len + 1 > cap) /* servers never mask */
        return -1;
    if (read_full(fd, (uint8_t *)buf, (size_t)len, timeout_ms))
        return -1;
    buf[len] = '\0';
    return (long)len;
}
