/* test_cli.c - unit tests of the CLI logic: OTLP JSON loader, traces, views, analysis, launcher.
 *
 * The views are rendered into memory and compared byte for byte with the golden files in
 * tests/data/cli/ (set LDT_UPDATE_GOLDEN=1 to rewrite them after an intended change).
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "cli/cli.h"

#define DEMO_FAIL "4bf92f3577b34da6a3ce929d0e0e4736"

static void data_path(char *out, size_t cap, const char *name)
{
    const char *root = getenv("LDT_SOURCE_ROOT");
    snprintf(out, cap, "%s/tests/data/cli/%s", root ? root : ".", name);
}

static void load_demo(struct ldt__spans *s, struct ldt__traces *t)
{
    char path[PATH_MAX];
    data_path(path, sizeof(path), "trace-demo.jsonl");
    memset(s, 0, sizeof(*s));
    cr_assert_eq(ldt__spans_load_file(s, path), 27, "spans in %s", path);
    cr_assert_eq(s->bad_lines, 0);
    cr_assert_eq(s->bad_spans, 0);
    cr_assert_eq(ldt__traces_build(s, t), 0);
}

/* Load spans from a string holding JSON lines. */
static int load_text(struct ldt__spans *s, const char *text)
{
    FILE *f = fmemopen((void *)text, strlen(text), "r");
    cr_assert_not_null(f);
    int rc = ldt__spans_load_stream(s, f);
    fclose(f);
    return rc;
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t cap = 0;
    FILE *m = open_memstream(&buf, &cap);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        fwrite(chunk, 1, n, m);
    fclose(f);
    fclose(m);
    *len = cap;
    return buf;
}

/* Render the list (trace == NULL) or one trace into memory. */
static char *render(const struct ldt__spans *s, const struct ldt__traces *t, const char *trace,
                    struct ldt__view_opts o, size_t *len)
{
    char *buf = NULL;
    FILE *m = open_memstream(&buf, len);
    int rc;
    if (trace) {
        int i = ldt__traces_find(t, trace);
        cr_assert_geq(i, 0, "trace %s", trace);
        rc = ldt__view_trace(m, s, &t->v[i], &o);
    } else {
        rc = ldt__view_list(m, s, t, &o);
    }
    fclose(m);
    cr_assert_eq(rc, 0);
    return buf;
}

/* ---- golden outputs ---- */

/* Parameters hold their strings inline: Criterion runs each test in a fresh process, where the
 * address of a string literal may differ (PIE + ASLR). */
struct golden {
    char file[32];
    char trace[40]; /* empty: the list */
    int width, unicode;
};

ParameterizedTestParameters(view, matches_golden_file)
{
    static struct golden g[] = {
        {"view-80.txt", DEMO_FAIL, 80, 1},
        {"view-120.txt", DEMO_FAIL, 120, 1},
        {"view-80-ascii.txt", DEMO_FAIL, 80, 0},
        {"list-80.txt", "", 80, 1},
        {"list-120.txt", "", 120, 1},
    };
    return cr_make_param_array(struct golden, g, sizeof(g) / sizeof(g[0]));
}

ParameterizedTest(struct golden *g, view, matches_golden_file)
{
    struct ldt__spans s;
    struct ldt__traces t;
    load_demo(&s, &t);
    size_t len, want_len;
    char *got = render(&s, &t, g->trace[0] ? g->trace : NULL,
                       (struct ldt__view_opts){g->width, 0, g->unicode}, &len);
    char path[PATH_MAX];
    data_path(path, sizeof(path), g->file);
    if (getenv("LDT_UPDATE_GOLDEN")) {
        FILE *f = fopen(path, "wb");
        cr_assert_not_null(f);
        fwrite(got, 1, len, f);
        fclose(f);
    }
    char *want = read_all(path, &want_len);
    cr_assert_not_null(want, "golden file %s", path);
    cr_expect_eq(len, want_len, "%s: %zu bytes, golden has %zu", g->file, len, want_len);
    cr_expect(len == want_len && memcmp(got, want, len) == 0, "%s differs:\n%s", g->file, got);
    free(got);
    free(want);
    ldt__traces_free(&t);
    ldt__spans_free(&s);
}

/* ---- grouping and lookup ---- */

Test(traces, grouped_newest_first)
{
    struct ldt__spans s;
    struct ldt__traces t;
    load_demo(&s, &t);
    cr_assert_eq(t.n, 5);
    cr_expect_str_eq(t.v[0].trace_id, DEMO_FAIL);
    cr_expect_str_eq(t.v[4].trace_id, "0af7651916cd43dd8448eb211c80319c");
    for (size_t i = 1; i < t.n; i++)
        cr_expect_geq(t.v[i - 1].start_ns, t.v[i].start_ns);
    cr_expect_eq(t.v[0].n, 15);
    cr_expect_eq(t.v[0].errors, 11);
    cr_expect_eq(t.v[0].end_ns - t.v[0].start_ns, 260000000u);
    cr_expect_str_eq(s.v[t.v[0].root].name, "GET /checkout");
    cr_expect_str_eq(s.v[t.v[0].root].service, "gateway");
    ldt__traces_free(&t);
    ldt__spans_free(&s);
}

struct find_case {
    char id[48];
    int expect; /* >= 0: position; else the error */
};

ParameterizedTestParameters(traces, find_by_id_or_unique_prefix)
{
    static struct find_case c[] = {
        {DEMO_FAIL, 0}, {"4bf92f3577", 0}, {"4BF92F3577B3", 0}, {"4bf92f35", -EEXIST},
        {"0af7", 4},    {"ffff", -ENOENT}, {"", -EINVAL},       {DEMO_FAIL "0", -ENOENT},
    };
    return cr_make_param_array(struct find_case, c, sizeof(c) / sizeof(c[0]));
}

