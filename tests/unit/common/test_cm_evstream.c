/* cm_evstream against the aws-sdk-go spec vectors (positive and negative) and
 * the real Bedrock ConverseStream captures: every frame must match its
 * .frames.jsonl line, whatever the split of the input. */
#include "cm_buf.h"
#include "cm_evstream.h"
#include "th_proc.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define DIR AC_TESTDATA_DIR "/eventstream"

static uint8_t *load(const char *path, size_t *n)
{
    uint8_t *p = (uint8_t *)th_read_file(path, n);

    if (!p)
        fail_msg("cannot read %s", path);
    return p;
}

static size_t b64(const char *in, uint8_t *out)
{
    size_t n = strlen(in);
    int len = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);

    assert_true(len >= 0);
    while (n && in[n - 1] == '=') { /* EVP_DecodeBlock counts the padding */
        n--;
        len--;
    }
    return (size_t)len;
}

/* ---- spec vectors ---- */

static const char *const positive[] = {"empty_message", "payload_no_headers",
                                       "payload_one_str_header", "int32_header", "all_headers"};
static const char *const negative[] = {"corrupted_length", "corrupted_header_len",
                                       "corrupted_headers", "corrupted_payload"};

static void check_positive(const char *name)
{
    char path[512];
    size_t n, i;
    uint8_t *frame, buf[4096];
    json_t *want, *hs, *h;
    struct cm_evs_message m;

    snprintf(path, sizeof(path), "%s/encoded/positive/%s", DIR, name);
    frame = load(path, &n);
    snprintf(path, sizeof(path), "%s/decoded/positive/%s", DIR, name);
    want = json_load_file(path, 0, NULL);
    assert_non_null(want);
    assert_int_equal(cm_evs_decode_frame(frame, n, &m), 0);
    assert_int_equal(m.total_length, json_integer_value(json_object_get(want, "total_length")));
    assert_int_equal(m.headers_length, json_integer_value(json_object_get(want, "headers_length")));
    assert_int_equal((int32_t)m.prelude_crc,
                     json_integer_value(json_object_get(want, "prelude_crc")));
    assert_int_equal((int32_t)m.message_crc,
                     json_integer_value(json_object_get(want, "message_crc")));
    hs = json_object_get(want, "headers");
    assert_int_equal(m.n_headers, json_array_size(hs));
    json_array_foreach(hs, i, h)
    {
        const struct cm_evs_header *got = &m.headers[i];
        const char *hname = json_string_value(json_object_get(h, "name"));
        json_t *v = json_object_get(h, "value");

        assert_int_equal(got->name_len, strlen(hname));
        assert_memory_equal(got->name, hname, got->name_len);
        assert_int_equal(got->type, json_integer_value(json_object_get(h, "type")));
        if (got->type == CM_EVS_BYTES || got->type == CM_EVS_STRING || got->type == CM_EVS_UUID) {
            size_t vn = b64(json_string_value(v), buf);

            assert_int_equal(got->len, vn);
            assert_memory_equal(got->bytes, buf, vn);
        } else if (json_is_boolean(v)) {
            assert_int_equal(got->i, json_is_true(v));
        } else {
            assert_int_equal(got->i, json_integer_value(v));
        }
    }
    n = b64(json_string_value(json_object_get(want, "payload")), buf);
    assert_int_equal(m.payload_len, n);
    if (n)
        assert_memory_equal(m.payload, buf, n);
    json_decref(want);
    free(frame);
}

static void test_positive_vectors(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(positive) / sizeof(positive[0]); i++)
        check_positive(positive[i]);
}

static void test_negative_vectors(void **state)
{
    size_t i, n;

    (void)state;
    for (i = 0; i < sizeof(negative) / sizeof(negative[0]); i++) {
        char path[512], *want;
        uint8_t *frame;
        struct cm_evs_decoder d;
        int rc;

        snprintf(path, sizeof(path), "%s/encoded/negative/%s", DIR, negative[i]);
        frame = load(path, &n);
        snprintf(path, sizeof(path), "%s/decoded/negative/%s", DIR, negative[i]);
        want = th_read_file(path, NULL);
        assert_non_null(want);
        want[strcspn(want, "\n")] = '\0';
        cm_evs_decoder_init(&d, 0, NULL, NULL);
        rc = cm_evs_decoder_feed(&d, frame, n);
        if (rc == 0 && !cm_evs_decoder_idle(&d))
            rc = -1; /* a truncated frame is not an error until the stream ends */
        if (strcmp(cm_evs_strerror(rc), want))
            fail_msg("%s: got '%s', want '%s'", negative[i], cm_evs_strerror(rc), want);
        /* Sticky: more input cannot revive a failed stream. */
        assert_int_equal(cm_evs_decoder_feed(&d, frame, n), rc);
        cm_evs_decoder_cleanup(&d);
        free(frame);
        free(want);
    }
}

/* ---- real captures, whole and split ---- */

static const char *const captures[] = {"converse_stream_text_nova_micro",
                                       "converse_stream_tool_use_nova_micro",
                                       "converse_stream_reasoning_claude_sonnet4",
                                       "converse_stream_server_tool_nova2_lite",
                                       "synthetic_stream_then_modelStreamErrorException",
                                       "synthetic_throttlingException_frame"};

struct collected {
    json_t *frames; /* one JSON object per frame, in .frames.jsonl form */
    size_t offset;
};

