/* cli.h - private interface of the ldtrace CLI: the OTLP JSON loader, the views and the launcher.
 *
 * Rules for everything in src/cli: this is ordinary user-space code, so it allocates and uses stdio
 * freely; functions return 0 or a positive count on success and a negative errno on failure, and
 * only the ldt__*_main entry points print error messages (one line, naming the operation and the
 * object). Everything that draws writes to a caller-supplied FILE, so the unit tests can render
 * into memory and compare with golden files byte for byte.
 */
#ifndef LDTRACE_CLI_H
#define LDTRACE_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- the loaded spans (trace.c) ---- */

/* OTLP Span.SpanKind */
enum ldt__kind {
    LDT__KIND_UNSPECIFIED = 0,
    LDT__KIND_INTERNAL = 1,
    LDT__KIND_SERVER = 2,
    LDT__KIND_CLIENT = 3,
    LDT__KIND_PRODUCER = 4,
    LDT__KIND_CONSUMER = 5,
};

struct json_t; /* jansson's node type */

/* One span as read from the file. Strings are owned by the span (NULL when absent) and have had
 * control characters replaced, so they are safe to print on a terminal. */
struct ldt__span {
    char trace_id[33]; /* lower-case hex, NUL-terminated */
    char span_id[17];
    char parent_id[17]; /* empty: a root span */
    char *service;      /* resource attribute service.name ("unknown_service" when missing) */
    char *name;
    char *method;     /* http.request.method */
    char *path;       /* url.path */
    char *peer;       /* server.address[:server.port] on client spans */
    char *exception;  /* "type: message" (or the stack's first line) of the first exception event */
    char *stacktrace; /* exception.stacktrace of that event */
    int kind;         /* enum ldt__kind */
    int status;       /* 0 unset, 1 ok, 2 error */
    int http_code;    /* http.response.status_code, 0 when absent */
    uint64_t start_ns; /* wall clock, ns since the epoch */
    uint64_t end_ns;   /* >= start_ns (clamped when the file says otherwise) */
    /* Everything else, for the HTML page's details (owned references, NULL when absent):
     * attrs is [[key, text], ...] with every span attribute as text (arrays and maps as JSON);
     * events is [{"name": s, "t_ns": offset from start_ns, "attrs": [[key, text], ...]}, ...]. */
    struct json_t *attrs, *events;
};

/* Everything loaded from one or more files. */
struct ldt__spans {
    struct ldt__span *v;
    size_t n, cap;
    size_t lines;     /* non-empty lines read */
    size_t bad_lines; /* lines that were not an ExportTraceServiceRequest (skipped) */
    size_t bad_spans; /* spans skipped: missing or malformed ids, times out of range */
};

/* Parse one line (one ExportTraceServiceRequest) and append its spans. Returns the number of spans
 * added (>= 0), or -EINVAL when the line is not JSON of the expected shape (the caller counts it);
 * -ENOMEM when memory ran out. Spans with unusable ids or times are skipped and counted in
 * bad_spans. */
int ldt__spans_parse_line(struct ldt__spans *s, const char *line, size_t len);

/* Read an OTLP JSON lines file ("-" reads stdin) and append its spans. Malformed lines are skipped
 * and counted. Returns the number of spans added, or a negative errno when the file cannot be read.
 */
int ldt__spans_load_file(struct ldt__spans *s, const char *path);

/* Read OTLP JSON lines from an open stream (the caller keeps ownership of f). */
int ldt__spans_load_stream(struct ldt__spans *s, FILE *f);

/* True when the span is an error: status ERROR, or an exception event. */
int ldt__span_is_error(const struct ldt__span *sp);

/* Free every span and reset s to empty. */
void ldt__spans_free(struct ldt__spans *s);

/* ---- traces (trace.c) ---- */

/* One trace: the spans that share a trace id, as indices into ldt__spans.v sorted by start time. */
struct ldt__trace {
    const char *trace_id; /* points into the first span */
    size_t *idx;
    size_t *by_id; /* the same indices sorted by span id (for ldt__trace_lookup) */
    size_t n;
    size_t root; /* index (into ldt__spans.v) of the earliest span without a parent in the trace */
    size_t errors;
    uint64_t start_ns, end_ns;
};

struct ldt__traces {
    struct ldt__trace *v;
    size_t n;
};

/* Group the spans by trace id; traces sorted newest first (by start time, then trace id). Spans
 * that repeat a span id already seen in their trace are dropped from the grouping. Returns 0 or
 * -ENOMEM. */
int ldt__traces_build(const struct ldt__spans *s, struct ldt__traces *out);

/* Find a trace by id or unique id prefix (case-insensitive). Returns its position in t->v, -ENOENT
 * when none matches, -EEXIST when the prefix matches more than one trace, -EINVAL for an empty id.
 */
/* The index (into ldt__spans.v) of the span with id `id` in trace t, or SIZE_MAX. O(log n). */
size_t ldt__trace_lookup(const struct ldt__spans *s, const struct ldt__trace *t, const char *id);

int ldt__traces_find(const struct ldt__traces *t, const char *id);

void ldt__traces_free(struct ldt__traces *t);

/* ---- drawing (cmd_view.c) ---- */

struct ldt__view_opts {
    int width;   /* terminal columns (>= 20 is honoured; smaller is raised to 20) */
    int color;   /* emit ANSI colours */
    int unicode; /* box-drawing characters and block bars; else plain ASCII */
};

