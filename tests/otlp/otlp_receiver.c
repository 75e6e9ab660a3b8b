/* agentcore-otlp-receiver: a stand-in OTLP/HTTP collector for tests.
 *
 * Every POST to /v1/traces is kept as it came: the body in
 * <RECEIVER_DIR>/<n>.bin and one line in <RECEIVER_DIR>/requests.log
 * ("POST /v1/traces n=<n> bytes=<len> content-type=<...> x-test-header=<...>"),
 * written after the body, so a test that sees the line can read the body.
 * POST /v1/metrics the same, as m<n>.bin (a sequence of its own).
 * It answers RECEIVER_STATUS (200 by default) after RECEIVER_DELAY_MS, to
 * play a collector that is down or slow. Nothing is decoded here: the tests
 * decode the bodies with protoc and the official definitions. */
#include "cm_buf.h"
#include "cm_config.h"
#include "cm_log.h"
#include "cm_main.h"
#include "cm_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { C_PORT, C_DIR, C_STATUS, C_DELAY, C_LOG_LEVEL, C_COUNT };

static const struct cm_cfg_entry config[C_COUNT] = {
    [C_PORT] = {"RECEIVER_PORT", NULL, CM_CFG_INT, "0", 0, 65535, "port on 127.0.0.1 (0: any)", 0},
    [C_DIR] = {"RECEIVER_DIR", NULL, CM_CFG_STR, NULL, 0, 1000, "where requests are kept", 0},
    [C_STATUS] = {"RECEIVER_STATUS", NULL, CM_CFG_INT, "200", 200, 599, "the answer's status", 0},
    [C_DELAY] = {"RECEIVER_DELAY_MS", NULL, CM_CFG_INT, "0", 0, 600000,
                 "wait this long before answering", 0},
    [C_LOG_LEVEL] = CM_CFG_LOG_LEVEL,
};

static struct cm_cfg_value cfg[C_COUNT];
static atomic_long seq, mseq;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static void keep(struct MHD_Connection *c, const char *url, const struct cm_buf *body)
{
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    const char *xh = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-test-header");
    int metrics = !strcmp(url, "/v1/metrics");
    long n = atomic_fetch_add(metrics ? &mseq : &seq, 1) + 1;
    char path[1200], line[1400];
    FILE *f;
    int fd;

    snprintf(path, sizeof(path), "%s/%s%ld.bin", cfg[C_DIR].s, metrics ? "m" : "", n);
    f = fopen(path, "wb");
    if (f) {
        if (body->len)
            fwrite(body->data, 1, body->len, f);
        fclose(f);
    }
    snprintf(line, sizeof(line), "POST %s n=%ld bytes=%zu content-type=%s x-test-header=%s\n", url,
             n, body->len, ct ? ct : "", xh ? xh : "");
    snprintf(path, sizeof(path), "%s/requests.log", cfg[C_DIR].s);
    pthread_mutex_lock(&log_lock);
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd >= 0) {
        if (write(fd, line, strlen(line)) < 0) {
            /* the test will not see it: it fails on its own */
        }
        close(fd);
    }
    pthread_mutex_unlock(&log_lock);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *size, void **con_cls)
{
    struct cm_buf *body = *con_cls;
    struct MHD_Response *r;
    enum MHD_Result ret;
    int status = 200;

    (void)cls, (void)version;
    if (!body) {
        if (!(body = calloc(1, sizeof(*body))))
            return MHD_NO;
        cm_buf_init(body, 64u << 20);
        *con_cls = body;
        return MHD_YES;
    }
    if (*size) {
        if (cm_buf_add(body, data, *size))
            return MHD_NO;
        *size = 0;
        return MHD_YES;
    }
    if (strcmp(method, "POST") || (strcmp(url, "/v1/traces") && strcmp(url, "/v1/metrics"))) {
        status = 404;
    } else {
        keep(c, url, body);
        status = (int)cfg[C_STATUS].i;
        if (cfg[C_DELAY].i > 0) {
            /* One thread per connection: a slow collector holds only its own. */
            struct timespec ts = {cfg[C_DELAY].i / 1000, (cfg[C_DELAY].i % 1000) * 1000000L};

            nanosleep(&ts, NULL);
        }
    }
    r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, "Content-Type", "application/x-protobuf");
    ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct cm_buf *body = *con_cls;

    (void)cls, (void)c, (void)toe;
    if (body) {
        cm_buf_free(body);
        free(body);
    }
}

int main(int argc, char **argv)
{
    struct MHD_Daemon *d;
    struct sockaddr_in sa;
    const union MHD_DaemonInfo *info;
    int rc;

    rc = cm_main_boot(argc, argv, "agentcore.otlp_receiver",
                      "OTLP/HTTP receiver for tests: keeps each export request's body.", NULL,
                      config, C_COUNT, cfg);
    if (rc >= 0)
        return rc;
    if (!cfg[C_DIR].s) {
        cm_error("RECEIVER_DIR is required");
        return 2;
    }
    cm_main_block_signals();
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)cfg[C_PORT].i);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL,
                         NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, &sa,
                         MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_END);
    if (!d) {
        cm_error("cannot listen");
        return 1;
    }
    info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    cm_info("otlp receiver ready");
    cm_notify_ready(info ? info->port : 0);
    cm_main_wait_signal(0);
    MHD_stop_daemon(d);
    cm_config_free(cfg, C_COUNT);
    return 0;
}
