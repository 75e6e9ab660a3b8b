#include "tw_sweep.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The uid and process group of |pid| from /proc/<pid>/status and stat. */
static int ids_of(pid_t pid, uid_t *uid, pid_t *pgid)
{
    char path[64], line[256];
    const char *p;
    FILE *f;
    int found = 0;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    if (!(f = fopen(path, "r")))
        return -1;
    while (fgets(line, sizeof(line), f)) {
        if (!strncmp(line, "Uid:", 4)) {
            *uid = (uid_t)strtoul(line + 4, NULL, 10);
            found = 1;
            break;
        }
    }
    fclose(f);
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if (!found || !(f = fopen(path, "r")))
        return -1;
    found = fgets(line, sizeof(line), f) != NULL;
    fclose(f);
    /* pid (comm) state ppid pgrp ...: comm may hold anything, so from the last ')' */
    if (!found || !(p = strrchr(line, ')')) || sscanf(p + 1, " %*c %*d %d", pgid) != 1)
        return -1;
    return 0;
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
        uid_t u;

        if (pid <= 1 || ids_of(pid, &u, &pgid) || u != uid || pgid <= 1 || pgid == self ||
            pgid == pid || !cmdline_has(pid, mark))
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
