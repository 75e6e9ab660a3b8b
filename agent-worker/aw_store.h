/* aw_store: where session histories outlive the process (SESSION_STORE).
 *
 * The memory store (aw_session) stays the cache and the turn keeper; a
 * backend here is what it reads from and writes to:
 * - file: one JSON document per session in a directory (AgentCore's session
 *   storage mount survives a stop and resume of a session). Written to a
 *   temporary file, fsync'd, renamed over the old one, the directory fsync'd:
 *   a crash leaves the old document or the new one, never a mix. Disk I/O
 *   runs on libuv's work pool, never on the loop.
 * - s3: one object per session (PutObject / GetObject, SigV4 for service
 *   s3, path-style), driven by curl on the loop: no thread waits on S3.
 *
 * Versions make shared stores safe: every document has one (the file's
 * inode, size and mtime; the object's ETag). A load that names the version
 * the caller holds answers AW_STORE_UNCHANGED without reading it again (stat;
 * GET If-None-Match -> 304); a save names the version it replaces and is
 * refused with AW_STORE_CONFLICT when another writer got there first (a file
 * checked under the directory's flock; a PUT with If-Match, or
 * If-None-Match: * for a new session). So two agent-workers never overwrite
 * each other's turn: the loser reloads and adds its own.
 *
 * Everything runs on the loop thread. |done| runs exactly once when a call
 * returned 0: usually later, from the loop, but an error found at once (no
 * credentials) is reported before the call returns, so callers start a
 * request as the last thing they do. */
#ifndef AW_STORE_H
#define AW_STORE_H

#include <jansson.h>
#include <stddef.h>
#include <uv.h>

enum aw_store_rc {
    AW_STORE_OK = 0,        /* load: |messages| and |version| set; save: |version| is the new one */
    AW_STORE_UNCHANGED = 1, /* load: the caller's version is current */
    AW_STORE_NOT_FOUND = 2, /* load: no such session (|error| set when a corrupt one was skipped) */
    AW_STORE_CONFLICT = 3,  /* save: the stored version is not the one named */
    AW_STORE_FAILED = 4,    /* |error| says why (never a credential) */
};

#define AW_STORE_VERSION_MAX 128
/* A document larger than this is refused (load and save): a conversation
 * within the window is far smaller. */
#define AW_STORE_MAX_DOC (64u * 1024 * 1024)

/* One request, owned by the caller until |done| runs. */
struct aw_store_op {
    const char *id; /* the session id (borrowed until done) */
    /* load: the version the caller holds ("" none); save: the version this
     * replaces ("" for a session not stored yet). Holds the new version
     * after an AW_STORE_OK. */
    char version[AW_STORE_VERSION_MAX];
    char *body; /* save: the document (aw_store_encode), owned until done */
    size_t len;
    json_t *messages; /* load AW_STORE_OK: the history, the caller's to keep */
    char error[512];
    void (*done)(struct aw_store_op *op, int rc);
    void *data; /* the caller's */
};

struct aw_store;

struct aw_store_backend {
    const char *name;
    int (*load)(struct aw_store *s, struct aw_store_op *op);
    int (*save)(struct aw_store *s, struct aw_store_op *op);
    void (*free)(struct aw_store *s);
};

struct aw_store {
    const struct aw_store_backend *be;
    uv_loop_t *loop;
};

/* Starts a load of |op->id|. 0 (|done| runs), or CM_ENOMEM / CM_EINVAL
 * (it does not). After AW_STORE_NOT_FOUND, |op->version| is what the next
 * save must name: "" (nothing there), or a corrupt object's version (the S3
 * backend leaves it in place; the file backend moves it aside). */
int aw_store_load(struct aw_store *s, struct aw_store_op *op);
/* Starts a save of |op->body|. 0 (|done| will run) or a cm_err code. */
int aw_store_save(struct aw_store *s, struct aw_store_op *op);
/* "file" or "s3". */
const char *aw_store_name(const struct aw_store *s);
/* No request may be in flight. NULL is fine. */
void aw_store_free(struct aw_store *s);

/* ---- the file backend ---- */

/* |dir| must exist and be writable (checked: a file is created and removed).
 * NULL with |err| otherwise. */
struct aw_store *aw_store_file_new(uv_loop_t *loop, const char *dir, char *err, size_t errlen);

/* ---- the document, no I/O (unit-tested, fuzzed) ----
 * {"format":"agentcore-session/1","sessionId":"...","savedAt":<unix s>,
 *  "messages":[...]} */

/* A malloc'd document for |messages| of session |id|, or NULL. */
char *aw_store_encode(const char *id, const json_t *messages, long long saved_at, size_t *len);
/* The messages of a document, checked: it parses, has this format, names
 * session |id| and holds a messages array. NULL with |err| otherwise. */
json_t *aw_store_decode(const char *id, const char *doc, size_t len, char *err, size_t errlen);

/* The file name of session |id|: the id itself where it is made of
 * [A-Za-z0-9_-] (AgentCore's ids are), each other byte as "%XX"; ids whose
 * encoding would pass 200 bytes become "h-" + SHA-256 hex. Always ends in
 * ".json". |out| holds 256 bytes. */
void aw_store_file_name(const char *id, char *out, size_t cap);

#endif
