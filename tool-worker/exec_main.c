/* agentcore-tool-exec: the first program that runs inside a tool's sandbox.
 *
 * bubblewrap builds the namespaces and mounts, then runs this helper, which
 * closes every inherited descriptor, confines itself (tw_confine: rlimits,
 * no_new_privs, Landlock, seccomp) and then either runs the tool's program
 * (exec mode; http_request is agentcore-tool-http run this way) or runs one
 * of the built-in file tools (file_read, file_write, file_list), reading the
 * tool's JSON input on stdin and writing {"status","content"} on stdout, or
 * talks to an MCP server it starts as its child (mcp_list, mcp_call).
 * In a warm sandbox (--job-stdin) those arguments arrive on stdin instead,
 * ahead of the tool's input (tw_job.h).
 * It links nothing but libc and jansson: every tool call loads it, and each
 * shared library costs start-up time.
 *
 * Exit codes: the program's own in exec mode; 0 for a built-in tool (its
 * result says whether it failed); 125 when the sandbox could not be set up
 * (the reason on stderr). No gRPC, no threads: it is a plain filter. */
#define _GNU_SOURCE
#include "tw_confine.h"
#include "tw_fileops.h"
#include "tw_forward.h"
#include "tw_job.h"
#include "tw_mcp.h"
#include "tw_toolio.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SETUP_FAILED 125

static int usage(const char *why)
{
    fprintf(stderr,
            "agentcore-tool-exec: %s\n"
            "usage: agentcore-tool-exec --job-stdin [--ready-fd FD]\n"
            "       agentcore-tool-exec [--cpu S] [--as BYTES] [--fsize BYTES] [--nofile N]\n"
            "       [--nproc N] [--rw DIR]... [--network] [--seccomp-fd FD] [--workspace DIR]\n"
            "       [--egress SOCKET --egress-port PORT]\n"
            "       -- (exec PROGRAM [ARG...] | file_read | file_write | file_list |\n"
            "           mcp_list SERVER [ARG...] | mcp_call TOOL SERVER [ARG...])\n",
            why);
    return 2;
}

static long long num(const char *s, int *bad)
{
    char *end;
    long long v = strtoll(s, &end, 10);

    if (!*s || *end || v < 0)
        *bad = 1;
    return v;
}

/* Every descriptor but 0-2 and |keep| goes: bubblewrap passes on what it
 * was given, and an O_PATH descriptor of a host directory would lead out. */
static void close_inherited(int keep)
{
    int fd, max = (int)sysconf(_SC_OPEN_MAX);

    if (keep < 3) {
        if (close_range(3, ~0U, 0) == 0)
            return;
    } else if ((keep == 3 || close_range(3, (unsigned)keep - 1, 0) == 0) &&
               close_range((unsigned)keep + 1, ~0U, 0) == 0) {
        return;
    }
    if (max < 0 || max > 65536)
        max = 65536;
    for (fd = 3; fd < max; fd++) {
        if (fd != keep)
            close(fd);
    }
}

