/* test_ssl_sendfile.c - SSL_sendfile under the shim (issue #7): an HTTPS file server
 * (ssl_sendfile_server.c) sends each response body with SSL_sendfile, as nginx does under kernel
 * TLS, to a python3 client that asks twice on one keep-alive connection and holds it open between.
 *
 * What is real and what is faked. This machine's kernel has no TLS offload (no "tls" ULP), so the
 * real SSL_sendfile fails: the first test runs real libssl, where the server gets that failure and
 * falls back to SSL_write (nginx-like). The success path cannot run here with real kTLS, so the
 * other tests preload fake_ssl_sendfile.so AFTER the shim: a stand-in SSL_sendfile that sends the
 * file range in 16 KiB calls with pread + libssl's own SSL_write, past the shim's SSL_* hooks, so
 * only the shim's SSL_sendfile wrapper can account those body bytes (as with kTLS); the third test
 * makes the fake use the shim's SSL_write hook instead, which must pass that nested call through
 * (counted once, not twice); the fourth makes every third call fail with EINTR (the app calls
 * again): -1 and errno reach the app unchanged and the span is unharmed. On a kernel with kTLS the
 * first test runs the real success path.
 *
 * Each test runs the server once without the shim and once under it and checks: every SSL_sendfile
 * result (return value, errno, SSL_get_error, error queue) the same in both runs; the responses
 * byte-identical to each other and to the file; under the shim, one SERVER span per request with
 * status 200 and the response's byte count, the first one already ended (drained) while the
 * connection is still open, i.e. when its body was complete, not when the connection closed.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "itest.h"

#define FILE_LEN 300001 /* not a multiple of the fake's 16 KiB per call */
#define FAKE_CALLS ((FILE_LEN + 16383) / 16384)

static const char cli_py[] =
    "import os, socket, ssl, sys, time\n"
    "port, pre = int(sys.argv[1]), sys.argv[2]\n"
    "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n"
    "ctx.check_hostname = False\n"
    "ctx.verify_mode = ssl.CERT_NONE\n"
    "s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', port)))\n"
    "f = s.makefile('rb')\n"
    "for i in (1, 2):\n"
    "    if i == 2:\n"
    "        t = time.time()\n"
    "        while not os.path.exists(pre + 'go') and time.time() - t < 20:\n"
    "            time.sleep(0.02)\n"
    "    s.sendall(b'GET /file%d HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n' % i)\n"
    "    head = b''\n"
    "    while not head.endswith(b'\\r\\n\\r\\n'):\n"
    "        c = f.read(1)\n"
    "        if not c:\n"
    "            sys.exit(3)\n"
    "        head += c\n"
    "    n = [l for l in head.split(b'\\r\\n') if l.lower().startswith(b'content-length:')]\n"
    "    body = f.read(int(n[0].split(b':')[1]))\n"
    "    open(pre + 'resp%d' % i, 'wb').write(head + body)\n"
    "    print('R%d %d' % (i, len(body)), flush=True)\n"
    "f.close()\n"
    "s.close()\n";

struct sf_fix {
    char dir[ITEST_PATH_MAX];
    char cert[ITEST_PATH_MAX + 16], key[ITEST_PATH_MAX + 16], file[ITEST_PATH_MAX + 16];
    char cli[ITEST_PATH_MAX + 16];
    char *expect; /* the whole response: head + file */
    size_t expect_len;
};

/* One run of server + client. */
struct sf_run {
    char *log;     /* the server's stdout: one line per SSL_sendfile */
    char *resp[2]; /* raw responses as the client got them */
    size_t resp_len[2];
    struct itest_spans *open_sp; /* traced: drained while the connection was still open */
    struct itest_spans *end_sp;  /* traced: drained after the server stopped */
};

