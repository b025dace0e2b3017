/* test_html.c - `ldtrace html` in headless Chromium: the page draws (a screenshot that is not
 * blank, with the error colour in it), the DOM holds one bar per span of the selected trace and one
 * graph node per service, and the page references nothing outside itself.
 *
 * Chromium is a requirement (scripts/install-deps installs Debian's `chromium`): when it is missing
 * the tests fail and say so. Each run gets a fresh profile directory; stderr goes to a log file
 * that is printed when something goes wrong.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "itest.h"

#define DEMO_FAIL "4bf92f3577b34da6a3ce929d0e0e4736"
#define DEMO_OK "0af7651916cd43dd8448eb211c80319c"

/* The spans of one trace in the fixture and the services of the whole file. */
struct expect {
    char ids[64][17];
    size_t nids;
    char services[16][64];
    size_t nservices;
};

static void add_service(struct expect *x, const char *name)
{
    for (size_t i = 0; i < x->nservices; i++)
        if (strcmp(x->services[i], name) == 0)
            return;
    cr_assert_lt(x->nservices, 16);
    snprintf(x->services[x->nservices++], sizeof(x->services[0]), "%s", name);
}

static const char *service_of(json_t *rs)
{
    size_t i;
    json_t *kv;
    json_array_foreach(json_object_get(json_object_get(rs, "resource"), "attributes"), i, kv)
    {
        if (strcmp(json_string_value(json_object_get(kv, "key")), "service.name") == 0)
            return json_string_value(json_object_get(json_object_get(kv, "value"), "stringValue"));
    }
    return "unknown_service";
}

/* Read the fixture with jansson (independently of the CLI's loader). */
static void expect_load(struct expect *x, const char *path, const char *trace)
{
    memset(x, 0, sizeof(*x));
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "open %s", path);
    char line[1 << 16];
    while (fgets(line, sizeof(line), f)) {
        json_t *root = json_loads(line, 0, NULL), *rs, *ss, *sp;
        cr_assert_not_null(root);
        size_t i, j, k;
        json_array_foreach(json_object_get(root, "resourceSpans"), i, rs)
        {
            add_service(x, service_of(rs));
            json_array_foreach(json_object_get(rs, "scopeSpans"), j, ss)
            {
                json_array_foreach(json_object_get(ss, "spans"), k, sp)
                {
                    if (strcmp(json_string_value(json_object_get(sp, "traceId")), trace))
                        continue;
                    cr_assert_lt(x->nids, 64);
                    snprintf(x->ids[x->nids++], 17, "%s",
                             json_string_value(json_object_get(sp, "spanId")));
                }
            }
        }
        json_decref(root);
    }
    fclose(f);
}

/* Occurrences of needle in hay. */
static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static const char *chromium_path(void)
{
    static const char *const where[] = {"/usr/bin/chromium", "/usr/bin/chromium-browser",
                                        "/usr/lib/chromium/chromium"};
    for (size_t i = 0; i < sizeof(where) / sizeof(where[0]); i++)
        if (access(where[i], X_OK) == 0)
            return where[i];
    cr_assert_fail("chromium not found (/usr/bin/chromium): the HTML page is tested in headless "
                   "Chromium; run scripts/install-deps (Debian package 'chromium')");
    return NULL;
}

static void show_log(const char *path)
{
    char *log = itest_slurp(path, NULL);
    cr_log_error("%s:\n%s", path, log ? log : "(empty)");
    free(log);
}

/* Run headless Chromium on file://page with one mode argument ("--dump-dom" or "--screenshot=P");
 * stdout to out (or /dev/null). A fresh profile each time, removed afterwards. */
static void chromium(const char *dir, const char *page, const char *mode, const char *out)
{
    char profile[ITEST_PATH_MAX + 32], udd[ITEST_PATH_MAX + 64], url[ITEST_PATH_MAX + 16];
    char log[ITEST_PATH_MAX + 16];
    snprintf(profile, sizeof(profile), "%s/profile", dir);
    snprintf(udd, sizeof(udd), "--user-data-dir=%s", profile);
    snprintf(url, sizeof(url), "file://%s", page);
    snprintf(log, sizeof(log), "%s/chromium.log", dir);
    char *argv[] = {(char *)chromium_path(),
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--hide-scrollbars",
                    "--window-size=1280,800",
                    udd,
                    (char *)mode,
                    url,
                    NULL};
    struct itest_env env;
    itest_env_init(&env);
    int rc = itest_run(&env, argv, out, 30000);
    itest_env_free(&env);
    char *rm[] = {"/bin/rm", "-rf", profile, NULL};
    itest_env_init(&env);
    itest_run(&env, rm, NULL, 10000);
    itest_env_free(&env);
    if (rc != 0)
        show_log(log);
    cr_assert_eq(rc, 0, "chromium %s %s: exit status %d", mode, url, rc);
}