ParameterizedTest(struct find_case *c, traces, find_by_id_or_unique_prefix)
{
    struct ldt__spans s;
    struct ldt__traces t;
    load_demo(&s, &t);
    cr_expect_eq(ldt__traces_find(&t, c->id), c->expect, "id '%s'", c->id);
    ldt__traces_free(&t);
    ldt__spans_free(&s);
}

/* ---- the loader against bad input ---- */

#define LINE_OPEN                                                                                  \
    "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\","                \
    "\"value\":{\"stringValue\":\"svc\"}}]},\"scopeSpans\":[{\"spans\":["
#define LINE_CLOSE "]}]}]}\n"
#define TID "\"traceId\":\"0123456789abcdef0123456789abcdef\""
#define SID "\"spanId\":\"00000000000000a1\""
#define TIMES "\"startTimeUnixNano\":\"1000\",\"endTimeUnixNano\":\"3000\""

Test(loader, malformed_lines_skipped_and_counted)
{
    const char *text = "not json\n"
                       "{}\n"
                       "[1,2,3]\n"
                       "{\"resourceSpans\":5}\n"
                       "{\"resourceSpans\":[{\n"
                       "\n   \n"
                       "{\"resourceSpans\":[],\"resourceSpans\":[]}\n" LINE_OPEN "{" TID "," SID
                       "," TIMES ",\"name\":\"ok\"}" LINE_CLOSE;
    struct ldt__spans s = {0};
    cr_assert_eq(load_text(&s, text), 1);
    cr_expect_eq(s.lines, 7, "blank lines are not counted");
    cr_expect_eq(s.bad_lines, 6);
    cr_expect_eq(s.n, 1);
    cr_expect_str_eq(s.v[0].name, "ok");
    cr_expect_str_eq(s.v[0].service, "svc");
    cr_expect_eq(s.v[0].end_ns - s.v[0].start_ns, 2000);
    ldt__spans_free(&s);
}

struct span_case {
    char span[320]; /* the span object's members */
    int ok;         /* kept (1) or skipped and counted (0) */
    char label[32];
};

ParameterizedTestParameters(loader, span_fields_validated)
{
    static struct span_case c[] = {
        {SID "," TIMES, 0, "no traceId"},
        {TID "," TIMES, 0, "no spanId"},
        {"\"traceId\":\"0123\"," SID "," TIMES, 0, "short traceId"},
        {"\"traceId\":\"0123456789abcdef0123456789abcdeg\"," SID "," TIMES, 0, "non-hex traceId"},
        {"\"traceId\":\"00000000000000000000000000000000\"," SID "," TIMES, 0, "zero traceId"},
        {"\"traceId\":123," SID "," TIMES, 0, "numeric traceId"},
        {TID "," SID ",\"parentSpanId\":\"xyz\"," TIMES, 0, "bad parent"},
        {TID "," SID ",\"endTimeUnixNano\":\"5\"", 0, "no start"},
        {TID "," SID ",\"startTimeUnixNano\":\"99999999999999999999999\"", 0, "start > 2^64"},
        {TID "," SID ",\"startTimeUnixNano\":\"-5\"", 0, "negative start"},
        {TID "," SID ",\"startTimeUnixNano\":-5", 0, "negative numeric start"},
        {TID "," SID ",\"startTimeUnixNano\":\"12abc\"", 0, "junk after digits"},
        {TID "," SID ",\"startTimeUnixNano\":\"18446744073709551615\"", 1, "start = 2^64-1"},
        {TID "," SID ",\"startTimeUnixNano\":1700000000000000000", 1, "numeric start"},
        {TID "," SID "," TIMES ",\"parentSpanId\":\"\"", 1, "empty parent"},
        {TID "," SID "," TIMES ",\"kind\":99,\"status\":{\"code\":7}", 1, "odd kind, status"},
        {TID "," SID "," TIMES ",\"kind\":2.5e300", 1, "real kind"},
        {TID "," SID "," TIMES ",\"attributes\":5,\"events\":\"x\"", 1, "wrong shapes"},
        {"\"traceId\":\"0123456789ABCDEF0123456789ABCDEF\"," SID "," TIMES, 1, "upper-case hex"},
    };
    return cr_make_param_array(struct span_case, c, sizeof(c) / sizeof(c[0]));
}

ParameterizedTest(struct span_case *c, loader, span_fields_validated)
{
    char line[2048];
    snprintf(line, sizeof(line), LINE_OPEN "{%s}" LINE_CLOSE, c->span);
    struct ldt__spans s = {0};
    cr_assert_eq(ldt__spans_parse_line(&s, line, strlen(line)), c->ok, "%s", c->label);
    cr_expect_eq(s.bad_spans, (size_t)!c->ok, "%s", c->label);
    if (c->ok) {
        cr_expect_eq(strlen(s.v[0].trace_id), 32);
        cr_expect_geq(s.v[0].end_ns, s.v[0].start_ns, "%s", c->label);
        cr_expect(s.v[0].kind >= 0 && s.v[0].kind <= 5);
        cr_expect(s.v[0].status >= 0 && s.v[0].status <= 2);
    }
    ldt__spans_free(&s);
}

Test(loader, missing_optional_fields_get_defaults)
{
    const char *line = "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{" TID "," SID
                       ",\"startTimeUnixNano\":\"7\",\"endTimeUnixNano\":\"3\"}]}]}]}";
    struct ldt__spans s = {0};
    cr_assert_eq(ldt__spans_parse_line(&s, line, strlen(line)), 1);
    cr_expect_str_eq(s.v[0].service, "unknown_service");
    cr_expect_str_eq(s.v[0].name, "");
    cr_expect_eq(s.v[0].parent_id[0], '\0');
    cr_expect_eq(s.v[0].end_ns, 7, "an end before the start is clamped");
    cr_expect_eq(s.v[0].http_code, 0);
    cr_expect_null(s.v[0].path);
    cr_expect_null(s.v[0].exception);
    ldt__spans_free(&s);
}

