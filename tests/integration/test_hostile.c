/* test_hostile.c - integration: hostile input never travels through the shim, hostile segments
 * never crash the sidecar, and secrets never reach the exported file.
 *
 *   - trace context: requests with CR/LF, NUL, oversize or non-grammar traceparent/tracestate go to
 * a traced demo gateway; capture_server, standing in for auth and order, records byte for byte what
 *     the gateway sent on: one well-formed traceparent, a tracestate only when it is well-formed,
 * and nothing else of the hostile bytes (no header injection, no smuggling);
 *   - segments: created 0600 in a 0700 directory of ours; a segment owned by another uid, with a
 *     looser mode, planted as a symlink, truncated or lying about its size, or swapped under a
 *     running sidecar is refused without a crash and reported once;
 *   - privacy: Authorization, Cookie, bodies and (unless LDTRACE_CAPTURE_QUERY) query strings sent
 * in the test requests are nowhere in the exported file.
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fault_util.h"

#define TP_OK "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
#define TRACE_OK "0af7651916cd43dd8448eb211c80319c"
#define V25 "vvvvvvvvvvvvvvvvvvvvvvvvv"
#define V100 V25 V25 V25 V25
#define X25 "xxxxxxxxxxxxxxxxxxxxxxxxx"
#define X100 X25 X25 X25 X25

/* ---- a traced gateway whose auth and order are one capture_server ---- */

struct chain {
    char dir[ITEST_PATH_MAX];
    char dump[ITEST_PATH_MAX + 16];
    pid_t cap, gw;
    int cap_port, gw_port;
};

static void chain_start(struct chain *c, const char *body, int capture_query)
{
    cr_assert(itest_mkdtemp(c->dir) == 0);
    snprintf(c->dump, sizeof(c->dump), "%s/upstream.dump", c->dir);
    struct itest_env env;
    itest_env_init(&env);
    char port[16];
    c->cap_port = itest_free_port();
    snprintf(port, sizeof(port), "%d", c->cap_port);
    char *cargv[] = {itest_build("tests/tools/capture_server"), port, c->dump, (char *)body, NULL};
    c->cap = itest_start_server(&env, cargv, c->cap_port, NULL);
    cr_assert(c->cap > 0, "capture_server did not start");
    cr_assert(itest_env_trace(&env, c->dir, "gateway") == 0);
    if (capture_query)
        itest_env_set(&env, "LDTRACE_CAPTURE_QUERY", "1");
    char peer[32];
    snprintf(peer, sizeof(peer), "127.0.0.1:%d", c->cap_port);
    const char *extra[] = {"--auth", peer, "--order", peer, NULL};
    c->gw = fu_service("gateway", NULL, &c->gw_port, extra, &env);
    itest_env_free(&env);
}

static void chain_stop(struct chain *c)
{
    cr_expect_eq(itest_stop(c->gw), 0, "the traced gateway did not exit cleanly");
    itest_stop(c->cap);
}

/* Send a raw request (len bytes, may hold NUL) to the gateway on a new connection: the status. */
static int send_raw(const struct chain *c, const char *req, size_t len, char *resp, size_t cap)
{
    int fd = fu_connect(c->gw_port);
    cr_assert(fd >= 0, "connect to the gateway: %s", strerror(-fd));
    int st = fu_roundtrip(fd, req, len, resp, cap);
    close(fd);
    return st;
}

/* ---- what the next service received ---- */

/* Split the dump into request heads: "\n=== <len>\n" then len raw bytes. Returns how many. */
static int heads(const char *dump, size_t dlen, const char *out[], size_t lens[], int max)
{
    int n = 0;
    size_t at = 0;
    while (at < dlen && n < max) {
        cr_assert(strncmp(dump + at, "\n=== ", 5) == 0, "dump out of step at %zu", at);
        char *end;
        size_t l = strtoul(dump + at + 5, &end, 10);
        out[n] = end + 1;
        lens[n++] = l;
        at = (size_t)(end + 1 - dump) + l;
    }
    return n;
}

static int tracestate_ok(const char *v, size_t n)
{
    if (n == 0 || n > 512)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x20 || (unsigned char)v[i] > 0x7e)
            return 0;
    return memchr(v, '=', n) != NULL;
}

