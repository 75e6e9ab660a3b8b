/* tw_fileops: the file tools (file_read, file_write, file_list), confined to
 * one directory, the session's workspace.
 *
 * Every path is resolved by the kernel with openat2(RESOLVE_BENEATH): an
 * absolute path, a ".." component or a symbolic link that leads outside the
 * workspace is refused, whatever the race with another writer. The functions
 * run in the sandboxed helper process, so they are a second wall, not the
 * only one. Results are text for the model; failures say which rule. */
#ifndef TW_FILEOPS_H
#define TW_FILEOPS_H

#include <stddef.h>

#include <jansson.h>

#define TW_FILE_READ_MAX (1024 * 1024)  /* bytes file_read returns at most */
#define TW_FILE_WRITE_MAX (1024 * 1024) /* bytes file_write accepts */
#define TW_FILE_LIST_MAX 1000           /* entries file_list returns at most */

struct tw_fileres {
    int is_error;
    char *text; /* malloc'd */
};

/* |root| is a directory fd (the workspace); |input| the tool's JSON input.
 * Return 0 with |out| filled, or -1 on allocation failure. */
int tw_file_read(int root, json_t *input, struct tw_fileres *out);
int tw_file_write(int root, json_t *input, struct tw_fileres *out);
int tw_file_list(int root, json_t *input, struct tw_fileres *out);

#endif
