/* test_sidecar_pipeline.c - ring -> ldtraced -> OTLP JSON file, end to end with real processes:
 * ldtrace-emit writes 10^5 deterministic spans from several processes and threads, ldtraced drains
 * them (--once, or running and stopped with SIGTERM), and every field of every span read back with
 * jansson must match emit.c's derivation, exactly once each, with the segments removed. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <jansson.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define PROCS 4
#define THREADS 5
#define SPANS 5000 /* per thread: 4 x 5 x 5000 = 10^5 */

static char dir[128], out_path[192], err_path[192];

static void setup(void)
{
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof(dir), "%s/ldt-pipeline-XXXXXX", base);
    cr_assert_not_null(mkdtemp(dir));
    chmod(dir, 0700);
    snprintf(out_path, sizeof(out_path), "%s.out.jsonl", dir);
    snprintf(err_path, sizeof(err_path), "%s.stderr", dir);
}

static void teardown(void)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s' '%s'", dir, out_path, err_path);
    if (system(cmd) != 0)
        cr_log_warn("cleanup failed: %s", cmd);
}

TestSuite(pipeline, .init = setup, .fini = teardown, .timeout = 240);

/* ---- processes ---- */

static const char *tool(const char *rel, char *buf, size_t cap)
{
    const char *root = getenv("LDT_BUILD_ROOT");
    cr_assert_not_null(root, "LDT_BUILD_ROOT is not set (run through meson test)");
    snprintf(buf, cap, "%s/%s", root, rel);
    cr_assert_eq(access(buf, X_OK), 0, "missing %s", buf);
    return buf;
}

/* Start argv with stdout and stderr appended to `log`. */
static pid_t spawn(char *const argv[], const char *log)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    cr_assert_eq(rc, 0, "spawn %s: %s", argv[0], strerror(rc));
    return pid;
}

/* Wait for pid at most timeout_s seconds (then SIGKILL it and fail). Returns the exit status. */
static int wait_exit(pid_t pid, int timeout_s)
{
    int st;
    for (int ms = 0; ms < timeout_s * 1000; ms += 10) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            cr_assert(WIFEXITED(st), "pid %d killed by signal %d", pid, WTERMSIG(st));
            return WEXITSTATUS(st);
        }
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    cr_assert_fail("pid %d did not exit within %d s", pid, timeout_s);
    return -1;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "open %s", path);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static int ring_files(void)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += strstr(de->d_name, ".ring") != NULL;
    closedir(d);
    return n;
}

static void run_emit(const char *extra1, const char *extra2)
{
    char emit[512], spans[16], threads[16], procs[16];
    snprintf(spans, sizeof(spans), "%d", SPANS);
    snprintf(threads, sizeof(threads), "%d", THREADS);
    snprintf(procs, sizeof(procs), "%d", PROCS);
    char *argv[] = {(char *)tool("tests/tools/ldtrace-emit", emit, sizeof(emit)),
                    "--dir",
                    dir,
                    "--spans",
                    spans,
                    "--threads",
                    threads,
                    "--procs",
                    procs,
                    (char *)extra1,
                    (char *)extra2,
                    NULL};
    cr_assert_eq(wait_exit(spawn(argv, err_path), 120), 0, "ldtrace-emit failed: %s",
                 slurp(err_path));
    char want[64];
    snprintf(want, sizeof(want), "emitted %d dropped 0", PROCS * THREADS * SPANS);
    cr_assert_not_null(strstr(slurp(err_path), want), "emit said: %s", slurp(err_path));
}

/* ---- the derivation in emit.c ---- */

