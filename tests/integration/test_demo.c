/* test_demo.c - integration: the demo chain, untraced and under the shim (answers, trace tree).
 *
 * The demo services answer every path correctly and deterministically and stop cleanly; under the
 * shim they answer byte for byte the same, and one /checkout gives exactly the expected trace tree.
 *
 * The chain is started with demo-services/run-chain (never with the shim in this binary: LD_PRELOAD
 * is only put in the services' environment, through run-chain's --prefix). Paths come from
 * LDT_SOURCE_ROOT and LDT_BUILD_ROOT, which meson test sets. LDT_DEMO_DUMP=1 prints the checked
 * traces.
 */
#include <criterion/criterion.h>
#include <jansson.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PATH_LEN 1024
#define RAW_MAX 16384
#define NSVC 5
/* A SERVER span ends when the write that completes its response has returned, and the CLIENT span
 * when the read that completes it has returned: on 2 busy cores the reader often runs first (its
 * wake-up preempts the writer). Measured: the server's end up to 0.42 ms after the client's (0.85
 * ms under ASan). Starts never came out of order. */
#define NEST_TOLERANCE_NS 2000000ull

/* ---- paths and small helpers ---- */

static const char *root(const char *var)
{
    const char *v = getenv(var);
    cr_assert(v && *v, "%s is not set (run through meson test)", var);
    return v;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void make_tmpdir(char *out)
{
    snprintf(out, PATH_LEN, "%s/ldt-demo.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    cr_assert(mkdtemp(out), "mkdtemp: %s", strerror(errno));
}

static void remove_tree(const char *dir)
{
    char cmd[PATH_LEN + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_expect(system(cmd) == 0);
}

/* Wait for pid up to timeout_ms; SIGKILL it after that. Returns the exit status, 128+signal, or -1.
 */
static int wait_pid(pid_t pid, int timeout_ms)
{
    double deadline = now_ms() + timeout_ms;
    int st;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (r < 0)
            return -1;
        if (now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        sleep_ms(10);
    }
}

/* ---- the chain, started through run-chain ---- */

struct chain {
    pid_t pid;          /* run-chain (bash) */
    int out_fd;         /* its stdout */
    int port;           /* gateway */
    char dir[PATH_LEN]; /* private temporary directory: run-chain's stderr, spans */
    char err_path[PATH_LEN + 16];
    char names[NSVC][16];
    int ports[NSVC];
    pid_t pids[NSVC];
    int nsvc;
};

static void chain_child(const struct chain *c, int out_w, char **argv, char *const env[])
{
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    int in = open("/dev/null", O_RDONLY);
    int err = open(c->err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (in < 0 || err < 0 || dup2(in, 0) < 0 || dup2(out_w, 1) < 0 || dup2(err, 2) < 0)
        _exit(126);
    for (size_t i = 0; env && env[i]; i++)
        putenv(env[i]);
    execv("/bin/bash", argv);
    _exit(127);
}

/* Read run-chain's first stdout line (the gateway URL) within timeout_ms. */
static int read_url_port(int fd, int timeout_ms)
{
    char line[256];
    size_t n = 0;
    double deadline = now_ms() + timeout_ms;
    while (n < sizeof(line) - 1 && now_ms() < deadline) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t r = read(fd, line + n, 1);
        if (r <= 0)
            return -1;
        if (line[n] == '\n')
            break;
        n++;
    }
    line[n] = '\0';
    int port = -1;
    return sscanf(line, "http://127.0.0.1:%d", &port) == 1 ? port : -1;
}

/* Collect "run-chain: NAME 127.0.0.1:PORT pid PID" lines from run-chain's stderr. */
static void read_services(struct chain *c)
{
    FILE *f = fopen(c->err_path, "r");
    char line[512];
    cr_assert(f, "open %s", c->err_path);
    while (fgets(line, sizeof(line), f) && c->nsvc < NSVC) {
        char name[16];
        int port, pid;
        if (sscanf(line, "run-chain: %15s 127.0.0.1:%d pid %d", name, &port, &pid) == 3) {
            snprintf(c->names[c->nsvc], sizeof(c->names[0]), "%s", name);
            c->ports[c->nsvc] = port;
            c->pids[c->nsvc++] = pid;
        }
    }
    fclose(f);
}

/* Start the five services (payment failing for multiples of 7 and on the first attempt for
 * multiples of 5, db slow for multiples of 11) plus extra run-chain arguments; env adds NAME=value
 * entries. */
static void chain_start(struct chain *c, const char *const extra[], char *const env[])
{
    char bindir[PATH_LEN], script[PATH_LEN];
    char *argv[32] = {"bash",
                      script,
                      "--bin-dir",
                      bindir,
                      "--no-faults",
                      "--payment-args",
                      "--fail-every 7 --flaky-every 5",
                      "--db-args",
                      "--slow-every 11",
                      "--timeout",
                      "30"};
    int argc = 11;
    memset(c, 0, sizeof(*c));
    make_tmpdir(c->dir);
    snprintf(c->err_path, sizeof(c->err_path), "%s/run-chain.err", c->dir);
    snprintf(bindir, sizeof(bindir), "%s/demo-services", root("LDT_BUILD_ROOT"));
    snprintf(script, sizeof(script), "%s/demo-services/run-chain", root("LDT_SOURCE_ROOT"));
    for (size_t i = 0; extra && extra[i] && argc < 31; i++)
        argv[argc++] = (char *)extra[i];
    int fds[2];
    cr_assert(pipe2(fds, O_CLOEXEC) == 0);
    c->pid = fork();
    cr_assert(c->pid >= 0);
    if (c->pid == 0)
        chain_child(c, fds[1], argv, env);
    close(fds[1]);
    c->out_fd = fds[0];
    c->port = read_url_port(c->out_fd, 40000);
    if (c->port <= 0)
        system("cat >&2 \"$(ls -d /tmp/ldt-demo.*/run-chain.err | tail -1)\"");
    cr_assert(c->port > 0, "run-chain printed no gateway URL (stderr in %s)", c->err_path);
    read_services(c);
    cr_assert_eq(c->nsvc, NSVC, "run-chain listed %d services", c->nsvc);
}

static int chain_port(const struct chain *c, const char *name)
{
    for (int i = 0; i < c->nsvc; i++) {
        if (strcmp(c->names[i], name) == 0)
            return c->ports[i];
    }
    cr_assert_fail("no service %s", name);
    return -1;
}

/* SIGTERM run-chain; expect it to stop every service, each exiting 0, and nothing left behind. */
static void chain_stop(struct chain *c)
{
    cr_assert(kill(c->pid, SIGTERM) == 0);
    int st = wait_pid(c->pid, 20000);
    close(c->out_fd);
    cr_expect_eq(st, 143, "run-chain exit status %d, expected 143 (SIGTERM)", st);
    FILE *f = fopen(c->err_path, "r");
    char line[512];
    int clean = 0;
    cr_assert(f);
    while (fgets(line, sizeof(line), f)) {
        char name[16];
        int code;
        if (sscanf(line, "run-chain: %15s exited with status %d", name, &code) == 2) {
            cr_expect_eq(code, 0, "%s exited with status %d", name, code);
            clean += code == 0;
        }
    }
    fclose(f);
    cr_expect_eq(clean, NSVC, "%d of %d services exited cleanly", clean, NSVC);
    for (int i = 0; i < c->nsvc; i++)
        cr_expect(kill(c->pids[i], 0) < 0 && errno == ESRCH, "%s (pid %d) still runs", c->names[i],
                  c->pids[i]);
}

/* ---- HTTP client (plain sockets, one request per connection) ---- */

struct resp {
    int status;
    char raw[RAW_MAX];
    size_t raw_len;
    const char *body; /* into raw */
    double ms;
};

/* Connect to 127.0.0.1:port with a 15 s receive timeout. Returns the fd or -1 (no assertion, so
 * client threads may call it). */
static int dial(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {15, 0};
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
        return fd;
    close(fd);
    return -1;
}

/* Write req, read until the server closes; fill r. Returns 0, or -1 with the reason in r->raw. */
static int try_exchange(int port, const char *req, struct resp *r)
{
    memset(r, 0, sizeof(*r));
    r->body = r->raw;
    double t0 = now_ms();
    int fd = dial(port);
    if (fd < 0 || write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
        snprintf(r->raw, sizeof(r->raw), "connect/write :%d: %s", port, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    ssize_t n;
    while (r->raw_len < RAW_MAX - 1 &&
           (n = read(fd, r->raw + r->raw_len, RAW_MAX - 1 - r->raw_len)) > 0)
        r->raw_len += (size_t)n;
    close(fd);
    r->ms = now_ms() - t0;
    r->raw[r->raw_len] = '\0';
    const char *sep = strstr(r->raw, "\r\n\r\n");
    if (sscanf(r->raw, "HTTP/1.1 %d ", &r->status) != 1 || !sep)
        return -1;
    r->body = sep + 4;
    return 0;
}

static void exchange(int port, const char *req, struct resp *r)
{
    cr_assert(try_exchange(port, req, r) == 0, "no HTTP response: %s", r->raw);
}

static int try_get(int port, const char *target, struct resp *r)
{
    char req[2048];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n",
             target, port);
    return try_exchange(port, req, r);
}

static void http_get(int port, const char *target, const char *headers, struct resp *r)
{
    char req[2048];
    snprintf(req, sizeof(req),
             "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%sConnection: close\r\n\r\n", target, port,
             headers ? headers : "");
    exchange(port, req, r);
}

static void http_post(int port, const char *target, const char *body, struct resp *r)
{
    char req[2048];
    snprintf(req, sizeof(req),
             "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
             target, port, strlen(body), body);
    exchange(port, req, r);
}

/* ---- the requests: one per path through the chain ---- */

struct demo_case {
    const char *label;
    const char *target;
    const char *headers;
    int status;
    const char *body;
    double min_ms; /* the slow path takes at least this long */
};

static const struct demo_case cases[] = {
    {"success", "/checkout?order=1", NULL, 200,
     "{\"checkout\":\"ok\",\"order\":1,\"user\":\"demo\",\"result\":{\"order\":1,\"status\":"
     "\"confirmed\","
     "\"items\":2,\"total_cents\":1072,\"charge_id\":\"ch-000000001\",\"payment_attempts\":1}}",
     0},
    {"payment 503 surfaces as 502", "/checkout?order=7", NULL, 502,
     "{\"checkout\":\"failed\",\"order\":7,\"stage\":\"order\",\"upstream_status\":503,"
     "\"error\":\"payment unavailable\"}",
     0},
    {"retry succeeds", "/checkout?order=5", NULL, 200,
     "{\"checkout\":\"ok\",\"order\":5,\"user\":\"demo\",\"result\":{\"order\":5,\"status\":"
     "\"confirmed\","
     "\"items\":1,\"total_cents\":684,\"charge_id\":\"ch-000000005\",\"payment_attempts\":2}}",
     0},
    {"slow query (slow-every)", "/checkout?order=11", NULL, 200,
     "{\"checkout\":\"ok\",\"order\":11,\"user\":\"demo\",\"result\":{\"order\":11,\"status\":"
     "\"confirmed\","
     "\"items\":2,\"total_cents\":1812,\"charge_id\":\"ch-000000011\",\"payment_attempts\":1}}",
     150},
    {"slow query (slow=1)", "/checkout?order=3&slow=1", NULL, 200,
     "{\"checkout\":\"ok\",\"order\":3,\"user\":\"demo\",\"result\":{\"order\":3,\"status\":"
     "\"confirmed\","
     "\"items\":4,\"total_cents\":2440,\"charge_id\":\"ch-000000003\",\"payment_attempts\":1}}",
     150},
    {"bad order id", "/checkout?order=abc", NULL, 400,
     "{\"checkout\":\"rejected\",\"error\":\"order must be 1..999999999\"}", 0},
    {"bad token", "/checkout?order=2", "Authorization: Bearer wrong\r\n", 401,
     "{\"checkout\":\"denied\",\"order\":2,\"error\":\"invalid token\"}", 0},
    {"health", "/health", NULL, 200, "{\"service\":\"gateway\",\"status\":\"ok\"}", 0},
    {"unknown path", "/nope", NULL, 404, "{\"error\":\"not found\"}", 0},
};
#define NCASES (sizeof(cases) / sizeof(cases[0]))

/* A traceparent for case i, so the traced run can find each request's trace. */
static void case_headers(size_t i, char *out, size_t size)
{
    snprintf(out, size,
             "%straceparent: 00-0af7651916cd43dd8448eb211c80%04zx-b7ad6b71692033%02zx-01\r\n",
             cases[i].headers ? cases[i].headers : "", i + 1, i + 1);
}

static void case_trace_id(size_t i, char *out)
{
    snprintf(out, 33, "0af7651916cd43dd8448eb211c80%04zx", i + 1);
}

static void case_parent_id(size_t i, char *out)
{
    snprintf(out, 17, "b7ad6b71692033%02zx", i + 1);
}

/* Send every case (with a traceparent), check status, body and timing; keep the raw answers. */
static void run_cases(int port, struct resp *out)
{
    for (size_t i = 0; i < NCASES; i++) {
        char hdr[256];
        case_headers(i, hdr, sizeof(hdr));
        http_get(port, cases[i].target, hdr, &out[i]);
        cr_expect_eq(out[i].status, cases[i].status, "%s: status %d", cases[i].label,
                     out[i].status);
        cr_expect_str_eq(out[i].body, cases[i].body, "%s: body", cases[i].label);
        cr_expect_geq(out[i].ms, cases[i].min_ms, "%s: %.1f ms", cases[i].label, out[i].ms);
    }
}

static void expect_same_bytes(const struct resp *a, const struct resp *b, const char *what)
{
    for (size_t i = 0; i < NCASES; i++) {
        cr_expect(a[i].raw_len == b[i].raw_len && memcmp(a[i].raw, b[i].raw, a[i].raw_len) == 0,
                  "%s: %s differs:\n%s\n---\n%s", what, cases[i].label, a[i].raw, b[i].raw);
    }
}

/* ---- untraced tests ---- */

Test(demo, every_path_answers_deterministically, .timeout = 60)
{
    static struct resp first[NCASES], second[NCASES];
    struct chain c;
    chain_start(&c, NULL, NULL);
    run_cases(c.port, first);
    run_cases(c.port, second);
    expect_same_bytes(first, second, "second run");
    cr_expect(strstr(first[0].raw, "Content-Type: application/json\r\n"));
    chain_stop(&c);
    remove_tree(c.dir);
}

Test(demo, order_retries_payment_three_times_then_fails, .timeout = 60)
{
    struct chain c;
    struct resp r;
    chain_start(&c, NULL, NULL);
    int order = chain_port(&c, "order");
    http_post(order, "/orders", "{\"order\":7,\"user\":\"demo\"}", &r);
    cr_expect_eq(r.status, 503);
    cr_expect_str_eq(r.body,
                     "{\"error\":\"payment unavailable\",\"order\":7,\"payment_attempts\":4,"
                     "\"upstream_status\":503}");
    http_post(chain_port(&c, "payment"), "/charge",
              "{\"order\":14,\"amount_cents\":5,\"attempt\":3}", &r);
    cr_expect_eq(r.status, 503);
    cr_expect_str_eq(r.body, "{\"error\":\"payment processor unavailable\",\"order\":14,"
                             "\"reason\":\"declined\"}");
    http_get(chain_port(&c, "db"), "/query?order=12", NULL, &r);
    cr_expect_str_eq(r.body, "{\"order\":12,\"items\":3,\"total_cents\":2829,\"sku\":\"SKU-00012\","
                             "\"plan\":\"index\"}");
    http_post(order, "/orders", "{\"user\":\"demo\"}", &r);
    cr_expect_eq(r.status, 400);
    chain_stop(&c);
    remove_tree(c.dir);
}

Test(demo, payment_down_makes_a_retry_storm, .timeout = 60)
{
    static const char *const extra[] = {"--payment-args", "--down", NULL};
    struct chain c;
    struct resp r;
    chain_start(&c, extra, NULL);
    http_get(c.port, "/checkout?order=1", NULL, &r);
    cr_expect_eq(r.status, 502);
    cr_expect_str_eq(r.body, "{\"checkout\":\"failed\",\"order\":1,\"stage\":\"order\","
                             "\"upstream_status\":503,\"error\":\"payment unavailable\"}");
    http_post(chain_port(&c, "order"), "/orders", "{\"order\":1}", &r);
    cr_expect_str_eq(r.body,
                     "{\"error\":\"payment unavailable\",\"order\":1,\"payment_attempts\":4,"
                     "\"upstream_status\":503}");
    chain_stop(&c);
    remove_tree(c.dir);
}

Test(demo, keep_alive_serves_pipelined_requests, .timeout = 60)
{
    struct chain c;
    struct resp r;
    chain_start(&c, NULL, NULL);
    exchange(c.port,
             "GET /checkout?order=1 HTTP/1.1\r\nHost: x\r\n\r\n"
             "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
             &r);
    cr_expect_eq(r.status, 200);
    const char *second = strstr(r.body, "HTTP/1.1 200 OK\r\n");
    cr_assert(second, "one connection, two answers: %s", r.raw);
    cr_expect(strstr(second, "Connection: close\r\n"));
    cr_expect(strstr(second, "{\"service\":\"gateway\",\"status\":\"ok\"}"));
    chain_stop(&c);
    remove_tree(c.dir);
}

/* An order that takes none of the fault paths set up by chain_start. */
static int plain_order(int order)
{
    return order % 5 != 0 && order % 7 != 0 && order % 11 != 0;
}

struct load_arg {
    int port;
    int first_order;
    int ok;
};

/* One client thread: 20 checkouts of orders that succeed on the first attempt, each compared. */
static void *load_main(void *p)
{
    struct load_arg *a = p;
    static __thread struct resp r;
    for (int k = 0; k < 20; k++) {
        int order = a->first_order + k * 7 + 1;
        if (!plain_order(order))
            continue;
        char target[64], want[64];
        snprintf(target, sizeof(target), "/checkout?order=%d", order);
        snprintf(want, sizeof(want), "\"charge_id\":\"ch-%09d\",\"payment_attempts\":1}}", order);
        a->ok += try_get(a->port, target, &r) == 0 && r.status == 200 && strstr(r.body, want);
    }
    return NULL;
}

Test(demo, concurrent_checkouts_all_answer, .timeout = 60)
{
    struct chain c;
    struct load_arg args[8];
    pthread_t t[8];
    int expected = 0;
    chain_start(&c, NULL, NULL);
    for (int i = 0; i < 8; i++) {
        args[i] = (struct load_arg){c.port, i * 1000, 0};
        for (int k = 0; k < 20; k++) {
            int order = i * 1000 + k * 7 + 1;
            expected += plain_order(order);
        }
        cr_assert(pthread_create(&t[i], NULL, load_main, &args[i]) == 0);
    }
    int ok = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        ok += args[i].ok;
    }
    cr_expect_eq(ok, expected, "%d of %d concurrent checkouts answered correctly", ok, expected);
    chain_stop(&c);
    remove_tree(c.dir);
}

static void *slow_request_main(void *p)
{
    struct resp *r = p;
    try_get(*(int *)p, "/checkout?order=3&slow=1", r);
    return NULL;
}

Test(demo, sigterm_during_a_request_answers_it_and_exits_0, .timeout = 60)
{
    static struct resp r;
    struct chain c;
    pthread_t t;
    chain_start(&c, NULL, NULL);
    memcpy(&r, &c.port, sizeof(int));
    cr_assert(pthread_create(&t, NULL, slow_request_main, &r) == 0);
    sleep_ms(60); /* the request is now in db's 150 ms slow query */
    chain_stop(&c);
    pthread_join(t, NULL);
    cr_expect(r.status == 200 || r.status == 502, "in-flight request got status %d", r.status);
    cr_expect(strstr(r.body, "\"order\":3") != NULL, "in-flight request got: %s", r.raw);
    remove_tree(c.dir);
}

Test(demo, run_chain_runs_a_command_and_passes_its_status, .timeout = 60)
{
    char dir[PATH_LEN], out[PATH_LEN + 16], cmd[4 * PATH_LEN];
    make_tmpdir(dir);
    snprintf(out, sizeof(out), "%s/out", dir);
    snprintf(cmd, sizeof(cmd),
             "bash '%s/demo-services/run-chain' --bin-dir '%s/demo-services' -- "
             "sh -c 'curl -s \"$GATEWAY_URL/checkout?order=1\"; exit 3' >'%s' 2>/dev/null",
             root("LDT_SOURCE_ROOT"), root("LDT_BUILD_ROOT"), out);
    int st = system(cmd);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 3, "status %d", st);
    FILE *f = fopen(out, "r");
    char line[1024] = "", url[256] = "";
    cr_assert(f);
    cr_expect(fgets(url, sizeof(url), f) && strncmp(url, "http://127.0.0.1:", 17) == 0, "%s", url);
    cr_expect(fgets(line, sizeof(line), f) && strstr(line, "\"checkout\":\"ok\""), "%s", line);
    fclose(f);
    remove_tree(dir);
}

/* ---- traced: spans read back from ldtraced's OTLP JSON ---- */

struct span {
    char trace[33], id[17], parent[17];
    char service[64], path[256];
    int kind, status, http_status, server_port;
    char method[16];
    unsigned long long start, end;
};

struct spanset {
    struct span v[4096];
    size_t n;
};

static const char *attr_text(json_t *attrs, const char *key, char *buf, size_t size)
{
    size_t i;
    json_t *a;
    json_array_foreach(attrs, i, a)
    {
        if (strcmp(json_string_value(json_object_get(a, "key")) ?: "", key) != 0)
            continue;
        json_t *v = json_object_get(a, "value");
        json_t *s = json_object_get(v, "stringValue"), *n = json_object_get(v, "intValue");
        if (json_is_string(s))
            snprintf(buf, size, "%s", json_string_value(s));
        else if (json_is_string(n))
            snprintf(buf, size, "%s", json_string_value(n));
        else if (json_is_integer(n))
            snprintf(buf, size, "%lld", (long long)json_integer_value(n));
        else
            return NULL;
        return buf;
    }
    return NULL;
}

static void add_span(struct spanset *set, json_t *js, const char *service)
{
    cr_assert(set->n < sizeof(set->v) / sizeof(set->v[0]));
    struct span *s = &set->v[set->n++];
    char num[32];
    memset(s, 0, sizeof(*s));
    snprintf(s->trace, sizeof(s->trace), "%s",
             json_string_value(json_object_get(js, "traceId")) ?: "");
    snprintf(s->id, sizeof(s->id), "%s", json_string_value(json_object_get(js, "spanId")) ?: "");
    snprintf(s->parent, sizeof(s->parent), "%s",
             json_string_value(json_object_get(js, "parentSpanId")) ?: "");
    snprintf(s->service, sizeof(s->service), "%s", service);
    s->kind = (int)json_integer_value(json_object_get(js, "kind"));
    s->status = (int)json_integer_value(json_object_get(json_object_get(js, "status"), "code"));
    s->start =
        strtoull(json_string_value(json_object_get(js, "startTimeUnixNano")) ?: "0", NULL, 10);
    s->end = strtoull(json_string_value(json_object_get(js, "endTimeUnixNano")) ?: "0", NULL, 10);
    json_t *attrs = json_object_get(js, "attributes");
    if (attr_text(attrs, "http.response.status_code", num, sizeof(num)))
        s->http_status = atoi(num);
    attr_text(attrs, "url.path", s->path, sizeof(s->path));
    attr_text(attrs, "http.request.method", s->method, sizeof(s->method));
    if (attr_text(attrs, "server.port", num, sizeof(num)))
        s->server_port = atoi(num);
}

static void add_request(struct spanset *set, json_t *req)
{
    size_t i, j, k;
    json_t *rs, *ss, *sp;
    json_array_foreach(json_object_get(req, "resourceSpans"), i, rs)
    {
        char service[64] = "";
        attr_text(json_object_get(json_object_get(rs, "resource"), "attributes"), "service.name",
                  service, sizeof(service));
        json_array_foreach(json_object_get(rs, "scopeSpans"), j, ss)
        {
            json_array_foreach(json_object_get(ss, "spans"), k, sp) add_span(set, sp, service);
        }
    }
}

/* Run ldtraced --once over dir and load every span it wrote. */
static void drain_spans(const char *dir, struct spanset *set)
{
    char out[PATH_LEN + 16], bin[PATH_LEN];
    snprintf(out, sizeof(out), "%s/spans.json", dir);
    snprintf(bin, sizeof(bin), "%s/src/sidecar/ldtraced", root("LDT_BUILD_ROOT"));
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        execl(bin, "ldtraced", "--dir", dir, "--once", "--out", out, (char *)NULL);
        _exit(127);
    }
    cr_assert_eq(wait_pid(pid, 30000), 0, "ldtraced --once failed");
    FILE *f = fopen(out, "r");
    cr_assert(f, "ldtraced wrote no %s", out);
    static char line[1 << 22];
    set->n = 0;
    while (fgets(line, sizeof(line), f)) {
        json_error_t e;
        json_t *req = json_loads(line, 0, &e);
        cr_assert(req, "bad OTLP JSON line: %s", e.text);
        add_request(set, req);
        json_decref(req);
    }
    fclose(f);
}

static void dump_trace(const struct spanset *set, const char *trace)
{
    for (size_t i = 0; i < set->n; i++) {
        const struct span *s = &set->v[i];
        if (!trace || strcmp(s->trace, trace) == 0)
            fprintf(stderr, "  %s %s<-%s %-8s kind=%d status=%d http=%d %s %llu+%llu\n", s->trace,
                    s->id, s->parent[0] ? s->parent : "----------------", s->service, s->kind,
                    s->status, s->http_status, s->path, s->start, s->end - s->start);
    }
}

static const struct span *by_id(const struct spanset *set, const char *trace, const char *id)
{
    for (size_t i = 0; i < set->n; i++) {
        if (strcmp(set->v[i].trace, trace) == 0 && strcmp(set->v[i].id, id) == 0)
            return &set->v[i];
    }
    return NULL;
}

/* Spans of one trace, by kind and service (either may be 0/NULL for any). */
static size_t count(const struct spanset *set, const char *trace, int kind, const char *service,
                    const struct span **first)
{
    size_t n = 0;
    for (size_t i = 0; i < set->n; i++) {
        const struct span *s = &set->v[i];
        if (strcmp(s->trace, trace) != 0 || (kind && s->kind != kind) ||
            (service && strcmp(s->service, service) != 0))
            continue;
        if (first && n == 0)
            *first = s;
        n++;
    }
    return n;
}

static void expect_nested(const struct span *parent, const struct span *child)
{
    cr_expect(child->start + NEST_TOLERANCE_NS >= parent->start &&
                  child->end <= parent->end + NEST_TOLERANCE_NS,
              "%s span %s [%llu, %llu] not inside %s span %s [%llu, %llu]", child->service,
              child->id, child->start, child->end, parent->service, parent->id, parent->start,
              parent->end);
}

/* Which service a CLIENT span in service `from` must be calling. */
static int edge_ok(const char *from, const char *to)
{
    return (strcmp(from, "gateway") == 0 &&
            (strcmp(to, "auth") == 0 || strcmp(to, "order") == 0)) ||
           (strcmp(from, "order") == 0 && (strcmp(to, "payment") == 0 || strcmp(to, "db") == 0));
}

static const struct chain *traced_chain; /* for the ports CLIENT spans must name */

static const struct span *server_child(const struct spanset *set, const char *trace,
                                       const struct span *client, size_t *n)
{
    const struct span *child = NULL;
    *n = 0;
    for (size_t j = 0; j < set->n; j++) {
        const struct span *c = &set->v[j];
        if (strcmp(c->trace, trace) == 0 && strcmp(c->parent, client->id) == 0 && c->kind == 2) {
            child = c;
            (*n)++;
        }
    }
    return child;
}

/* A CLIENT span: child of its own service's SERVER span, parent of exactly one SERVER span in the
 * service it calls, whose port, method and path it names. */
static void check_client(const struct spanset *set, const char *trace, const struct span *s,
                         const struct span *p)
{
    size_t n;
    const struct span *child = server_child(set, trace, s, &n);
    cr_expect_eq(p->kind, 2, "%s CLIENT's parent is kind %d", s->service, p->kind);
    cr_expect_str_eq(p->service, s->service, "a CLIENT span's parent is in its own service");
    cr_expect_eq(n, 1, "%s CLIENT span %s has %zu SERVER children", s->service, s->id, n);
    if (!child)
        return;
    cr_expect_eq(s->server_port, chain_port(traced_chain, child->service),
                 "%s CLIENT span to %s names server.port %d", s->service, child->service,
                 s->server_port);
    cr_expect_str_eq(s->method, child->method, "CLIENT and SERVER method");
    cr_expect_str_eq(s->path, child->path, "CLIENT and SERVER url.path");
    cr_expect_eq(s->http_status, child->http_status, "CLIENT and SERVER status code");
}

/* Check the links of one trace: every CLIENT span as in check_client; every SERVER span but the
 * gateway's is the child of a CLIENT span of its caller; the gateway's parent is the test's
 * traceparent (or none); INTERNAL (connect) spans hang off their service's SERVER span; every span
 * lies within its parent. */
static void check_links(const struct spanset *set, const char *trace, const char *remote_parent)
{
    for (size_t i = 0; i < set->n; i++) {
        const struct span *s = &set->v[i];
        if (strcmp(s->trace, trace) != 0)
            continue;
        const struct span *p = by_id(set, trace, s->parent);
        if (s->kind == 2 && strcmp(s->service, "gateway") == 0) {
            cr_expect_str_eq(s->parent, remote_parent, "gateway's parent is the caller's span");
            continue;
        }
        cr_assert(p, "%s span %s kind %d: parent %s not in the trace", s->service, s->id, s->kind,
                  s->parent);
        if (s->kind == 2) {
            cr_expect_eq(p->kind, 3, "%s SERVER's parent is kind %d", s->service, p->kind);
            cr_expect(edge_ok(p->service, s->service), "edge %s -> %s", p->service, s->service);
        } else if (s->kind == 3) {
            check_client(set, trace, s, p);
        } else {
            cr_expect(p->kind == 2 && strcmp(p->service, s->service) == 0,
                      "%s INTERNAL span's parent is a %d span in %s", s->service, p->kind,
                      p->service);
        }
        expect_nested(p, s);
    }
}

/* Expected SERVER spans per service in one /checkout trace: payment once per attempt. */
static void check_shape(const struct spanset *set, const char *trace, size_t attempts)
{
    static const int kinds[] = {2, 2, 2, 2, 2, 3, 3};
    const char *const who[] = {"gateway", "auth", "order", "db", "payment", "gateway", "order"};
    size_t want[] = {1, 1, 1, 1, attempts, 2, 1 + attempts};
    int bad = 0;
    for (size_t i = 0; i < 7; i++) {
        size_t n = count(set, trace, kinds[i], who[i], NULL);
        cr_expect_eq(n, want[i], "trace %s: %zu %s spans in %s, expected %zu", trace, n,
                     kinds[i] == 2 ? "SERVER" : "CLIENT", who[i], want[i]);
        bad += n != want[i];
    }
    cr_expect_eq(count(set, trace, 2, NULL, NULL), 4 + attempts, "SERVER spans");
    cr_expect_eq(count(set, trace, 3, NULL, NULL), 3 + attempts, "CLIENT spans");
    if (bad || getenv("LDT_DEMO_DUMP")) {
        fprintf(stderr, "trace %s as exported:\n", trace);
        dump_trace(set, trace);
    }
    for (size_t i = 0; i < set->n; i++) {
        const struct span *s = &set->v[i];
        cr_expect(strcmp(s->trace, trace) != 0 || (s->kind >= 1 && s->kind <= 3), "kind %d",
                  s->kind);
    }
}

/* Payment's 503s: ERROR on payment's SERVER spans and on order's CLIENT spans that got them. */
static void check_errors(const struct spanset *set, const char *trace, size_t failed)
{
    size_t err_server = 0, err_client = 0;
    for (size_t i = 0; i < set->n; i++) {
        const struct span *s = &set->v[i];
        if (strcmp(s->trace, trace) != 0 || s->http_status != 503)
            continue;
        if (s->kind == 2 && strcmp(s->service, "payment") == 0) {
            cr_expect_eq(s->status, 2, "payment SERVER 503 has status code %d", s->status);
            err_server++;
        }
        if (s->kind == 3 && strcmp(s->service, "order") == 0) {
            cr_expect_eq(s->status, 2, "order CLIENT 503 has status code %d", s->status);
            err_client++;
        }
    }
    cr_expect_eq(err_server, failed, "payment SERVER spans with 503");
    cr_expect_eq(err_client, failed, "order CLIENT spans with 503");
}

static void start_traced(struct chain *c, char *env_storage[8])
{
    static char preload[2 * PATH_LEN + 64];
    const char *first = getenv("ITEST_PRELOAD_FIRST");
    snprintf(preload, sizeof(preload), "env LD_PRELOAD=%s%s%s/src/shim/libldtrace.so",
             first && *first ? first : "", first && *first ? ":" : "", root("LDT_BUILD_ROOT"));
    static const char *extra[] = {"--prefix", NULL, NULL};
    extra[1] = preload;
    char dir[PATH_LEN];
    make_tmpdir(dir);
    cr_assert(asprintf(&env_storage[0], "LDTRACE_DIR=%s", dir) > 0);
    cr_assert(asprintf(&env_storage[1], "LDTRACE_LOG=%s/shim.log", dir) > 0);
    cr_assert(asprintf(&env_storage[2], "ASAN_OPTIONS=detect_leaks=0:verify_asan_link_order=0") >
              0);
    env_storage[3] = NULL;
    chain_start(c, extra, env_storage);
}

/* The trace of the one /checkout sent without a traceparent: its gateway SERVER span is a root. */
static const char *root_checkout_trace(const struct spanset *set)
{
    const char *trace = NULL;
    for (size_t i = 0; i < set->n; i++) {
        const struct span *s = &set->v[i];
        if (s->kind == 2 && strcmp(s->service, "gateway") == 0 &&
            strcmp(s->path, "/checkout") == 0 && s->parent[0] == '\0') {
            cr_expect(!trace, "two root /checkout spans");
            trace = s->trace;
        }
    }
    cr_assert(trace, "no root gateway SERVER span for /checkout");
    return trace;
}

/* Each checked trace: its shape, its links and its errors. cases[0] succeeds; cases[1] makes 4
 * payment attempts, all 503; cases[2] gets a 503 then a 200; the root request succeeds. */
static void check_traces(const struct spanset *set)
{
    static const size_t attempts[] = {1, 4, 2}, failed[] = {0, 4, 1};
    for (size_t i = 0; i < 3; i++) {
        char trace[33], parent[17];
        case_trace_id(i, trace);
        case_parent_id(i, parent);
        check_shape(set, trace, attempts[i]);
        check_links(set, trace, parent);
        check_errors(set, trace, failed[i]);
    }
    const char *root_trace = root_checkout_trace(set);
    check_shape(set, root_trace, 1);
    check_links(set, root_trace, "");
    check_errors(set, root_trace, 0);
    const struct span *s = NULL;
    char trace[33];
    case_trace_id(1, trace);
    count(set, trace, 2, "gateway", &s);
    cr_expect(s && s->status == 2 && s->http_status == 502, "gateway SERVER span of the 502");
    count(set, trace, 2, "order", &s);
    cr_expect(s && s->status == 2 && s->http_status == 503, "order SERVER span of the 503");
    case_trace_id(0, trace);
    for (size_t i = 0; i < set->n; i++) {
        s = &set->v[i];
        cr_expect(strcmp(s->trace, trace) != 0 || s->status != 2,
                  "error span in the success trace");
    }
}

/* `ldtrace analyze --format json --trace ID` on the spans of this run, parsed. */
static json_t *analyze_trace(const char *dir, const char *trace)
{
    char out[PATH_LEN + 16], res[PATH_LEN + 16], bin[PATH_LEN];
    snprintf(out, sizeof(out), "%s/spans.json", dir);
    snprintf(res, sizeof(res), "%s/analysis.json", dir);
    snprintf(bin, sizeof(bin), "%s/src/cli/ldtrace", root("LDT_BUILD_ROOT"));
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int fd = open(res, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || dup2(fd, 1) < 0)
            _exit(126);
        execl(bin, "ldtrace", "analyze", out, "--trace", trace, "--format", "json", (char *)NULL);
        _exit(127);
    }
    cr_assert_eq(wait_pid(pid, 30000), 0, "ldtrace analyze failed");
    json_error_t e;
    json_t *a = json_load_file(res, 0, &e);
    cr_assert(a, "ldtrace analyze wrote bad JSON: %s", e.text);
    return a;
}

