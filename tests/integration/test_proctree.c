/* test_proctree.c - process trees under the shim: a shell running two curls, a pre-forking server,
 * an inetd-style fork-per-connection server and a server that execs a worker per connection; and a
 * statically linked client and a setuid program, which LD_PRELOAD cannot reach (they work, make no
 * span, do not crash). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_matrix_lib.h"

#define NCONN 6

/* A traced upstream (backend.py, service "upstream") and a traced server under test ("srv"). */
struct tree {
    char dir[ITEST_PATH_MAX];
    int port, up_port;
    pid_t up, srv;
    struct itest_env env_up, env_srv, env_plain;
};

static void tree_start(struct tree *t, const char *tool, const char *mode)
{
    memset(t, 0, sizeof(*t));
    cr_assert_eq(itest_mkdtemp(t->dir), 0);
    t->up_port = itest_free_port();
    t->port = itest_free_port();
    itest_env_init(&t->env_up);
    itest_env_init(&t->env_srv);
    itest_env_init(&t->env_plain);
    cr_assert_eq(itest_env_trace(&t->env_up, t->dir, "upstream"), 0, "shim not built");
    itest_env_trace(&t->env_srv, t->dir, "srv");
    char up[16], port[16];
    snprintf(up, sizeof(up), "%d", t->up_port);
    snprintf(port, sizeof(port), "%d", t->port);
    char *py[] = {ITEST_PYTHON, itest_src("tests/integration/py/backend.py"), up, NULL};
    t->up = itest_start_server(&t->env_up, py, t->up_port, NULL);
    cr_assert_gt(t->up, 0, "backend.py did not start");
    if (!tool)
        return;
    char path[64];
    snprintf(path, sizeof(path), "tests/tools/%s", tool);
    char *with_mode[] = {itest_build(path), (char *)mode, port, up, NULL};
    char *plain[] = {itest_build(path), port, up, NULL};
    t->srv = itest_start_server(&t->env_srv, mode ? with_mode : plain, t->port, NULL);
    cr_assert_gt(t->srv, 0, "%s did not start", tool);
}

static void tree_free(struct tree *t)
{
    itest_env_free(&t->env_up);
    itest_env_free(&t->env_srv);
    itest_env_free(&t->env_plain);
    itest_rmtree(t->dir);
}

/* NCONN concurrent one-request connections (conc_client, untraced, known traceparents) to srv. */
static void load(struct tree *t)
{
    char port[16], nc[16];
    snprintf(port, sizeof(port), "%d", t->port);
    snprintf(nc, sizeof(nc), "%d", NCONN);
    char *argv[] = {itest_build("tests/tools/conc_client"), port, nc, "1", "pt", NULL};
    int rc = itest_run(&t->env_plain, argv, NULL, 20000);
    cr_assert_eq(rc, 0, "conc_client exited with %d", rc);
    /* Let the last upstream answers be recorded (the servers close right after answering). */
    usleep(200 * 1000);
}

/* Request /pt/c/0: srv SERVER (parent = conc_client's span, in its trace) -> srv CLIENT in the same
 * process -> upstream SERVER. Returns the serving pid, or -1. */
