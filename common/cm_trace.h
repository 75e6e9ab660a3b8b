/* cm_trace: W3C Trace Context (https://www.w3.org/TR/trace-context/), with no
 * I/O: parsing and writing `traceparent`, and new trace and span ids.
 *
 * One invocation is one trace across the three processes: the gateway
 * continues the caller's trace (a valid incoming traceparent) or starts one,
 * and each hop sends on a traceparent whose parent id is its own span, so the
 * agent-worker's span is the gateway's child and a tool call's span the
 * agent-worker's. Log lines carry the trace and span ids (cm_log_set_trace),
 * which is what joins CloudWatch logs to traces. */
#ifndef CM_TRACE_H
#define CM_TRACE_H

#include <stddef.h>
#include <stdint.h>

/* "00-" 32 hex "-" 16 hex "-" 2 hex */
#define CM_TRACEPARENT_LEN 55

struct cm_trace {
    uint8_t trace_id[16];
    uint8_t span_id[8];   /* this hop's span (after cm_trace_child), or the parent's */
    uint8_t parent_id[8]; /* the span it is a child of; zeros for a trace's root */
    uint8_t flags;        /* bit 0: sampled */
};

/* Parses a traceparent header value. Version 00 exactly as the spec writes
 * it; a later version is read by its first four fields (the spec's forward
 * rule); ids of all zeros, upper-case hex or any other shape are refused.
 * 0 or CM_EINVAL. */
int cm_trace_parse(const char *s, struct cm_trace *out);
/* Writes |t| as a version 00 traceparent into |out| (>= 56 bytes). */
void cm_trace_format(const struct cm_trace *t, char *out);
/* A new trace (random ids, sampled). 0 or CM_EIO (no randomness). */
int cm_trace_new(struct cm_trace *out);
/* |parent|'s trace with a new span id whose parent is |parent|'s span
 * (|out| may be |parent|). 0 or CM_EIO. */
int cm_trace_child(const struct cm_trace *parent, struct cm_trace *out);
/* Lower-case hex of the trace id (33 bytes) and the span id (17 bytes). */
void cm_trace_ids(const struct cm_trace *t, char *trace_hex, char *span_hex);

/* The trace an incoming request continues: |incoming| when it parses (this
 * hop becomes a child of it), else a new trace. Then this hop's own span.
 * 0 or CM_EIO. */
int cm_trace_continue(const char *incoming, struct cm_trace *out);

#endif
