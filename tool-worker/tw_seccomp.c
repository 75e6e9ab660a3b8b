#define _GNU_SOURCE /* O_PATH, close_range, vasprintf */
#include "tw_seccomp.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *const denied[] = {
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "kcmp",
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "quotactl_fd",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "sethostname",
    "setdomainname",
    "syslog",
    "iopl",
    "ioperm",
    "vhangup",
    "lookup_dcookie",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "fanotify_init",
    "open_by_handle_at",
    "name_to_handle_at",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "unshare",
    "setns",
};

static const unsigned long long ns_flags[] = {
    CLONE_NEWNS,  CLONE_NEWUTS, CLONE_NEWIPC,    CLONE_NEWUSER,
    CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP, 0x00000080ULL /* CLONE_NEWTIME */,
};

/* EPERM for |nr| when argument |arg| compares true. (Spelled out rather
 * than with libseccomp's SCMP_A* macros, which leave a field to default.) */
static int deny_if(scmp_filter_ctx ctx, int nr, unsigned arg, enum scmp_compare op, scmp_datum_t a,
                   scmp_datum_t b)
{
    struct scmp_arg_cmp cmp = {arg, op, a, b};

    return seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(EPERM), nr, 1, &cmp);
}

int tw_seccomp_build(char *err, size_t errlen)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    size_t i;
    int fd = -1, rc, nr;

    if (!ctx) {
        snprintf(err, errlen, "seccomp_init failed");
        return -1;
    }
    rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
    for (i = 0; !rc && i < sizeof(denied) / sizeof(denied[0]); i++) {
        nr = seccomp_syscall_resolve_name(denied[i]);
        if (nr == __NR_SCMP_ERROR)
            continue; /* not a system call on this architecture */
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
    }
    nr = seccomp_syscall_resolve_name("clone3");
    if (!rc && nr != __NR_SCMP_ERROR)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), nr, 0);
    for (i = 0; !rc && i < sizeof(ns_flags) / sizeof(ns_flags[0]); i++)
        rc = deny_if(ctx, SCMP_SYS(clone), 0, SCMP_CMP_MASKED_EQ, ns_flags[i], ns_flags[i]);
    if (!rc)
        rc = deny_if(ctx, SCMP_SYS(socket), 0, SCMP_CMP_EQ, AF_PACKET, 0);
    if (!rc)
        rc = deny_if(ctx, SCMP_SYS(socket), 1, SCMP_CMP_MASKED_EQ, 0xf, SOCK_RAW);
    if (!rc)
        rc = deny_if(ctx, SCMP_SYS(socket), 1, SCMP_CMP_MASKED_EQ, 0xf, SOCK_PACKET);
    if (rc) {
        snprintf(err, errlen, "cannot build the seccomp filter: %s", strerror(-rc));
        goto out;
    }
    fd = memfd_create("agentcore-seccomp", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0 || (rc = seccomp_export_bpf(ctx, fd)) != 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL)) {
        snprintf(err, errlen, "cannot export the seccomp filter: %s", strerror(rc ? -rc : errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
out:
    seccomp_release(ctx);
    return fd;
}

int tw_seccomp_reopen(int memfd)
{
    char path[64];

    snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
    return open(path, O_RDONLY | O_CLOEXEC);
}