static int traceparent_ok(const char *v, size_t n)
{
    static const char shape[] = "00-################################-################-##";
    if (n != sizeof(shape) - 1)
        return 0;
    for (size_t i = 0; i < n; i++) {
        int hex = isdigit((unsigned char)v[i]) || (v[i] >= 'a' && v[i] <= 'f');
        if (shape[i] == '#' ? !hex : v[i] != shape[i])
            return 0;
    }
    return 1;
}

/* Check one head: CRLF lines only, no NUL, nothing of the hostile bytes, exactly one well-formed
 * traceparent, at most one well-formed tracestate. Returns the traceparent's trace id in tid[33].
 */
static void check_head(const char *h, size_t n, const char *label, const char *poison, char *tid)
{
    cr_assert(n >= 4 && memcmp(h + n - 4, "\r\n\r\n", 4) == 0, "%s: head not CRLF-terminated",
              label);
    cr_expect(memchr(h, '\0', n) == NULL, "%s: a NUL byte went upstream", label);
    int tp = 0, ts = 0;
    for (size_t i = 0; i < n; i++) {
        cr_expect(h[i] != '\r' || (i + 1 < n && h[i + 1] == '\n'), "%s: bare CR upstream", label);
        cr_expect(h[i] != '\n' || (i > 0 && h[i - 1] == '\r'), "%s: bare LF upstream", label);
    }
    cr_expect(!memmem(h, n, "X-Evil", 6) && !memmem(h, n, "x-evil", 6),
              "%s: the injected header went upstream:\n%.*s", label, (int)n, h);
    cr_expect(!poison || !memmem(h, n, poison, strlen(poison)),
              "%s: hostile content re-emitted:\n%.*s", label, (int)n, h);
    for (const char *l = h; l < h + n;) {
        const char *e = memmem(l, (size_t)(h + n - l), "\r\n", 2);
        size_t ll = (size_t)(e - l);
        if (ll > 12 && strncasecmp(l, "traceparent:", 12) == 0) {
            tp++;
            const char *v = l + 12 + (l[12] == ' ');
            size_t vl = ll - (size_t)(v - l);
            cr_expect(traceparent_ok(v, vl), "%s: malformed traceparent upstream: %.*s", label,
                      (int)vl, v);
            if (vl >= 35)
                snprintf(tid, 33, "%.32s", v + 3);
        }
        if (ll > 11 && strncasecmp(l, "tracestate:", 11) == 0) {
            ts++;
            const char *v = l + 11 + (l[11] == ' ');
            size_t vl = ll - (size_t)(v - l);
            cr_expect(tracestate_ok(v, vl), "%s: malformed tracestate upstream: %.*s", label,
                      (int)vl, v);
        }
        l = e + 2;
    }
    cr_expect_eq(tp, 1, "%s: %d traceparent lines upstream:\n%.*s", label, tp, (int)n, h);
    cr_expect_leq(ts, 1, "%s: %d tracestate lines upstream", label, ts);
}

/* ---- hostile trace context ---- */

struct hostile {
    const char *label;
    const char *hdrs; /* header lines added to the request (may hold NUL: hdrs_len counts) */
    size_t hdrs_len;
    const char *poison; /* text that must not appear upstream (NULL: only the generic checks) */
    int keep_trace;     /* 1: the inbound trace id must be continued; 0: it must not be; -1:
                         * either (the HTTP message itself is malformed: not trusting it is fine) */
};

#define H(label, hdrs, poison, keep)                                                               \
    {                                                                                              \
        label, hdrs, sizeof(hdrs) - 1, poison, keep                                                \
    }