static uint64_t mix(uint64_t x)
{
    x += UINT64_C(0x9e3779b97f4a7c15);
    x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

static uint64_t key(uint64_t p, uint64_t t, uint64_t i)
{
    return p << 48 | t << 32 | i;
}

static uint64_t span_id(uint64_t p, uint64_t t, uint64_t i)
{
    uint64_t v = mix(key(p, t, i) ^ UINT64_C(0x3333333333333333));
    return v ? v : 1;
}

static const char *str_of(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    cr_assert(json_is_string(v), "%s missing", k);
    return json_string_value(v);
}

/* The value of attribute key: arr is an OTLP attribute array or a map made by attr_map. */
static json_t *attr(json_t *arr, const char *key)
{
    if (json_is_object(arr))
        return json_object_get(arr, key);
    size_t i;
    json_t *a;
    json_array_foreach(arr, i, a)
    {
        if (strcmp(str_of(a, "key"), key) == 0)
            return json_object_get(a, "value");
    }
    return NULL;
}

/* An attribute array as a key -> value object (hashed lookups keep 10^5 spans fast under ASan);
 * a key seen twice fails. */
static json_t *attr_map(json_t *arr)
{
    json_t *m = json_object();
    size_t i;
    json_t *a;
    json_array_foreach(arr, i, a)
    {
        json_object_set(m, str_of(a, "key"), json_object_get(a, "value"));
    }
    cr_assert_eq(json_object_size(m), json_array_size(arr), "duplicate attribute keys");
    return m;
}

static void want_s(json_t *arr, const char *key, const char *want)
{
    json_t *v = attr(arr, key);
    cr_assert_not_null(v, "attribute %s missing", key);
    cr_assert_str_eq(str_of(v, "stringValue"), want, "attribute %s", key);
}

static void want_i(json_t *arr, const char *key, uint64_t want)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%" PRIu64, want);
    json_t *v = attr(arr, key);
    cr_assert_not_null(v, "attribute %s missing", key);
    cr_assert_str_eq(str_of(v, "intValue"), buf, "attribute %s", key);
}

/* A counter: present with its value, or absent when the value is 0. */
static void want_i0(json_t *arr, const char *key, uint64_t want)
{
    if (want == 0)
        cr_assert_null(attr(arr, key), "attribute %s is 0: left out", key);
    else
        want_i(arr, key, want);
}

static void want_u64_str(json_t *o, const char *k, uint64_t want)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%" PRIu64, want);
    cr_assert_str_eq(str_of(o, k), buf, "%s", k);
}

static void want_hex64(json_t *o, const char *k, uint64_t v)
{
    char buf[17];
    snprintf(buf, sizeof(buf), "%016" PRIx64, v);
    cr_assert_str_eq(str_of(o, k), buf, "%s", k);
}

static void check_event(json_t *sp, unsigned p, unsigned t, uint64_t i, const char *etype,
                        uint64_t end)
{
    json_t *ev = json_object_get(sp, "events");
    int code = 200 + (int)(i % 400);
    if (!(code >= 500 && i % 5 == 0)) {
        cr_assert_null(ev, "span %u/%u/%" PRIu64 " has no stack", p, t, i);
        return;
    }
    cr_assert_eq(json_array_size(ev), 1, "one exception event");
    json_t *e = json_array_get(ev, 0);
    cr_assert_str_eq(str_of(e, "name"), "exception");
    want_u64_str(e, "timeUnixNano", end);
    json_t *a = json_object_get(e, "attributes");
    cr_assert_eq(json_array_size(a), 3);
    want_s(a, "exception.type", etype);
    char msg[64], stack[512] = "";
    snprintf(msg, sizeof(msg), "HTTP status %d", code);
    want_s(a, "exception.message", i % 13 == 0 ? "Connection reset by peer" : msg);
    for (unsigned part = 0; part < 1 + i % 3; part++) {
        size_t n = strlen(stack);
        snprintf(stack + n, sizeof(stack) - n, "emit+0x%x frame_%u_%u_%" PRIu64 "_%u", part, p, t,
                 i, part);
    }
    want_s(a, "exception.stacktrace", stack);
}

static void check_attrs(json_t *a, unsigned p, unsigned t, uint64_t i, const char *etype)
{
    static const char *const methods[] = {"GET",     "HEAD",    "POST",  "PUT",  "DELETE",
                                          "CONNECT", "OPTIONS", "TRACE", "PATCH"};
    char buf[64];
    unsigned kind = 1 + (unsigned)(i % 3);
    want_s(a, "http.request.method", methods[i % 9]);
    snprintf(buf, sizeof(buf), "/emit/%u/%u/%" PRIu64, p, t, i);
    want_s(a, "url.path", buf);
    want_i(a, "http.response.status_code", 200 + i % 400);
    if (kind == 2) {
        want_s(a, "server.address", "127.0.0.1");
        want_i(a, "server.port", 20000 + p);
        want_s(a, "client.address", "127.0.0.1");
        want_i(a, "client.port", 1000 + t);
    } else {
        snprintf(buf, sizeof(buf), "emit-host-%u", p);
        want_s(a, "server.address", buf);
        want_i(a, "server.port", 1000 + t);
    }
    want_s(a, "network.protocol.version", "1.1");
    want_s(a, "network.peer.address", "127.0.0.1");
    want_i(a, "network.peer.port", 1000 + t);
    want_s(a, "network.transport", "tcp");
    if (etype[0])
        want_s(a, "error.type", etype);
    want_i(a, "ldtrace.bytes_in", 100 + i);
    want_i(a, "ldtrace.bytes_out", 200 + 2 * i);
    want_i0(a, "ldtrace.io_ns", 10 * i);
    want_i0(a, "ldtrace.io_calls", i % 16);
    size_t n = 3 + (kind == 2 ? 4 : 2) + 4 + (etype[0] != 0) + 2 + (i != 0) + (i % 16 != 0);
    cr_assert_eq(json_object_size(a), n, "attribute count of %u/%u/%" PRIu64, p, t, i);
}