/* ldtrace html FIXTURE -o dir/page.html --trace id; the page path goes to page. */
static void make_page(const char *dir, const char *trace, char *page, size_t cap)
{
    snprintf(page, cap, "%s/page.html", dir);
    char *argv[] = {itest_build("src/cli/ldtrace"),
                    "html",
                    itest_src("tests/data/cli/trace-demo.jsonl"),
                    "-o",
                    page,
                    "--trace",
                    (char *)trace,
                    NULL};
    struct itest_env env;
    itest_env_init(&env);
    cr_assert_eq(itest_run(&env, argv, NULL, 20000), 0, "ldtrace html");
    itest_env_free(&env);
}

/* Every http(s) reference in the page is the SVG namespace (a name, never fetched), every url() is
 * a fragment, and there is no src=, <link, @import or <img. */
static void assert_self_contained(const char *html)
{
    cr_expect_eq(count(html, "src="), 0);
    cr_expect_eq(count(html, "<link"), 0);
    cr_expect_eq(count(html, "@import"), 0);
    cr_expect_eq(count(html, "<img"), 0);
    cr_expect_eq(count(html, "url("), count(html, "url(#"), "url() other than a fragment");
    cr_expect_eq(count(html, "//"),
                 count(html, "http://www.w3.org/2000/svg") + count(html, "file://"),
                 "a reference to another document");
}

/* The page of `trace`: its DOM, and when `errors` is set (the failed trace) its screenshot. */
static void check_trace(const char *trace, size_t want_spans, int errors)
{
    char dir[ITEST_PATH_MAX], page[ITEST_PATH_MAX + 16], png[ITEST_PATH_MAX + 16];
    char dom[ITEST_PATH_MAX + 16], stats[ITEST_PATH_MAX + 16];
    cr_assert_eq(itest_mkdtemp(dir), 0);
    make_page(dir, trace, page, sizeof(page));
    char *html = itest_slurp(page, NULL);
    cr_assert_not_null(html);
    assert_self_contained(html);
    free(html);

    struct expect x;
    expect_load(&x, itest_src("tests/data/cli/trace-demo.jsonl"), trace);
    cr_assert_eq(x.nids, want_spans, "spans of %s in the fixture", trace);

    snprintf(dom, sizeof(dom), "%s/dom.html", dir);
    chromium(dir, page, "--dump-dom", dom);
    char *d = itest_slurp(dom, NULL);
    cr_assert_not_null(d);
    cr_expect_eq(count(d, "<div class=\"bar"), x.nids, "one bar per span");
    cr_expect_eq(count(d, "data-span-id=\""), x.nids);
    for (size_t i = 0; i < x.nids; i++) {
        char attr[48];
        snprintf(attr, sizeof(attr), "data-span-id=\"%s\"", x.ids[i]);
        cr_expect_eq(count(d, attr), 1, "bar of span %s", x.ids[i]);
    }
    cr_expect_eq(count(d, "<g class=\"node"), x.nservices, "one graph node per service");
    for (size_t i = 0; i < x.nservices; i++) {
        char attr[96];
        snprintf(attr, sizeof(attr), "data-service=\"%s\"", x.services[i]);
        cr_expect_eq(count(d, attr), 1, "graph node of %s", x.services[i]);
    }
    cr_expect_eq(count(d, "<g class=\"node bad origin\" data-service=\"payment\""), 1,
                 "payment is where the errors start");
    if (errors) /* the error origin's details are shown first, its stack one frame per line */
        cr_expect_eq(count(d, "<ol class=\"stack\"><li>#0 0x401136 handle_pay+0x46 (payment)"
                              "</li><li>#1 0x4012a0 serve+0x90 (payment)</li><li>"),
                     1, "the stack of the error origin");
    free(d);
    if (!errors) { /* one screenshot is enough: keep the suite fast */
        itest_rmtree(dir);
        return;
    }

    snprintf(png, sizeof(png), "%s/shot.png", dir);
    char mode[ITEST_PATH_MAX + 32];
    snprintf(mode, sizeof(mode), "--screenshot=%s", png);
    chromium(dir, page, mode, NULL);
    snprintf(stats, sizeof(stats), "%s/stats.txt", dir);
    char *argv[] = {ITEST_PYTHON, itest_src("tests/integration/png_stats.py"), png, NULL};
    struct itest_env env;
    itest_env_init(&env);
    cr_assert_eq(itest_run(&env, argv, stats, 30000), 0, "png_stats.py %s", png);
    itest_env_free(&env);
    char *st = itest_slurp(stats, NULL);
    unsigned w = 0, h = 0;
    unsigned long colours = 0, nonwhite = 0, red = 0;
    cr_assert(st && sscanf(st, "%u %u %lu %lu %lu", &w, &h, &colours, &nonwhite, &red) == 5);
    free(st);
    cr_expect_eq(w, 1280);
    cr_expect_eq(h, 800);
    cr_expect_gt(colours, 64, "a drawn page has many colours (text, bars), got %lu", colours);
    cr_expect_gt(nonwhite, 1280ul * 800 / 10, "non-white pixels: %lu", nonwhite);
    cr_expect_gt(red, 500, "error bars and the origin drawn in red: %lu pixels", red);
    itest_rmtree(dir);
}

