/* agentcore-tool-http: the http_request tool as a program. The sandbox
 * helper (agentcore-tool-exec) confines itself and then runs this, so the
 * libcurl start-up cost is paid by http_request calls only.
 * usage: agentcore-tool-http [--allow-cidr CIDR]... [--allow-host HOST]...
 *        [--timeout-ms MS] < input.json */
#include "tw_httpreq.h"
#include "tw_netpolicy.h"
#include "tw_toolio.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    struct tw_netpolicy policy;
    long timeout_ms = 30000;
    char err[256], *text = NULL;
    json_t *input;
    int i, is_error = 1, rc;

    memset(&policy, 0, sizeof(policy));
    for (i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--allow-cidr") && !tw_netpolicy_allow_cidr(&policy, argv[i + 1]))
            continue;
        if (!strcmp(argv[i], "--allow-host") && !tw_netpolicy_allow_host(&policy, argv[i + 1]))
            continue;
        if (!strcmp(argv[i], "--timeout-ms") && (timeout_ms = atol(argv[i + 1])) > 0)
            continue;
        fprintf(stderr, "agentcore-tool-http: bad argument %s\n", argv[i]);
        return 2;
    }
    if (i != argc) {
        fprintf(stderr, "agentcore-tool-http: an option lacks its value\n");
        return 2;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT))
        return 125;
    if (!(input = tw_toolio_input(err, sizeof(err)))) {
        rc = tw_toolio_answer(1, err);
    } else if (tw_http_request(&policy, input, timeout_ms, &is_error, &text)) {
        rc = tw_toolio_answer(1, "out of memory");
    } else {
        rc = tw_toolio_answer(is_error, text);
    }
    free(text);
    json_decref(input);
    tw_netpolicy_cleanup(&policy);
    curl_global_cleanup();
    return rc ? 125 : 0;
}