Test(loader, huge_json_integer_rejects_the_line)
{
    const char *line =
        LINE_OPEN "{" TID "," SID "," TIMES ",\"kind\":123456789012345678901234567890}" LINE_CLOSE;
    struct ldt__spans s = {0};
    cr_expect_eq(load_text(&s, line), 0);
    cr_expect_eq(s.bad_lines, 1);
    ldt__spans_free(&s);
}

Test(loader, attributes_and_enum_names)
{
    const char *line = LINE_OPEN
        "{" TID "," SID "," TIMES ",\"kind\":\"SPAN_KIND_CLIENT\","
        "\"status\":{\"code\":\"STATUS_CODE_ERROR\"},\"name\":\"GET\",\"attributes\":["
        "{\"key\":\"http.response.status_code\",\"value\":{\"intValue\":\"99999999999999999999\"}},"
        "{\"key\":\"url.path\",\"value\":{\"stringValue\":\"/a\\u001b[31m\"}},"
        "{\"key\":\"server.address\",\"value\":{\"stringValue\":\"db\"}},"
        "{\"key\":\"server.port\",\"value\":{\"intValue\":5432}}]}" LINE_CLOSE;
    struct ldt__spans s = {0};
    cr_assert_eq(load_text(&s, line), 1);
    cr_expect_eq(s.v[0].kind, LDT__KIND_CLIENT);
    cr_expect_eq(s.v[0].status, 2);
    cr_expect(ldt__span_is_error(&s.v[0]));
    cr_expect_eq(s.v[0].http_code, 0, "an out-of-range status code is dropped");
    cr_expect_str_eq(s.v[0].path, "/a?[31m", "control characters are neutralised");
    cr_expect_str_eq(s.v[0].peer, "db:5432");
    ldt__spans_free(&s);
}

Test(loader, exception_event_summarised)
{
    struct ldt__spans s;
    struct ldt__traces t;
    load_demo(&s, &t);
    size_t with = 0;
    for (size_t i = 0; i < s.n; i++) {
        if (!s.v[i].exception)
            continue;
        with++;
        cr_expect_str_eq(s.v[i].exception, "HTTP 503: card processor unavailable");
        cr_expect_not_null(strstr(s.v[i].stacktrace, "handle_pay"));
        cr_expect_str_eq(s.v[i].service, "payment");
    }
    cr_expect_eq(with, 1);
    ldt__traces_free(&t);
    ldt__spans_free(&s);
}

Test(loader, missing_file_is_an_error)
{
    struct ldt__spans s = {0};
    cr_expect_eq(ldt__spans_load_file(&s, "/nonexistent/ldtrace.jsonl"), -ENOENT);
}

/* ---- trees built from hostile parentage ---- */