Test(html, failed_trace_draws_every_span_and_service, .timeout = 90)
{
    check_trace(DEMO_FAIL, 15, 1);
}

Test(html, successful_trace_has_every_span_and_service, .timeout = 90)
{
    check_trace(DEMO_OK, 9, 0);
}

/* Two services that call each other (a cycle in the graph), one calling itself, a span whose parent
 * is not in the file, and names that try to be markup. */
#define HOSTILE_A "a</script><img src=x onerror=alert(1)>"
#define RS_OPEN(svc)                                                                               \
    "{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":\"" svc   \
    "\"}}]},\"scopeSpans\":[{\"spans\":["
#define SPAN(id, parent, kind, t0, t1, peer)                                                       \
    "{\"traceId\":\"5eed0000000000000000000000000001\",\"spanId\":\"" id                           \
    "\",\"parentSpanId\":\"" parent "\",\"name\":\"<b>x</b>\",\"kind\":" #kind                     \
    ",\"startTimeUnixNano\":\"" t0 "000000\",\"endTimeUnixNano\":\"" t1                            \
    "000000\",\"attributes\":[{\"key\":\"server.address\","                                        \
    "\"value\":{\"stringValue\":\"" peer "\"}}]}"

/* clang-format off */
static const char cyclic[] =
    "{\"resourceSpans\":[" RS_OPEN(HOSTILE_A) SPAN("0000000000000001", "", 2, "1", "90", "") ","
    SPAN("0000000000000002", "0000000000000001", 3, "2", "80", "b") ","
    SPAN("0000000000000005", "0000000000000004", 2, "5", "60", "") ","
    SPAN("0000000000000006", "0000000000000005", 3, "6", "50", "a") ","
    SPAN("0000000000000007", "0000000000000006", 2, "7", "40", "") "]}]},"
    RS_OPEN("b&amp;") SPAN("0000000000000003", "0000000000000002", 2, "3", "70", "") ","
    SPAN("0000000000000004", "0000000000000003", 3, "4", "65", "a") ","
    SPAN("0000000000000008", "00000000000000ff", 2, "8", "9", "") "]}]}]}\n";
/* clang-format on */

Test(html, cycles_orphans_and_markup_in_names, .timeout = 90)
{
    char dir[ITEST_PATH_MAX], in[ITEST_PATH_MAX + 16], page[ITEST_PATH_MAX + 16];
    char dom[ITEST_PATH_MAX + 16];
    cr_assert_eq(itest_mkdtemp(dir), 0);
    snprintf(in, sizeof(in), "%s/in.jsonl", dir);
    snprintf(page, sizeof(page), "%s/page.html", dir);
    snprintf(dom, sizeof(dom), "%s/dom.html", dir);
    FILE *f = fopen(in, "w");
    cr_assert_not_null(f);
    fputs(cyclic, f);
    fclose(f);
    char *argv[] = {itest_build("src/cli/ldtrace"), "html", in, "-o", page, NULL};
    struct itest_env env;
    itest_env_init(&env);
    cr_assert_eq(itest_run(&env, argv, NULL, 20000), 0, "ldtrace html");
    itest_env_free(&env);
    chromium(dir, page, "--dump-dom", dom);
    char *d = itest_slurp(dom, NULL);
    cr_assert_not_null(d);
    cr_expect_eq(count(d, "<div class=\"bar"), 8, "one bar per span, the orphan included");
    cr_expect_eq(count(d, "<g class=\"node"), 2, "two services, drawn once each");
    cr_expect_geq(count(d, "<path class=\"edge"), 3, "a -> b, b -> a and a -> a");
    cr_expect_eq(count(d, "<img src=\"x\""), 0, "a name never becomes an element");
    cr_expect_eq(count(d, "onerror=\""), 0);
    cr_expect_eq(count(d, "<b>x"), 0);
    cr_expect_gt(count(d, "&lt;b&gt;x&lt;/b&gt;"), 0, "the name shown as text");
    free(d);
    itest_rmtree(dir);
}