/* Check one span against the derivation for process p; mark it seen (a second sighting fails). */
static void check_span(json_t *sp, unsigned p, uint8_t *seen)
{
    unsigned pp, t;
    uint64_t i;
    json_t *attrs = attr_map(json_object_get(sp, "attributes"));
    const char *path = str_of(attr(attrs, "url.path"), "stringValue");
    cr_assert_eq(sscanf(path, "/emit/%u/%u/%" SCNu64, &pp, &t, &i), 3, "path %s", path);
    cr_assert(pp == p && t < THREADS && i < SPANS, "path %s in process %u", path, p);
    size_t idx = ((size_t)p * THREADS + t) * SPANS + i;
    cr_assert_eq(seen[idx], 0, "span %s exported twice", path);
    seen[idx] = 1;
    uint64_t g = i / 4, code = 200 + i % 400;
    char trace[33];
    snprintf(trace, sizeof(trace), "%016" PRIx64 "%016" PRIx64,
             mix(key(p, t, g) ^ UINT64_C(0x1111111111111111)),
             mix(key(p, t, g) ^ UINT64_C(0x2222222222222222)));
    cr_assert_str_eq(str_of(sp, "traceId"), trace);
    want_hex64(sp, "spanId", span_id(p, t, i));
    if (i % 4)
        want_hex64(sp, "parentSpanId", span_id(p, t, g * 4));
    else
        cr_assert_null(json_object_get(sp, "parentSpanId"), "root %s", path);
    cr_assert_eq(json_integer_value(json_object_get(sp, "flags")), 0x101);
    cr_assert_eq(json_integer_value(json_object_get(sp, "kind")), 1 + (int)(i % 3));
    uint64_t start = UINT64_C(1700000000000000000) + p * UINT64_C(1000000000000) +
                     t * UINT64_C(1000000000) + i * 1000;
    uint64_t end = start + 1000 * (1 + i % 997);
    want_u64_str(sp, "startTimeUnixNano", start);
    want_u64_str(sp, "endTimeUnixNano", end);
    if (code >= 500)
        cr_assert_eq(json_integer_value(json_object_get(json_object_get(sp, "status"), "code")), 2);
    else
        cr_assert_null(json_object_get(sp, "status"));
    char etype[16] = "";
    if (i % 13 == 0)
        strcpy(etype, "ECONNRESET");
    else if (code >= 500)
        snprintf(etype, sizeof(etype), "%" PRIu64, code);
    check_attrs(attrs, p, t, i, etype);
    const char *name = str_of(sp, "name");
    cr_assert_str_eq(name, str_of(attr(attrs, "http.request.method"), "stringValue"));
    check_event(sp, p, t, i, etype, end);
    json_decref(attrs);
}