static struct hostile cases[] = {
    H("control: valid context continues", "traceparent: " TP_OK "\r\ntracestate: vendor=abc\r\n",
      NULL, 1),
    H("tracestate with a bare CR", "traceparent: " TP_OK "\r\ntracestate: a=b\rX-Evil: 1\r\n", NULL,
      -1),
    H("tracestate with a NUL", "traceparent: " TP_OK "\r\ntracestate: a=b\0X-Evil: 1\r\n", NULL,
      -1),
    H("tracestate obs-fold", "traceparent: " TP_OK "\r\ntracestate: a=b\r\n X-Evil: 1\r\n", NULL,
      -1),
    H("tracestate with DEL and tab", "traceparent: " TP_OK "\r\ntracestate: a=b\x7f\tevil=1\r\n",
      "evil", -1),
    H("tracestate non-grammar keys", "traceparent: " TP_OK "\r\ntracestate: EVIL=1,=x,k=\r\n",
      "EVIL", 1),
    H("tracestate oversize (600 bytes)",
      "traceparent: " TP_OK "\r\ntracestate: k=" /* 600 x 'v' */
      V100 V100 V100 V100 V100 V100 "\r\n",
      V100, 1),
    H("traceparent with a bare CR", "traceparent: " TP_OK "\rX-Evil: 1\r\n", NULL, 0),
    H("traceparent with a NUL", "traceparent: " TP_OK "\0X-Evil: 1\r\n", NULL, 0),
    H("traceparent upper-case hex",
      "traceparent: 00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01\r\n", "0AF76519", 0),
    H("traceparent all-zero trace id",
      "traceparent: 00-00000000000000000000000000000000-b7ad6b7169203331-01\r\n", NULL, 0),
    H("traceparent version ff", "traceparent: ff-" TRACE_OK "-b7ad6b7169203331-01\r\n", NULL, 0),
    H("traceparent 00 with extra fields", "traceparent: " TP_OK "-xxxxxxxxxxxxxxxx\r\n", "xxxxxxxx",
      0),
    H("traceparent oversize future version",
      "traceparent: cc-" TRACE_OK "-b7ad6b7169203331-01-" X100 X100 X100 "\r\n", "xxxxxxxx", -1),
    H("traceparent with a header smuggled in its value", "traceparent: " TP_OK " X-Evil: 1\r\n",
      NULL, 0),
};

static void run_case(const struct hostile *hc)
{
    struct chain c;
    char req[4096], resp[8192];
    chain_start(&c, NULL, 0);
    int head = snprintf(req, sizeof(req), "GET /checkout?order=7 HTTP/1.1\r\nHost: gw\r\n");
    cr_assert((size_t)head + hc->hdrs_len + 2 < sizeof(req));
    memcpy(req + head, hc->hdrs, hc->hdrs_len);
    memcpy(req + head + hc->hdrs_len, "\r\n", 2);
    int st = send_raw(&c, req, (size_t)head + hc->hdrs_len + 2, resp, sizeof(resp));
    cr_expect(st == 200 || st == 400, "%s: gateway answered %d", hc->label, st);
    /* Still serving afterwards. */
    const char ok[] = "GET /checkout?order=8 HTTP/1.1\r\nHost: gw\r\n\r\n";
    cr_expect_eq(send_raw(&c, ok, sizeof(ok) - 1, resp, sizeof(resp)), 200, "%s", hc->label);
    size_t dlen;
    char *dump = itest_slurp(c.dump, &dlen);
    cr_assert_not_null(dump);
    const char *h[8];
    size_t hl[8];
    int n = heads(dump, dlen, h, hl, 8);
    cr_expect_geq(n, st == 200 ? 4 : 2, "%s: %d requests reached the next service", hc->label, n);
    for (int i = 0; i < n; i++) {
        char tid[33] = "";
        check_head(h[i], hl[i], hc->label, hc->poison, tid);
        int is_hostile = i < n - 2; /* the last two heads belong to the clean request */
        if (is_hostile && hc->keep_trace == 1)
            cr_expect_str_eq(tid, TRACE_OK, "%s: the valid inbound trace was not continued",
                             hc->label);
        if (is_hostile && hc->keep_trace == 0)
            cr_expect_str_neq(tid, TRACE_OK, "%s: an invalid traceparent was trusted", hc->label);
        if (is_hostile && i == 0 && hc == &cases[0])
            cr_expect(memmem(h[i], hl[i], "\r\ntracestate: vendor=abc\r\n", 26),
                      "a valid tracestate was not passed on:\n%.*s", (int)hl[i], h[i]);
    }
    free(dump);
    chain_stop(&c);
    itest_rmtree(c.dir);
}

/* One test per case (a ParameterizedTest over this table died in Criterion's parameter copy). */
Test(hostile_tc, control_valid_context_continues, .timeout = 30)
{
    run_case(&cases[0]);
}

Test(hostile_tc, tracestate_bare_cr, .timeout = 30)
{
    run_case(&cases[1]);
}

Test(hostile_tc, tracestate_nul, .timeout = 30)
{
    run_case(&cases[2]);
}

Test(hostile_tc, tracestate_obs_fold, .timeout = 30)
{
    run_case(&cases[3]);
}

Test(hostile_tc, tracestate_del_and_tab, .timeout = 30)
{
    run_case(&cases[4]);
}

Test(hostile_tc, tracestate_non_grammar_keys, .timeout = 30)
{
    run_case(&cases[5]);
}

