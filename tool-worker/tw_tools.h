/* tw_tools: the tool-worker's tool table and its single execution entry point.
 *
 * tw_execute() is the one function through which every tool runs, so a later
 * sandbox (seccomp, a separate process) replaces it in one place. Inputs are
 * the model's JSON; results are text for the model plus an error flag. Tool
 * failures (bad input, division by zero) are results with is_error set, not
 * return codes: the model sees them and can correct itself. */
#ifndef TW_TOOLS_H
#define TW_TOOLS_H

#include <stddef.h>

#define TW_MAX_INPUT_BYTES (1024 * 1024)

struct tw_tool {
    const char *name;
    const char *description;
    const char *input_schema_json;
};

/* The registered tools (static storage), and their count in |*n|. */
const struct tw_tool *tw_tools_list(size_t *n);

struct tw_result {
    char *text; /* malloc'd, never NULL after a 0 return; free with tw_result_free */
    int is_error;
    int cancelled; /* the tool stopped because the caller went away */
};

/* Asked by long-running tools; 1 means stop now. */
struct tw_cancel {
    int (*cancelled)(void *ud);
    void *ud;
};

/* Adds the test tools (slow: waits {"ms": N} unless cancelled; background:
 * starts a background task of {"ms": N} and returns at once). Off unless
 * TOOL_WORKER_TEST_TOOLS is set: they exist for the tests. */
void tw_tools_enable_test_tools(int on);

/* Background tasks running now (what makes /ping say HealthyBusy). */
int tw_tools_background_tasks(void);
/* |hook| hears the new count after every change, on the changing thread (set
 * it once, before tools run). */
void tw_tools_on_background(void (*hook)(int count, void *ud), void *ud);

/* Runs tool |name| on |input_json|. Returns 0 with |out| filled (which may be an
 * error result for the model), or CM_ENOENT for an unknown tool / CM_ENOMEM,
 * in which case |out->text| still explains and must be freed. */
int tw_execute(const char *name, const char *input_json, const struct tw_cancel *cancel,
               struct tw_result *out);
void tw_result_free(struct tw_result *r);

#endif
