#define _GNU_SOURCE
#include "tw_forward.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int open_unix(const char *path)
{
    struct sockaddr_un a;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    memset(&a, 0, sizeof(a));
    a.sun_family = AF_UNIX;
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a))) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Copies both ways until both ends finished; half-closes pass through. */
static void relay(int a, int b)
{
    struct pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
    const int fd[2] = {a, b};
    char buf[65536];
    int open_dirs = 2;

    while (open_dirs > 0 && poll(p, 2, -1) > 0) {
        int i;

        for (i = 0; i < 2; i++) {
            ssize_t n, off = 0, w;

            if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            n = read(p[i].fd, buf, sizeof(buf));
            if (n <= 0) {
                shutdown(fd[1 - i], SHUT_WR);
                p[i].fd = -1; /* poll ignores it from now on */
                open_dirs--;
                continue;
            }
            while (off < n && (w = write(fd[1 - i], buf + off, (size_t)(n - off))) > 0)
                off += w;
            if (off < n)
                return;
        }
    }
}

int tw_forward_start(int port, const char *unix_path, char *err, size_t errlen)
{
    struct sockaddr_in a;
    int one = 1, lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    pid_t pid;

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
        bind(lfd, (struct sockaddr *)&a, sizeof(a)) || listen(lfd, 64)) {
        snprintf(err, errlen, "cannot listen on 127.0.0.1:%d in the sandbox: %s", port,
                 strerror(errno));
        if (lfd >= 0)
            close(lfd);
        return -1;
    }
    pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        close(lfd);
        return -1;
    }
    if (pid > 0) {
        close(lfd);
        return 0;
    }
    signal(SIGCHLD, SIG_IGN); /* the per-connection processes reap themselves */
    for (;;) {
        int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC), u;

        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            _exit(0);
        }
        if (fork() == 0) {
            close(lfd);
            u = open_unix(unix_path);
            if (u >= 0)
                relay(c, u);
            _exit(0);
        }
        close(c);
    }
}