Test(hostile_tc, tracestate_oversize, .timeout = 30)
{
    run_case(&cases[6]);
}

Test(hostile_tc, traceparent_bare_cr, .timeout = 30)
{
    run_case(&cases[7]);
}

Test(hostile_tc, traceparent_nul, .timeout = 30)
{
    run_case(&cases[8]);
}

Test(hostile_tc, traceparent_upper_case_hex, .timeout = 30)
{
    run_case(&cases[9]);
}

Test(hostile_tc, traceparent_zero_trace_id, .timeout = 30)
{
    run_case(&cases[10]);
}

Test(hostile_tc, traceparent_version_ff, .timeout = 30)
{
    run_case(&cases[11]);
}

Test(hostile_tc, traceparent_00_extra_fields, .timeout = 30)
{
    run_case(&cases[12]);
}

Test(hostile_tc, traceparent_oversize_future_version, .timeout = 30)
{
    run_case(&cases[13]);
}

Test(hostile_tc, traceparent_smuggled_header, .timeout = 30)
{
    run_case(&cases[14]);
}

/* ---- segments ---- */

/* The one *.ring file in dir, into out; fails the test unless there is exactly one. */
static void the_segment(const char *dir, char *out, size_t cap)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "opendir %s: %s", dir, strerror(errno));
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l > 5 && strcmp(de->d_name + l - 5, ".ring") == 0 && n++ == 0)
            snprintf(out, cap, "%s/%s", dir, de->d_name);
    }
    closedir(d);
    cr_assert_eq(n, 1, "%d segments in %s", n, dir);
}

/* A traced db answers n requests and exits: its segment path in seg. */
static void make_segment(const char *dir, int n, char *seg, size_t cap)
{
    int port;
    pid_t db = fu_service("db", dir, &port, NULL, NULL);
    struct fu_load l = {.port = port, .path_fmt = "/query?order=%d", .nconn = 1, .max = n};
    fu_load_start(&l);
    pthread_join(l.th[0], NULL);
    cr_assert_eq(atomic_load(&l.done), n);
    cr_assert_eq(itest_stop(db), 0);
    the_segment(dir, seg, cap);
}

static void copy_file(const char *from, const char *to, off_t keep, mode_t mode)
{
    size_t len;
    char *s = itest_slurp(from, &len);
    cr_assert_not_null(s);
    int fd = open(to, O_WRONLY | O_CREAT | O_EXCL, mode);
    cr_assert(fd >= 0, "create %s: %s", to, strerror(errno));
    size_t n = keep >= 0 && (size_t)keep < len ? (size_t)keep : len;
    cr_assert_eq(write(fd, s, n), (ssize_t)n);
    cr_assert(fchmod(fd, mode) == 0);
    close(fd);
    free(s);
}

/* Age a file (not a symlink's target) by 10 s: the sidecar leaves files younger than a second
 * alone, since a producer may be between creating one and publishing its header. */
static void age(const char *path)
{
    struct timespec t[2];
    clock_gettime(CLOCK_REALTIME, &t[0]);
    t[0].tv_sec -= 10;
    t[1] = t[0];
    cr_assert(utimensat(AT_FDCWD, path, t, AT_SYMLINK_NOFOLLOW) == 0);
}

Test(hostile, segment_created_0600_in_a_0700_directory_of_ours, .timeout = 30)
{
    char tmp[ITEST_PATH_MAX], dir[ITEST_PATH_MAX + 16], seg[ITEST_PATH_MAX * 2];
    cr_assert(itest_mkdtemp(tmp) == 0);
    snprintf(dir, sizeof(dir), "%s/segs", tmp);
    make_segment(dir, 3, seg, sizeof(seg));
    struct stat st;
    cr_assert(lstat(dir, &st) == 0, "the shim did not create %s", dir);
    cr_expect(S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0700, "directory mode %o",
              st.st_mode & 07777);
    cr_expect_eq(st.st_uid, getuid());
    cr_assert(lstat(seg, &st) == 0);
    cr_expect(S_ISREG(st.st_mode) && (st.st_mode & 07777) == 0600, "segment mode %o",
              st.st_mode & 07777);
    cr_expect_eq(st.st_uid, getuid());
    char cmd[ITEST_PATH_MAX * 2];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    cr_expect(system(cmd) == 0);
}