static void write_file(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    cr_assert_eq(fwrite(text, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
}

static void sf_setup(struct sf_fix *f)
{
    cr_assert_eq(itest_mkdtemp(f->dir), 0);
    snprintf(f->cert, sizeof f->cert, "%s/cert.pem", f->dir);
    snprintf(f->key, sizeof f->key, "%s/key.pem", f->dir);
    snprintf(f->file, sizeof f->file, "%s/file.bin", f->dir);
    snprintf(f->cli, sizeof f->cli, "%s/cli.py", f->dir);
    write_file(f->cli, cli_py, strlen(cli_py));
    char *data = malloc(FILE_LEN);
    cr_assert_not_null(data);
    for (size_t k = 0; k < FILE_LEN; k++)
        data[k] = (char)((k * 7 + k / 251) & 0xff);
    write_file(f->file, data, FILE_LEN);
    char head[160];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                      "Content-Type: application/octet-stream\r\n\r\n",
                      FILE_LEN);
    f->expect_len = (size_t)hl + FILE_LEN;
    f->expect = malloc(f->expect_len);
    cr_assert_not_null(f->expect);
    memcpy(f->expect, head, (size_t)hl);
    memcpy(f->expect + hl, data, FILE_LEN);
    free(data);
    cr_assert_eq(itest_make_cert(f->cert, f->key), 0, "openssl req failed");
}

static void sf_teardown(struct sf_fix *f)
{
    free(f->expect);
    itest_rmtree(f->dir);
}

static const char *env_get(const struct itest_env *e, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < e->n; i++)
        if (e->vars[i] && strncmp(e->vars[i], name, nl) == 0 && e->vars[i][nl] == '=')
            return e->vars[i] + nl + 1;
    return NULL;
}

enum sf_fake {
    SF_REAL = 0,   /* libssl's SSL_sendfile */
    SF_FAKE = 1,   /* the fake, writing with libssl's SSL_write */
    SF_NESTED = 2, /* the fake, writing with the global SSL_write (the shim's hook when traced) */
    SF_EINTR = 3,  /* the fake, every third call failing with EINTR (the server calls again) */
};

/* The server's environment: traced or not, with the fake SSL_sendfile preloaded last or not (after
 * the sanitizer runtime in an ASan build: the fake is instrumented too). */
static void server_env(struct itest_env *e, const char *dir, int traced, enum sf_fake fake)
{
    itest_env_init(e);
    if (traced)
        cr_assert_eq(itest_env_trace(e, dir, "tls-sendfile"), 0, "libldtrace.so is not built");
    if (fake == SF_REAL)
        return;
    if (fake == SF_NESTED)
        itest_env_set(e, "FAKE_SSL_SENDFILE_GLOBAL", "1");
    if (fake == SF_EINTR)
        itest_env_set(e, "FAKE_SSL_SENDFILE_EINTR", "1");
    const char *fk = itest_build("tests/integration/fake_ssl_sendfile.so");
    cr_assert_eq(access(fk, R_OK), 0, "fake_ssl_sendfile.so not built");
    const char *pre = env_get(e, "LD_PRELOAD");
    if (!pre)
        pre = getenv("ITEST_PRELOAD_FIRST");
    char v[3 * ITEST_PATH_MAX];
    snprintf(v, sizeof v, "%s%s%s", pre && *pre ? pre : "", pre && *pre ? " " : "", fk);
    itest_env_set(e, "LD_PRELOAD", v);
}