/* Check the resource of one line; returns the emitting process index p. */
static unsigned check_resource(json_t *res)
{
    json_t *a = json_object_get(res, "attributes");
    unsigned p;
    const char *ep = str_of(attr(a, "emit.proc"), "stringValue");
    cr_assert_eq(sscanf(ep, "%u", &p), 1);
    cr_assert_lt(p, PROCS);
    char host[256] = "", buf[64];
    gethostname(host, sizeof(host) - 1);
    host[63] = '\0'; /* the header keeps LDT_SEG_HOST_MAX - 1 bytes */
    want_s(a, "service.name", "emit");
    want_s(a, "process.executable.name", "ldtrace-emit");
    want_s(a, "host.name", host);
    want_s(a, "telemetry.sdk.name", "ldtrace");
    want_s(a, "telemetry.sdk.version", "0.1.0");
    long long pid = strtoll(str_of(attr(a, "process.pid"), "intValue"), NULL, 10);
    cr_assert_gt(pid, 0);
    const char *iid = str_of(attr(a, "service.instance.id"), "stringValue");
    snprintf(buf, sizeof(buf), "%lld-", pid);
    cr_assert(strncmp(iid, buf, strlen(buf)) == 0 && strlen(iid) == strlen(buf) + 16, "%s", iid);
    json_t *args =
        json_object_get(json_object_get(attr(a, "process.command_args"), "arrayValue"), "values");
    cr_assert_eq(json_array_size(args), 3);
    cr_assert_str_eq(str_of(json_array_get(args, 0), "stringValue"), "ldtrace-emit");
    cr_assert_str_eq(str_of(json_array_get(args, 1), "stringValue"), "--proc");
    cr_assert_str_eq(str_of(json_array_get(args, 2), "stringValue"), ep);
    cr_assert_eq(json_array_size(a), 9, "8 defaults and emit.proc");
    return p;
}

/* jansson allocates every node; under ASan that dominates the check of 10^5 spans. A bump arena
 * reset after each line (everything parsed from a line is freed by then) keeps it cheap. */
#define ARENA_SIZE ((size_t)1 << 30)
static char *arena;
static size_t arena_used;

static void *arena_malloc(size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (arena_used + n > ARENA_SIZE)
        return NULL;
    void *p = arena + arena_used;
    arena_used += n;
    return p;
}

static void arena_free(void *p)
{
    (void)p;
}

static void arena_on(void)
{
    arena = mmap(NULL, ARENA_SIZE, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    cr_assert_neq(arena, MAP_FAILED);
    arena_used = 0;
    json_set_alloc_funcs(arena_malloc, arena_free);
}

static void arena_off(void)
{
    json_set_alloc_funcs(malloc, free);
    munmap(arena, ARENA_SIZE);
}

/* Check one ExportTraceServiceRequest (a line of the file or a POST body); returns its spans. */
static size_t check_request(const char *text, size_t n, uint8_t *seen)
{
    json_error_t err;
    json_t *root = json_loadb(text, n, 0, &err);
    cr_assert_not_null(root, "bad JSON request: %s", err.text);
    json_t *rss = json_object_get(root, "resourceSpans");
    cr_assert_eq(json_array_size(rss), 1, "one process per request");
    json_t *rs = json_array_get(rss, 0);
    unsigned p = check_resource(json_object_get(rs, "resource"));
    json_t *ss = json_array_get(json_object_get(rs, "scopeSpans"), 0);
    cr_assert_str_eq(str_of(json_object_get(ss, "scope"), "name"), "ldtrace");
    json_t *spans = json_object_get(ss, "spans");
    size_t total = json_array_size(spans);
    cr_assert_gt(total, 0);
    cr_assert_leq(total, 4096, "batches stay at most 4096 spans");
    size_t k;
    json_t *sp;
    json_array_foreach(spans, k, sp)
    {
        check_span(sp, p, seen);
    }
    json_decref(root);
    arena_used = 0;
    return total;
}

/* Read the output file and check everything; returns the number of spans. */
static size_t check_output(void)
{
    arena_on();
    FILE *f = fopen(out_path, "r");
    cr_assert_not_null(f, "no output file %s", out_path);
    uint8_t *seen = calloc((size_t)PROCS * THREADS * SPANS, 1);
    char *line = NULL;
    size_t cap = 0, total = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0)
        total += check_request(line, (size_t)n, seen);
    free(line);
    fclose(f);
    free(seen);
    arena_off();
    return total;
}

/* The exit line; with --retry a producer counts a drop for every full-ring attempt it repeats, so
 * dropped_by_producers is only required to be 0 when retry is off. */
static void check_stats_line(const char *err, int retry)
{
    unsigned long long spans, dropped, bad, badseg, segs;
    const char *line = strstr(err, "ldtraced: spans=");
    cr_assert_not_null(line, "stats line missing, stderr was: %s", err);
    cr_assert_eq(sscanf(line,
                        "ldtraced: spans=%llu dropped_by_producers=%llu bad_records=%llu "
                        "bad_segments=%llu segments=%llu\n",
                        &spans, &dropped, &bad, &badseg, &segs),
                 5, "stats line: %s", line);
    cr_assert_eq(spans, (unsigned long long)PROCS * THREADS * SPANS);
    cr_assert(retry || dropped == 0, "dropped %llu", dropped);
    cr_assert_eq(bad, 0);
    cr_assert_eq(badseg, 0);
    cr_assert_eq(segs, PROCS);
}