static long check_request(const struct itest_spans *sp, json_t *pids, int c)
{
    char path[32], trace[33], parent[17];
    snprintf(path, sizeof(path), "/pt/%d/0", c);
    mx_conc_trace(trace, (unsigned)c, 0);
    snprintf(parent, sizeof(parent), "5%07x%08x", (unsigned)c, 0u);
    const struct itest_span *ss = mx_one(sp, ITEST_SERVER, "srv", path);
    const struct itest_span *sc = mx_one(sp, ITEST_CLIENT, "srv", path);
    const struct itest_span *us = mx_one(sp, ITEST_SERVER, "upstream", path);
    mx_expect(ss && sc && us, "%s: spans missing: srv SERVER %d, srv CLIENT %d, upstream SERVER %d",
              path, !!ss, !!sc, !!us);
    if (us)
        mx_expect_id(path, "upstream SERVER trace", us->trace_id, trace);
    if (sc)
        mx_expect_id(path, "srv CLIENT trace", sc->trace_id, trace);
    if (sc && us)
        mx_expect_id(path, "upstream SERVER parent", us->parent_id, sc->span_id);
    if (!ss)
        return -1;
    mx_expect_id(path, "srv SERVER trace", ss->trace_id, trace);
    mx_expect_id(path, "srv SERVER parent", ss->parent_id, parent);
    if (!sc)
        return -1;
    mx_expect_id(path, "srv CLIENT parent", sc->parent_id, ss->span_id);
    mx_expect(mx_pid(pids, ss) == mx_pid(pids, sc), "%s: SERVER in pid %ld, CLIENT in pid %ld",
              path, mx_pid(pids, ss), mx_pid(pids, sc));
    return mx_pid(pids, ss);
}

/* No span from the listening parent, no ERROR span and no connection-died span anywhere. */
static void check_no_false_errors(const struct itest_spans *sp, json_t *pids, pid_t parent)
{
    for (size_t i = 0; i < sp->n; i++) {
        const struct itest_span *s = &sp->v[i];
        json_t *died = json_object_get(s->attrs, "ldtrace.conn_died");
        mx_expect(mx_pid(pids, s) != (long)parent, "span %s %s from the listening parent %d",
                  s->span_id, s->name, (int)parent);
        mx_expect(s->status != 2, "span %s (%s, %s) has status ERROR", s->span_id, s->service,
                  s->name);
        mx_expect(!json_is_true(died), "span %s (%s) says the connection died", s->span_id,
                  s->service);
    }
}

