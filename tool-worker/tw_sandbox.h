/* tw_sandbox: how a tool process is launched: the command line of
 * bubblewrap (namespaces, mounts, environment) around the helper
 * agentcore-tool-exec (rlimits, Landlock, seccomp), and the start-up probe
 * that learns what isolation this kernel and container actually give.
 *
 * No I/O on the request path: tw_sandbox_build() only opens the descriptors
 * the child inherits (filter, helper, workspace, tool directory) and writes
 * an argv. The process itself is started by tw_proc.
 *
 * What a sandboxed tool gets (isolation "namespaces"): new user, PID, mount,
 * IPC, UTS, cgroup and network namespaces (network shared only for a tool
 * that declares it), no further user namespaces, no capabilities, a new
 * session, death with the worker; a read-only view of /usr, /etc and the
 * configured paths, fresh /proc, /dev and /tmp, the session workspace at
 * /workspace (read-write, the working directory) and the tool's own
 * directory at /tool (read-only); an environment of PATH, HOME, LANG, TMPDIR
 * and what the tool declares, nothing else. When the probe fails and
 * configuration allowed it (TOOL_SANDBOX=none), isolation is "none": the
 * helper's rlimits, Landlock and seccomp only, said loudly everywhere. */
#ifndef TW_SANDBOX_H
#define TW_SANDBOX_H

#include "tw_confine.h"

#include <stddef.h>
#include <sys/types.h>

#define TW_SANDBOX_MAX_FDS 8 /* descriptors a child inherits, as fds 3.. */
/* The helper's path inside a sandbox: on every bubblewrap command line. */
#define TW_SANDBOX_IN_HELPER "/.agentcore/tool-exec"

/* The /proc tools see. Docker masks paths of its own /proc, and the kernel
 * then refuses a fresh procfs in a new user namespace; docker run can unmask
 * them (--security-opt systempaths=unconfined), compose cannot. */
enum tw_proc_mode {
    TW_PROC_AUTO,  /* a fresh /proc, or none when refused (the probe says which) */
    TW_PROC_FRESH, /* a fresh /proc, or no namespaces at all */
    TW_PROC_NONE,  /* never a /proc (an empty directory) */
};

struct tw_sandbox_config {
    const char *bwrap;    /* bubblewrap executable ("bwrap": looked up in PATH) */
    const char *helper;   /* agentcore-tool-exec */
    const char *http;     /* agentcore-tool-http */
    const char *ro_paths; /* comma-separated extra read-only paths, or NULL */
    int allow_unconfined; /* TOOL_SANDBOX=none: run tools without namespaces */
    enum tw_proc_mode proc;
    uid_t uid; /* identity of tool processes (when the worker is root) */
    gid_t gid;
    const char *allow_cidrs; /* comma-separated, passed to http_request */
    const char *allow_hosts;
    /* The egress proxy's socket (tw_egress): a tool that declares a network
     * keeps its empty network namespace and reaches the outside only through
     * it. NULL: such a tool shares the worker's network unchecked
     * (TOOL_SANDBOX_UNCHECKED_NETWORK). */
    const char *egress;
};

struct tw_sandbox;

/* Builds the filter and runs the probe (a trivial tool, synchronously: call
 * before gRPC starts its threads). Never fails for a refused namespace: that
 * is reported by tw_sandbox_isolation(). NULL with |err| only when the
 * filter cannot be built or the helper is missing. */
struct tw_sandbox *tw_sandbox_new(const struct tw_sandbox_config *cfg, char *err, size_t errlen);
void tw_sandbox_free(struct tw_sandbox *sb);

/* "namespaces", "none" (unconfined by configuration) or "unavailable" (the
 * probe failed and configuration did not allow running without). */
const char *tw_sandbox_isolation(const struct tw_sandbox *sb);
/* One sentence for logs, ListTools and status: what the tools get, or why
 * namespaces are missing. */
const char *tw_sandbox_describe(const struct tw_sandbox *sb);
/* 1 when tools that need isolation may run. */
int tw_sandbox_usable(const struct tw_sandbox *sb);

/* One tool process. */
struct tw_sandbox_job {
    const char *workspace;   /* host directory shown at /workspace */
    const char *tool_dir;    /* host directory shown at /tool, or NULL */
    int network;             /* share the worker's network namespace */
    const char *const *env;  /* "NAME=VALUE", NULL-terminated, or NULL */
    const char *mode;        /* "exec", "file_read", ..., "http_request" */
    const char *const *argv; /* the program for "exec", NULL-terminated */
    const struct tw_limits *lim;
    /* A warm sandbox: bubblewrap is set up around a helper that waits for
     * its job on stdin (tw_sandbox_job_message) and says on |ready_fd| that
     * it runs; env, mode, argv and lim are not used here. Only for a job
     * tw_sandbox_warmable() accepts. */
    int deferred;
};

/* What tw_proc starts: argv[0] is the executable; fds[i] becomes the child's
 * descriptor 3+i; env and cwd for the launcher itself. */
struct tw_sandbox_cmd {
    char **argv;
    char **env;
    const char *cwd;
    int fds[TW_SANDBOX_MAX_FDS];
    int n_fds;
    uid_t uid;
    gid_t gid;
    int set_ids;
    int info_fd;  /* read end: bubblewrap writes {"child-pid": N} there, -1 without */
    int ready_fd; /* read end, deferred jobs: the helper writes a byte there once it
                   * runs, i.e. once bubblewrap has built the sandbox; -1 without */
};

/* 0, or -1 with |err| (a descriptor could not be opened: a missing workspace,
 * out of descriptors). Free with tw_sandbox_cmd_cleanup() in every case. */
int tw_sandbox_build(const struct tw_sandbox *sb, const struct tw_sandbox_job *job,
                     struct tw_sandbox_cmd *cmd, char *err, size_t errlen);
void tw_sandbox_cmd_cleanup(struct tw_sandbox_cmd *cmd);

/* 1 when |job| may run in a sandbox set up before it was known: full
 * namespaces and no network (what differs between such jobs is then only
 * the workspace and the tool directory, which the sandbox is made for, and
 * what the message carries). */
int tw_sandbox_warmable(const struct tw_sandbox *sb, const struct tw_sandbox_job *job);

/* The message (tw_job.h) that turns a warm sandbox into |job|: the helper's
 * arguments and the tool's environment. Malloc'd, length in |*len|; NULL
 * when out of memory or too large. */
char *tw_sandbox_job_message(const struct tw_sandbox *sb, const struct tw_sandbox_job *job,
                             size_t *len);

/* Runs |job| to its end, synchronously: for start-up work only (listing an
 * MCP server's tools), before gRPC starts threads (it forks). A job without
 * a workspace gets an empty scratch directory, removed after. Returns the
 * exit status (or -1 with |err| when it could not run or passed
 * |timeout_ms|); stdout in |*out| (malloc'd, at most |out_cap| bytes, NULL
 * allowed), stderr in |err|. */
int tw_sandbox_run(const struct tw_sandbox *sb, const struct tw_sandbox_job *job, int timeout_ms,
                   char **out, size_t out_cap, char *err, size_t errlen);

/* The uid/gid tool processes run as (for the workspace's owner). */
uid_t tw_sandbox_uid(const struct tw_sandbox *sb);
gid_t tw_sandbox_gid(const struct tw_sandbox *sb);

#endif