static char *slurp_path(const char *dir, const char *name, size_t *len)
{
    char p[ITEST_PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return itest_slurp(p, len);
}

/* Wait until the client printed that it has the first response (up to 15 s). */
static void wait_first(const char *dir, const char *out)
{
    for (int i = 0; i < 750; i++) {
        char *t = slurp_path(dir, out, NULL);
        int ok = t && strstr(t, "R1 ") != NULL;
        free(t);
        if (ok)
            return;
        itest_settle(20);
    }
    cr_assert_fail("the client never got its first response");
}

static struct itest_spans *drain_to(const char *dir, const char *name)
{
    char p[ITEST_PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    cr_assert_eq(itest_drain(dir, p), 0, "ldtraced --once failed");
    struct itest_spans *sp = itest_load_spans(p);
    cr_assert_not_null(sp);
    return sp;
}

/* Server (tag: "u" untraced, "t" traced) and client; the first response arrives, then (traced) the
 * spans are drained while the connection is open, then the second request, then the server stops.
 */
static void sf_run(struct sf_fix *f, const char *tag, int traced, enum sf_fake fake,
                   struct sf_run *r)
{
    char port_s[16], pre[ITEST_PATH_MAX + 16], out[32], log[32], go[ITEST_PATH_MAX + 32];
    memset(r, 0, sizeof *r);
    int port = itest_free_port();
    snprintf(port_s, sizeof port_s, "%d", port);
    snprintf(pre, sizeof pre, "%s/%s-", f->dir, tag);
    snprintf(out, sizeof out, "%s-cli.out", tag);
    snprintf(log, sizeof log, "%s-srv.log", tag);
    snprintf(go, sizeof go, "%sgo", pre);
    char logp[ITEST_PATH_MAX + 32], outp[ITEST_PATH_MAX + 32];
    snprintf(logp, sizeof logp, "%s/%s", f->dir, log);
    snprintf(outp, sizeof outp, "%s/%s", f->dir, out);
    struct itest_env es, ec;
    server_env(&es, f->dir, traced, fake);
    char *sargv[] = {itest_build("tests/integration/ssl_sendfile_server"),
                     port_s,
                     f->cert,
                     f->key,
                     f->file,
                     NULL};
    pid_t srv = itest_start_server(&es, sargv, port, logp);
    itest_env_free(&es);
    cr_assert_gt(srv, 0, "ssl_sendfile_server did not start");
    cr_assert_eq(itest_has_shim(srv), traced, "shim presence in the server is not %d", traced);
    itest_env_init(&ec);
    char *cargv[] = {ITEST_PYTHON, f->cli, port_s, pre, NULL};
    pid_t cli = itest_spawn(&ec, cargv, outp);
    itest_env_free(&ec);
    cr_assert_gt(cli, 0);
    wait_first(f->dir, out);
    if (traced) {
        itest_settle(300);
        r->open_sp = drain_to(f->dir, "spans-open.json");
    }
    write_file(go, "", 0);
    cr_assert_eq(itest_wait(cli, 20000), 0, "the client failed");
    itest_settle(300);
    itest_stop(srv);
    if (traced)
        r->end_sp = drain_to(f->dir, "spans-end.json");
    r->log = slurp_path(f->dir, log, NULL);
    char n1[40], n2[40];
    snprintf(n1, sizeof n1, "%s-resp1", tag);
    snprintf(n2, sizeof n2, "%s-resp2", tag);
    r->resp[0] = slurp_path(f->dir, n1, &r->resp_len[0]);
    r->resp[1] = slurp_path(f->dir, n2, &r->resp_len[1]);
    cr_assert(r->log && r->resp[0] && r->resp[1], "a run left no log or no response");
}

static void sf_run_free(struct sf_run *r)
{
    free(r->log);
    free(r->resp[0]);
    free(r->resp[1]);
    if (r->open_sp)
        itest_spans_free(r->open_sp);
    if (r->end_sp)
        itest_spans_free(r->end_sp);
}

/* Both runs: same SSL_sendfile results, responses byte-identical to each other and to the file. */
static void check_same(const struct sf_fix *f, const struct sf_run *u, const struct sf_run *t)
{
    cr_expect_str_eq(t->log, u->log, "SSL_sendfile results differ under the shim");
    for (int i = 0; i < 2; i++) {
        cr_expect(u->resp_len[i] == f->expect_len &&
                      memcmp(u->resp[i], f->expect, f->expect_len) == 0,
                  "untraced response %d is not the file (%zu bytes)", i + 1, u->resp_len[i]);
        cr_expect(t->resp_len[i] == f->expect_len &&
                      memcmp(t->resp[i], f->expect, f->expect_len) == 0,
                  "traced response %d is not the file (%zu bytes)", i + 1, t->resp_len[i]);
    }
}

/* One SERVER span for path in sp: status 200, every response byte counted. */
static void check_span(const struct sf_fix *f, const struct itest_spans *sp, const char *path,
                       const char *when)
{
    size_t n = itest_count(sp, ITEST_SERVER, "tls-sendfile", "url.path", path);
    const struct itest_span *s = itest_find(sp, ITEST_SERVER, "tls-sendfile", "url.path", path);
    if (n != 1)
        itest_dump(sp);
    cr_assert_eq(n, 1, "%zu SERVER spans for %s %s", n, path, when);
    cr_expect_eq(itest_attr_int(s, "http.response.status_code", 0), 200, "%s status", path);
    cr_expect_eq(itest_attr_int(s, "ldtrace.bytes_out", -1), (long long)f->expect_len,
                 "%s: bytes_out is not the response's size", path);
    cr_expect_eq(s->status, 0, "%s: span status is %d", path, s->status);
}

/* Under the shim: /file1's span had ended while the connection was open (body complete), /file2's
 * after; no span twice, none for anything else. */
static void check_spans(const struct sf_fix *f, const struct sf_run *t)
{
    check_span(f, t->open_sp, "/file1", "while the connection was open (ends only at close?)");
    check_span(f, t->end_sp, "/file2", "after the server stopped");
    cr_expect_eq(itest_count(t->end_sp, ITEST_SERVER, NULL, "url.path", "/file1"), 0,
                 "/file1 drained twice");
    cr_expect_eq(itest_count(t->open_sp, ITEST_SERVER, NULL, NULL, NULL) +
                     itest_count(t->end_sp, ITEST_SERVER, NULL, NULL, NULL),
                 2, "SERVER spans other than the two requests");
}

static size_t count_str(const char *text, const char *needle)
{
    size_t n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

Test(ssl_sendfile, real_libssl_failure_falls_back_to_ssl_write_unchanged_one_span_each,
     .timeout = 90)
{
    struct sf_fix f;
    struct sf_run u, t;
    sf_setup(&f);
    sf_run(&f, "u", 0, SF_REAL, &u);
    sf_run(&f, "t", 1, SF_REAL, &t);
    if (!strstr(u.log, "ktls=1")) {
        /* No kTLS: one failed SSL_sendfile (errno untouched), the rest goes by SSL_write. */
        cr_expect_eq(count_str(u.log, "sendfile "), 1, "expected one SSL_sendfile try:\n%s", u.log);
        cr_expect(strstr(u.log, "sendfile ret=-1 errno=33 ssl_error=1 ") != NULL,
                  "SSL_sendfile did not fail as expected without kTLS:\n%s", u.log);
    }
    check_same(&f, &u, &t);
    check_spans(&f, &t);
    sf_run_free(&u);
    sf_run_free(&t);
    sf_teardown(&f);
}

/* The fake's runs: it really sent every body in 16 KiB calls, then the common checks. */
static void fake_test(enum sf_fake fake)
{
    struct sf_fix f;
    struct sf_run u, t;
    sf_setup(&f);
    sf_run(&f, "u", 0, fake, &u);
    sf_run(&f, "t", 1, fake, &t);
    size_t fails = count_str(u.log, "ret=-1 errno=4 ssl_error=5 ");
    cr_expect_eq(count_str(u.log, "ret=-1"), fails, "the fake failed otherwise:\n%s", u.log);
    cr_expect_eq(count_str(u.log, "sendfile ret=") - fails, 2 * FAKE_CALLS,
                 "the fake did not send every body in 16 KiB calls:\n%s", u.log);
    if (fake == SF_EINTR)
        cr_expect_geq(fails, FAKE_CALLS / 2, "too few EINTR failures:\n%s", u.log);
    else
        cr_expect_eq(fails, 0, "the fake SSL_sendfile failed:\n%s", u.log);
    check_same(&f, &u, &t);
    check_spans(&f, &t);
    sf_run_free(&u);
    sf_run_free(&t);
    sf_teardown(&f);
}

Test(ssl_sendfile, fake_ktls_success_path_counts_body_bytes_and_ends_span_at_body_end,
     .timeout = 90)
{
    fake_test(SF_FAKE);
}

Test(ssl_sendfile, nested_ssl_write_inside_ssl_sendfile_is_counted_once, .timeout = 90)
{
    fake_test(SF_NESTED);
}

Test(ssl_sendfile, interrupted_ssl_sendfile_keeps_its_result_and_errno_and_the_span, .timeout = 90)
{
    fake_test(SF_EINTR);
}
