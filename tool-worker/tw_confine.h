/* tw_confine: what a sandboxed tool process does to itself before it runs the
 * tool, inside bubblewrap's namespaces (or alone, when the kernel refuses
 * namespaces and configuration allowed running without them).
 *
 * Order matters and is fixed by tw_confine_apply(): resource limits, then
 * no_new_privs, then Landlock (it refuses mount changes, so it comes after
 * bubblewrap built the mounts), then the seccomp filter (last, so the
 * Landlock and rlimit syscalls need not be allowed by it). Used only by the
 * agentcore-tool-exec helper; never by a process that runs gRPC. */
#ifndef TW_CONFINE_H
#define TW_CONFINE_H

#include <stddef.h>

/* Limits of one tool call. 0 means "leave as inherited". */
struct tw_limits {
    long cpu_s;            /* RLIMIT_CPU: SIGXCPU, then SIGKILL */
    long long as_bytes;    /* RLIMIT_AS: allocations fail beyond it */
    long long fsize_bytes; /* RLIMIT_FSIZE: writes fail (SIGXFSZ ignored) */
    long nofile;           /* RLIMIT_NOFILE */
    long nproc;            /* RLIMIT_NPROC, counted in the call's own user namespace */
    int timeout_ms;        /* wall clock, enforced by the tool-worker */
    size_t output_bytes;   /* stdout and stderr caps, enforced by the tool-worker */
};

#define TW_CONFINE_MAX_RW 8

struct tw_confine {
    struct tw_limits lim;
    const char *rw[TW_CONFINE_MAX_RW]; /* directories that stay writable */
    int n_rw;
    int network;     /* 1: TCP connect/bind stay allowed (Landlock) */
    int egress_port; /* else this one port stays allowed for both (the egress relay) */
    int seccomp_fd;  /* a compiled BPF program (struct sock_filter[]), -1: none */
};

/* Applies everything in order. Returns 0, or -1 with a reason in |err|.
 * |landlock_abi| receives the kernel's Landlock ABI (0: none; then the
 * Landlock step is skipped, which tw_sandbox reports at start-up). */
int tw_confine_apply(const struct tw_confine *c, int *landlock_abi, char *err, size_t errlen);

/* The kernel's Landlock ABI version, 0 when unavailable. */
int tw_confine_landlock_abi(void);

#endif