static int builtin(const char *mode, const char *workspace)
{
    struct tw_fileres fr = {1, NULL};
    char err[256];
    json_t *input = tw_toolio_input(err, sizeof(err));
    int rc = -1, root = -1;

    if (!input)
        return tw_toolio_answer(1, err);
    if ((root = open(workspace, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        rc = 0;
        fr.text = strdup("the workspace is not available");
    } else if (!strcmp(mode, "file_read")) {
        rc = tw_file_read(root, input, &fr);
    } else if (!strcmp(mode, "file_write")) {
        rc = tw_file_write(root, input, &fr);
    } else if (!strcmp(mode, "file_list")) {
        rc = tw_file_list(root, input, &fr);
    }
    if (root >= 0)
        close(root);
    json_decref(input);
    rc = tw_toolio_answer(rc ? 1 : fr.is_error, rc ? "out of memory" : fr.text);
    free(fr.text);
    return rc;
}

/* The MCP modes: the server runs as our child, under the same confinement. */
static int mcp(const char *mode, char **rest)
{
    char err[512], *text = NULL;
    json_t *tools = NULL, *args;
    int is_error = 1, rc;

    if (!strcmp(mode, "mcp_list")) {
        if (tw_mcp_list(rest, &tools, err, sizeof(err)))
            return tw_toolio_answer(1, err) ? SETUP_FAILED : 0;
        text = json_dumps(tools, JSON_COMPACT);
        json_decref(tools);
        rc = tw_toolio_answer(!text, text ? text : "out of memory");
        free(text);
        return rc ? SETUP_FAILED : 0;
    }
    if (!(args = tw_toolio_input(err, sizeof(err))))
        return tw_toolio_answer(1, err) ? SETUP_FAILED : 0;
    if (tw_mcp_call(rest + 1, rest[0], args, &text, &is_error, err, sizeof(err)))
        rc = tw_toolio_answer(1, err);
    else
        rc = tw_toolio_answer(is_error, text);
    free(text);
    json_decref(args);
    return rc ? SETUP_FAILED : 0;
}

static int run(int argc, char **argv)
{
    struct tw_confine c;
    const char *workspace = "/workspace", *mode, *egress = NULL;
    char err[256];
    int i, bad = 0, abi = 0;

    memset(&c, 0, sizeof(c));
    c.seccomp_fd = -1;
    for (i = 1; i < argc && strcmp(argv[i], "--"); i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (!strcmp(o, "--network")) {
            c.network = 1;
            continue;
        }
        if (!v)
            return usage("an option lacks its value");
        i++;
        if (!strcmp(o, "--cpu"))
            c.lim.cpu_s = (long)num(v, &bad);
        else if (!strcmp(o, "--as"))
            c.lim.as_bytes = num(v, &bad);
        else if (!strcmp(o, "--fsize"))
            c.lim.fsize_bytes = num(v, &bad);
        else if (!strcmp(o, "--nofile"))
            c.lim.nofile = (long)num(v, &bad);
        else if (!strcmp(o, "--nproc"))
            c.lim.nproc = (long)num(v, &bad);
        else if (!strcmp(o, "--seccomp-fd"))
            c.seccomp_fd = (int)num(v, &bad);
        else if (!strcmp(o, "--workspace"))
            workspace = v;
        else if (!strcmp(o, "--egress"))
            egress = v;
        else if (!strcmp(o, "--egress-port"))
            c.egress_port = (int)num(v, &bad);
        else if (!strcmp(o, "--rw") && c.n_rw < TW_CONFINE_MAX_RW)
            c.rw[c.n_rw++] = v;
        else
            return usage("unknown option");
        if (bad)
            return usage("bad option value");
    }
    if (i + 1 >= argc)
        return usage("no mode");
    mode = argv[i + 1];
    close_inherited(c.seccomp_fd);
    if (tw_confine_apply(&c, &abi, err, sizeof(err))) {
        fprintf(stderr, "agentcore-tool-exec: sandbox setup failed: %s\n", err);
        return SETUP_FAILED;
    }
    if (c.seccomp_fd >= 0)
        close(c.seccomp_fd);
    if (egress && tw_forward_start(c.egress_port, egress, err, sizeof(err))) {
        fprintf(stderr, "agentcore-tool-exec: sandbox setup failed: %s\n", err);
        return SETUP_FAILED;
    }
    if (!strcmp(mode, "exec")) {
        if (i + 2 >= argc)
            return usage("exec needs a program");
        execvp(argv[i + 2], argv + i + 2);
        fprintf(stderr, "agentcore-tool-exec: cannot run %s: %s\n", argv[i + 2], strerror(errno));
        return errno == ENOENT ? 127 : 126;
    }
    if (!strcmp(mode, "mcp_list") || !strcmp(mode, "mcp_call")) {
        if (i + 2 + !strcmp(mode, "mcp_call") >= argc)
            return usage("the MCP modes need a server command");
        return mcp(mode, argv + i + 2);
    }
    if (strcmp(mode, "file_read") && strcmp(mode, "file_write") && strcmp(mode, "file_list"))
        return usage("unknown mode");
    return builtin(mode, workspace) ? SETUP_FAILED : 0;
}

/* Reads exactly |len| bytes of fd 0: what follows is the tool's input. */
static int read_exactly(char *buf, size_t len)
{
    size_t got = 0;

    while (got < len) {
        ssize_t n = read(0, buf + got, len - got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return 0;
}

/* A warm sandbox (tw_job.h): wait for the job on stdin, then run it as if
 * it had come as arguments. The environment bubblewrap set (the base one)
 * gets the tool's variables on top. A sandbox that is discarded unused sees
 * its stdin end or is killed: it leaves without a word. */
static int run_job(const char *self, int ready_fd)
{
    unsigned char prefix[4];
    char *buf, **args, **env, **argv;
    size_t len, n, i;

    /* Running means bubblewrap is done building: say so, then wait. */
    if (ready_fd > 2) {
        if (write(ready_fd, "r", 1) != 1) {
            fprintf(stderr, "agentcore-tool-exec: sandbox setup failed: ready-fd: %s\n",
                    strerror(errno));
            return SETUP_FAILED;
        }
        close(ready_fd);
    }
    if (read_exactly((char *)prefix, sizeof(prefix)))
        return 0;
    len = tw_job_length(prefix);
    if (len > TW_JOB_MAX || !(buf = malloc(len ? len : 1)) || read_exactly(buf, len) ||
        tw_job_decode(buf, len, &args, &env)) {
        fprintf(stderr, "agentcore-tool-exec: sandbox setup failed: a malformed job\n");
        return SETUP_FAILED;
    }
    for (n = 0; args[n]; n++)
        ;
    if (!(argv = calloc(n + 2, sizeof(*argv)))) {
        fprintf(stderr, "agentcore-tool-exec: sandbox setup failed: out of memory\n");
        return SETUP_FAILED;
    }
    argv[0] = (char *)self;
    memcpy(argv + 1, args, n * sizeof(*argv));
    for (i = 0; env[i]; i++)
        putenv(env[i]); /* |buf| lives until exec or exit */
    return run((int)n + 1, argv);
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "--job-stdin")) {
        int bad = 0, fd = -1;

        if (argc == 4 && !strcmp(argv[2], "--ready-fd"))
            fd = (int)num(argv[3], &bad);
        else if (argc != 2)
            bad = 1;
        return bad ? usage("--job-stdin takes only --ready-fd FD") : run_job(argv[0], fd);
    }
    return run(argc, argv);
}