/* The failed checkout as the analysis tells it: the error started at payment (with payment's own
 * stack) and surfaced at the gateway; order called payment 4 times for 1 (a retry storm). */
static void check_analysis(const char *dir)
{
    char trace[33];
    case_trace_id(1, trace);
    json_t *a = analyze_trace(dir, trace);
    json_t *err = json_array_get(json_object_get(a, "errors"), 0);
    cr_assert(err, "no error origin found for the failed checkout");
    json_t *origin = json_object_get(err, "origin"), *surfaced = json_object_get(err, "surfaced");
    cr_expect_str_eq(json_string_value(json_object_get(origin, "service")), "payment");
    cr_expect_eq(json_integer_value(json_object_get(origin, "status_code")), 503);
    const char *stack = json_string_value(json_object_get(origin, "stacktrace"));
    const char *first = getenv("ITEST_PRELOAD_FIRST");
    cr_expect(stack && *stack, "the origin carries a stack");
    /* With a sanitizer runtime preloaded, write() enters the shim through the sanitizer's
     * interceptor, which libunwind cannot step through: the stack stops there. */
    if (!first || !*first)
        cr_expect(stack && strstr(stack, "payment_reject_charge"),
                  "the origin's stack names the payment error path: %s", stack ? stack : "(none)");
    cr_expect_str_eq(json_string_value(json_object_get(surfaced, "service")), "gateway");
    cr_expect_eq(json_integer_value(json_object_get(surfaced, "status_code")), 502);
    json_t *retry = json_array_get(json_object_get(a, "retries"), 0);
    cr_assert(retry, "no retry storm found for the failed checkout");
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(retry, "parent"), "service")),
                     "order");
    cr_expect_eq(json_integer_value(json_object_get(retry, "attempts")), 4);
    cr_expect_eq(json_integer_value(json_object_get(retry, "amplification")), 4);
    json_decref(a);
}

