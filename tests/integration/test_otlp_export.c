/* test_otlp_export.c - integration: ldtraced as an OTLP/HTTP exporter against the test receiver
 * (otlp_receiver.py), which validates every request against the OTLP/JSON rules: gzip and headers,
 * batching by size and time, each retry rule (503 then 200, 429 with Retry-After, 400 not retried,
 * partial success), the spool while the receiver is down under load and after a restart, HTTPS.
 *
 * Spans come from ldtrace-emit (unique span ids); ldtraced and the receiver are children on
 * 127.0.0.1. Nothing here is traced.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "itest.h"

struct rx {
    pid_t pid;
    int port;
    char out[ITEST_PATH_MAX + 32], log[ITEST_PATH_MAX + 32];
};

static char dir[ITEST_PATH_MAX];
static char err_path[ITEST_PATH_MAX + 32];

static void setup(void)
{
    cr_assert_eq(itest_mkdtemp(dir), 0);
    snprintf(err_path, sizeof(err_path), "%s/ldtraced.err", dir);
}

static void teardown(void)
{
    itest_rmtree(dir);
}

TestSuite(otlp, .init = setup, .fini = teardown, .timeout = 90);

/* Start the receiver with extra arguments (NULL-terminated); port 0 picks a free one. */
static void rx_start(struct rx *r, int port, const char *const extra[])
{
    char portfile[ITEST_PATH_MAX + 32], portarg[16];
    snprintf(portfile, sizeof(portfile), "%s/rx.port", dir);
    snprintf(r->out, sizeof(r->out), "%s/rx.jsonl", dir);
    snprintf(r->log, sizeof(r->log), "%s/rx.log", dir);
    snprintf(portarg, sizeof(portarg), "%d", port);
    unlink(portfile);
    char *argv[32] = {"/usr/bin/python3", itest_src("tests/integration/otlp_receiver.py"),
                      "--port", portarg, "--port-file", portfile, "--out", r->out, "--log",
                      r->log};
    int n = 10;
    for (int i = 0; extra && extra[i]; i++)
        argv[n++] = (char *)extra[i];
    argv[n] = NULL;
    struct itest_env env;
    itest_env_init(&env);
    r->pid = itest_spawn_io(&env, argv, NULL, NULL);
    itest_env_free(&env);
    cr_assert_gt(r->pid, 0);
    char *s = NULL;
    for (int i = 0; i < 500 && !(s = itest_slurp(portfile, NULL)); i++)
        usleep(10000);
    cr_assert_not_null(s, "the receiver did not start");
    r->port = atoi(s);
    free(s);
}

static void rx_stop(struct rx *r)
{
    itest_stop(r->pid);
}

/* Per-request lines of the receiver's log. */
struct req {
    long ms;
    int status, gzip, spans, valid;
    char why[256];
};

static int rx_requests(const struct rx *r, struct req *out, int max)
{
    FILE *f = fopen(r->log, "r");
    int n = 0;
    while (f && n < max && fscanf(f, "%ld %d %d %d %d %255s", &out[n].ms, &out[n].status,
                                  &out[n].gzip, &out[n].spans, &out[n].valid, out[n].why) == 6)
        n++;
    if (f)
        fclose(f);
    return n;
}

static void emit(int spans, int threads, int procs)
{
    char s[16], t[16], p[16];
    snprintf(s, sizeof(s), "%d", spans);
    snprintf(t, sizeof(t), "%d", threads);
    snprintf(p, sizeof(p), "%d", procs);
    char *argv[] = {itest_build("tests/tools/ldtrace-emit"), "--dir", dir, "--spans", s,
                    "--threads", t, "--procs", p, "--slots", "8192", NULL};
    struct itest_env env;
    itest_env_init(&env);
    cr_assert_eq(itest_run(&env, argv, NULL, 60000), 0, "ldtrace-emit failed");
    itest_env_free(&env);
}

