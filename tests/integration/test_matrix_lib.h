/* test_matrix_lib.h - helpers shared by the matrix and process-tree integration tests: nginx in a
 * temp prefix, process ids of spans, canonical echo bodies, and parent-accuracy counting.
 *
 * Built into each of test_matrix_pairs, test_matrix_eventloop and test_proctree (not a library of
 * its own). Nothing here is thread-safe; like itest, it is meant for one Criterion test process at
 * a time.
 */
#ifndef LDTRACE_TEST_MATRIX_LIB_H
#define LDTRACE_TEST_MATRIX_LIB_H

#include "itest.h"

/* Failed expectations so far in this test process (mx_expect): print the spans once at the end. */
extern int mx_failures;

/* cr_expect that also counts the failure in mx_failures; the message is required. */
#define mx_expect(cond, ...)                                                                       \
    do {                                                                                           \
        int mx_ok_ = !!(cond);                                                                     \
        mx_failures += !mx_ok_;                                                                    \
        cr_expect(mx_ok_, __VA_ARGS__);                                                            \
    } while (0)

/* Two ids are equal (both printed, with the request path, when not). */
#define mx_expect_id(path, what, got, want)                                                        \
    mx_expect(strcmp((got), (want)) == 0, "%s: %s: %s, want %s", (path), (what), (got), (want))

#define MX_NODE "/usr/bin/node"
#define MX_WGET "/usr/bin/wget"
#define MX_NGINX "/usr/sbin/nginx"

/* 1 in a sanitizer build (the children get the sanitizer runtime preloaded before the shim). */
int mx_asan(void);

/* Remove a directory tree (nginx leaves *_temp directories behind). */
void mx_rmrf(const char *dir);

/* nginx as a reverse proxy (master + 1 worker, non-daemon, access_log off, user root, every temp
 * path and the error log in its own temp directory) listening on 127.0.0.1:port in front of
 * 127.0.0.1:upstream through an upstream block with keepalive 8, HTTP/1.1 and an empty Connection
 * header, so upstream connections are reused; /static/ is served from prefix/static with sendfile.
 * Returns the master's pid once the port accepts, or -errno. */
struct mx_nginx {
    char prefix[ITEST_PATH_MAX];
    pid_t pid;
};
pid_t mx_nginx_start(struct mx_nginx *n, const struct itest_env *e, int port, int upstream);

/* mx_nginx_start with extra directives (may be NULL) added to the proxying location. */
pid_t mx_nginx_start_with(struct mx_nginx *n, const struct itest_env *e, int port, int upstream,
                          const char *extra);
void mx_nginx_stop(struct mx_nginx *n);

/* The process.pid resource attribute of every span in the OTLP JSON file path: an object mapping
 * span id (lower-case hex) -> pid. Empty when the file is missing. */
json_t *mx_span_pids(const char *path);

/* The pid of span s in such a map, or -1. */
long mx_pid(json_t *pids, const struct itest_span *s);

/* Number of distinct pids among the spans of service (NULL: all spans). */
size_t mx_distinct_pids(const struct itest_spans *sp, json_t *pids, const char *service);

/* An echo server's answer (one JSON object per line: backend.py or node/matrix_server.js) with what
 * may differ between a plain and a traced run taken out: client_port and the traceparent/tracestate
 * header lines. A malloc'd string of the canonical lines, or NULL if a line is not JSON. */
char *mx_canonical(const char *body);

/* Per line of such an answer, the number of header lines called name: the minimum and the maximum
 * over the lines (both 0 for no line). Returns the number of lines. */
int mx_header_counts(const char *body, const char *name, int *min, int *max);

/* The unique span of kind and service whose url.path is path, or NULL (0 or more than one). */
const struct itest_span *mx_one(const struct itest_spans *sp, int kind, const char *service,
                                const char *path);

/* How well a proxy parented its outbound CLIENT spans under conc_client load: for every request
 * /prefix/c/i (c < nconn, i < nreq) the proxy's SERVER span and CLIENT span with that url.path are
 * looked up. right: CLIENT in the expected trace with parent = that SERVER span; wrong_trace: a
 * CLIENT (or the upstream's SERVER span for that path) in another trace; missing: no such span. */
struct mx_accuracy {
    int total, right, wrong_trace, missing;
};
void mx_accuracy(const struct itest_spans *sp, const char *proxy, const char *upstream,
                 const char *prefix, int nconn, int nreq, struct mx_accuracy *a);

/* conc_client's trace id for request (c, i), 33 bytes with the NUL. */
void mx_conc_trace(char *out, unsigned c, unsigned i);

#endif