static void add_span(struct ldt__spans *s, const char *sid, const char *parent, uint64_t t0)
{
    char line[1024];
    snprintf(
        line, sizeof(line),
        LINE_OPEN
        "{" TID ",\"spanId\":\"%s\",\"parentSpanId\":\"%s\","
        "\"name\":\"n%s\",\"startTimeUnixNano\":\"%llu\",\"endTimeUnixNano\":\"%llu\"}" LINE_CLOSE,
        sid, parent, sid, (unsigned long long)t0, (unsigned long long)t0 + 10);
    cr_assert_eq(ldt__spans_parse_line(s, line, strlen(line)), 1);
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

Test(tree, cycle_and_self_parent_drawn_once, .timeout = 10)
{
    struct ldt__spans s = {0};
    struct ldt__traces t;
    add_span(&s, "00000000000000a1", "00000000000000a2", 100);
    add_span(&s, "00000000000000a2", "00000000000000a1", 200);
    add_span(&s, "00000000000000a3", "00000000000000a3", 300);
    add_span(&s, "00000000000000a4", "00000000000000a3", 400);
    add_span(&s, "00000000000000a4", "", 500); /* a repeated id is dropped */
    cr_assert_eq(ldt__traces_build(&s, &t), 0);
    cr_assert_eq(t.n, 1);
    cr_expect_eq(t.v[0].n, 4);
    size_t len;
    char *out = render(&s, &t, "0123", (struct ldt__view_opts){100, 0, 0}, &len);
    cr_expect_eq(count(out, " svc n0"), 4, "%s", out);
    cr_expect_eq(count(out, "? svc"), 2, "the cycle's first span and the self-parent: %s", out);
    cr_expect_not_null(strstr(out, "`- svc n00000000000000a4"), "%s", out);
    free(out);
    ldt__traces_free(&t);
    ldt__spans_free(&s);
}

Test(tree, deep_chain_stays_within_width, .timeout = 20)
{
    struct ldt__spans s = {0};
    struct ldt__traces t;
    char sid[17], parent[17] = "";
    for (int i = 1; i <= 3000; i++) {
        snprintf(sid, sizeof(sid), "%016x", i);
        add_span(&s, sid, parent, (uint64_t)i);
        memcpy(parent, sid, sizeof(parent));
    }
    cr_assert_eq(ldt__traces_build(&s, &t), 0);
    size_t len;
    char *out = render(&s, &t, "0123", (struct ldt__view_opts){80, 0, 1}, &len);
    cr_expect_eq(count(out, " svc n0"), 3000);
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"))
        cr_assert_leq(ldt__text_cols(line), 80, "%s", line);
    free(out);
    ldt__traces_free(&t);
    ldt__spans_free(&s);
}

Test(tree, orphan_marked_as_root)
{
    struct ldt__spans s;
    struct ldt__traces t;
    load_demo(&s, &t);
    size_t len;
    char *out = render(&s, &t, "b7ad", (struct ldt__view_opts){80, 0, 0}, &len);
    cr_expect_not_null(strstr(out, "\n  ? payment POST /pay"), "%s", out);
    free(out);
    ldt__traces_free(&t);
    ldt__spans_free(&s);
}

/* ---- layout properties over many widths ---- */

Test(view, every_width_fits_and_ascii_is_ascii)
{
    struct ldt__spans s;
    struct ldt__traces t;
    load_demo(&s, &t);
    for (int w = 10; w <= 220; w += 7) {
        for (int u = 0; u < 2; u++) {
            for (int which = 0; which < 2; which++) {
                size_t len;
                char *out = render(&s, &t, which ? DEMO_FAIL : NULL,
                                   (struct ldt__view_opts){w, 0, u}, &len);
                int limit = w < 24 ? 24 : w;
                for (size_t i = 0; !u && i < len; i++)
                    cr_assert_lt((unsigned char)out[i], 0x80, "ASCII mode, width %d", w);
                cr_assert_null(memchr(out, '\033', len), "no colour asked");
                for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"))
                    cr_assert_leq(ldt__text_cols(line), (size_t)limit, "width %d: %s", w, line);
                free(out);
            }
        }
    }
    ldt__traces_free(&t);
    ldt__spans_free(&s);
}

Test(view, colour_only_when_asked)
{
    struct ldt__spans s;
    struct ldt__traces t;
    load_demo(&s, &t);
    size_t len;
    char *out = render(&s, &t, DEMO_FAIL, (struct ldt__view_opts){100, 1, 1}, &len);
    cr_expect_not_null(strstr(out, "\033[31m"), "errors in red");
    cr_expect_not_null(strstr(out, "\033[0m"));
    free(out);
    ldt__traces_free(&t);
    ldt__spans_free(&s);
}

/* An error span whose stack has six frames, one with a control character and a blank line. */
#define STACK_LINE                                                                                 \
    LINE_OPEN "{" TID "," SID "," TIMES ",\"name\":\"GET /x\",\"kind\":2,\"status\":{\"code\":2}," \
              "\"attributes\":[{\"key\":\"url.path\",\"value\":{\"stringValue\":\"/x\"}},"         \
              "{\"key\":\"tags\",\"value\":{\"arrayValue\":{\"values\":[]}}}],"                    \
              "\"events\":[{\"name\":\"exception\",\"timeUnixNano\":\"2500\",\"attributes\":["     \
              "{\"key\":\"exception.type\",\"value\":{\"stringValue\":\"E\"}},"                    \
              "{\"key\":\"exception.stacktrace\",\"value\":{\"stringValue\":"                      \
              "\"f0\\nf1\\u001b[31m\\n\\n  f2\\nf3\\nf4\\nf5\\n\"}}]}]}" LINE_CLOSE

Test(view, error_span_shows_first_four_frames)
{
    struct ldt__spans s = {0};
    struct ldt__traces t;
    cr_assert_eq(load_text(&s, STACK_LINE), 1);
    cr_assert_eq(ldt__traces_build(&s, &t), 0);
    size_t len;
    char *out = render(&s, &t, NULL, (struct ldt__view_opts){100, 0, 0}, &len);
    free(out);
    out = render(&s, &t, "0123456789abcdef", (struct ldt__view_opts){100, 0, 0}, &len);
    cr_expect_not_null(strstr(out, "exception: E\n"), "%s", out);
    cr_expect_not_null(strstr(out, "  at f0\n"), "%s", out);
    cr_expect_not_null(strstr(out, "  at f1?[31m\n"), "control characters neutralised: %s", out);
    cr_expect_not_null(strstr(out, "  at f2\n"), "leading blanks and empty lines skipped");
    cr_expect_not_null(strstr(out, "  at f3\n"));
    cr_expect_null(strstr(out, "at f4"), "only four frames");
    cr_expect_not_null(strstr(out, "  ... 2 more frames\n"), "%s", out);
    cr_expect_null(strchr(out, '\033'));
    free(out);
    out = render(&s, &t, "0123456789abcdef", (struct ldt__view_opts){100, 1, 1}, &len);
    cr_expect_not_null(strstr(out, "\033[2m  at f0"), "frames dimmed on a colour terminal");
    free(out);
    ldt__traces_free(&t);
    ldt__spans_free(&s);
}

Test(loader, every_attribute_and_event_kept)
{
    struct ldt__spans s = {0};
    cr_assert_eq(load_text(&s, STACK_LINE), 1);
    json_t *a = s.v[0].attrs, *e = s.v[0].events;
    cr_assert_eq(json_array_size(a), 2);
    cr_expect_str_eq(json_string_value(json_array_get(json_array_get(a, 0), 0)), "url.path");
    cr_expect_str_eq(json_string_value(json_array_get(json_array_get(a, 0), 1)), "/x");
    cr_expect_str_eq(json_string_value(json_array_get(json_array_get(a, 1), 1)),
                     "{\"arrayValue\":{\"values\":[]}}", "a value without text form as JSON");
    cr_assert_eq(json_array_size(e), 1);
    json_t *ev = json_array_get(e, 0);
    cr_expect_str_eq(json_string_value(json_object_get(ev, "name")), "exception");
    cr_expect_eq(json_integer_value(json_object_get(ev, "t_ns")), 1500, "offset from the start");
    cr_expect_eq(json_array_size(json_object_get(ev, "attrs")), 2);
    ldt__spans_free(&s);
}

/* ---- launcher helpers ---- */

struct preload_case {
    int has_existing;
    char existing[64], expect[64];
};

ParameterizedTestParameters(run, preload_prepended)
{
    static struct preload_case c[] = {
        {0, "", "/b/libldtrace.so"},
        {1, "", "/b/libldtrace.so"},
        {1, "/x.so", "/b/libldtrace.so:/x.so"},
        {1, "/x.so /y.so", "/b/libldtrace.so:/x.so:/y.so"},
        {1, "/x.so:/b/libldtrace.so", "/b/libldtrace.so:/x.so"},
        {1, "/b/libldtrace.so", "/b/libldtrace.so"},
        {1, " : /x.so::", "/b/libldtrace.so:/x.so"},
        {1, "/x.so /usr/lib/libasan.so.8", "/usr/lib/libasan.so.8:/b/libldtrace.so:/x.so"},
    };
    return cr_make_param_array(struct preload_case, c, sizeof(c) / sizeof(c[0]));
}

ParameterizedTest(struct preload_case *c, run, preload_prepended)
{
    char out[256];
    int n = ldt__run_preload_value("/b/libldtrace.so", c->has_existing ? c->existing : NULL, out,
                                   sizeof(out));
    cr_assert_geq(n, 0);
    cr_expect_str_eq(out, c->expect);
    cr_expect_eq((size_t)n, strlen(c->expect));
}

Test(run, preload_too_long)
{
    char out[20];
    cr_expect_eq(ldt__run_preload_value("/b/libldtrace.so", "/x.so", out, sizeof(out)),
                 -ENAMETOOLONG);
    cr_expect_eq(ldt__run_preload_value("/a/very/long/path/libldtrace.so", NULL, out, sizeof(out)),
                 -ENAMETOOLONG);
}

static void touch(const char *root, const char *rel)
{
    char path[PATH_MAX], cmd[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/%s", root, rel);
    snprintf(cmd, sizeof(cmd), "mkdir -p \"$(dirname '%s')\"", path);
    cr_assert_eq(system(cmd), 0);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fclose(f);
}

Test(run, finds_tools_in_build_tree_and_prefix)
{
    char root[] = "/tmp/ldt-cli-XXXXXX", exe[PATH_MAX], got[PATH_MAX], want[PATH_MAX];
    cr_assert_not_null(mkdtemp(root));
    touch(root, "build/src/cli/ldtrace");
    touch(root, "build/src/shim/libldtrace.so");
    touch(root, "build/src/sidecar/ldtraced");
    snprintf(exe, sizeof(exe), "%s/build/src/cli/ldtrace", root);
    cr_expect_eq(ldt__find_shim(exe, got, sizeof(got)), 0);
    snprintf(want, sizeof(want), "%s/build/src/cli/../shim/libldtrace.so", root);
    cr_expect_not_null(strstr(got, "/build/src/shim/libldtrace.so"), "%s", got);
    cr_expect_eq(ldt__find_sidecar(exe, got, sizeof(got)), 0);
    cr_expect_not_null(strstr(got, "/build/src/sidecar/ldtraced"), "%s", got);

    touch(root, "prefix/bin/ldtrace");
    snprintf(exe, sizeof(exe), "%s/prefix/bin/ldtrace", root);
    cr_expect_eq(ldt__find_shim(exe, got, sizeof(got)), -ENOENT, "nothing installed yet");
    cr_expect_eq(ldt__find_sidecar(exe, got, sizeof(got)), -ENOENT);
    touch(root, "prefix/lib/x86_64-linux-gnu/libldtrace.so");
    touch(root, "prefix/lib64/libldtrace.so");
    touch(root, "prefix/bin/ldtraced");
    cr_expect_eq(ldt__find_shim(exe, got, sizeof(got)), 0);
    cr_expect(strstr(got, "/prefix/lib/") || strstr(got, "/prefix/lib64/"), "%s", got);
    cr_expect_eq(ldt__find_sidecar(exe, got, sizeof(got)), 0);
    snprintf(want, sizeof(want), "%s/prefix/bin/ldtraced", root);
    cr_expect_str_eq(got, want);

    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    cr_expect_eq(system(cmd), 0);
}

Test(demo, finds_executable_script_in_source_root)
{
    char root[] = "/tmp/ldt-demo-XXXXXX", dir[64], script[96], out[128];
    cr_assert_not_null(mkdtemp(root));
    cr_expect_eq(ldt__demo_script(root, out, sizeof(out)), -ENOENT, "no scripts/ folder");
    cr_expect_eq(ldt__demo_script("", out, sizeof(out)), -ENOENT, "no source root compiled in");
    cr_expect_eq(ldt__demo_script(NULL, out, sizeof(out)), -ENOENT);
    snprintf(dir, sizeof(dir), "%s/scripts", root);
    snprintf(script, sizeof(script), "%s/demo", dir);
    cr_assert_eq(mkdir(dir, 0700), 0);
    cr_expect_eq(ldt__demo_script(root, out, sizeof(out)), -ENOENT, "no demo in scripts/");
    FILE *f = fopen(script, "w");
    cr_assert_not_null(f);
    fputs("#!/bin/sh\nexit 0\n", f);
    fclose(f);
    chmod(script, 0600);
    cr_expect_eq(ldt__demo_script(root, out, sizeof(out)), -ENOENT, "not executable");
    chmod(script, 0700);
    cr_expect_eq(ldt__demo_script(root, out, sizeof(out)), 0);
    cr_expect_str_eq(out, script);
    cr_expect_eq(ldt__demo_script(root, out, 8), -ENAMETOOLONG);
    unlink(script);
    rmdir(dir);
    rmdir(root);
}

Test(run, exit_code_of_status)
{
    for (int code = 0; code < 3; code++) {
        pid_t pid = fork();
        if (pid == 0) {
            if (code == 2)
                raise(SIGKILL);
            _exit(code == 0 ? 7 : 0);
        }
        int st;
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_expect_eq(ldt__run_exit_code(st), code == 0 ? 7 : code == 1 ? 0 : 128 + SIGKILL);
    }
}

/* ---- analyze ---- */

struct agolden {
    char file[32];
    char trace[40]; /* empty: every trace */
    char format[16];
};

ParameterizedTestParameters(analyze, matches_golden_file)
{
    static struct agolden g[] = {
        {"analyze.txt", "", "text"},    {"analyze-trace.txt", DEMO_FAIL, "text"},
        {"analyze.json", "", "json"},   {"analyze.dot", "", "dot"},
        {"analyze.mmd", "", "mermaid"},
    };
    return cr_make_param_array(struct agolden, g, sizeof(g) / sizeof(g[0]));
}

static char *analyze_render(const struct ldt__spans *s, const struct ldt__traces *t,
                            const char *trace, const char *format, size_t *len)
{
    struct ldt__analysis a;
    int which = trace && *trace ? ldt__traces_find(t, trace) : -1;
    cr_assert(!trace || !*trace || which >= 0);
    cr_assert_eq(ldt__analyze(s, t, which, &a), 0);
    char *buf = NULL;
    FILE *m = open_memstream(&buf, len);
    cr_assert_eq(ldt__analysis_print(m, &a, format), 0);
    fclose(m);
    ldt__analysis_free(&a);
    return buf;
}

ParameterizedTest(struct agolden *g, analyze, matches_golden_file)
{
    struct ldt__spans s;
    struct ldt__traces t;
    load_demo(&s, &t);
    size_t len, want_len;
    char *got = analyze_render(&s, &t, g->trace, g->format, &len);
    char path[PATH_MAX];
    data_path(path, sizeof(path), g->file);
    if (getenv("LDT_UPDATE_GOLDEN")) {
        FILE *f = fopen(path, "wb");
        cr_assert_not_null(f);
        fwrite(got, 1, len, f);
        fclose(f);
    }
    char *want = read_all(path, &want_len);
    cr_assert_not_null(want, "golden file %s", path);
    cr_expect(len == want_len && memcmp(got, want, len) == 0, "%s differs:\n%s", g->file, got);
    free(got);
    free(want);
    ldt__traces_free(&t);
    ldt__spans_free(&s);
}

static const struct ldt__stat *find_stat(const struct ldt__stat *v, size_t n, const char *from,
                                         const char *to)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].to, to) == 0 && (from ? v[i].from && !strcmp(v[i].from, from) : !v[i].from))
            return &v[i];
    return NULL;
}

