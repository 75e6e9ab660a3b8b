/* tw_seccomp: the system-call filter every sandboxed tool runs under, built
 * once at start-up with libseccomp and kept as a compiled BPF program in a
 * sealed memfd. The helper (agentcore-tool-exec) loads it last, just before
 * it runs the tool, so the filter only has to allow what tools need.
 *
 * Refused with EPERM: ptrace and reading other processes' memory; mount and
 * the new mount API, pivot_root, chroot; kernel modules, kexec, reboot,
 * swap, clock and host-name changes, quotas, accounting; keyrings; bpf;
 * perf events; userfaultfd; io_uring (its operations bypass seccomp);
 * namespaces (unshare, setns, clone with a CLONE_NEW* flag; clone3 answers
 * ENOSYS so libc falls back to clone, whose flags a filter can see); raw and
 * packet sockets. Any other architecture (32-bit or x32 calls) kills the
 * process. */
#ifndef TW_SECCOMP_H
#define TW_SECCOMP_H

#include <stddef.h>

/* Returns a sealed memfd holding the program, or -1 with |err|. */
int tw_seccomp_build(char *err, size_t errlen);

/* A fresh read-only descriptor of |memfd| at offset 0, for one child (each
 * reader needs its own file offset). -1 on failure. */
int tw_seccomp_reopen(int memfd);

#endif