Test(pipeline, once_drains_every_span_exactly)
{
    /* A thread that ends gives its ring back and the next thread may claim it with the records
     * still unread, so each ring must hold all five threads' spans and stacks: nothing drops. */
    run_emit("--slots", "32768");
    cr_assert_eq(ring_files(), PROCS);
    char ldtraced[512];
    char *argv[] = {(char *)tool("src/sidecar/ldtraced", ldtraced, sizeof(ldtraced)),
                    "--dir",
                    dir,
                    "--out",
                    out_path,
                    "--once",
                    NULL};
    truncate(err_path, 0);
    cr_assert_eq(wait_exit(spawn(argv, err_path), 120), 0, "ldtraced: %s", slurp(err_path));
    check_stats_line(slurp(err_path), 0);
    cr_assert_eq(check_output(), (size_t)PROCS * THREADS * SPANS);
    cr_assert_eq(ring_files(), 0, "drained segments of exited producers are removed");
}

Test(pipeline, running_sidecar_drains_then_sigterm_flushes)
{
    char ldtraced[512];
    char *argv[] = {(char *)tool("src/sidecar/ldtraced", ldtraced, sizeof(ldtraced)),
                    "--dir",
                    dir,
                    "--out",
                    out_path,
                    "--poll-ms",
                    "1",
                    NULL};
    char side_log[256];
    snprintf(side_log, sizeof(side_log), "%s.side", err_path);
    pid_t side = spawn(argv, side_log);
    /* Default 4096-slot rings: 5000 spans per thread only fit because ldtraced drains meanwhile;
     * --retry makes a momentarily full ring wait instead of dropping, --wait-drain keeps each
     * producer alive until its rings are empty. */
    run_emit("--retry", "--wait-drain");
    cr_assert_eq(kill(side, SIGTERM), 0);
    int rc = wait_exit(side, 60);
    char *err = slurp(side_log);
    cr_assert_eq(rc, 0, "ldtraced: %s", err);
    check_stats_line(err, 1);
    unlink(side_log);
    cr_assert_eq(check_output(), (size_t)PROCS * THREADS * SPANS);
    cr_assert_eq(ring_files(), 0);
}

static size_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (size_t)st.st_size : 0;
}

Test(pipeline, live_producer_flushed_by_timer_and_sigusr1_stats)
{
    char ldtraced[512], emit[512], side_log[256];
    snprintf(side_log, sizeof(side_log), "%s.side", err_path);
    char *sargv[] = {(char *)tool("src/sidecar/ldtraced", ldtraced, sizeof(ldtraced)),
                     "--dir",
                     dir,
                     "--out",
                     out_path,
                     NULL};
    pid_t side = spawn(sargv, side_log);
    /* One producer writing 100 spans a second for 3 s: it stays alive, so only the flush timer
     * (200 ms) can bring its spans to the file while it runs. */
    char *eargv[] = {(char *)tool("tests/tools/ldtrace-emit", emit, sizeof(emit)),
                     "--dir",
                     dir,
                     "--spans",
                     "300",
                     "--threads",
                     "1",
                     "--procs",
                     "1",
                     "--rate",
                     "100",
                     NULL};
    pid_t em = spawn(eargv, err_path);
    usleep(1000000);
    cr_assert_eq(waitpid(em, NULL, WNOHANG), 0, "the producer is still running");
    cr_assert_gt(file_size(out_path), 0, "spans of a live producer reach the file within 1 s");
    cr_assert_eq(kill(side, SIGUSR1), 0);
    for (int i = 0; i < 100 && !strstr(slurp(side_log), "spans="); i++)
        usleep(10000);
    cr_assert_not_null(strstr(slurp(side_log), "ldtraced: spans="), "SIGUSR1 prints the counters");
    cr_assert_eq(wait_exit(em, 30), 0);
    cr_assert_eq(kill(side, SIGTERM), 0);
    cr_assert_eq(wait_exit(side, 30), 0);
    cr_assert_not_null(strstr(slurp(side_log), "ldtraced: spans=300 dropped_by_producers=0 "
                                               "bad_records=0 bad_segments=0 segments=1 "),
                       "%s", slurp(side_log));
    unlink(side_log);
    cr_assert_eq(check_output(), 300);
    cr_assert_eq(ring_files(), 0);
}