/* ldtraced --dir dir --otlp url [extra] with the environment's extra NAME=value pairs. */
static pid_t ldtraced(const char *url, const char *const args[], const char *const envs[])
{
    char *argv[24] = {itest_build("src/sidecar/ldtraced"), "--dir", dir, "--otlp", (char *)url,
                      "--poll-ms", "2"};
    int n = 7;
    for (int i = 0; args && args[i]; i++)
        argv[n++] = (char *)args[i];
    argv[n] = NULL;
    struct itest_env env;
    itest_env_init(&env);
    for (int i = 0; envs && envs[i]; i += 2)
        itest_env_set(&env, envs[i], envs[i + 1]);
    pid_t p = itest_spawn_io(&env, argv, NULL, err_path);
    itest_env_free(&env);
    cr_assert_gt(p, 0);
    return p;
}

static char *url_of(const struct rx *r, char *buf, size_t cap, const char *scheme)
{
    snprintf(buf, cap, "%s://127.0.0.1:%d", scheme, r->port);
    return buf;
}

/* Spans the receiver accepted, asserting none twice. */
static size_t delivered(const struct rx *r)
{
    struct itest_spans *s = itest_load_spans(r->out);
    cr_assert_not_null(s, "the receiver's output does not parse");
    size_t n = s->n, dups = itest_duplicates(s);
    itest_spans_free(s);
    cr_assert_eq(dups, 0, "%zu span ids delivered twice", dups);
    return n;
}

static size_t wait_delivered(const struct rx *r, size_t want, int ms)
{
    size_t n = 0;
    for (int t = 0; t < ms && (n = delivered(r)) < want; t += 250)
        usleep(250000);
    return n;
}

static const char *said(void)
{
    static char *s;
    free(s);
    s = itest_slurp(err_path, NULL);
    return s ? s : "";
}

Test(otlp, gzip_and_headers_every_request_valid)
{
    struct rx r;
    const char *ra[] = {"--require-header", "x-tenant:acme team", NULL};
    rx_start(&r, 0, ra);
    emit(1500, 2, 2);
    char url[64];
    const char *env[] = {"OTEL_EXPORTER_OTLP_COMPRESSION", "gzip", "OTEL_EXPORTER_OTLP_HEADERS",
                         "x-tenant=acme%20team", NULL};
    const char *once[] = {"--once", NULL};
    cr_assert_eq(itest_wait(ldtraced(url_of(&r, url, sizeof(url), "http"), once, env), 30000), 0,
                 "%s", said());
    struct req q[64];
    int n = rx_requests(&r, q, 64);
    cr_assert_geq(n, 2, "one request per process at least");
    for (int i = 0; i < n; i++) {
        cr_expect(q[i].valid && q[i].status == 200, "request %d: %d %s", i, q[i].status, q[i].why);
        cr_expect_eq(q[i].gzip, 1, "request %d not gzipped", i);
    }
    cr_assert_eq(delivered(&r), 6000);
    rx_stop(&r);
}

Test(otlp, batches_bounded_by_size)
{
    struct rx r;
    rx_start(&r, 0, NULL);
    emit(3000, 3, 1); /* 9000 spans of one process: more than one batch of 4096 */
    char url[64];
    const char *once[] = {"--once", NULL};
    cr_assert_eq(itest_wait(ldtraced(url_of(&r, url, sizeof(url), "http"), once, NULL), 30000), 0);
    struct req q[64];
    int n = rx_requests(&r, q, 64);
    cr_assert_geq(n, 3, "9000 spans in %d requests", n);
    for (int i = 0; i < n; i++)
        cr_expect_leq(q[i].spans, 4096);
    cr_assert_eq(delivered(&r), 9000);
    rx_stop(&r);
}

Test(otlp, low_traffic_reaches_the_receiver_within_a_second)
{
    struct rx r;
    rx_start(&r, 0, NULL);
    char url[64];
    pid_t sc = ldtraced(url_of(&r, url, sizeof(url), "http"), NULL, NULL);
    char *argv[] = {itest_build("tests/tools/ldtrace-emit"), "--dir", dir, "--spans", "40",
                    "--threads", "1", "--procs", "1", "--rate", "20", NULL};
    struct itest_env env;
    itest_env_init(&env);
    pid_t em = itest_spawn(&env, argv, NULL);
    itest_env_free(&env);
    usleep(1000000);
    size_t n = delivered(&r);
    cr_expect_geq(n, 5, "after 1 s at 20 spans/s, %zu spans at the receiver", n);
    cr_assert_eq(itest_wait(em, 10000), 0);
    cr_expect_eq(wait_delivered(&r, 40, 3000), 40);
    cr_assert_eq(itest_stop(sc), 0);
    rx_stop(&r);
}