Test(analyze, demo_findings)
{
    struct ldt__spans s;
    struct ldt__traces t;
    struct ldt__analysis a;
    load_demo(&s, &t);
    cr_assert_eq(ldt__analyze(&s, &t, ldt__traces_find(&t, DEMO_FAIL), &a), 0);
    const struct ldt__stat *db = find_stat(a.svc, a.nsvc, NULL, "db");
    cr_assert_not_null(db);
    for (size_t i = 0; i < a.nsvc; i++)
        cr_expect_leq(a.svc[i].crit_ns, db->crit_ns, "db is the bottleneck");
    cr_expect_eq(db->crit_ns, 118000000u);
    cr_expect_eq(a.crit_total, 260000000u);
    uint64_t sum = 0;
    for (size_t i = 0; i < a.nsvc; i++)
        sum += a.svc[i].crit_ns;
    cr_expect_eq(sum, a.crit_total, "the critical path covers the root exactly");
    const struct ldt__stat *e = find_stat(a.edge, a.nedge, "order", "payment");
    cr_assert_not_null(e);
    cr_expect_eq(e->count, 4);
    cr_expect_eq(e->errors, 4);
    cr_expect_eq(e->p50, 12000000u);
    cr_expect_eq(e->p99, 13000000u);
    cr_assert_eq(a.norigin, 1);
    cr_expect_str_eq(a.origin[0].origin->service, "payment");
    cr_expect_str_eq(a.origin[0].surfaced->service, "gateway");
    cr_assert_eq(a.nretry, 1);
    cr_expect_eq(a.retry[0].attempts, 4);
    cr_expect_eq(a.retry[0].failed, 4);
    cr_expect_str_eq(a.retry[0].target, "payment POST /pay");
    cr_expect_str_eq(a.retry[0].parent->name, "POST /order");
    ldt__analysis_free(&a);
    ldt__traces_free(&t);
    ldt__spans_free(&s);
}