/* Count *.ring files in dir (0 when it cannot be read). */
static int rings_in(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        size_t l = strlen(de->d_name);
        n += l > 5 && strcmp(de->d_name + l - 5, ".ring") == 0;
    }
    if (d)
        closedir(d);
    return n;
}

/* A traced db serves 3 requests with LDTRACE_DIR=dir (which the test prepared). */
static void serve_three(const char *dir)
{
    int port;
    pid_t db = fu_service("db", dir, &port, NULL, NULL);
    struct fu_load l = {.port = port, .path_fmt = "/query?order=%d", .nconn = 1, .max = 3};
    fu_load_start(&l);
    pthread_join(l.th[0], NULL);
    cr_expect_eq(atomic_load(&l.done), 3, "the traced app stopped answering");
    cr_expect_eq(itest_stop(db), 0);
}

Test(hostile, segment_directory_of_another_uid_or_open_to_all_is_not_used, .timeout = 30)
{
    char tmp[ITEST_PATH_MAX], other[ITEST_PATH_MAX + 16], open_dir[ITEST_PATH_MAX + 16];
    cr_assert(itest_mkdtemp(tmp) == 0);
    cr_assert(chmod(tmp, 0755) == 0);
    snprintf(other, sizeof(other), "%s/other", tmp);
    snprintf(open_dir, sizeof(open_dir), "%s/open", tmp);
    cr_assert(mkdir(other, 0700) == 0 && chown(other, 65534, 65534) == 0);
    cr_assert(mkdir(open_dir, 0777) == 0 && chmod(open_dir, 0777) == 0);
    serve_three(other);
    cr_expect_eq(rings_in(other), 0, "a segment was written into a directory owned by uid 65534");
    serve_three(open_dir);
    struct stat st;
    cr_assert(stat(open_dir, &st) == 0);
    cr_expect(rings_in(open_dir) == 0 || (st.st_mode & 0077) == 0,
              "a segment was written into a mode %o directory (others may plant or swap files)",
              st.st_mode & 07777);
    char cmd[ITEST_PATH_MAX * 2];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    cr_expect(system(cmd) == 0);
}

/* The hostile files planted next to one good segment; each must be refused and named once. */
struct planted {
    const char *name;
    const char *what;
};

static const struct planted planted[] = {
    {"1000001.00000000000000a1.ring", "owned by another uid"},
    {"1000002.00000000000000a2.ring", "mode 0644"},
    {"1000003.00000000000000a3.ring", "symlink to a good segment"},
    {"1000004.00000000000000a4.ring", "truncated to half its header's size"},
    {"1000005.00000000000000a5.ring", "header seg_size doubled"},
    {"1000006.00000000000000a6.ring", "4 KiB longer than its header says"},
    {"1000007.00000000000000a7.ring", "random bytes"},
    {"1000008.00000000000000a8.ring", "empty"},
};

static void plant(const char *dir, const char *good_copy, int i, size_t seg_len)
{
    char p[ITEST_PATH_MAX * 2];
    snprintf(p, sizeof(p), "%s/%s", dir, planted[i].name);
    switch (i) {
    case 0:
        copy_file(good_copy, p, -1, 0600);
        cr_assert(chown(p, 65534, 65534) == 0, "chown: %s (the test runs as root)",
                  strerror(errno));
        break;
    case 1:
        copy_file(good_copy, p, -1, 0644);
        break;
    case 2:
        cr_assert(symlink(good_copy, p) == 0);
        break;
    case 3:
        copy_file(good_copy, p, (off_t)(seg_len / 2), 0600);
        break;
    case 4: {
        copy_file(good_copy, p, -1, 0600);
        int fd = open(p, O_RDWR);
        uint64_t sz = 2 * (uint64_t)seg_len;
        cr_assert_eq(pwrite(fd, &sz, 8, 16), 8);
        close(fd);
        break;
    }
    case 5: {
        copy_file(good_copy, p, -1, 0600);
        cr_assert(truncate(p, (off_t)seg_len + 4096) == 0);
        break;
    }
    case 6: {
        int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0600);
        char junk[8192];
        for (size_t k = 0; k < sizeof(junk); k++)
            junk[k] = (char)(k * 2654435761u >> 13);
        cr_assert_eq(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
        close(fd);
        break;
    }
    default:
        close(open(p, O_WRONLY | O_CREAT | O_EXCL, 0600));
        break;
    }
    age(p);
}