/* Draw the list of traces (newest first), one row each, to out. Returns 0 or a negative errno. */
int ldt__view_list(FILE *out, const struct ldt__spans *s, const struct ldt__traces *t,
                   const struct ldt__view_opts *o);

/* Draw trace t->v[which] as a waterfall. Returns 0 or a negative errno. */
int ldt__view_trace(FILE *out, const struct ldt__spans *s, const struct ldt__trace *t,
                    const struct ldt__view_opts *o);

/* Number of terminal columns a UTF-8 string occupies (one per code point; no wide characters). */
size_t ldt__text_cols(const char *str);

/* ---- analysis (cmd_analyze.c) ---- */

/* Counts and latency of one service (its entry spans: SERVER spans and spans without a parent in
 * the file) or one edge (CLIENT spans from -> to, `to` being the SERVER child's service, else the
 * peer). */
struct ldt__stat {
    char *from, *to; /* an edge; a service has from == NULL and its name in `to` */
    size_t count, errors;
    uint64_t p50, p90, p99; /* nearest-rank percentiles of the durations, ns */
    uint64_t self_ns;       /* services: time in their own spans not covered by children */
    uint64_t crit_ns;       /* services: time on the critical path */
    uint64_t *durs;
    size_t ndurs, cap;
};

/* A retry storm: CLIENT spans under one parent to the same peer and operation. */
struct ldt__retry {
    const char *trace_id;
    const struct ldt__span *parent;
    char *target;            /* "payment POST /pay" (the callee's service, else the peer) */
    size_t attempts, failed; /* amplification factor here = attempts */
    size_t amplification;    /* end to end: attempts times the retries of the callers above */
};

/* Where a failing trace's error started (the deepest error span with no failing child) and where it
 * surfaced (the root). */
struct ldt__origin {
    const char *trace_id;
    const struct ldt__span *origin, *surfaced;
};

struct ldt__analysis {
    size_t traces, spans;
    struct ldt__stat *svc, *edge;
    size_t nsvc, nedge;
    struct ldt__retry *retry;
    size_t nretry;
    struct ldt__origin *origin;
    size_t norigin;
    uint64_t crit_total;           /* sum over traces of the root's duration */
    const struct ldt__span **path; /* single-trace analysis: the spans on the critical path, in */
    uint64_t *path_ns;             /* start order, and the time each one holds the path */
    size_t npath;
};

/* Analyse trace t->v[which], or every trace when which < 0. Returns 0 or -ENOMEM. */
int ldt__analyze(const struct ldt__spans *s, const struct ldt__traces *t, int which,
                 struct ldt__analysis *a);

/* Print in format "text", "json", "dot" or "mermaid". Returns 0, -EINVAL (format), -EIO. */
int ldt__analysis_print(FILE *out, const struct ldt__analysis *a, const char *format);

void ldt__analysis_free(struct ldt__analysis *a);

/* ---- HTML page (cmd_html.c) ---- */

/* Write a self-contained HTML page with every trace (newest first) and trace `initial` shown first.
 * Span data is embedded as JSON with '<', '>' and '&' escaped. Returns 0, -ENOMEM or -EIO. */
int ldt__html_write(FILE *out, const struct ldt__spans *s, const struct ldt__traces *t,
                    int initial);

/* ---- launcher (cmd_run.c) ---- */

/* Build the LD_PRELOAD value: shim first, then the existing value (if any and non-empty), with the
 * shim removed from the existing list when it was already there. Sanitizer runtimes (libasan,
 * libtsan, libclang_rt.*) stay in front of the shim, since they must be loaded first. Returns the
 * length written, or -ENAMETOOLONG when out[cap] is too small. */
int ldt__run_preload_value(const char *shim, const char *existing, char *out, size_t cap);

/* Where the other deliverables live, given the absolute path of the ldtrace executable: in a build
 * tree (<builddir>/src/cli/ldtrace) the siblings <builddir>/src/shim/libldtrace.so and
 * <builddir>/src/sidecar/ldtraced; after meson install (<prefix>/bin/ldtrace) <prefix>/<libdir>/
 * libldtrace.so (libdir as configured, then lib/<multiarch>, lib64, lib) and <prefix>/bin/ldtraced.
 * Only paths that exist are returned. Returns 0, -ENOENT when not found, -ENAMETOOLONG. */
int ldt__find_shim(const char *exe, char *out, size_t cap);
int ldt__find_sidecar(const char *exe, char *out, size_t cap);

/* The exit status ldtrace run reports for a waitpid() status: the code, or 128 + signal number. */
int ldt__run_exit_code(int wstatus);

/* ---- demo (cmd_demo.c) ---- */

/* The path of root/scripts/demo into out[cap] when it is an executable regular file. Returns 0,
 * -ENOENT (no root, no such file, or not executable), -ENAMETOOLONG, or another stat() errno. */
int ldt__demo_script(const char *root, char *out, size_t cap);

/* ---- commands (argv[0] is the command name: "run", "stop", "view") ---- */

int ldt__run_main(int argc, char **argv);
int ldt__stop_main(int argc, char **argv);
int ldt__view_main(int argc, char **argv);
int ldt__analyze_main(int argc, char **argv);
int ldt__html_main(int argc, char **argv);
int ldt__demo_main(int argc, char **argv); /* execs scripts/demo; returns only on failure */

#endif