/* Milliseconds until pid exits (reaped), or -1 if it is still running after max_ms. */
static long exits_within(pid_t pid, long max_ms, int *status)
{
    for (long ms = 0; ms <= max_ms; ms += 10) {
        if (waitpid(pid, status, WNOHANG) == pid)
            return ms;
        usleep(10000);
    }
    return -1;
}

Test(pipeline, exit_when_idle_waits_for_runs_and_segments)
{
    char ldtraced[512], emit[512], lockpath[256];
    snprintf(lockpath, sizeof(lockpath), "%s/.ldtrace-run.lock", dir);
    int lock = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    cr_assert_geq(lock, 0);
    cr_assert_eq(flock(lock, LOCK_SH), 0, "we play an `ldtrace run` in progress");
    char *sargv[] = {(char *)tool("src/sidecar/ldtraced", ldtraced, sizeof(ldtraced)),
                     "--dir",
                     dir,
                     "--out",
                     out_path,
                     "--exit-when-idle",
                     "1",
                     NULL};
    pid_t side = spawn(sargv, err_path);
    int st;
    cr_assert_eq(exits_within(side, 1800, &st), -1, "a run holds the lock: the sidecar stays");
    /* A producer alive for ~1.5 s keeps it too, after the run lock is gone. */
    char *eargv[] = {(char *)tool("tests/tools/ldtrace-emit", emit, sizeof(emit)),
                     "--dir",
                     dir,
                     "--spans",
                     "150",
                     "--threads",
                     "1",
                     "--procs",
                     "1",
                     "--rate",
                     "100",
                     NULL};
    pid_t em = spawn(eargv, err_path);
    usleep(300000);
    close(lock);
    cr_assert_eq(exits_within(side, 1800, &st), -1, "a live segment keeps the sidecar");
    cr_assert_eq(wait_exit(em, 30), 0);
    long ms = exits_within(side, 5000, &st);
    cr_assert_geq(ms, 0, "idle for 1 s: the sidecar exits");
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    cr_assert_not_null(strstr(slurp(err_path), "ldtraced: spans=150 "), "%s", slurp(err_path));
    cr_assert_eq(ring_files(), 0);
}

/* ---- a fake OTLP/HTTP collector: answers 503 to the first request, 200 to the others ---- */

struct collector {
    int lfd;
    int port;
    int requests;     /* requests seen */
    int bad_requests; /* wrong request line or headers */
    char *bodies[64]; /* bodies answered 200 */
    size_t lens[64];
    int nbodies;
};

