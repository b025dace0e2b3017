/* test_shim_nonblock.c - a traced 1 MiB POST over a non-blocking socket with partial writes. */
#include <criterion/criterion.h>
#include <string.h>
#include <unistd.h>

#include "itest.h"

struct nb_result {
    int status; /* nbclient's exit status */
    unsigned partial, eagain;
    size_t sent, expected;
    json_t *report; /* sink.py's answer: head, len, sha256 */
};

/* Start sink.py on port and run nbclient against it, both traced when dir is set; its output. */
static void run_upload(const char *dir, int port, struct nb_result *r)
{
    char port_s[16], out[ITEST_PATH_MAX];
    snprintf(port_s, sizeof(port_s), "%d", port);
    struct itest_env es, ec;
    itest_env_init(&es);
    itest_env_init(&ec);
    if (dir) {
        cr_assert_eq(itest_env_trace(&ec, dir, "nbclient"), 0, "libldtrace.so is not built");
        cr_assert_eq(itest_env_trace(&es, dir, "sink"), 0, "libldtrace.so is not built");
    }
    char *sargv[] = {ITEST_PYTHON, itest_src("tests/integration/py/sink.py"), port_s, NULL};
    pid_t srv = itest_start_server(&es, sargv, port, NULL);
    cr_assert_gt(srv, 0);
    cr_assert_eq(itest_mkdtemp(out), 0);
    strcat(out, ".nb");
    char *cargv[] = {itest_build("tests/tools/nbclient"), port_s, "1048576", "4096", NULL};
    r->status = itest_run(&ec, cargv, out, 20000);
    itest_settle(dir ? 250 : 0);
    itest_stop(srv);
    char *text = itest_slurp(out, NULL);
    cr_assert_not_null(text, "no output from nbclient");
    cr_assert_eq(sscanf(text, "sent=%zu expected=%zu calls=%*u partial=%u eagain=%u", &r->sent,
                        &r->expected, &r->partial, &r->eagain),
                 4, "nbclient said: %.200s", text);
    char *body = strstr(text, "\r\n\r\n");
    cr_assert_not_null(body, "no HTTP response in: %.300s", text);
    json_error_t err;
    r->report = json_loads(body + 4, 0, &err);
    cr_assert_not_null(r->report, "sink answer is not JSON: %s", err.text);
    free(text);
    unlink(out);
    out[strlen(out) - 3] = '\0';
    itest_rmtree(out);
    itest_env_free(&es);
    itest_env_free(&ec);
}

/* The header block without one "traceparent: ..." line; the number of such lines removed. */
static int strip_traceparent(const char *head, char *out, size_t cap, const char **tp_line)
{
    int n = 0;
    out[0] = '\0';
    for (const char *p = head; *p;) {
        const char *eol = strstr(p, "\r\n");
        size_t len = eol ? (size_t)(eol - p) + 2 : strlen(p);
        if (strncasecmp(p, "traceparent:", 12) == 0) {
            n++;
            *tp_line = p;
        } else {
            strncat(out, p, len < cap - strlen(out) - 1 ? len : cap - strlen(out) - 1);
        }
        p += len;
    }
    return n;
}

/* The body arrived intact, the head is the app's plus exactly one traceparent line right after the
 * request line. Returns that line (inside traced's report). */
static const char *check_wire(const struct nb_result *plain, const struct nb_result *traced)
{
    json_t *pr = plain->report, *tr = traced->report;
    cr_assert_eq(json_integer_value(json_object_get(tr, "len")), 1048576);
    cr_assert_str_eq(json_string_value(json_object_get(tr, "sha256")),
                     json_string_value(json_object_get(pr, "sha256")));
    const char *ph = json_string_value(json_object_get(pr, "head"));
    const char *th = json_string_value(json_object_get(tr, "head"));
    char stripped[2048], none[2048];
    const char *tp_line = NULL, *no_line = NULL;
    cr_assert_eq(strip_traceparent(ph, none, sizeof(none), &no_line), 0);
    cr_assert_eq(strip_traceparent(th, stripped, sizeof(stripped), &tp_line), 1,
                 "expected one traceparent line in:\n%s", th);
    cr_assert_str_eq(stripped, ph,
                     "the app's header bytes changed:\n%s\n-- without the shim --\n%s", th, ph);
    static const char first[] = "POST /upload HTTP/1.1\r\ntraceparent: ";
    cr_assert(strncmp(th, first, sizeof(first) - 1) == 0,
              "traceparent is not right after the request line:\n%s", th);
    return tp_line;
}

/* One CLIENT span, 200, whose ids are the injected ones and which counts the app's bytes only, and
 * the sink's SERVER span under it. */
static void check_span(const char *dir, const char *tp_line, size_t app_bytes)
{
    struct itest_spans *sp = itest_drain_load(dir);
    cr_assert_not_null(sp);
    size_t n = itest_count(sp, ITEST_CLIENT, "nbclient", NULL, NULL);
    if (n != 1)
        itest_dump(sp);
    cr_assert_eq(n, 1, "expected one CLIENT span, got %zu", n);
    const struct itest_span *c = itest_find(sp, ITEST_CLIENT, "nbclient", NULL, NULL);
    cr_expect_str_eq(c->name, "POST");
    cr_expect_str_eq(itest_attr_str(c, "url.path") ?: "", "/upload");
    cr_expect_eq(itest_attr_int(c, "http.response.status_code", 0), 200);
    cr_expect_neq(c->status, 2);
    cr_expect_eq(itest_attr_int(c, "ldtrace.bytes_out", -1), (long long)app_bytes,
                 "bytes_out must count the app's bytes, not the injected ones");
    char want[80];
    snprintf(want, sizeof(want), "traceparent: 00-%s-%s-", c->trace_id, c->span_id);
    cr_assert(strncmp(tp_line, want, strlen(want)) == 0, "injected %.70s, span %s", tp_line, want);
    const struct itest_span *s = itest_find(sp, ITEST_SERVER, "sink", NULL, NULL);
    cr_assert_not_null(s, "no SERVER span from the traced sink");
    cr_expect_str_eq(s->parent_id, c->span_id);
    cr_expect_str_eq(s->trace_id, c->trace_id);
    cr_expect_str_eq(itest_attr_str(s, "url.path") ?: "", "/upload");
    cr_expect_eq(itest_attr_int(s, "http.response.status_code", 0), 200);
    itest_spans_free(sp);
}

Test(shim_nonblock, partial_writes_keep_app_bytes_and_inject_one_line, .timeout = 60)
{
    struct nb_result plain = {0}, traced = {0};
    char dir[ITEST_PATH_MAX];
    cr_assert_eq(itest_mkdtemp(dir), 0);
    int port = itest_free_port();
    run_upload(NULL, port, &plain);
    run_upload(dir, port, &traced);
    cr_assert_eq(plain.status, 0, "nbclient failed without the shim");
    cr_assert_gt(plain.partial + plain.eagain, 0, "the setup did not force partial writes");
    cr_assert_eq(traced.status, 0, "nbclient saw an inconsistent return value under the shim");
    cr_assert_eq(traced.sent, traced.expected);
    cr_assert_gt(traced.eagain, 0, "no EAGAIN under the shim: the test did not test it");
    check_span(dir, check_wire(&plain, &traced), traced.expected);
    json_decref(plain.report);
    json_decref(traced.report);
    itest_rmtree(dir);
}