/* A span with kind, service and optional peer, for hand-built trees. */
static void add_kspan(struct ldt__spans *s, const char *sid, const char *parent, const char *svc,
                      int kind, uint64_t t0, uint64_t t1, int error)
{
    char line[2048];
    snprintf(
        line, sizeof(line),
        "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":"
        "\"service.name\",\"value\":{\"stringValue\":\"%s\"}}]},\"scopeSpans\":[{\"spans\":[{" TID
        ",\"spanId\":\"%s\",\"parentSpanId\":\"%s\",\"name\":\"GET\",\"kind\":%d,"
        "\"startTimeUnixNano\":\"%llu\",\"endTimeUnixNano\":\"%llu\",\"status\":{\"code\":%d},"
        "\"attributes\":[{\"key\":\"server.address\",\"value\":{\"stringValue\":\"cache\"}},"
        "{\"key\":\"url.path\",\"value\":{\"stringValue\":\"/k\"}}]}]}]}]}",
        svc, sid, parent, kind, (unsigned long long)t0, (unsigned long long)t1, error ? 2 : 0);
    cr_assert_eq(ldt__spans_parse_line(s, line, strlen(line)), 1);
}

Test(analyze, parallel_children_critical_path_and_self_time)
{
    struct ldt__spans s = {0};
    struct ldt__traces t;
    struct ldt__analysis a;
    /* root 0-100 calls a (10-90) and, in parallel, b (20-50): only a is on the critical path. */
    add_kspan(&s, "00000000000000a1", "", "root", 2, 0, 100, 0);
    add_kspan(&s, "00000000000000a2", "00000000000000a1", "a", 2, 10, 90, 0);
    add_kspan(&s, "00000000000000a3", "00000000000000a1", "b", 2, 20, 50, 0);
    cr_assert_eq(ldt__traces_build(&s, &t), 0);
    cr_assert_eq(ldt__analyze(&s, &t, 0, &a), 0);
    const struct ldt__stat *r = find_stat(a.svc, a.nsvc, NULL, "root");
    const struct ldt__stat *sa = find_stat(a.svc, a.nsvc, NULL, "a");
    const struct ldt__stat *sb = find_stat(a.svc, a.nsvc, NULL, "b");
    cr_assert(r && sa && sb);
    cr_expect_eq(r->crit_ns, 20);
    cr_expect_eq(sa->crit_ns, 80);
    cr_expect_eq(sb->crit_ns, 0);
    cr_expect_eq(r->self_ns, 20);
    cr_expect_eq(sb->self_ns, 30);
    cr_expect_eq(a.npath, 2, "root and a");
    ldt__analysis_free(&a);
    ldt__traces_free(&t);
    ldt__spans_free(&s);
}

