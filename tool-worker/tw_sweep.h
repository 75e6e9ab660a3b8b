/* tw_sweep: sandboxes left half-built by a tool-worker that died.
 *
 * bubblewrap's outer process clones the sandbox, tells us the child's PID on
 * the info pipe, and only then lets the child go on (an eventfd). If the
 * worker dies in between, that write meets a closed pipe, SIGPIPE ends the
 * outer process, and the child waits on the eventfd for ever: an orphan
 * that --die-with-parent cannot reach (it arms itself later). A restarted
 * worker finds such processes by three marks together: the tools' uid, the
 * helper's path inside the sandbox on the command line, and a process group
 * whose leader (the outer bubblewrap, which made the group) is gone, which a
 * live sandbox never has. The whole group is killed. Start-up only: this
 * reads /proc once. */
#ifndef TW_SWEEP_H
#define TW_SWEEP_H

#include <sys/types.h>

/* Kills the process groups of orphans of |uid| whose command line holds
 * |mark|. Returns how many groups were killed (0 when /proc is unreadable). */
int tw_sweep_orphans(uid_t uid, const char *mark);

#endif