Test(hostile, bad_segments_refused_reported_once_good_one_exported, .timeout = 60)
{
    char tmp[ITEST_PATH_MAX], dir[ITEST_PATH_MAX + 16], tpl[ITEST_PATH_MAX + 16];
    char seg[ITEST_PATH_MAX * 2], good_copy[ITEST_PATH_MAX + 32], out[ITEST_PATH_MAX + 16];
    char err[ITEST_PATH_MAX + 16];
    cr_assert(itest_mkdtemp(tmp) == 0);
    snprintf(dir, sizeof(dir), "%s/segs", tmp);
    snprintf(tpl, sizeof(tpl), "%s/tpl", tmp);
    snprintf(out, sizeof(out), "%s/spans.json", tmp);
    snprintf(err, sizeof(err), "%s/ldtraced.err", tmp);
    /* A template segment (in another directory) to derive the bad ones from, and the good one. */
    make_segment(tpl, 5, seg, sizeof(seg));
    snprintf(good_copy, sizeof(good_copy), "%s/template.bin", tmp);
    cr_assert(rename(seg, good_copy) == 0);
    make_segment(dir, 7, seg, sizeof(seg));
    struct stat st;
    cr_assert(stat(good_copy, &st) == 0);
    for (int i = 0; i < (int)(sizeof(planted) / sizeof(planted[0])); i++)
        plant(dir, good_copy, i, (size_t)st.st_size);
    /* A running sidecar rescans many times: each refusal must be said once, not once a scan. */
    pid_t sc = fu_sidecar(dir, out, err);
    fu_sleep_ms(fu_asan() ? 1500 : 800);
    cr_assert(kill(sc, 0) == 0, "ldtraced died on the planted segments");
    cr_expect_eq(itest_stop(sc), 0, "ldtraced did not exit 0");
    for (int i = 0; i < (int)(sizeof(planted) / sizeof(planted[0])); i++)
        cr_expect_eq(fu_count_in_file(err, planted[i].name), 1,
                     "segment %s (%s) reported %zu times", planted[i].name, planted[i].what,
                     fu_count_in_file(err, planted[i].name));
    size_t dups, bad;
    const char *files[] = {out, NULL};
    size_t spans = fu_server_spans(files, NULL, &dups, &bad);
    cr_expect_eq(spans, 7, "%zu spans exported: want the good segment's 7 and nothing else", spans);
    cr_expect_eq(dups + bad, 0);
    char cmd[ITEST_PATH_MAX * 2];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    cr_expect(system(cmd) == 0);
}

Test(hostile, segment_swapped_under_a_running_sidecar, .timeout = 60)
{
    char dir[ITEST_PATH_MAX], out[ITEST_PATH_MAX + 16], err[ITEST_PATH_MAX + 16];
    char seg[ITEST_PATH_MAX * 2], swap[ITEST_PATH_MAX + 16];
    cr_assert(itest_mkdtemp(dir) == 0);
    snprintf(out, sizeof(out), "%s/spans.json", dir);
    snprintf(err, sizeof(err), "%s/ldtraced.err", dir);
    snprintf(swap, sizeof(swap), "%s/swap.tmp", dir);
    int port;
    pid_t db = fu_service("db", dir, &port, NULL, NULL);
    pid_t sc = fu_sidecar(dir, out, err);
    struct fu_load l = {.port = port, .path_fmt = "/query?order=%d", .nconn = 2, .max = 200};
    fu_load_start(&l);
    for (int i = 0; i < l.nconn; i++)
        pthread_join(l.th[i], NULL);
    the_segment(dir, seg, sizeof(seg));
    fu_sleep_ms(200);
    /* Replace the live segment's name by a truncated copy of it, then by garbage. */
    struct stat st;
    cr_assert(stat(seg, &st) == 0);
    copy_file(seg, swap, st.st_size / 3, 0600);
    age(swap);
    cr_assert(rename(swap, seg) == 0);
    struct fu_load l2 = {.port = port, .path_fmt = "/query?order=%d", .nconn = 2, .max = 200};
    fu_load_start(&l2);
    for (int i = 0; i < l2.nconn; i++)
        pthread_join(l2.th[i], NULL);
    fu_sleep_ms(fu_asan() ? 1500 : 800);
    cr_assert(kill(sc, 0) == 0, "ldtraced died when a segment was swapped under it");
    cr_assert(kill(db, 0) == 0, "the traced app died");
    cr_expect_eq(itest_stop(db), 0);
    fu_sleep_ms(200);
    cr_expect_eq(itest_stop(sc), 0);
    cr_expect_eq(fu_count_in_file(err, seg), 1, "the swapped-in file was reported %zu times",
                 fu_count_in_file(err, seg));
    size_t dups, bad;
    const char *files[] = {out, NULL};
    size_t spans = fu_server_spans(files, "db", &dups, &bad);
    cr_expect_eq(dups + bad, 0);
    cr_expect_eq(spans, 400, "%zu of 400 spans (the producer keeps its mapping)", spans);
    itest_rmtree(dir);
}