Test(analyze, untraced_peer_edge_retries_and_origin)
{
    struct ldt__spans s = {0};
    struct ldt__traces t;
    struct ldt__analysis a;
    /* svc calls an untraced cache three times (two fail), then a traced child fails deeper. */
    add_kspan(&s, "00000000000000b1", "", "svc", 2, 0, 100, 1);
    add_kspan(&s, "00000000000000b2", "00000000000000b1", "svc", 3, 10, 20, 1);
    add_kspan(&s, "00000000000000b3", "00000000000000b1", "svc", 3, 21, 30, 1);
    add_kspan(&s, "00000000000000b4", "00000000000000b1", "svc", 3, 31, 40, 0);
    add_kspan(&s, "00000000000000b5", "00000000000000b1", "svc", 1, 50, 90, 1);
    add_kspan(&s, "00000000000000b6", "00000000000000b5", "svc", 1, 60, 80, 1);
    cr_assert_eq(ldt__traces_build(&s, &t), 0);
    cr_assert_eq(ldt__analyze(&s, &t, -1, &a), 0);
    const struct ldt__stat *e = find_stat(a.edge, a.nedge, "svc", "cache");
    cr_assert_not_null(e, "a client span without a server child is an edge to its peer");
    cr_expect_eq(e->count, 3);
    cr_expect_eq(e->errors, 2);
    cr_assert_eq(a.nretry, 1);
    cr_expect_eq(a.retry[0].attempts, 3);
    cr_expect_eq(a.retry[0].failed, 2);
    cr_assert_eq(a.norigin, 1);
    cr_expect_str_eq(a.origin[0].origin->span_id, "00000000000000b6", "the deepest error");
    cr_expect_str_eq(a.origin[0].surfaced->span_id, "00000000000000b1");
    size_t len;
    char *dot = analyze_render(&s, &t, NULL, "dot", &len);
    cr_expect_not_null(strstr(dot, "\"cache\" [label=\"cache\\n(not traced)\""), "%s", dot);
    free(dot);
    ldt__analysis_free(&a);
    ldt__traces_free(&t);
    ldt__spans_free(&s);
}

Test(analyze, unknown_format_rejected)
{
    struct ldt__analysis a = {0};
    cr_expect_eq(ldt__analysis_print(stdout, &a, "yaml"), -EINVAL);
}

/* ---- html ---- */

/* The JSON between the data element's tags. */
static char *html_data(const char *page)
{
    const char *open = "<script id=\"data\" type=\"application/json\">";
    const char *a = strstr(page, open);
    cr_assert_not_null(a);
    a += strlen(open);
    const char *b = strstr(a, "</script>");
    cr_assert_not_null(b);
    return strndup(a, (size_t)(b - a));
}

static char *html_render(const struct ldt__spans *s, const struct ldt__traces *t, size_t *len)
{
    char *buf = NULL;
    FILE *m = open_memstream(&buf, len);
    cr_assert_eq(ldt__html_write(m, s, t, 0), 0);
    fclose(m);
    return buf;
}

Test(html, page_embeds_every_trace)
{
    struct ldt__spans s;
    struct ldt__traces t;
    load_demo(&s, &t);
    size_t len;
    char *page = html_render(&s, &t, &len);
    cr_expect_eq(strncmp(page, "<!DOCTYPE html>", 15), 0);
    char *data = html_data(page);
    json_error_t err;
    json_t *j = json_loads(data, 0, &err);
    cr_assert_not_null(j, "%s", err.text);
    json_t *traces = json_object_get(j, "traces");
    cr_assert_eq(json_array_size(traces), 5);
    json_t *first = json_array_get(traces, 0);
    cr_expect_str_eq(json_string_value(json_object_get(first, "id")), DEMO_FAIL);
    cr_expect_eq(json_array_size(json_object_get(first, "spans")), 15);
    cr_expect_eq(json_integer_value(json_object_get(first, "errors")), 11);
    json_decref(j);
    free(data);
    free(page);
    ldt__traces_free(&t);
    ldt__spans_free(&s);
}

Test(html, hostile_names_cannot_close_the_script)
{
    const char *line = LINE_OPEN "{" TID "," SID "," TIMES ",\"name\":\"</script><script>alert(1)"
                                 "</script>&amp;\"}" LINE_CLOSE;
    struct ldt__spans s = {0};
    struct ldt__traces t;
    cr_assert_eq(load_text(&s, line), 1);
    cr_assert_eq(ldt__traces_build(&s, &t), 0);
    size_t len;
    char *page = html_render(&s, &t, &len);
    char *data = html_data(page);
    cr_expect_null(strchr(data, '<'), "%s", data);
    cr_expect_null(strchr(data, '&'));
    json_t *j = json_loads(data, 0, NULL);
    cr_assert_not_null(j);
    json_t *sp = json_array_get(
        json_object_get(json_array_get(json_object_get(j, "traces"), 0), "spans"), 0);
    cr_expect_str_eq(json_string_value(json_object_get(sp, "name")),
                     "</script><script>alert(1)</script>&amp;", "the text survives, escaped");
    json_decref(j);
    free(data);
    free(page);
    ldt__traces_free(&t);
    ldt__spans_free(&s);
}

