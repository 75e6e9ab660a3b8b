#define _GNU_SOURCE /* O_PATH, close_range, vasprintf */
#include "tw_confine.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/landlock.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int set_limit(int res, unsigned long long v)
{
    struct rlimit rl = {(rlim_t)v, (rlim_t)v};

    return v ? setrlimit(res, &rl) : 0;
}

/* Soft at the limit, hard one second later: the tool gets SIGXCPU first,
 * which says why it died (with soft == hard the kernel sends SIGKILL). */
static int cpu_limit(long s)
{
    struct rlimit rl = {(rlim_t)s, (rlim_t)s + 1};

    return s ? setrlimit(RLIMIT_CPU, &rl) : 0;
}

static int no_core(void)
{
    struct rlimit rl = {0, 0};

    return setrlimit(RLIMIT_CORE, &rl);
}

int tw_confine_landlock_abi(void)
{
#ifdef SYS_landlock_create_ruleset
    long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);

    return abi > 0 ? (int)abi : 0;
#else
    return 0;
#endif
}

/* Rights a ruleset can name, by ABI (later ABIs only add rights). */
static uint64_t fs_rights(int abi)
{
    uint64_t r =
        LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_READ_FILE |
        LANDLOCK_ACCESS_FS_READ_DIR | LANDLOCK_ACCESS_FS_REMOVE_DIR |
        LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_MAKE_CHAR |
        LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_MAKE_SOCK |
        LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK | LANDLOCK_ACCESS_FS_MAKE_SYM;

    if (abi >= 2)
        r |= 1ULL << 13; /* REFER */
    if (abi >= 3)
        r |= 1ULL << 14; /* TRUNCATE */
    if (abi >= 5)
        r |= 1ULL << 15; /* IOCTL_DEV */
    return r;
}

#define RO_RIGHTS                                                                                  \
    (LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR)

/* The Landlock structures of newer ABIs, spelled out so that older kernel
 * headers still build this file. */
struct ll_ruleset_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net;
    uint64_t scoped;
};

struct ll_net_port_attr {
    uint64_t allowed_access;
    uint64_t port;
};

static int add_path(int ruleset, const char *path, uint64_t rights)
{
    struct landlock_path_beneath_attr pb;
    int fd = open(path, O_PATH | O_CLOEXEC), rc;

    if (fd < 0)
        return errno == ENOENT ? 0 : -1; /* an absent path needs no rule */
    pb.allowed_access = rights;
    pb.parent_fd = fd;
    rc = (int)syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &pb, 0);
    close(fd);
    return rc;
}

static int apply_landlock(const struct tw_confine *c, int abi, char *err, size_t errlen)
{
    struct ll_ruleset_attr attr = {0, 0, 0};
    size_t attr_size = sizeof(uint64_t);
    uint64_t all = fs_rights(abi), dev;
    int rs, i, rc = -1;

    attr.handled_access_fs = all;
    if (abi >= 4 && !c->network) {
        attr.handled_access_net = 3; /* BIND_TCP | CONNECT_TCP: none allowed */
        attr_size = 2 * sizeof(uint64_t);
    }
    if (abi >= 6) {
        attr.scoped = 3; /* abstract UNIX sockets and signals stay inside the sandbox */
        attr_size = 3 * sizeof(uint64_t);
    }
    rs = (int)syscall(SYS_landlock_create_ruleset, &attr, attr_size, 0);
    if (rs < 0)
        return fail(err, errlen, "landlock_create_ruleset: %s", strerror(errno));
    dev = RO_RIGHTS | LANDLOCK_ACCESS_FS_WRITE_FILE | (abi >= 3 ? 1ULL << 14 : 0) |
          (abi >= 5 ? 1ULL << 15 : 0);
    if (add_path(rs, "/", RO_RIGHTS) || add_path(rs, "/dev", dev)) {
        fail(err, errlen, "landlock rule: %s", strerror(errno));
        goto out;
    }
    for (i = 0; i < c->n_rw; i++) {
        if (add_path(rs, c->rw[i], all)) {
            fail(err, errlen, "landlock rule for %s: %s", c->rw[i], strerror(errno));
            goto out;
        }
    }
    if (abi >= 4 && !c->network && c->egress_port) {
        struct ll_net_port_attr np = {3, (uint64_t)c->egress_port}; /* bind + connect */

        if (syscall(SYS_landlock_add_rule, rs, 2 /* LANDLOCK_RULE_NET_PORT */, &np, 0)) {
            fail(err, errlen, "landlock port rule: %s", strerror(errno));
            goto out;
        }
    }
    if (syscall(SYS_landlock_restrict_self, rs, 0)) {
        fail(err, errlen, "landlock_restrict_self: %s", strerror(errno));
        goto out;
    }
    rc = 0;
out:
    close(rs);
    return rc;
}

/* Reads the BPF program bubblewrap-style: an array of struct sock_filter. */
static int apply_seccomp(int fd, char *err, size_t errlen)
{
    static struct sock_filter prog[4096];
    struct sock_fprog fp;
    size_t got = 0;
    ssize_t n;

    while ((n = read(fd, (char *)prog + got, sizeof(prog) - got)) > 0)
        got += (size_t)n;
    if (n < 0 || got == 0 || got % sizeof(prog[0]) || got == sizeof(prog))
        return fail(err, errlen, "cannot read the seccomp filter (%zu bytes)", got);
    fp.len = (unsigned short)(got / sizeof(prog[0]));
    fp.filter = prog;
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fp, 0, 0))
        return fail(err, errlen, "cannot load the seccomp filter: %s", strerror(errno));
    return 0;
}

int tw_confine_apply(const struct tw_confine *c, int *landlock_abi, char *err, size_t errlen)
{
    const struct tw_limits *l = &c->lim;
    int abi;

    if (cpu_limit(l->cpu_s) || set_limit(RLIMIT_AS, (unsigned long long)l->as_bytes) ||
        set_limit(RLIMIT_FSIZE, (unsigned long long)l->fsize_bytes) ||
        set_limit(RLIMIT_NOFILE, (unsigned long long)l->nofile) ||
        set_limit(RLIMIT_NPROC, (unsigned long long)l->nproc) || no_core())
        return fail(err, errlen, "setrlimit: %s", strerror(errno));
    /* A write past RLIMIT_FSIZE then fails with EFBIG instead of killing. */
    signal(SIGXFSZ, SIG_IGN);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        return fail(err, errlen, "no_new_privs: %s", strerror(errno));
    abi = tw_confine_landlock_abi();
    if (landlock_abi)
        *landlock_abi = abi;
    if (abi > 0 && apply_landlock(c, abi, err, errlen))
        return -1;
    if (c->seccomp_fd >= 0 && apply_seccomp(c->seccomp_fd, err, errlen))
        return -1;
    return 0;
}