Test(otlp, retry_503_then_200)
{
    struct rx r;
    const char *ra[] = {"--script", "503,503", NULL};
    rx_start(&r, 0, ra);
    emit(500, 1, 1);
    char url[64];
    const char *once[] = {"--once", NULL};
    cr_assert_eq(itest_wait(ldtraced(url_of(&r, url, sizeof(url), "http"), once, NULL), 30000), 0,
                 "%s", said());
    struct req q[16];
    int n = rx_requests(&r, q, 16);
    cr_assert_eq(n, 3, "503, 503, then 200");
    cr_expect(q[0].status == 503 && q[1].status == 503 && q[2].status == 200);
    cr_expect_geq(q[2].ms - q[1].ms, 40, "retried without a backoff");
    cr_assert_eq(delivered(&r), 500);
    cr_expect_not_null(strstr(said(), "HTTP 503, retrying"), "%s", said());
    rx_stop(&r);
}

Test(otlp, retry_429_honours_retry_after)
{
    struct rx r;
    const char *ra[] = {"--script", "429", "--retry-after", "1", NULL};
    rx_start(&r, 0, ra);
    emit(300, 1, 1);
    char url[64];
    const char *once[] = {"--once", NULL};
    cr_assert_eq(itest_wait(ldtraced(url_of(&r, url, sizeof(url), "http"), once, NULL), 30000), 0);
    struct req q[16];
    int n = rx_requests(&r, q, 16);
    cr_assert_eq(n, 2);
    cr_expect_eq(q[0].status, 429);
    cr_expect_geq(q[1].ms - q[0].ms, 950, "Retry-After: 1 but retried after %ld ms",
                  q[1].ms - q[0].ms);
    cr_assert_eq(delivered(&r), 300);
    rx_stop(&r);
}

Test(otlp, status_400_not_retried_and_logged_with_body)
{
    struct rx r;
    const char *ra[] = {"--script", "400", NULL};
    rx_start(&r, 0, ra);
    emit(200, 1, 1);
    char url[64];
    const char *once[] = {"--once", "--stats", NULL};
    cr_assert_eq(itest_wait(ldtraced(url_of(&r, url, sizeof(url), "http"), once, NULL), 30000), 0);
    usleep(300000);
    struct req q[16];
    cr_assert_eq(rx_requests(&r, q, 16), 1, "a 400 must not be retried");
    cr_expect_not_null(strstr(said(), "HTTP 400, not retried, 200 spans dropped"), "%s", said());
    cr_expect_not_null(strstr(said(), "scripted 400"), "the response body is logged: %s", said());
    cr_expect_not_null(strstr(said(), "rejected_spans=200"), "%s", said());
    rx_stop(&r);
}

Test(otlp, partial_success_counted_and_logged)
{
    struct rx r;
    const char *ra[] = {"--partial", "7", NULL};
    rx_start(&r, 0, ra);
    emit(100, 1, 1);
    char url[64];
    const char *once[] = {"--once", NULL};
    cr_assert_eq(itest_wait(ldtraced(url_of(&r, url, sizeof(url), "http"), once, NULL), 30000), 0);
    cr_expect_not_null(strstr(said(), "partial success, 7 of 100 spans rejected"), "%s", said());
    cr_expect_not_null(strstr(said(), "rejected_spans=7"), "%s", said());
    cr_expect_not_null(strstr(said(), "test rejects some"), "%s", said());
    rx_stop(&r);
}

/* The receiver is down while spans keep coming, then comes back on the same port: everything
 * arrives, once, oldest first through the spool. */