Test(html, graph_and_span_details_embedded)
{
    struct ldt__spans s;
    struct ldt__traces t;
    load_demo(&s, &t);
    size_t len;
    char *page = html_render(&s, &t, &len);
    char *data = html_data(page);
    json_t *j = json_loads(data, 0, NULL);
    cr_assert_not_null(j);
    json_t *g = json_object_get(j, "graph"), *n;
    cr_assert_eq(json_array_size(json_object_get(g, "nodes")), 5, "one node per service");
    cr_expect_eq(json_array_size(json_object_get(g, "edges")), 4);
    size_t i, origins = 0;
    json_array_foreach(json_object_get(g, "nodes"), i, n)
    {
        if (json_is_true(json_object_get(n, "origin"))) {
            origins++;
            cr_expect_str_eq(json_string_value(json_object_get(n, "name")), "payment");
            cr_expect_eq(json_integer_value(json_object_get(n, "errors")), 4);
        }
    }
    cr_expect_eq(origins, 1);
    json_t *sp = json_array_get(
        json_object_get(json_array_get(json_object_get(j, "traces"), 0), "spans"), 0);
    cr_expect_eq(json_array_size(json_object_get(sp, "attrs")), 3, "every attribute");
    cr_expect(json_is_array(json_object_get(sp, "events")));
    size_t closes = 0;
    for (const char *q = page; (q = strstr(q, "</script>")); q++)
        closes++;
    cr_expect_eq(closes, 2, "only the data and the script elements close: no '</' in the script");
    cr_expect_null(strstr(page, "src="), "nothing fetched");
    cr_expect_null(strstr(page, "<link"));
    json_decref(j);
    free(data);
    free(page);
    ldt__traces_free(&t);
    ldt__spans_free(&s);
}

Test(html, empty_file_gives_a_page)
{
    struct ldt__spans s = {0};
    struct ldt__traces t;
    cr_assert_eq(ldt__traces_build(&s, &t), 0);
    size_t len;
    char *page = html_render(&s, &t, &len);
    char *data = html_data(page);
    json_t *j = json_loads(data, 0, NULL);
    cr_assert_not_null(j);
    cr_expect_eq(json_array_size(json_object_get(j, "traces")), 0);
    cr_expect_eq(json_array_size(json_object_get(json_object_get(j, "graph"), "nodes")), 0);
    json_decref(j);
    free(data);
    free(page);
}

Test(analyze, nested_retries_multiply_end_to_end)
{
    struct ldt__spans s = {0};
    struct ldt__traces t;
    struct ldt__analysis a;
    /* g retries o twice; each o retries the untraced cache three times: the cache sees x6. */
    add_kspan(&s, "00000000000000c1", "", "g", 2, 0, 100, 1);
    const char *gc[] = {"00000000000000c2", "00000000000000c3"};
    const char *os[] = {"00000000000000d2", "00000000000000d3"};
    for (int k = 0; k < 2; k++) {
        add_kspan(&s, gc[k], "00000000000000c1", "g", 3, 10 + 40 * k, 45 + 40 * k, 1);
        add_kspan(&s, os[k], gc[k], "o", 2, 11 + 40 * k, 44 + 40 * k, 1);
        for (int r = 0; r < 3; r++) {
            char sid[17];
            snprintf(sid, sizeof(sid), "00000000000000e%d", 3 * k + r);
            add_kspan(&s, sid, os[k], "o", 3, 12 + 40 * k + 10 * r, 20 + 40 * k + 10 * r, 1);
        }
    }
    cr_assert_eq(ldt__traces_build(&s, &t), 0);
    cr_assert_eq(ldt__analyze(&s, &t, -1, &a), 0);
    cr_assert_eq(a.nretry, 3, "g -> o once, o -> cache under each o");
    size_t to_o = 0, to_cache = 0;
    for (size_t i = 0; i < a.nretry; i++) {
        if (strncmp(a.retry[i].target, "o ", 2) == 0) {
            to_o++;
            cr_expect_eq(a.retry[i].attempts, 2);
            cr_expect_eq(a.retry[i].amplification, 2);
        } else {
            to_cache++;
            cr_expect_str_eq(a.retry[i].target, "cache GET /k");
            cr_expect_eq(a.retry[i].attempts, 3);
            cr_expect_eq(a.retry[i].amplification, 6);
        }
    }
    cr_expect_eq(to_o, 1);
    cr_expect_eq(to_cache, 2);
    size_t len;
    char *txt = analyze_render(&s, &t, NULL, "text", &len);
    cr_expect_not_null(strstr(txt, "3 attempts (x3 amplification, x6 end to end), 3 failed"), "%s",
                       txt);
    free(txt);
    ldt__analysis_free(&a);
    ldt__traces_free(&t);
    ldt__spans_free(&s);
}

Test(analyze, service_with_only_client_spans)
{
    /* Found by fuzz_otlp_reader: a service without entry spans has no durations to sort. */
    struct ldt__spans s = {0};
    struct ldt__traces t;
    struct ldt__analysis a;
    add_kspan(&s, "00000000000000f1", "", "front", 2, 0, 100, 0);
    add_kspan(&s, "00000000000000f2", "00000000000000f1", "lib", 3, 10, 20, 0);
    cr_assert_eq(ldt__traces_build(&s, &t), 0);
    cr_assert_eq(ldt__analyze(&s, &t, -1, &a), 0);
    const struct ldt__stat *lib = find_stat(a.svc, a.nsvc, NULL, "lib");
    cr_assert_not_null(lib);
    cr_expect_eq(lib->count, 0);
    cr_expect_eq(lib->p99, 0);
    cr_expect_eq(lib->self_ns, 10);
    ldt__analysis_free(&a);
    ldt__traces_free(&t);
    ldt__spans_free(&s);
}
