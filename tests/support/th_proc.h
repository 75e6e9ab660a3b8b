/* th_proc: start a real binary for a test and wait until it is ready.
 *
 * Readiness uses the same protocol s6 uses in production: the child gets
 * NOTIFY_FD=3 and writes "<port>\n" once it listens, so tests wait on an event,
 * never on a sleep, and learn the ephemeral port the child bound. The child
 * starts from an empty environment plus |env|, so a developer's AWS settings
 * never leak into a test. Its stderr goes to |log_dir|/<name>.log. */
#ifndef TH_PROC_H
#define TH_PROC_H

#include <sys/types.h>

struct th_proc {
    pid_t pid;
    int port;
    char name[64];
    char log_path[512];
    int notify_fd; /* between spawn and wait_ready */
};

/* |env| is a NULL-terminated list of "KEY=VALUE". Returns 0, or -1 when the
 * child died or did not report readiness within |timeout_ms|. */
int th_proc_start(struct th_proc *p, const char *name, const char *binary, const char *const *env,
                  int timeout_ms);
/* The two halves of th_proc_start, for starting several processes at the same
 * moment (as s6 does) and waiting for them after. */
int th_proc_spawn(struct th_proc *p, const char *name, const char *binary, const char *const *env);
int th_proc_wait_ready(struct th_proc *p, int timeout_ms);
/* th_proc_spawn with command-line arguments (NULL-terminated, at most 30),
 * for third-party programs such as nghttpx (readiness: th_wait_log). */
int th_proc_spawn_args(struct th_proc *p, const char *name, const char *binary,
                       const char *const *args, const char *const *env);
/* A port that was free a moment ago on 127.0.0.1 (for processes that must know
 * each other's address before any of them runs). */
int th_free_port(void);
/* Sends |sig| and reaps the child; returns its exit status (or 128+signal), -1 if not running. */
int th_proc_stop(struct th_proc *p, int sig);

/* Directory for the children's logs (created if needed). */
const char *th_log_dir(void);
/* A token file made once per test process (random, 0600) and the
 * "INTERNAL_TOKEN_FILE=..." every spawned process gets by default. NULL when
 * it cannot be made. */
const char *th_token_path(void);
const char *th_token_env(void);
/* Makes this test process's own gRPC calls carry that token. 0 or -1. */
int th_use_token(void);
/* Waits until the file at |path| contains |needle| (watching it with inotify:
 * no polling). Returns the milliseconds waited, or -1 after |timeout_ms|. */
long th_wait_log(const char *path, const char *needle, int timeout_ms);
/* The same, until |needle| appears at least |count| times. */
long th_wait_log_count(const char *path, const char *needle, int count, int timeout_ms);

/* The same over several files: the index of the first that holds |needle|
 * |count| times (and the milliseconds waited in |*waited_ms|), or -1. */
int th_wait_logs(const char *const *paths, int n, const char *needle, int count, int timeout_ms,
                 long *waited_ms);
/* Reads a whole file into a malloc'd string (NULL on error). */
char *th_read_file(const char *path, size_t *len);

#endif