/* Read one request on fd: headers, then Content-Length bytes. Returns 0, or -1 at EOF/error. */
static int read_request(int fd, struct collector *c)
{
    static char buf[1 << 16];
    size_t have = 0;
    char *end = NULL;
    while (!(end = memmem(buf, have, "\r\n\r\n", 4))) {
        ssize_t n = have < sizeof(buf) - 1 ? read(fd, buf + have, sizeof(buf) - 1 - have) : -1;
        if (n <= 0)
            return -1;
        have += (size_t)n;
        buf[have] = '\0'; /* the string searches below stop here */
    }
    size_t hlen = (size_t)(end + 4 - buf);
    const char *cl = strcasestr(buf, "\r\ncontent-length:");
    size_t len = cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0;
    int ok = strncmp(buf, "POST /v1/traces HTTP/1.1\r\n", 26) == 0 &&
             memmem(buf, hlen, "x-test: yes\r\n", 13) &&
             strcasestr(buf, "\r\ncontent-type: application/json\r\n") != NULL;
    char *body = malloc(len + 1);
    size_t got = have - hlen < len ? have - hlen : len;
    memcpy(body, buf + hlen, got);
    while (got < len) {
        ssize_t n = read(fd, body + got, len - got);
        if (n <= 0) {
            free(body);
            return -1;
        }
        got += (size_t)n;
    }
    c->bad_requests += !ok;
    if (c->requests++ == 0 || c->nbodies == 64) {
        free(body);
        static const char r503[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
        return write(fd, r503, sizeof(r503) - 1) == (ssize_t)sizeof(r503) - 1 ? 0 : -1;
    }
    c->bodies[c->nbodies] = body;
    c->lens[c->nbodies++] = len;
    const char ok200[] =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    return write(fd, ok200, sizeof(ok200) - 1) == (ssize_t)sizeof(ok200) - 1 ? 0 : -1;
}

static void *collector_main(void *arg)
{
    struct collector *c = arg;
    int fd;
    while ((fd = accept(c->lfd, NULL, NULL)) >= 0) {
        while (read_request(fd, c) == 0)
            ;
        close(fd);
    }
    return NULL;
}

static void collector_start(struct collector *c, pthread_t *th)
{
    memset(c, 0, sizeof(*c));
    c->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    cr_assert_eq(bind(c->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(c->lfd, 8), 0);
    getsockname(c->lfd, (struct sockaddr *)&a, &alen);
    c->port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(th, NULL, collector_main, c), 0);
}

Test(pipeline, otlp_http_posts_every_span_with_retry)
{
    struct collector c;
    pthread_t th;
    collector_start(&c, &th);
    char emit[512], ldtraced[512], url[64];
    char *eargv[] = {(char *)tool("tests/tools/ldtrace-emit", emit, sizeof(emit)),
                     "--dir",
                     dir,
                     "--spans",
                     "1000",
                     "--threads",
                     "2",
                     "--procs",
                     "1",
                     NULL};
    cr_assert_eq(wait_exit(spawn(eargv, err_path), 60), 0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", c.port);
    setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-test=yes", 1);
    char *sargv[] = {(char *)tool("src/sidecar/ldtraced", ldtraced, sizeof(ldtraced)),
                     "--dir",
                     dir,
                     "--otlp",
                     url,
                     "--once",
                     NULL};
    truncate(err_path, 0);
    cr_assert_eq(wait_exit(spawn(sargv, err_path), 60), 0, "%s", slurp(err_path));
    cr_assert_not_null(strstr(slurp(err_path), "ldtraced: spans=2000 "), "%s", slurp(err_path));
    shutdown(c.lfd, SHUT_RDWR);
    close(c.lfd);
    pthread_join(th, NULL);
    cr_assert_eq(c.bad_requests, 0, "request line, Content-Type and x-test header");
    cr_assert_eq(c.requests, c.nbodies + 1, "the 503 was retried");
    arena_on();
    uint8_t *seen = calloc((size_t)PROCS * THREADS * SPANS, 1);
    size_t total = 0;
    for (int i = 0; i < c.nbodies; i++) {
        total += check_request(c.bodies[i], c.lens[i], seen);
        free(c.bodies[i]);
    }
    free(seen);
    arena_off();
    cr_assert_eq(total, 2000);
    cr_assert_eq(ring_files(), 0);
}

Test(pipeline, errors_are_one_line_and_exit_1)
{
    char ldtraced[512];
    tool("src/sidecar/ldtraced", ldtraced, sizeof(ldtraced));
    char *a1[] = {ldtraced, "--dir", dir, "--out", "/nonexistent-dir/x.jsonl", "--once", NULL};
    cr_assert_eq(wait_exit(spawn(a1, err_path), 30), 1);
    cr_assert_str_eq(slurp(err_path),
                     "ldtraced: open /nonexistent-dir/x.jsonl: No such file or directory\n");
    truncate(err_path, 0);
    char *a2[] = {ldtraced, "--dir", dir, "--otlp", "ftp://127.0.0.1:4318", "--once", NULL};
    cr_assert_eq(wait_exit(spawn(a2, err_path), 30), 1);
    cr_assert_str_eq(slurp(err_path), "ldtraced: --otlp ftp://127.0.0.1:4318: Invalid argument\n");
    truncate(err_path, 0);
    char *a3[] = {ldtraced, "--poll-ms", "abc", NULL};
    cr_assert_eq(wait_exit(spawn(a3, err_path), 30), 1);
    cr_assert_str_eq(slurp(err_path), "ldtraced: --poll-ms abc: Invalid argument\n");
    truncate(err_path, 0);
    char *a4[] = {ldtraced, "--dir", "/etc/passwd", "--out", "/dev/null", NULL};
    cr_assert_eq(wait_exit(spawn(a4, err_path), 30), 1);
    cr_assert_str_eq(slurp(err_path), "ldtraced: opendir /etc/passwd: Not a directory\n");
}