Test(demo_traced, checkout_traces_have_the_expected_tree, .timeout = 120)
{
    static struct resp plain[NCASES], traced[NCASES], extra;
    static struct spanset set;
    static struct chain c;
    char shim[PATH_LEN], *env[8];
    snprintf(shim, sizeof(shim), "%s/src/shim/libldtrace.so", root("LDT_BUILD_ROOT"));
    if (access(shim, R_OK) != 0)
        cr_skip_test("%s is not built yet", shim);
    chain_start(&c, NULL, NULL);
    run_cases(c.port, plain);
    chain_stop(&c);
    remove_tree(c.dir);

    start_traced(&c, env);
    traced_chain = &c;
    run_cases(c.port, traced);
    expect_same_bytes(plain, traced, "under the shim");
    http_get(c.port, "/checkout?order=1", NULL, &extra);
    cr_expect_str_eq(extra.body, cases[0].body);
    chain_stop(&c);
    drain_spans(env[0] + strlen("LDTRACE_DIR="), &set);
    check_traces(&set);
    check_analysis(env[0] + strlen("LDTRACE_DIR="));
    remove_tree(env[0] + strlen("LDTRACE_DIR="));
    for (int i = 0; i < 3; i++)
        free(env[i]);
    remove_tree(c.dir);
}