/* ---- privacy ---- */

static const char *const secrets[] = {"AUTHSECRET4711", "COOKIESECRET4711", "BODYSECRET4711",
                                      "RESPSECRET4711", "QUERYSECRET4711"};

static void secret_run(int capture_query, char *out, size_t cap, struct chain *c)
{
    chain_start(c, "{\"user\":\"RESPSECRET4711\",\"ok\":true}", capture_query);
    static const char req[] = "GET /checkout?order=9&token=QUERYSECRET4711 HTTP/1.1\r\n"
                              "Host: gw\r\nAuthorization: Bearer AUTHSECRET4711\r\n"
                              "Cookie: session=COOKIESECRET4711\r\nContent-Length: 14\r\n\r\n"
                              "BODYSECRET4711";
    char resp[8192];
    cr_assert_eq(send_raw(c, req, sizeof(req) - 1, resp, sizeof(resp)), 200, "%s", resp);
    chain_stop(c);
    snprintf(out, cap, "%s/spans.json", c->dir);
    cr_assert_eq(itest_drain(c->dir, out), 0);
    size_t dups, bad;
    const char *files[] = {out, NULL};
    cr_assert_geq(fu_server_spans(files, "gateway", &dups, &bad), 1, "no gateway span exported");
}

Test(hostile, secrets_never_exported, .timeout = 30)
{
    struct chain c;
    char out[ITEST_PATH_MAX + 16];
    secret_run(0, out, sizeof(out), &c);
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
        cr_expect_eq(fu_count_in_file(out, secrets[i]), 0, "%s found in the exported file",
                     secrets[i]);
    cr_expect(fu_count_in_file(out, "/checkout") > 0, "the path itself must be there");
    itest_rmtree(c.dir);
}

Test(hostile, query_string_exported_only_when_enabled, .timeout = 30)
{
    struct chain c;
    char out[ITEST_PATH_MAX + 16];
    secret_run(1, out, sizeof(out), &c);
    cr_expect_gt(fu_count_in_file(out, "QUERYSECRET4711"), 0,
                 "LDTRACE_CAPTURE_QUERY=1 and still no query string exported");
    for (size_t i = 0; i < 4; i++)
        cr_expect_eq(fu_count_in_file(out, secrets[i]), 0, "%s found in the exported file",
                     secrets[i]);
    itest_rmtree(c.dir);
}

/* ---- request smuggling through the injector ---- */

/* Three real requests; two bodies that look like requests (Content-Length and chunked). */
static const char SMUGGLE[] = "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 35\r\n\r\n"
                              "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
                              "GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
                              "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "24\r\nGET /smuggled2 HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n";
/* Where our line may go in each real request: right after its request line, or right before its
 * blank line (headers split over writes). Offsets into SMUGGLE. */
static const size_t smuggle_spots[3][2] = {{18, 47}, {101, 110}, {130, 167}};

/* Walk the received bytes against the sent ones; every extra "traceparent: ...\r\n" line is an
 * insertion at a sent offset. Returns how many, their offsets in at[]. */
static int insertions(const char *rx, size_t rn, const char *tx, size_t tn, size_t at[], int max)
{
    size_t i = 0, j = 0;
    int n = 0;
    while (i < rn) {
        if (rn - i >= 70 && memcmp(rx + i, "traceparent: ", 13) == 0 &&
            (tn - j < 13 || memcmp(tx + j, "traceparent: ", 13) != 0)) {
            cr_assert(traceparent_ok(rx + i + 13, 55) && memcmp(rx + i + 68, "\r\n", 2) == 0,
                      "malformed injected line at %zu: %.70s", i, rx + i);
            cr_assert_lt(n, max, "more insertions than requests");
            at[n++] = j;
            i += 70;
            continue;
        }
        cr_assert(j < tn && rx[i] == tx[j], "stream differs at sent offset %zu:\n%.*s", j, (int)rn,
                  rx);
        i++;
        j++;
    }
    cr_assert_eq(j, tn, "only %zu of %zu sent bytes arrived", j, tn);
    return n;
}

