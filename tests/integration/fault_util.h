/* fault_util.h - what the fault, hostile-input and soak tests share: a raw HTTP/1.1 client, a load
 * generator over keep-alive connections, the demo services and ldtraced as children, /proc figures.
 *
 * Built into test_faults, test_hostile and test_soak next to itest.c. Everything runs on 127.0.0.1;
 * the shim is only ever in the children's environment. Not thread-safe unless said so.
 */
#ifndef LDTRACE_FAULT_UTIL_H
#define LDTRACE_FAULT_UTIL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/types.h>

#include "itest.h"

/* ---- raw HTTP client ---- */

/* A blocking TCP connection to 127.0.0.1:port with 10 s send/receive timeouts; -errno on failure.
 */
int fu_connect(int port);

/* Write all of buf[len]; 0 or -errno. */
int fu_send_all(int fd, const void *buf, size_t len);

/* Read one response (headers, then a Content-Length body) into out[cap] (NUL-terminated, truncated
 * when too long). Returns the status code, or -errno (-EPROTO for something that is not HTTP,
 * -EPIPE for EOF before the end). */
int fu_read_response(int fd, char *out, size_t cap);

/* Send req (a whole request) on fd and read the answer: the status or -errno. */
int fu_roundtrip(int fd, const char *req, size_t len, char *out, size_t cap);

/* ---- load ---- */

/* nconn threads, each on its own keep-alive connection sending GET path (with "%d" replaced by a
 * running number) until stop is set or max requests were answered in all. done counts the requests
 * whose whole response was read; failed the ones that got no answer. Thread-safe counters.
 * Without pace_us, 4 threads against db make ~40k requests/s on 2 cores. */
struct fu_load {
    int port;
    const char *path_fmt;
    int nconn;
    long max;
    int pace_us; /* pause after each answered request (0: none) */
    atomic_long done, failed, issued;
    atomic_int stop;
    pthread_t th[64];
};

void fu_load_start(struct fu_load *l);
/* Set stop and join: every thread finishes the request it is in (or fails on a dead server). */
void fu_load_join(struct fu_load *l);

/* ---- children ---- */

/* Start a demo service (build/demo-services/NAME) on a free port, traced into dir when dir is not
 * NULL, with --latency 0 --jitter 0 and the extra arguments (NULL-terminated, may be NULL). Returns
 * the pid (the port in *port) or fails the test. */
pid_t fu_service(const char *name, const char *dir, int *port, const char *const extra[],
                 struct itest_env *env_or_null);

/* Start "ldtraced --dir dir --out out --poll-ms 2" with stderr to err_path. Returns the pid. */
pid_t fu_sidecar(const char *dir, const char *out, const char *err_path);

/* ---- /proc and files ---- */

/* VmRSS of pid in kB, -1 when unreadable. */
long fu_rss_kb(pid_t pid);

/* Open file descriptors of pid, -1 when unreadable. */
int fu_fd_count(pid_t pid);

/* Number of (non-overlapping) occurrences of needle in the file at path (0 if missing). */
size_t fu_count_in_file(const char *path, const char *needle);

/* Count SERVER spans of service (NULL: any) in the OTLP JSON lines files (NULL-terminated list) and
 * the duplicate span ids over all of them together. Lines that are not JSON are skipped and counted
 * in *bad_lines (may be NULL). */
size_t fu_server_spans(const char *const files[], const char *service, size_t *dups,
                       size_t *bad_lines);

/* Monotonic milliseconds, and a sleep. */
double fu_now_ms(void);
void fu_sleep_ms(int ms);

/* True in a sanitizer build (ITEST_PRELOAD_FIRST is set): time budgets are scaled. */
int fu_asan(void);

#endif
