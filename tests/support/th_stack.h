/* th_stack: a runtime on loopback for end-to-end tests: an emulator, a
 * tool-worker, and stacks of agent-worker + gateway pointed at them. */
#ifndef TH_STACK_H
#define TH_STACK_H

#include "th_http.h"
#include "th_proc.h"

#define TH_READY_MS 30000
#define TH_EMU_AKID "AKIDEMULATOR0000000"
#define TH_EMU_SECRET "emulator-secret-key-e2e"
#define TH_EMU_BOOT_AKID "AKIDBOOTSTRAP000000"
#define TH_EMU_BOOT_SECRET "emulator-bootstrap-secret-e2e"

struct th_stack {
    struct th_proc agent, gw;
    char url[64];
};

/* Starts the emulator with the test key pairs plus |env| (NULL-terminated). */
int th_emulator_start(struct th_proc *p, const char *name, const char *const *env);
/* Starts a tool-worker on an ephemeral port. */
int th_tool_start(struct th_proc *p, const char *name);
/* Starts agent-worker "<name>-agent-worker" (pointed at |emu| and |tool|, with
 * |env| first so it overrides the defaults) and its gateway. No credentials
 * are given by default, and the metadata service is disabled unless |env|
 * enables it: tests never reach beyond loopback. */
int th_stack_start(struct th_stack *s, const char *name, const struct th_proc *emu,
                   const struct th_proc *tool, const char *const *env);
/* The same, with settings for the gateway too. */
int th_stack_start_gw(struct th_stack *s, const char *name, const struct th_proc *emu,
                      const struct th_proc *tool, const char *const *env,
                      const char *const *gw_env);
/* A gateway (on an ephemeral port) in front of two agent-workers, at
 * "<host>:<a>,<host>:<b>" (session affinity spreads sessions over both). */
int th_front_start(struct th_proc *gw, const char *name, const char *host, int a, int b);
/* SIGTERM; returns 0 when the process exited 0 (or was already stopped),
 * else prints why and returns 1. */
int th_stop(struct th_proc *p);
int th_stack_stop(struct th_stack *s);

/* POSTs |body| to the stack's /invocations, with the session header when
 * |session| is non-NULL. Returns th_http's result. */
int th_invoke(const struct th_stack *s, const char *body, const char *session, struct th_resp *r);
/* A counter from the emulator's /_emu/stats, or -1. */
long long th_emu_stat(const struct th_proc *emu, const char *key);

#endif