/* ldtraced --once over dir: the spans, and in *pids the process.pid of each span id. */
static struct itest_spans *drain_with_pids(const char *dir, json_t **pids)
{
    struct itest_spans *sp = itest_drain_load(dir);
    cr_assert_not_null(sp, "ldtraced failed");
    char path[ITEST_PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/spans.json", dir);
    *pids = mx_span_pids(path);
    return sp;
}

/* Every request checked; the serving pids agree with the pids of srv spans and the segments. */
static void check_serving(const struct itest_spans *sp, json_t *pids, const char *tool,
                          int segments, size_t min_pids, size_t max_pids)
{
    json_t *serving = json_object();
    for (int c = 0; c < NCONN; c++) {
        char key[32];
        snprintf(key, sizeof(key), "%ld", check_request(sp, pids, c));
        json_object_set_new(serving, key, json_true());
    }
    size_t n = mx_distinct_pids(sp, pids, "srv"), all = mx_distinct_pids(sp, pids, NULL);
    mx_expect(n >= min_pids && n <= max_pids, "%s: %zu serving processes, want %zu..%zu", tool, n,
              min_pids, max_pids);
    mx_expect(json_object_size(serving) == n && !json_object_get(serving, "-1"),
              "%s: %zu pids served requests but %zu pids made srv spans", tool,
              json_object_size(serving), n);
    mx_expect(segments == (int)all, "%s: %d segments for %zu traced processes", tool, segments,
              all);
    json_decref(serving);
}

/* Runs load through tool, drains, checks every request, the processes and the absence of errors. */
static void check_tree(const char *tool, const char *mode, size_t min_pids, size_t max_pids)
{
    struct tree t;
    tree_start(&t, tool, mode);
    load(&t);
    int segments = itest_count_files(t.dir, ".ring");
    itest_stop(t.srv);
    itest_stop(t.up);
    json_t *pids;
    struct itest_spans *sp = drain_with_pids(t.dir, &pids);
    check_serving(sp, pids, tool, segments, min_pids, max_pids);
    check_no_false_errors(sp, pids, t.srv);
    mx_expect(itest_duplicates(sp) == 0, "%s: duplicate span ids", tool);
    if (mx_failures)
        itest_dump(sp);
    json_decref(pids);
    itest_spans_free(sp);
    tree_free(&t);
}

Test(proctree, prefork_children_each_have_a_segment_and_parent_their_calls, .timeout = 40)
{
    check_tree("prefork_server", NULL, 1, 3);
}

Test(proctree, inetd_fork_per_connection_child_serves_and_parent_close_is_no_error, .timeout = 40)
{
    check_tree("inetd_server", NULL, NCONN, NCONN);
}

Test(proctree, exec_worker_on_fd_0_1_parents_its_call_to_its_server_span, .timeout = 40)
{
    check_tree("exec_worker", "serve", NCONN, NCONN);
}

/* sh -c 'curl A; curl B': each curl is its own traced process image with its own segment; the shell
 * itself makes no span and no segment. wget in a sanitizer build (curl deadlocks under libasan). */
/* Run sh -c 'CLIENT .../sh/1; CLIENT .../sh/2' traced as service "script"; the segments left. */
static int run_script(struct tree *t)
{
    char script[512];
    const char *cmd = mx_asan() ? MX_WGET " -q -O /dev/null" : ITEST_CURL " -s -o /dev/null";
    snprintf(script, sizeof(script), "%s http://127.0.0.1:%d/sh/1; %s http://127.0.0.1:%d/sh/2",
             cmd, t->up_port, cmd, t->up_port);
    itest_env_trace(&t->env_srv, t->dir, "script");
    char *argv[] = {"/bin/sh", "-c", script, NULL};
    cr_assert_eq(itest_run(&t->env_srv, argv, NULL, 20000), 0, "the script failed");
    usleep(100 * 1000);
    return itest_count_files(t->dir, ".ring");
}

Test(proctree, shell_script_runs_each_client_with_its_own_segment, .timeout = 40)
{
    struct tree t;
    tree_start(&t, NULL, NULL);
    int segments = run_script(&t);
    itest_stop(t.up);
    json_t *pids;
    struct itest_spans *sp = drain_with_pids(t.dir, &pids);
    const struct itest_span *c1 = mx_one(sp, ITEST_CLIENT, "script", "/sh/1");
    const struct itest_span *c2 = mx_one(sp, ITEST_CLIENT, "script", "/sh/2");
    const struct itest_span *s1 = mx_one(sp, ITEST_SERVER, "upstream", "/sh/1");
    const struct itest_span *s2 = mx_one(sp, ITEST_SERVER, "upstream", "/sh/2");
    if (!(c1 && c2 && s1 && s2))
        itest_dump(sp);
    cr_assert(c1 && c2 && s1 && s2, "spans missing: %d %d %d %d", !!c1, !!c2, !!s1, !!s2);
    mx_expect_id("/sh/1", "upstream parent", s1->parent_id, c1->span_id);
    mx_expect_id("/sh/2", "upstream parent", s2->parent_id, c2->span_id);
    mx_expect(strcmp(c1->trace_id, c2->trace_id) != 0, "the clients share trace %s", c1->trace_id);
    mx_expect(mx_pid(pids, c1) != mx_pid(pids, c2), "both clients in pid %ld", mx_pid(pids, c1));
    mx_expect(mx_distinct_pids(sp, pids, "script") == 2, "%zu traced processes of the script",
              mx_distinct_pids(sp, pids, "script"));
    mx_expect(segments == 3, "%d segments, want 3 (two clients and the upstream)", segments);
    json_decref(pids);
    itest_spans_free(sp);
    tree_free(&t);
}

/* ---- out of reach of LD_PRELOAD: a static binary, a setuid program, io_uring, Go ---- */

/* Run prog [flag] PORT /path with the shim preloaded (segments into dir), as user nobody when
 * as_nobody; stdout to out. Returns the exit status (or 128 + signal, or -errno). */
static int run_preloaded(const char *prog, const char *flag, const char *dir, int port,
                         const char *path, int as_nobody, const char *out)
{
    struct itest_env e;
    itest_env_init(&e);
    itest_env_trace(&e, dir, "unreachable");
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    char *argv[] = {(char *)prog, (char *)flag, ps, (char *)path, NULL};
    if (!flag)
        memmove(argv + 1, argv + 2, 3 * sizeof(*argv));
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid = fd < 0 ? -1 : fork();
    if (pid == 0) {
        dup2(fd, 1);
        if (as_nobody && (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0))
            _exit(126);
        execve(prog, argv, e.vars);
        _exit(127);
    }
    if (fd >= 0)
        close(fd);
    itest_env_free(&e);
    return pid < 0 ? -errno : itest_wait(pid, 10000);
}

/* backend.py (untraced) answering prog's GET /unreachable run under the shim; checks the answer,
 * returns whether the backend saw a traceparent and how many segments the run left in a fresh
 * directory. Skips the test when prog exits with 3 (io_uring not available). */
static void run_unreachable(const char *prog, const char *flag, int as_nobody, int *injected,
                            int *segments)
{
    char dir[ITEST_PATH_MAX], out[ITEST_PATH_MAX + 16], up[16];
    cr_assert_eq(itest_mkdtemp(dir), 0);
    int port = itest_free_port();
    snprintf(up, sizeof(up), "%d", port);
    snprintf(out, sizeof(out), "%s.out", dir);
    struct itest_env plain;
    itest_env_init(&plain);
    char *py[] = {ITEST_PYTHON, itest_src("tests/integration/py/backend.py"), up, NULL};
    pid_t srv = itest_start_server(&plain, py, port, NULL);
    cr_assert_gt(srv, 0, "backend.py did not start");
    int rc = run_preloaded(prog, flag, dir, port, "/unreachable", as_nobody, out);
    itest_stop(srv);
    itest_env_free(&plain);
    char *body = itest_slurp(out, NULL);
    unlink(out);
    if (rc == 3) {
        free(body);
        itest_rmtree(dir);
        cr_skip_test("io_uring is not available here");
    }
    cr_assert_eq(rc, 0, "%s under LD_PRELOAD exited with %d", prog, rc);
    cr_assert_not_null(body);
    cr_expect(strncmp(body, "HTTP/1.1 200", 12) == 0, "answer: %.80s", body);
    cr_expect(strstr(body, "\"/unreachable\"") != NULL, "the backend did not see /unreachable");
    *injected = strstr(body, "traceparent") != NULL;
    *segments = itest_count_files(dir, ".ring");
    free(body);
    itest_rmtree(dir);
}

/* The control: the same client, dynamically linked, is traced (a segment, a traceparent sent). */
Test(proctree, dynamic_client_is_traced, .timeout = 30)
{
    int injected, segments;
    run_unreachable(itest_build("tests/tools/dyn_client"), NULL, 0, &injected, &segments);
    cr_expect(injected, "no traceparent from the dynamically linked client");
    cr_expect_eq(segments, 1, "%d segments from the dynamically linked client", segments);
}

/* A static binary ignores LD_PRELOAD: it still works, nothing is injected, no segment appears. */
Test(proctree, static_binary_runs_untouched_without_spans, .timeout = 30)
{
    int injected, segments;
    run_unreachable(itest_build("tests/tools/static_client"), NULL, 0, &injected, &segments);
    cr_expect(!injected, "a traceparent was injected by a static binary");
    cr_expect_eq(segments, 0, "a static binary created %d segments", segments);
}

/* A setuid-root program started by another user runs in glibc's secure mode, which drops LD_PRELOAD
 * entries with a slash: it works and is not traced. */
Test(proctree, setuid_program_runs_untouched_without_spans, .timeout = 30)
{
    char bin[ITEST_PATH_MAX], prog[ITEST_PATH_MAX + 16];
    cr_assert_eq(itest_mkdtemp(bin), 0);
    snprintf(prog, sizeof(prog), "%s/dyn_client", bin);
    size_t len;
    char *image = itest_slurp(itest_build("tests/tools/dyn_client"), &len);
    cr_assert_not_null(image);
    FILE *f = fopen(prog, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(image, 1, len, f), len);
    fclose(f);
    free(image);
    if (geteuid() != 0 || chown(prog, 0, 0) != 0 || chmod(prog, 04755) != 0 ||
        chmod(bin, 0755) != 0) {
        itest_rmtree(bin);
        cr_skip_test("needs root to make a setuid-root program");
    }
    int injected, segments;
    run_unreachable(prog, NULL, 1, &injected, &segments);
    itest_rmtree(bin);
    cr_expect(!injected, "a traceparent was injected by a setuid program");
    cr_expect_eq(segments, 0, "a setuid program created %d segments", segments);
}

/* io_uring: the shim sees socket() and close() but none of the I/O (connect, send and recv are ring
 * operations): the program works, nothing is injected, no span and so no segment. */
Test(proctree, io_uring_client_runs_untouched_without_spans, .timeout = 30)
{
    int injected, segments;
    run_unreachable(itest_build("tests/tools/dyn_client"), "--uring", 0, &injected, &segments);
    cr_expect(!injected, "a traceparent was injected into an io_uring send");
    cr_expect_eq(segments, 0, "an io_uring client created %d segments", segments);
}

/* A Go HTTP client (the Go source below, built here when golang-go is installed). Built with cgo it
 * is dynamically linked, so the shim is loaded, but Go makes its socket calls with raw syscalls:
 * the program works, nothing is injected, no span and so no segment. */
static const char go_client[] =
    "package main\n"
    "import (\"io\"; \"net/http\"; \"os\")\n"
    "func main() {\n"
    "\tresp, err := http.Get(\"http://127.0.0.1:\" + os.Args[1] + os.Args[2])\n"
    "\tif err != nil { os.Exit(1) }\n"
    "\tbody, _ := io.ReadAll(resp.Body)\n"
    "\tos.Stdout.WriteString(resp.Proto + \" \" + resp.Status + \"\\r\\n\\r\\n\")\n"
    "\tos.Stdout.Write(body)\n"
    "\tif resp.StatusCode != 200 { os.Exit(1) }\n"
    "}\n";

Test(proctree, go_client_runs_untouched_without_spans, .timeout = 90)
{
    if (access("/usr/bin/go", X_OK) != 0)
        cr_skip_test("go is not installed (Debian package golang-go)");
    char dir[ITEST_PATH_MAX], src[ITEST_PATH_MAX + 16], bin[ITEST_PATH_MAX + 16];
    char cache[ITEST_PATH_MAX + 16];
    cr_assert_eq(itest_mkdtemp(dir), 0);
    snprintf(src, sizeof(src), "%s/main.go", dir);
    snprintf(bin, sizeof(bin), "%s/goclient", dir);
    snprintf(cache, sizeof(cache), "%s/cache", dir);
    FILE *f = fopen(src, "w");
    cr_assert_not_null(f);
    fputs(go_client, f);
    fclose(f);
    struct itest_env e;
    itest_env_init(&e);
    itest_env_set(&e, "HOME", dir);
    itest_env_set(&e, "GOCACHE", cache);
    itest_env_set(&e, "GO111MODULE", "off");
    char *argv[] = {"/usr/bin/go", "build", "-o", bin, src, NULL};
    int rc = itest_run(&e, argv, NULL, 80000);
    itest_env_free(&e);
    if (rc != 0) {
        mx_rmrf(dir);
        cr_assert_fail("go build exited with %d", rc);
    }
    int injected, segments;
    run_unreachable(bin, NULL, 0, &injected, &segments);
    mx_rmrf(dir);
    cr_expect(!injected, "a traceparent was injected into a Go program's request");
    cr_expect_eq(segments, 0, "a Go program created %d segments", segments);
}