static int collect(void *ud, const struct cm_evs_message *m)
{
    struct collected *c = ud;
    json_t *hs = json_object(), *f;
    char pre[16], msg[16];
    size_t i;

    for (i = 0; i < m->n_headers; i++) {
        char name[256];

        assert_int_equal(m->headers[i].type, CM_EVS_STRING);
        snprintf(name, sizeof(name), "%.*s", (int)m->headers[i].name_len, m->headers[i].name);
        json_object_set_new(hs, name,
                            json_stringn((const char *)m->headers[i].bytes, m->headers[i].len));
    }
    snprintf(pre, sizeof(pre), "%08x", m->prelude_crc);
    snprintf(msg, sizeof(msg), "%08x", m->message_crc);
    f = json_pack("{s:I,s:I,s:I,s:s,s:s,s:o,s:s%}", "offset", (json_int_t)c->offset, "total_length",
                  (json_int_t)m->total_length, "headers_length", (json_int_t)m->headers_length,
                  "prelude_crc", pre, "message_crc", msg, "headers", hs, "payload",
                  (const char *)m->payload, m->payload_len);
    assert_non_null(f);
    json_array_append_new(c->frames, f);
    c->offset += m->total_length;
    return 0;
}

static json_t *expected_frames(const char *name)
{
    char path[512], *txt, *line, *save = NULL;
    json_t *arr = json_array();

    snprintf(path, sizeof(path), "%s/bedrock/%s.frames.jsonl", DIR, name);
    txt = th_read_file(path, NULL);
    assert_non_null(txt);
    for (line = strtok_r(txt, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
        json_array_append_new(arr, json_loads(line, 0, NULL));
    free(txt);
    return arr;
}

/* Feeds |data| in the chunks given by |split| (0 = whole; 1 = byte by byte;
 * otherwise two chunks cut at |split|). */
static json_t *decode(const uint8_t *data, size_t n, size_t split, int bytewise)
{
    struct collected c = {json_array(), 0};
    struct cm_evs_decoder d;
    size_t i;

    cm_evs_decoder_init(&d, 0, collect, &c);
    if (bytewise) {
        for (i = 0; i < n; i++)
            assert_int_equal(cm_evs_decoder_feed(&d, data + i, 1), 0);
    } else {
        assert_int_equal(cm_evs_decoder_feed(&d, data, split), 0);
        assert_int_equal(cm_evs_decoder_feed(&d, data + split, n - split), 0);
    }
    assert_true(cm_evs_decoder_idle(&d));
    cm_evs_decoder_cleanup(&d);
    return c.frames;
}

static void test_captures(void **state)
{
    size_t i, k, n;

    (void)state;
    for (i = 0; i < sizeof(captures) / sizeof(captures[0]); i++) {
        char path[512];
        uint8_t *data;
        json_t *want = expected_frames(captures[i]), *got;

        snprintf(path, sizeof(path), "%s/bedrock/%s.bin", DIR, captures[i]);
        data = load(path, &n);
        got = decode(data, n, n, 0);
        if (!json_equal(got, want)) {
            char *g = json_dumps(got, 0);

            fail_msg("%s decoded to %s", captures[i], g);
        }
        json_decref(got);
        /* The same bytes split at every position, and one byte at a time. */
        for (k = 0; k <= n; k++) {
            got = decode(data, n, k, 0);
            if (!json_equal(got, want))
                fail_msg("%s split at %zu differs", captures[i], k);
            json_decref(got);
        }
        got = decode(data, n, 0, 1);
        assert_true(json_equal(got, want));
        json_decref(got);
        json_decref(want);
        free(data);
    }
}

static void test_encode_round_trip_and_caps(void **state)
{
    const char *names[] = {":event-type", ":message-type"};
    const char *values[] = {"contentBlockDelta", "event"};
    struct cm_buf b;
    struct cm_evs_message m;
    struct cm_evs_decoder d;
    uint8_t big[16] = {0};

    (void)state;
    cm_buf_init(&b, 1 << 20);
    assert_int_equal(cm_evs_encode(&b, names, values, 2, "{\"a\":1}", 7), 0);
    assert_int_equal(cm_evs_decode_frame((uint8_t *)b.data, b.len, &m), 0);
    assert_true(cm_evs_is(&m, ":event-type", "contentBlockDelta"));
    assert_false(cm_evs_is(&m, ":event-type", "contentBlock"));
    assert_null(cm_evs_find(&m, ":exception-type"));
    assert_int_equal(m.payload_len, 7);
    /* A frame larger than the decoder's cap is refused from its prelude alone. */
    cm_evs_decoder_init(&d, 32, NULL, NULL);
    assert_int_equal(cm_evs_decoder_feed(&d, b.data, b.len), CM_EVS_ETOOBIG);
    cm_evs_decoder_cleanup(&d);
    /* Lengths that cannot describe a frame. */
    big[3] = 8; /* total_length 8 < 16 */
    assert_int_equal(cm_evs_decode_frame(big, sizeof(big), &m), CM_EVS_EPRELUDE_CRC);
    cm_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_positive_vectors),
        cmocka_unit_test(test_negative_vectors),
        cmocka_unit_test(test_captures),
        cmocka_unit_test(test_encode_round_trip_and_caps),
    };
    return cmocka_run_group_tests_name("cm_evstream", tests, NULL, NULL);
}
