#include "tw_sweep.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* /proc/<pid> belongs to the process's effective uid: one stat(2), no file
 * to read for every process on the machine. */
static int owned_by(pid_t pid, uid_t uid)
{
    char path[32];
    struct stat st;

    snprintf(path, sizeof(path), "/proc/%d", (int)pid);
    return stat(path, &st) == 0 && st.st_uid == uid;
}

static int cmdline_has(pid_t pid, const char *mark)
{
    char path[64], buf[4096];
    size_t n, i;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    if (!(f = fopen(path, "r")))
        return 0;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    for (i = 0; i < n; i++)
        buf[i] = buf[i] ? buf[i] : ' ';
    buf[n] = '\0';
    return strstr(buf, mark) != NULL;
}

int tw_sweep_orphans(uid_t uid, const char *mark)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    pid_t self = getpgrp();
    int killed = 0;

    if (!d)
        return 0;
    while ((de = readdir(d))) {
        pid_t pid = (pid_t)strtol(de->d_name, NULL, 10), pgid;

        /* cheapest test first: most processes fail the first */
        if (pid <= 1 || !owned_by(pid, uid) || !cmdline_has(pid, mark) ||
            (pgid = getpgid(pid)) <= 1 || pgid == self || pgid == pid)
            continue;
        /* The group's leader is gone (ESRCH): nothing will ever finish
         * building this sandbox. */
        if (kill(pgid, 0) == 0 || errno != ESRCH)
            continue;
        if (kill(-pgid, SIGKILL) == 0)
            killed++;
    }
    closedir(d);
    return killed;
}
