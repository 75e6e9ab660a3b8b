/* libFuzzer: the ConverseStream event assembler (aw_stream), fed the frames a
 * peer controls. The event-stream framing (CRCs) has its own target
 * (fuzz_cm_evstream); here the input is one frame per line, so the fuzzer
 * reaches the assembler instead of failing checksums:
 *   e<event-type> <JSON payload>       an event
 *   x<exception-type> <JSON payload>   an exception frame
 *   r<error-code> <error-message>      an error frame
 * The corpus holds the real captures of tests/data/eventstream in that form. */
#include "aw_stream.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void header(struct cm_evs_message *m, const char *name, const uint8_t *v, size_t len)
{
    struct cm_evs_header *h = &m->headers[m->n_headers++];

    h->name = name;
    h->name_len = strlen(name);
    h->type = CM_EVS_STRING;
    h->bytes = v;
    h->len = len;
}

static void on_text(void *ud, int block, const char *text, size_t len)
{
    size_t *sum = ud;

    if (len)
        *sum += (size_t)text[len - 1] + (size_t)block; /* an over-read shows up here */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t event[] = "event", exception[] = "exception", error[] = "error";
    struct aw_stream s;
    struct aw_model_error err;
    struct aw_turn turn;
    size_t pos = 0, sum = 0;
    int rc = 0;

    aw_stream_init(&s, on_text, &sum);
    while (pos < size && !rc) {
        const uint8_t *line = data + pos, *nl = memchr(line, '\n', size - pos), *sp;
        size_t len = nl ? (size_t)(nl - line) : size - pos, name_len;
        struct cm_evs_message m;

        pos += len + 1;
        if (len < 2)
            continue;
        sp = memchr(line + 1, ' ', len - 1);
        name_len = sp ? (size_t)(sp - line - 1) : len - 1;
        memset(&m, 0, sizeof(m));
        if (sp) {
            m.payload = sp + 1;
            m.payload_len = len - name_len - 2;
        }
        switch (line[0]) {
        case 'x':
            header(&m, ":message-type", exception, sizeof(exception) - 1);
            header(&m, ":exception-type", line + 1, name_len);
            break;
        case 'r':
            header(&m, ":message-type", error, sizeof(error) - 1);
            header(&m, ":error-code", line + 1, name_len);
            header(&m, ":error-message", m.payload ? m.payload : line, m.payload_len);
            break;
        default:
            header(&m, ":message-type", event, sizeof(event) - 1);
            header(&m, ":event-type", line + 1, name_len);
            break;
        }
        rc = aw_stream_on_frame(&s, &m, &err);
        if (rc && (!err.type[0] || !err.message[0]))
            abort(); /* every failure says what and why */
    }
    if (!rc && aw_stream_finish(&s, &turn, &err) == 0) {
        if (!turn.message)
            abort();
        aw_turn_clear(&turn);
    }
    aw_stream_cleanup(&s);
    return (int)(sum & 0);
}
