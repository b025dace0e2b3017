/* itest.h - integration test helpers: run real programs (traced or not), drain, read the spans.
 *
 * Usage (inside a Criterion test; link with itest_dep):
 *
 *     char dir[ITEST_PATH_MAX];
 *     itest_mkdtemp(dir);                                 segment directory for this test
 *     int port = itest_free_port();
 *     struct itest_env env;
 *     itest_env_init(&env);                     our environment minus LD_PRELOAD, LDTRACE_*, OTEL_*
 *     cr_assert_eq(itest_env_trace(&env, dir, "backend"), 0);   LD_PRELOAD, LDTRACE_DIR, service
 *     char port_s[16];  snprintf(port_s, sizeof(port_s), "%d", port);
 *     char *argv[] = {ITEST_PYTHON, itest_src("tests/integration/py/backend.py"), port_s, NULL};
 *     pid_t srv = itest_start_server(&env, argv, port, NULL);   spawn + wait for the port
 *     ... run a client: itest_run(&env, client_argv, out_file, 10000) ...
 *     itest_settle(250);                        let the server commit the span it just ended
 *     itest_stop(srv);                          SIGTERM, SIGKILL after 2 s; reaps
 *     struct itest_spans *sp = itest_drain_load(dir);   ldtraced --dir DIR --once, then parse
 *     const struct itest_span *s = itest_find(sp, ITEST_SERVER, "backend", "url.path", "/x");
 *     itest_spans_free(sp); itest_env_free(&env); itest_rmtree(dir);
 *
 * The shim is only ever preloaded into the children (never into the test binary: Criterion talks to
 * its workers over sockets). Paths come from LDT_BUILD_ROOT and LDT_SOURCE_ROOT, set by meson test.
 * Children get PR_SET_PDEATHSIG(SIGKILL): a test killed by its timeout leaves no server behind.
 * Nothing here is thread-safe; itest_src/itest_build return one of 8 rotating static buffers.
 */
#ifndef LDTRACE_ITEST_H
#define LDTRACE_ITEST_H

#include <jansson.h>
#include <stddef.h>
#include <sys/types.h>

#define ITEST_PATH_MAX 512
#define ITEST_PYTHON "/usr/bin/python3"
#define ITEST_CURL "/usr/bin/curl"

/* OTLP Span.SpanKind */
enum itest_kind {
    ITEST_INTERNAL = 1,
    ITEST_SERVER = 2,
    ITEST_CLIENT = 3,
};

/* ---- paths ---- */

/* "$LDT_SOURCE_ROOT/rel" and "$LDT_BUILD_ROOT/rel" in a rotating static buffer (8 live at once). */
char *itest_src(const char *rel);
char *itest_build(const char *rel);

/* Create a fresh private temporary directory; out must hold ITEST_PATH_MAX bytes. 0 or -errno. */
int itest_mkdtemp(char *out);

/* Remove a directory made by itest_mkdtemp and the plain files in it (one level). */
void itest_rmtree(const char *dir);

/* Entries in dir other than . and .. whose name ends with suffix (NULL: all); -errno on error. */
int itest_count_files(const char *dir, const char *suffix);

/* Read a whole file into a malloc'd NUL-terminated buffer; *len gets its size. NULL on error. */
char *itest_slurp(const char *path, size_t *len);

/* ---- environment for children ---- */

struct itest_env {
    char **vars; /* "NAME=value", NULL-terminated, malloc'd */
    size_t n, cap;
};

/* A copy of our environment without LD_PRELOAD, LDTRACE_* and OTEL_* (children start untraced). */
void itest_env_init(struct itest_env *e);

/* Set (replace or add) NAME=value. */
void itest_env_set(struct itest_env *e, const char *name, const char *value);

/* Make children traced: LD_PRELOAD=$LDT_BUILD_ROOT/src/shim/libldtrace.so (after the sanitizer
 * runtime in an ASan build, see ITEST_PRELOAD_FIRST), LDTRACE_DIR=dir, OTEL_SERVICE_NAME=service
 * (if not NULL). Returns 0, or -ENOENT when the shim is not built (the environment is set all the
 * same). */
int itest_env_trace(struct itest_env *e, const char *dir, const char *service);

void itest_env_free(struct itest_env *e);

/* ---- processes ---- */

/* Start argv[0] (a path) with env; stdin from /dev/null, stdout to out_path (created/truncated) or
 * /dev/null when NULL, stderr to err_path or /dev/null. Returns the pid, or -errno. */
pid_t itest_spawn_io(const struct itest_env *e, char *const argv[], const char *out_path,
                     const char *err_path);
pid_t itest_spawn(const struct itest_env *e, char *const argv[], const char *out_path);

