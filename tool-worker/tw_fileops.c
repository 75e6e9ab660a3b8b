#define _GNU_SOURCE /* O_PATH, close_range, vasprintf */
#include "tw_fileops.h"
#include "tw_toolio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static int res(struct tw_fileres *out, int is_error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int res(struct tw_fileres *out, int is_error, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    out->is_error = is_error;
    if (!(out->text = malloc((size_t)n + 1)))
        return -1;
    va_start(ap, fmt);
    vsnprintf(out->text, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return 0;
}

static int open_beneath(int root, const char *path, int flags, mode_t mode)
{
    struct open_how how;

    memset(&how, 0, sizeof(how));
    how.flags = (unsigned long long)(flags | O_CLOEXEC);
    how.mode = (flags & O_CREAT) ? mode : 0;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    return (int)syscall(SYS_openat2, root, path, &how, sizeof(how));
}

/* The syntactic checks, so the model hears which rule its path broke. The
 * kernel's RESOLVE_BENEATH still has the last word (symbolic links). */
static const char *path_problem(const char *path)
{
    const char *c = path;

    if (!*path)
        return "the path is empty";
    if (strlen(path) > 1024)
        return "the path is longer than 1024 bytes";
    if (path[0] == '/')
        return "absolute paths are not allowed: give a path relative to the workspace";
    while (*c) {
        size_t len = strcspn(c, "/");

        if (len == 2 && c[0] == '.' && c[1] == '.')
            return "'..' is not allowed: paths stay inside the workspace";
        c += len;
        if (*c == '/')
            c++;
    }
    return NULL;
}

/* Accepts "/workspace/x" as "x": the model sees the workspace there. */
static const char *relative(const char *path)
{
    if (!strncmp(path, "/workspace/", 11))
        return path + 11;
    if (!strcmp(path, "/workspace"))
        return ".";
    return path;
}

static int os_error(struct tw_fileres *out, const char *what, const char *path, int err)
{
    if (err == EXDEV || err == ELOOP)
        return res(out, 1, "%s '%s': refused, the path leads outside the workspace", what, path);
    return res(out, 1, "%s '%s': %s", what, path, strerror(err));
}

static int get_path(json_t *input, const char *dflt, const char **path, struct tw_fileres *out,
                    int *done)
{
    json_t *p = json_object_get(input, "path");
    const char *problem;

    *done = 0;
    if (!p && dflt) {
        *path = dflt;
        return 0;
    }
    if (!json_is_string(p)) {
        *done = 1;
        return res(out, 1, "invalid input: 'path' must be a string");
    }
    *path = relative(json_string_value(p));
    if ((problem = path_problem(*path))) {
        *done = 1;
        return res(out, 1, "invalid path '%.200s': %s", json_string_value(p), problem);
    }
    return 0;
}

int tw_file_read(int root, json_t *input, struct tw_fileres *out)
{
    const char *path;
    struct stat st;
    char *buf = NULL;
    size_t got = 0;
    ssize_t n;
    int fd, done, rc;

    if ((rc = get_path(input, NULL, &path, out, &done)) || done)
        return rc;
    if ((fd = open_beneath(root, path, O_RDONLY | O_NOCTTY | O_NONBLOCK, 0)) < 0)
        return os_error(out, "cannot read", path, errno);
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        return res(out, 1, "cannot read '%s': not a regular file", path);
    }
    if (!(buf = malloc(TW_FILE_READ_MAX + 1))) {
        close(fd);
        return -1;
    }
    while (got < TW_FILE_READ_MAX && (n = read(fd, buf + got, TW_FILE_READ_MAX - got)) > 0)
        got += (size_t)n;
    close(fd);
    buf[got] = '\0';
    if (!tw_text_ok(buf, got)) {
        rc = res(out, 1, "'%s' is a binary file (%lld bytes): file_read returns text only", path,
                 (long long)st.st_size);
    } else if ((long long)got < (long long)st.st_size) {
        rc = res(out, 0, "%s\n[truncated: showing the first %zu of %lld bytes]", buf, got,
                 (long long)st.st_size);
    } else {
        out->is_error = 0;
        out->text = buf;
        return 0;
    }
    free(buf);
    return rc;
}

/* Opens (creating as needed) the directory that will hold |path|'s last
 * component, one component at a time, each resolved beneath the one before. */