static void smuggle_case(size_t chunk)
{
    char dir[ITEST_PATH_MAX], dump[ITEST_PATH_MAX + 16], file[ITEST_PATH_MAX + 16];
    cr_assert(itest_mkdtemp(dir) == 0);
    snprintf(dump, sizeof(dump), "%s/raw.dump", dir);
    snprintf(file, sizeof(file), "%s/stream.bin", dir);
    cr_assert(memcmp(SMUGGLE + 18, "Host", 4) == 0 && memcmp(SMUGGLE + 101, "Host", 4) == 0 &&
              memcmp(SMUGGLE + 130, "Host", 4) == 0 && memcmp(SMUGGLE + 165, "\r\n\r\n24", 6) == 0);
    FILE *f = fopen(file, "wb");
    cr_assert(f && fwrite(SMUGGLE, 1, sizeof(SMUGGLE) - 1, f) == sizeof(SMUGGLE) - 1);
    fclose(f);
    struct itest_env env;
    itest_env_init(&env);
    char port[16], ch[16];
    int p = itest_free_port();
    snprintf(port, sizeof(port), "%d", p);
    snprintf(ch, sizeof(ch), "%zu", chunk);
    char *sargv[] = {itest_build("tests/tools/capture_server"), port, dump, "--raw", NULL};
    pid_t srv = itest_start_server(&env, sargv, p, NULL);
    cr_assert(srv > 0);
    cr_assert(itest_env_trace(&env, dir, "smuggler") == 0);
    char *cargv[] = {itest_build("tests/tools/raw_client"), port, ch, file, NULL};
    cr_assert_eq(itest_run(&env, cargv, NULL, 10000), 0, "raw_client failed");
    itest_env_free(&env);
    /* The readiness probe of itest_start_server is a connection too: an empty record. */
    size_t dl = 0;
    char *d = NULL;
    const char *h[4], *got = NULL;
    size_t hl[4], gl = 0;
    for (double t0 = fu_now_ms(); fu_now_ms() - t0 < 3000 && !got; fu_sleep_ms(20)) {
        free(d);
        d = itest_slurp(dump, &dl);
        int nh = d ? heads(d, dl, h, hl, 4) : 0;
        for (int k = 0; k < nh; k++) {
            cr_assert(!got || hl[k] == 0, "two connections reached the server");
            if (hl[k] > 0)
                got = h[k], gl = hl[k];
        }
    }
    itest_stop(srv);
    cr_assert_not_null(got, "nothing reached the server");
    size_t at[8];
    int n = insertions(got, gl, SMUGGLE, sizeof(SMUGGLE) - 1, at, 8);
    /* Safety: every line we added sits in a real request's header block (never in a body that
     * looks like a request), at most one a request. */
    int seen[3] = {0, 0, 0};
    for (int k = 0; k < n; k++) {
        int r = -1;
        for (int q = 0; q < 3; q++)
            if (at[k] == smuggle_spots[q][0] || at[k] == smuggle_spots[q][1])
                r = q;
        cr_expect_geq(r, 0, "chunk %zu: a line inserted at offset %zu, outside every header block",
                      chunk, at[k]);
        if (r >= 0)
            cr_expect_eq(seen[r]++, 0, "chunk %zu: two lines in request %d", chunk, r);
    }
    /* Completeness: a request is missed (and counted as such by the shim) only when a write
     * boundary falls inside its blank line's CRLF, so the spot before it was already sent. */
    int want = 0;
    for (int q = 0; q < 3; q++)
        want += chunk == 0 || (smuggle_spots[q][1] + 1) % chunk != 0;
    cr_expect_geq(n, want, "chunk %zu: %d traceparent lines, want %d of 3:\n%.*s", chunk, n, want,
                  (int)gl, got);
    free(d);
    itest_rmtree(dir);
}

Test(hostile_smuggle, request_like_bodies_untouched_whole_write, .timeout = 30)
{
    smuggle_case(0);
}

/* Every blank line is split here, so no line can be placed: only safety is checked. */
Test(hostile_smuggle, request_like_bodies_untouched_byte_writes, .timeout = 30)
{
    smuggle_case(1);
}

Test(hostile_smuggle, request_like_bodies_untouched_odd_writes, .timeout = 30)
{
    for (size_t c = 5; c < 64; c += 17)
        smuggle_case(c);
}
