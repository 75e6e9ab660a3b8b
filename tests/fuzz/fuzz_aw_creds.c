/* libFuzzer: every credential parser a peer or a file controls, on the same
 * input: the container / metadata JSON, a Secrets Manager secret string,
 * shared credentials and config files, ISO-8601 expiry times, container
 * credential URLs, and the redaction of AWS error messages (which must never
 * leave an access key id behind). */
#include "aw_aws.h"
#include "aw_creds.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct aw_credentials c;
    char *text, msg[768], shown[768];
    size_t i;

    if (aw_creds_parse_json((const char *)data, size, &c) == 0 && (!c.akid[0] || !c.secret[0]))
        abort();
    aw_credentials_clear(&c);
    text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    if (aw_creds_parse_secret(text, &c) == 0 && (!c.akid[0] || !c.secret[0]))
        abort();
    aw_credentials_clear(&c);
    (void)aw_creds_parse_ini(text, "default", 0, &c);
    aw_credentials_clear(&c);
    (void)aw_creds_parse_ini(text, "work", 1, &c);
    aw_credentials_clear(&c);
    (void)aw_creds_iso8601(text);
    (void)aw_creds_container_url_ok(text);
    memcpy(msg, data, size < sizeof(msg) - 1 ? size : sizeof(msg) - 1);
    msg[size < sizeof(msg) - 1 ? size : sizeof(msg) - 1] = '\0';
    aw_redact_credentials(msg, sizeof(msg));
    aw_public_message(text, shown, sizeof(shown));
    /* No access key id survives: AKIA or ASIA + 16 upper-case letters or digits. */
    for (i = 0; msg[i]; i++) {
        size_t k;

        if (strncmp(msg + i, "AKIA", 4) && strncmp(msg + i, "ASIA", 4))
            continue;
        if (i &&
            ((msg[i - 1] >= 'A' && msg[i - 1] <= 'Z') || (msg[i - 1] >= '0' && msg[i - 1] <= '9')))
            continue;
        for (k = 4;
             (msg[i + k] >= 'A' && msg[i + k] <= 'Z') || (msg[i + k] >= '0' && msg[i + k] <= '9');
             k++)
            ;
        if (k >= 20)
            abort();
    }
    free(text);
    return 0;
}