Test(otlp, receiver_down_under_load_then_back_nothing_lost_nothing_twice)
{
    int port = itest_free_port();
    char url[64], spool[ITEST_PATH_MAX + 16];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    snprintf(spool, sizeof(spool), "%s/spool", dir);
    const char *args[] = {"--spool-dir", spool, NULL};
    pid_t sc = ldtraced(url, args, NULL);
    int asan = getenv("ITEST_PRELOAD_FIRST") != NULL; /* a sanitizer build: a lighter load */
    size_t total = asan ? 6000 : 24000;
    char *argv[] = {itest_build("tests/tools/ldtrace-emit"), "--dir", dir, "--spans",
                    asan ? "1500" : "6000", "--threads", "2", "--procs", "2", "--rate", "3000",
                    NULL};
    struct itest_env env;
    itest_env_init(&env);
    pid_t em = itest_spawn(&env, argv, NULL);
    itest_env_free(&env);
    usleep(1000000);
    cr_expect_gt(itest_count_files(spool, ".json"), 0, "nothing spooled while down: %s", said());
    struct rx r;
    rx_start(&r, port, NULL);
    cr_assert_eq(itest_wait(em, 30000), 0);
    size_t n = wait_delivered(&r, total, 40000);
    cr_expect_eq(n, total, "%zu of %zu spans delivered; ldtraced said:\n%s", n, total, said());
    cr_assert_eq(itest_stop(sc), 0);
    cr_expect_eq(itest_count_files(spool, ".json"), 0, "the spool was emptied");
    rx_stop(&r);
}

Test(otlp, spool_resumed_by_the_next_ldtraced)
{
    int port = itest_free_port();
    char url[64], spool[ITEST_PATH_MAX + 16];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    snprintf(spool, sizeof(spool), "%s/spool", dir);
    emit(700, 1, 3);
    const char *args[] = {"--spool-dir", spool, NULL};
    pid_t sc = ldtraced(url, args, NULL);
    usleep(800000);
    cr_assert_eq(itest_stop(sc), 0);
    cr_assert_eq(itest_count_files(dir, ".ring"), 0, "the rings were drained into the spool");
    cr_assert_geq(itest_count_files(spool, ".json"), 3, "%s", said());
    struct rx r;
    rx_start(&r, port, NULL);
    const char *once[] = {"--spool-dir", spool, "--once", NULL};
    cr_assert_eq(itest_wait(ldtraced(url, once, NULL), 30000), 0, "%s", said());
    cr_assert_eq(delivered(&r), 2100);
    cr_expect_eq(itest_count_files(spool, ".json"), 0);
    rx_stop(&r);
}

Test(otlp, https_with_an_extra_ca_file)
{
    char cert[ITEST_PATH_MAX + 16], key[ITEST_PATH_MAX + 16], cmd[3 * ITEST_PATH_MAX];
    snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
    snprintf(key, sizeof(key), "%s/key.pem", dir);
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey rsa:2048 -nodes -keyout %s -out %s -days 1 "
             "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1",
             key, cert);
    if (system(cmd) != 0)
        cr_skip_test("openssl cannot make a test certificate");
    struct rx r;
    const char *ra[] = {"--tls", cert, key, NULL};
    rx_start(&r, 0, ra);
    emit(100, 1, 1);
    char url[64];
    const char *once[] = {"--otlp-ca", cert, "--once", NULL};
    cr_assert_eq(itest_wait(ldtraced(url_of(&r, url, sizeof(url), "https"), once, NULL), 30000),
                 0, "%s", said());
    cr_assert_eq(delivered(&r), 100);
    rx_stop(&r);
}

Test(otlp, endpoint_from_the_environment)
{
    struct rx r;
    rx_start(&r, 0, NULL);
    emit(50, 1, 1);
    char base[64];
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", r.port);
    char *argv[] = {itest_build("src/sidecar/ldtraced"), "--dir", dir, "--once", NULL};
    struct itest_env env;
    itest_env_init(&env);
    itest_env_set(&env, "OTEL_EXPORTER_OTLP_ENDPOINT", base); /* "/v1/traces" appended */
    pid_t p = itest_spawn_io(&env, argv, NULL, err_path);
    itest_env_free(&env);
    cr_assert_eq(itest_wait(p, 30000), 0, "%s", said());
    cr_assert_eq(delivered(&r), 50);
    rx_stop(&r);
}
