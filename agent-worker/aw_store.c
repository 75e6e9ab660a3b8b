/* The store interface and the document both backends write. */
#include "aw_store.h"
#include "cm_err.h"
#include "cm_sigv4.h"
#include "cm_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FORMAT "agentcore-session/1"

int aw_store_load(struct aw_store *s, struct aw_store_op *op)
{
    if (!op->id || !op->done)
        return CM_EINVAL;
    op->messages = NULL;
    op->error[0] = '\0';
    return s->be->load(s, op);
}

int aw_store_save(struct aw_store *s, struct aw_store_op *op)
{
    if (!op->id || !op->done || !op->body)
        return CM_EINVAL;
    op->error[0] = '\0';
    if (op->len > AW_STORE_MAX_DOC)
        return CM_ETOOBIG;
    return s->be->save(s, op);
}

const char *aw_store_name(const struct aw_store *s)
{
    return s->be->name;
}

void aw_store_free(struct aw_store *s)
{
    if (s)
        s->be->free(s);
}

char *aw_store_encode(const char *id, const json_t *messages, long long saved_at, size_t *len)
{
    /* The messages are referenced, not copied: a long history is serialised
     * once, straight from the session. */
    json_t *doc = json_pack("{s:s,s:s,s:I,s:O}", "format", FORMAT, "sessionId", id, "savedAt",
                            (json_int_t)saved_at, "messages", messages);
    char *out;

    if (!doc)
        return NULL;
    out = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (out && len)
        *len = strlen(out);
    return out;
}

json_t *aw_store_decode(const char *id, const char *doc, size_t len, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root, *messages = NULL;
    const char *format, *sid;

    if (len > AW_STORE_MAX_DOC) {
        snprintf(err, errlen, "document of %zu bytes is over the %u-byte cap", len,
                 AW_STORE_MAX_DOC);
        return NULL;
    }
    /* Depth is bounded by jansson (JSON_PARSER_MAX_DEPTH); duplicate keys
     * would make "which sessionId" ambiguous. */
    root = json_loadb(doc, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        snprintf(err, errlen, "not JSON (line %d: %s)", je.line, je.text);
        return NULL;
    }
    format = json_string_value(json_object_get(root, "format"));
    sid = json_string_value(json_object_get(root, "sessionId"));
    if (!format || strcmp(format, FORMAT))
        snprintf(err, errlen, "not an %s document", FORMAT);
    else if (!sid || strcmp(sid, id))
        snprintf(err, errlen, "document of another session");
    else if (!json_is_array(json_object_get(root, "messages")))
        snprintf(err, errlen, "no messages array");
    else
        messages = json_incref(json_object_get(root, "messages"));
    json_decref(root);
    return messages;
}

static int plain(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

void aw_store_file_name(const char *id, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0, i;
    char sha[65];

    for (i = 0; id[i] && n + 3 < 201; i++) {
        unsigned char c = (unsigned char)id[i];

        if (plain(c)) {
            out[n++] = (char)c;
        } else {
            out[n++] = '%';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        }
    }
    if (id[i] || n == 0) {
        /* Too long to spell out (or empty): a digest. */
        cm_sigv4_sha256_hex(id, strlen(id), sha);
        snprintf(out, cap, "h-%s.json", sha);
        return;
    }
    out[n] = '\0';
    snprintf(out + n, cap - n, ".json");
}
