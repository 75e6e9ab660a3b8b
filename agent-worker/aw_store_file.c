/* The file backend: one document per session in SESSION_DIR.
 *
 * Each request is one job on libuv's work pool (open, read, fsync and rename
 * block; the loop must not). A save writes "<name>.tmp-<pid>-<n>", fsyncs it,
 * then under the directory lock checks that the current file is still the
 * version the caller replaces and renames over it, then fsyncs the
 * directory so the rename itself survives a power cut.
 *
 * The version is "<inode>-<size>-<mtime ns>". Consecutive versions always
 * differ in inode: the new file exists before the old one goes. */
#include "aw_store.h"
#include "cm_err.h"
#include "cm_util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct fstore {
    struct aw_store base;
    int dirfd;
    char dir[1024];
    /* flock() belongs to the open file description, which every thread of
     * this process shares: the mutex keeps our own pool threads apart, the
     * flock other processes on the same directory. */
    pthread_mutex_t lock;
    atomic_uint seq;
};

struct fjob {
    uv_work_t work;
    struct fstore *fs;
    struct aw_store_op *op;
    int save, rc;
};

static void version_of(const struct stat *st, char *out, size_t cap)
{
    snprintf(out, cap, "%llu-%lld-%lld.%09ld", (unsigned long long)st->st_ino,
             (long long)st->st_size, (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec);
}

/* Reads all of |fd| (at most AW_STORE_MAX_DOC bytes). */
static char *read_all(int fd, size_t size, size_t *len)
{
    char *buf;
    size_t got = 0;
    ssize_t n;

    if (size > AW_STORE_MAX_DOC)
        return NULL;
    if (!(buf = malloc(size + 1)))
        return NULL;
    while (got < size && (n = read(fd, buf + got, size - got)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            free(buf);
            return NULL;
        }
        got += (size_t)n;
    }
    buf[got] = '\0';
    *len = got;
    return buf;
}

static int do_load(struct fstore *fs, struct aw_store_op *op)
{
    char name[256], aside[320], reason[200], version[AW_STORE_VERSION_MAX];
    struct stat st;
    size_t len = 0;
    char *doc;
    int fd;

    aw_store_file_name(op->id, name, sizeof(name));
    fd = openat(fs->dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT)
        return AW_STORE_NOT_FOUND;
    if (fd < 0 || fstat(fd, &st)) {
        snprintf(op->error, sizeof(op->error), "cannot open %.200s: %s", name, strerror(errno));
        if (fd >= 0)
            close(fd);
        return AW_STORE_FAILED;
    }
    version_of(&st, version, sizeof(version));
    if (op->version[0] && !strcmp(op->version, version)) {
        close(fd);
        return AW_STORE_UNCHANGED;
    }
    doc = S_ISREG(st.st_mode) ? read_all(fd, (size_t)st.st_size, &len) : NULL;
    close(fd);
    if (!doc && S_ISREG(st.st_mode) && (size_t)st.st_size <= AW_STORE_MAX_DOC) {
        snprintf(op->error, sizeof(op->error), "cannot read %.200s: %s", name, strerror(errno));
        return AW_STORE_FAILED;
    }
    if (doc)
        op->messages = aw_store_decode(op->id, doc, len, reason, sizeof(reason));
    else
        snprintf(reason, sizeof(reason), "not a regular file of at most %u bytes",
                 AW_STORE_MAX_DOC);
    free(doc);
    if (op->messages) {
        cm_strlcpy(op->version, version, sizeof(op->version));
        return AW_STORE_OK;
    }
    /* Corrupt or partial (written by something else, or a disk that lost
     * data): kept aside for a human, and the session starts afresh. */
    snprintf(aside, sizeof(aside), "%s.corrupt-%lld", name, (long long)time(NULL));
    if (renameat(fs->dirfd, name, fs->dirfd, aside))
        snprintf(op->error, sizeof(op->error),
                 "%.120s is unreadable (%.150s) and could not be moved: %s", name, reason,
                 strerror(errno));
    else
        snprintf(op->error, sizeof(op->error),
                 "%.120s is unreadable (%.150s); moved aside to %.150s", name, reason, aside);
    return AW_STORE_NOT_FOUND;
}

static int write_all(int fd, const char *p, size_t n)
{
    ssize_t w;

    while (n) {
        w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int do_save(struct fstore *fs, struct aw_store_op *op)
{
    char name[256], tmp[320], cur[AW_STORE_VERSION_MAX], mine[AW_STORE_VERSION_MAX];
    struct stat st;
    int fd, rc = AW_STORE_FAILED, locked = 0;

    aw_store_file_name(op->id, name, sizeof(name));
    snprintf(tmp, sizeof(tmp), "%s.tmp-%ld-%u", name, (long)getpid(),
             atomic_fetch_add(&fs->seq, 1));
    fd = openat(fs->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(op->error, sizeof(op->error), "cannot create %.200s: %s", tmp, strerror(errno));
        return AW_STORE_FAILED;
    }
    if (write_all(fd, op->body, op->len) || fsync(fd) || fstat(fd, &st)) {
        snprintf(op->error, sizeof(op->error), "cannot write %.200s: %s", tmp, strerror(errno));
        goto out;
    }
    version_of(&st, mine, sizeof(mine));
    pthread_mutex_lock(&fs->lock);
    locked = 1;
    while (flock(fs->dirfd, LOCK_EX) && errno == EINTR)
        ;
    if (fstatat(fs->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
        version_of(&st, cur, sizeof(cur));
    else if (errno == ENOENT)
        cur[0] = '\0';
    else {
        snprintf(op->error, sizeof(op->error), "cannot stat %.200s: %s", name, strerror(errno));
        goto out;
    }
    if (strcmp(cur, op->version)) {
        rc = AW_STORE_CONFLICT;
        goto out;
    }
    if (renameat(fs->dirfd, tmp, fs->dirfd, name)) {
        snprintf(op->error, sizeof(op->error), "cannot rename %.200s: %s", tmp, strerror(errno));
        goto out;
    }
    tmp[0] = '\0'; /* it is the session's file now */
    cm_strlcpy(op->version, mine, sizeof(op->version));
    rc = AW_STORE_OK;
out:
    if (locked) {
        flock(fs->dirfd, LOCK_UN);
        pthread_mutex_unlock(&fs->lock);
    }
    close(fd);
    if (tmp[0])
        unlinkat(fs->dirfd, tmp, 0);
    else if (fsync(fs->dirfd)) /* the rename is durable only once the directory is */
        snprintf(op->error, sizeof(op->error), "fsync of %.200s: %s", fs->dir, strerror(errno));
    return rc;
}

static void job_work(uv_work_t *w)
{
    struct fjob *j = w->data;

    j->rc = j->save ? do_save(j->fs, j->op) : do_load(j->fs, j->op);
}

static void job_done(uv_work_t *w, int status)
{
    struct fjob *j = w->data;
    struct aw_store_op *op = j->op;
    int rc = status ? AW_STORE_FAILED : j->rc;

    if (status)
        snprintf(op->error, sizeof(op->error), "work pool: %s", uv_strerror(status));
    free(j);
    op->done(op, rc);
}

static int submit(struct aw_store *s, struct aw_store_op *op, int save)
{
    struct fjob *j = calloc(1, sizeof(*j));

    if (!j)
        return CM_ENOMEM;
    j->fs = (struct fstore *)s;
    j->op = op;
    j->save = save;
    j->work.data = j;
    if (uv_queue_work(s->loop, &j->work, job_work, job_done)) {
        free(j);
        return CM_EIO;
    }
    return 0;
}

static int fs_load(struct aw_store *s, struct aw_store_op *op)
{
    return submit(s, op, 0);
}

static int fs_save(struct aw_store *s, struct aw_store_op *op)
{
    return submit(s, op, 1);
}

static void fs_free(struct aw_store *s)
{
    struct fstore *fs = (struct fstore *)s;

    close(fs->dirfd);
    pthread_mutex_destroy(&fs->lock);
    free(fs);
}

static const struct aw_store_backend file_backend = {"file", fs_load, fs_save, fs_free};

struct aw_store *aw_store_file_new(uv_loop_t *loop, const char *dir, char *err, size_t errlen)
{
    struct fstore *fs;
    char probe[64];
    int fd;

    if (!dir || !*dir) {
        snprintf(err, errlen, "SESSION_DIR is required with SESSION_STORE=file");
        return NULL;
    }
    if (!(fs = calloc(1, sizeof(*fs)))) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    fs->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    snprintf(probe, sizeof(probe), ".probe-%ld", (long)getpid());
    if (fs->dirfd < 0 ||
        (fd = openat(fs->dirfd, probe, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
        snprintf(err, errlen, "SESSION_DIR %s is not a writable directory: %s", dir,
                 strerror(errno));
        if (fs->dirfd >= 0)
            close(fs->dirfd);
        free(fs);
        return NULL;
    }
    close(fd);
    unlinkat(fs->dirfd, probe, 0);
    cm_strlcpy(fs->dir, dir, sizeof(fs->dir));
    pthread_mutex_init(&fs->lock, NULL);
    fs->base.be = &file_backend;
    fs->base.loop = loop;
    return &fs->base;
}