static int open_parent(int root, char *path, const char **leaf, int *err)
{
    char *slash, *comp = path;
    int dir = dup(root), next;

    if (dir < 0) {
        *err = errno;
        return -1;
    }
    while ((slash = strchr(comp, '/'))) {
        *slash = '\0';
        if (*comp && strcmp(comp, ".")) {
            next = open_beneath(dir, comp, O_PATH | O_DIRECTORY, 0);
            if (next < 0 && errno == ENOENT && !mkdirat(dir, comp, 0755))
                next = open_beneath(dir, comp, O_PATH | O_DIRECTORY, 0);
            if (next < 0) {
                *err = errno;
                close(dir);
                return -1;
            }
            close(dir);
            dir = next;
        }
        comp = slash + 1;
    }
    *leaf = comp;
    return dir;
}

int tw_file_write(int root, json_t *input, struct tw_fileres *out)
{
    json_t *content = json_object_get(input, "content"), *append = json_object_get(input, "append");
    const char *path, *leaf;
    char *copy;
    size_t len, off = 0;
    ssize_t n;
    int fd, dir, done, rc, err = 0;

    if ((rc = get_path(input, NULL, &path, out, &done)) || done)
        return rc;
    if (!json_is_string(content))
        return res(out, 1, "invalid input: 'content' must be a string");
    len = json_string_length(content);
    if (len > TW_FILE_WRITE_MAX)
        return res(out, 1, "content is %zu bytes; file_write accepts at most %d", len,
                   TW_FILE_WRITE_MAX);
    if (!(copy = strdup(path)))
        return -1;
    dir = open_parent(root, copy, &leaf, &err);
    if (dir < 0) {
        rc = os_error(out, "cannot create the directories of", path, err);
        goto out;
    }
    if (!*leaf || !strcmp(leaf, ".")) {
        close(dir);
        rc = res(out, 1, "cannot write '%s': the path names a directory", path);
        goto out;
    }
    fd = open_beneath(dir, leaf,
                      O_WRONLY | O_CREAT | O_NOFOLLOW | (json_is_true(append) ? O_APPEND : O_TRUNC),
                      0644);
    err = errno;
    close(dir);
    if (fd < 0) {
        rc = os_error(out, "cannot write", path, err);
        goto out;
    }
    while (off < len && (n = write(fd, json_string_value(content) + off, len - off)) > 0)
        off += (size_t)n;
    err = errno;
    if (close(fd) && off == len)
        err = errno, off = 0;
    if (off < len)
        rc = res(out, 1, "writing '%s' stopped after %zu of %zu bytes: %s", path, off, len,
                 strerror(err));
    else
        rc = res(out, 0, "wrote %zu bytes to %s", len, path);
out:
    free(copy);
    return rc;
}

static int by_line(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int tw_file_list(int root, json_t *input, struct tw_fileres *out)
{
    const char *path;
    char **lines = NULL, *text = NULL;
    struct dirent *de;
    size_t n = 0, cap = 0, total = 0, i, more = 0;
    DIR *d;
    int fd, done, rc = -1;

    if ((rc = get_path(input, ".", &path, out, &done)) || done)
        return rc;
    rc = -1;
    if ((fd = open_beneath(root, path, O_RDONLY | O_DIRECTORY, 0)) < 0)
        return os_error(out, "cannot list", path, errno);
    if (!(d = fdopendir(fd))) {
        close(fd);
        return os_error(out, "cannot list", path, errno);
    }
    while ((de = readdir(d))) {
        struct stat st;
        char line[512];
        const char *kind = "file";

        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (n == TW_FILE_LIST_MAX) {
            more++;
            continue;
        }
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            if (S_ISDIR(st.st_mode))
                kind = "dir";
            else if (S_ISLNK(st.st_mode))
                kind = "link";
            else if (!S_ISREG(st.st_mode))
                kind = "other";
        }
        snprintf(line, sizeof(line), "%s\t%s\t%lld", kind, de->d_name, (long long)st.st_size);
        if (n == cap) {
            char **grown = realloc(lines, (cap ? cap * 2 : 64) * sizeof(*lines));

            if (!grown)
                goto out;
            lines = grown;
            cap = cap ? cap * 2 : 64;
        }
        if (!(lines[n] = strdup(line)))
            goto out;
        total += strlen(line) + 1;
        n++;
    }
    qsort(lines, n, sizeof(*lines), by_line);
    if (!(text = malloc(total + 128)))
        goto out;
    text[0] = '\0';
    {
        char *p = text;

        for (i = 0; i < n; i++)
            p += sprintf(p, "%s\n", lines[i]);
        if (!n)
            p += sprintf(p, "(empty directory)\n");
        if (more)
            sprintf(p, "[%zu more entries not shown]\n", more);
    }
    out->is_error = 0;
    out->text = text;
    rc = 0;
out:
    for (i = 0; i < n; i++)
        free(lines[i]);
    free(lines);
    closedir(d);
    return rc;
}