/* Wait for pid up to timeout_ms. Returns its exit status (0..255), 128+signal if a signal killed
 * it, or -ETIMEDOUT after killing it with SIGKILL and reaping it. */
int itest_wait(pid_t pid, int timeout_ms);

/* SIGTERM, wait up to 2 s, then SIGKILL; always reaps. Returns what itest_wait returned. */
int itest_stop(pid_t pid);

/* Sleep ms milliseconds. Call it once before stopping traced servers: a span is written when it
 * ends, just after the real call that ended it, so a server killed the moment its client got the
 * last byte may not have committed that span yet. */
void itest_settle(int ms);

/* 1 when libldtrace.so is mapped into the running process pid, 0 when not, -errno on error: proves
 * a test of "nothing changes under the shim" really ran under it. */
int itest_has_shim(pid_t pid);

/* itest_spawn + itest_wait: the exit status or a negative errno. */
int itest_run(const struct itest_env *e, char *const argv[], const char *out_path, int timeout_ms);

/* A self-signed certificate for CN 127.0.0.1 (P-256 key, valid 2 days) made with openssl(1) into
 * cert and key. The exit status of openssl (0 on success) or a negative errno. */
int itest_make_cert(const char *cert, const char *key);

/* Spawn a server (stdout and stderr to err_path, or /dev/null) and wait until 127.0.0.1:port
 * accepts a connection (up to 10 s). Returns the pid, or -errno after stopping it. */
pid_t itest_start_server(const struct itest_env *e, char *const argv[], int port,
                         const char *err_path);

/* The argv of a client that GETs urls (one keep-alive connection, bodies to stdout) sending each of
 * headers ("Name: value", may be NULL): curl, except in a sanitizer build, where curl deadlocks in
 * setlocale under a preloaded libasan and tests/integration/py/client.py stands in. argv must have
 * room for 8 + 2 * headers + urls entries; it is NULL-terminated and points into the arguments. */
void itest_get_argv(char **argv, const char *const headers[], const char *const urls[]);

/* ---- network (127.0.0.1 only) ---- */

/* A TCP port on 127.0.0.1 that was free a moment ago, chosen at random below the kernel's ephemeral
 * range (no outgoing connection can grab it before the server binds it); bind(0) as a fallback. */
int itest_free_port(void);

/* Poll connect() to 127.0.0.1:port until it succeeds; 0, or -ETIMEDOUT after timeout_ms. */
int itest_wait_port(int port, int timeout_ms);

/* ---- spans ---- */

struct itest_span {
    char trace_id[33]; /* lower-case hex, "" if absent */
    char span_id[17];
    char parent_id[17]; /* "" for a root */
    char name[64];
    char service[128]; /* resource attribute service.name */
    int kind;          /* enum itest_kind, 0 if unknown */
    int status;        /* Status.code: 0 unset, 1 ok, 2 error */
    json_t *attrs;     /* object: key -> string/integer/real/boolean (intValue strings converted) */
};

struct itest_spans {
    size_t n;
    struct itest_span *v;
    size_t lines; /* ExportTraceServiceRequest lines read */
};

/* Parse an OTLP JSON file (one ExportTraceServiceRequest per line). A missing or empty file gives
 * an empty set; NULL only for unparsable content (the reason is printed on stderr). */
struct itest_spans *itest_load_spans(const char *path);
void itest_spans_free(struct itest_spans *s);

/* Run "$LDT_BUILD_ROOT/src/sidecar/ldtraced --dir dir --once --out out". Exit status or -errno.
 * Its stderr is printed when it fails, or always when ITEST_VERBOSE is set. */
int itest_drain(const char *dir, const char *out);

/* itest_drain to dir/spans.json then itest_load_spans; NULL if ldtraced failed or the file did not
 * parse. */
struct itest_spans *itest_drain_load(const char *dir);

/* Attribute accessors: the string value (NULL if absent or not a string); the integer value, also
 * from a decimal string (dflt if absent). */
const char *itest_attr_str(const struct itest_span *s, const char *key);
long long itest_attr_int(const struct itest_span *s, const char *key, long long dflt);

/* First span matching every non-zero/non-NULL criterion: kind, service, attribute key == value (the
 * value compared as text, so "200" matches an integer 200; key with a NULL value: key present). */
const struct itest_span *itest_find(const struct itest_spans *s, int kind, const char *service,
                                    const char *key, const char *value);
size_t itest_count(const struct itest_spans *s, int kind, const char *service, const char *key,
                   const char *value);

/* The span with this span id, or NULL. */
const struct itest_span *itest_by_id(const struct itest_spans *s, const char *span_id);

/* Number of span ids that occur more than once (0 when every span is unique). */
size_t itest_duplicates(const struct itest_spans *s);

/* Print every span on stderr, one line each (for failure diagnostics). */
void itest_dump(const struct itest_spans *s);

#endif
