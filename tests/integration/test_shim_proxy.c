/* test_shim_proxy.c - curl -> python proxy -> python backend, traced: propagation, sampling. */
#include <criterion/criterion.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "itest.h"

#define TRACE "4bf92f3577b34da6a3ce929d0e0e4736"
#define CURL_SPAN "00f067aa0ba902b7"
#define TP_SAMPLED "00-" TRACE "-" CURL_SPAN "-01"
#define TP_UNSAMPLED "00-" TRACE "-" CURL_SPAN "-00"
#define TS "vendor1=abc,vendor2=xyz"
#define OTHER_TP "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

/* backend.py and proxy.py on two ports, traced or not, with curl as the client. */
struct chain {
    char dir[ITEST_PATH_MAX];
    int bport, pport;
    pid_t backend, proxy;
    struct itest_env env_b, env_p, env_c;
};

static void trace(struct itest_env *e, const char *dir, const char *service)
{
    cr_assert_eq(itest_env_trace(e, dir, service), 0, "libldtrace.so is not built");
}

/* extra: an environment variable "NAME=value" for the servers (may be NULL). */
static void chain_start(struct chain *c, int traced, int bport, int pport, const char *extra)
{
    cr_assert_eq(itest_mkdtemp(c->dir), 0);
    c->bport = bport ? bport : itest_free_port();
    c->pport = pport ? pport : itest_free_port();
    itest_env_init(&c->env_b);
    itest_env_init(&c->env_p);
    itest_env_init(&c->env_c);
    if (traced) {
        trace(&c->env_b, c->dir, "backend");
        trace(&c->env_p, c->dir, "proxy");
        trace(&c->env_c, c->dir, "curl");
    }
    if (extra) {
        char name[64];
        const char *eq = strchr(extra, '=');
        snprintf(name, sizeof(name), "%.*s", (int)(eq - extra), extra);
        itest_env_set(&c->env_b, name, eq + 1);
        itest_env_set(&c->env_p, name, eq + 1);
    }
    char bp[16], pp[16], dp[16];
    snprintf(bp, sizeof(bp), "%d", c->bport);
    snprintf(pp, sizeof(pp), "%d", c->pport);
    snprintf(dp, sizeof(dp), "%d", itest_free_port());
    char *bargv[] = {ITEST_PYTHON, itest_src("tests/integration/py/backend.py"), bp, NULL};
    char *pargv[] = {ITEST_PYTHON, itest_src("tests/integration/py/proxy.py"), pp, bp, dp, NULL};
    c->backend = itest_start_server(&c->env_b, bargv, c->bport, NULL);
    c->proxy = itest_start_server(&c->env_p, pargv, c->pport, NULL);
    cr_assert_gt(c->backend, 0, "backend.py did not start");
    cr_assert_gt(c->proxy, 0, "proxy.py did not start");
}

static void chain_stop(struct chain *c)
{
    itest_settle(250);
    itest_stop(c->proxy);
    itest_stop(c->backend);
}

static void chain_free(struct chain *c)
{
    itest_env_free(&c->env_b);
    itest_env_free(&c->env_p);
    itest_env_free(&c->env_c);
    itest_rmtree(c->dir);
}

/* GET http://127.0.0.1:pport/path (curl) with optional traceparent/tracestate; the JSON answer. */
static json_t *chain_get(struct chain *c, const char *path, const char *tp, const char *ts,
                         int curl_traced)
{
    char url[128], out[ITEST_PATH_MAX + 16], tph[128], tsh[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", c->pport, path);
    snprintf(out, sizeof(out), "%s.curl.out", c->dir);
    snprintf(tph, sizeof(tph), "traceparent: %s", tp ? tp : "");
    snprintf(tsh, sizeof(tsh), "tracestate: %s", ts ? ts : "");
    const char *headers[3] = {NULL}, *urls[] = {url, NULL};
    if (tp)
        headers[0] = tph;
    if (ts)
        headers[tp ? 1 : 0] = tsh;
    char *argv[16];
    itest_get_argv(argv, headers, urls);
    struct itest_env plain;
    itest_env_init(&plain);
    int rc = itest_run(curl_traced ? &c->env_c : &plain, argv, out, 15000);
    itest_env_free(&plain);
    cr_assert_eq(rc, 0, "%s %s exited with %d", argv[0], url, rc);
    json_error_t err;
    json_t *j = json_load_file(out, 0, &err);
    cr_assert_not_null(j, "answer of %s is not JSON: %s", url, err.text);
    unlink(out);
    return j;
}

/* Headers in a [[name, value], ...] list: how many are called name, and the first one's value. */
static int header_count(json_t *list, const char *name, const char **value)
{
    int n = 0;
    size_t i;
    json_t *h;
    json_array_foreach(list, i, h)
    {
        if (strcasecmp(json_string_value(json_array_get(h, 0)), name) != 0)
            continue;
        if (n++ == 0 && value)
            *value = json_string_value(json_array_get(h, 1));
    }
    return n;
}

static json_t *backend_headers(json_t *answer)
{
    return json_object_get(json_object_get(answer, "backend"), "headers");
}

/* The answer without what may differ between runs: the backend's client port and the trace context
 * lines the shim adds to the proxy's outbound request. */
static char *canonical(json_t *answer)
{
    json_t *copy = json_deep_copy(answer);
    json_t *backend = json_object_get(copy, "backend");
    json_object_del(backend, "client_port");
    json_t *hs = json_object_get(backend, "headers");
    for (size_t i = json_array_size(hs); i-- > 0;) {
        const char *name = json_string_value(json_array_get(json_array_get(hs, i), 0));
        if (strcasecmp(name, "traceparent") == 0 || strcasecmp(name, "tracestate") == 0)
            json_array_remove(hs, i);
    }
    char *s = json_dumps(copy, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(copy);
    return s;
}

static const struct itest_span *one_span(const struct itest_spans *sp, int kind, const char *svc)
{
    size_t n = itest_count(sp, kind, svc, NULL, NULL);
    if (n != 1)
        itest_dump(sp);
    cr_assert_eq(n, 1, "expected one kind=%d span of %s, found %zu", kind, svc, n);
    return itest_find(sp, kind, svc, NULL, NULL);
}

/* The four HTTP spans of one traced request through the chain. */
struct chain_spans {
    const struct itest_span *cc, *ps, *pc, *bs; /* curl CLIENT, proxy SERVER/CLIENT, backend */
};

/* What the backend and the proxy saw; returns the one traceparent the backend received. */
static const char *check_headers(json_t *plain, json_t *traced)
{
    const char *tp = NULL, *ts = NULL, *ctp = NULL;
    cr_assert_eq(header_count(backend_headers(plain), "traceparent", NULL), 0);
    cr_assert_eq(header_count(backend_headers(traced), "traceparent", &tp), 1);
    cr_assert_eq(header_count(backend_headers(traced), "tracestate", &ts), 1);
    cr_assert_str_eq(ts, TS);
    json_t *first = json_array_get(backend_headers(traced), 0);
    json_t *second = json_array_get(backend_headers(traced), 1);
    cr_expect_str_eq(json_string_value(json_array_get(first, 0)) ?: "", "traceparent",
                     "the injected lines go right after the request line");
    cr_expect_str_eq(json_string_value(json_array_get(second, 0)) ?: "", "tracestate");
    cr_assert_eq(header_count(json_object_get(traced, "received"), "traceparent", &ctp), 1);
    cr_assert_str_eq(ctp, TP_SAMPLED, "curl's own traceparent must reach the proxy untouched");
    return tp;
}

/* curl CLIENT -> proxy SERVER -> proxy CLIENT -> backend SERVER, one trace, nothing twice. */
static struct chain_spans check_links(const struct itest_spans *sp, const char *backend_tp)
{
    struct chain_spans c;
    cr_assert_eq(itest_duplicates(sp), 0, "duplicate span ids");
    for (size_t i = 0; i < sp->n; i++)
        cr_expect_str_eq(sp->v[i].trace_id, TRACE, "span %zu left the trace", i);
    c.cc = one_span(sp, ITEST_CLIENT, "curl");
    c.ps = one_span(sp, ITEST_SERVER, "proxy");
    c.pc = one_span(sp, ITEST_CLIENT, "proxy");
    c.bs = one_span(sp, ITEST_SERVER, "backend");
    size_t http = itest_count(sp, ITEST_SERVER, NULL, NULL, NULL) +
                  itest_count(sp, ITEST_CLIENT, NULL, NULL, NULL);
    if (http != 4)
        itest_dump(sp);
    cr_expect_eq(http, 4, "expected exactly 4 HTTP spans, got %zu", http);
    cr_expect_str_eq(c.cc->span_id, CURL_SPAN, "curl's CLIENT span uses the ids curl sent");
    cr_assert_str_eq(c.ps->parent_id, CURL_SPAN);
    cr_assert_str_eq(c.pc->parent_id, c.ps->span_id);
    cr_assert_str_eq(c.bs->parent_id, c.pc->span_id);
    char want[64];
    snprintf(want, sizeof(want), "00-%s-%s-01", TRACE, c.pc->span_id);
    cr_assert_str_eq(backend_tp, want, "the injected traceparent carries the CLIENT span id");
    return c;
}

static void check_attributes(const struct chain_spans *c, const struct chain *t)
{
    cr_expect_str_eq(c->ps->name, "GET");
    cr_expect_str_eq(itest_attr_str(c->ps, "http.request.method") ?: "", "GET");
    cr_expect_str_eq(itest_attr_str(c->ps, "url.path") ?: "", "/x");
    cr_expect_str_eq(itest_attr_str(c->pc, "url.path") ?: "", "/y");
    cr_expect_str_eq(itest_attr_str(c->bs, "url.path") ?: "", "/y");
    cr_expect_eq(itest_attr_int(c->ps, "http.response.status_code", 0), 200);
    cr_expect_eq(itest_attr_int(c->pc, "http.response.status_code", 0), 200);
    cr_expect_eq(itest_attr_int(c->bs, "http.response.status_code", 0), 200);
    cr_expect_eq(itest_attr_int(c->pc, "server.port", 0), t->bport);
    cr_expect_eq(itest_attr_int(c->cc, "server.port", 0), t->pport);
    cr_expect_str_eq(itest_attr_str(c->bs, "network.peer.address") ?: "", "127.0.0.1");
    cr_expect_neq(c->ps->status, 2);
    cr_expect_neq(c->pc->status, 2);
}

Test(shim_proxy, chain_is_one_trace_with_linked_spans_and_identical_bytes, .timeout = 40)
{
    struct chain u, t;
    chain_start(&u, 0, 0, 0, NULL);
    json_t *plain = chain_get(&u, "/x", TP_SAMPLED, TS, 0);
    chain_stop(&u);
    chain_start(&t, 1, u.bport, u.pport, NULL);
    json_t *traced = chain_get(&t, "/x", TP_SAMPLED, TS, 1);
    chain_stop(&t);
    struct itest_spans *sp = itest_drain_load(t.dir);
    cr_assert_not_null(sp, "ldtraced --once failed or wrote unparsable JSON");
    struct chain_spans c = check_links(sp, check_headers(plain, traced));
    check_attributes(&c, &t);

    /* Bytes: identical between the runs once the injected lines are taken out. */
    char *a = canonical(plain), *b = canonical(traced);
    cr_expect_str_eq(a, b, "answers differ beyond the injected lines");
    free(a);
    free(b);
    json_decref(plain);
    json_decref(traced);
    itest_spans_free(sp);
    chain_free(&u);
    chain_free(&t);
}

Test(shim_proxy, forwarded_traceparent_only_gets_its_parent_id_replaced, .timeout = 30)
{
    struct chain t;
    chain_start(&t, 1, 0, 0, NULL);
    json_t *ans = chain_get(&t, "/fwd", TP_SAMPLED, TS, 0);
    chain_stop(&t);
    struct itest_spans *sp = itest_drain_load(t.dir);
    cr_assert_not_null(sp);
    const char *tp = NULL, *ts = NULL;
    cr_assert_eq(header_count(backend_headers(ans), "traceparent", &tp), 1,
                 "two traceparent lines");
    cr_assert_eq(header_count(backend_headers(ans), "tracestate", &ts), 1, "two tracestate lines");
    cr_assert_str_eq(ts, TS);
    const struct itest_span *ps = one_span(sp, ITEST_SERVER, "proxy");
    const struct itest_span *pc = one_span(sp, ITEST_CLIENT, "proxy");
    const struct itest_span *bs = one_span(sp, ITEST_SERVER, "backend");
    char want[64];
    snprintf(want, sizeof(want), "00-%s-%s-01", TRACE, pc->span_id);
    cr_assert_str_eq(tp, want);
    cr_assert_str_eq(ps->parent_id, CURL_SPAN);
    cr_assert_str_eq(pc->parent_id, ps->span_id);
    cr_assert_str_eq(bs->parent_id, pc->span_id);
    cr_assert_str_eq(bs->trace_id, TRACE);
    json_decref(ans);
    itest_spans_free(sp);
    chain_free(&t);
}

Test(shim_proxy, foreign_traceparent_is_left_as_the_app_wrote_it, .timeout = 30)
{
    struct chain t;
    chain_start(&t, 1, 0, 0, NULL);
    json_t *ans = chain_get(&t, "/other", TP_SAMPLED, TS, 0);
    chain_stop(&t);
    struct itest_spans *sp = itest_drain_load(t.dir);
    cr_assert_not_null(sp);
    const char *tp = NULL;
    cr_assert_eq(header_count(backend_headers(ans), "traceparent", &tp), 1,
                 "two traceparent lines");
    cr_assert_str_eq(tp, OTHER_TP);
    cr_assert_eq(header_count(backend_headers(ans), "tracestate", NULL), 0);
    const struct itest_span *bs = one_span(sp, ITEST_SERVER, "backend");
    cr_assert_str_eq(bs->trace_id, "0af7651916cd43dd8448eb211c80319c");
    cr_assert_str_eq(bs->parent_id, "b7ad6b7169203331");
    cr_assert_eq(itest_duplicates(sp), 0);
    json_decref(ans);
    itest_spans_free(sp);
    chain_free(&t);
}

Test(shim_proxy, sampling_unsampled_parent_propagates_flags_00_and_exports_nothing, .timeout = 30)
{
    struct chain t;
    chain_start(&t, 1, 0, 0, NULL);
    json_t *ans = chain_get(&t, "/x", TP_UNSAMPLED, NULL, 0);
    chain_stop(&t);
    const char *tp = NULL;
    cr_assert_eq(header_count(backend_headers(ans), "traceparent", &tp), 1);
    cr_assert_eq(strlen(tp), 55, "bad traceparent %s", tp);
    cr_assert(strncmp(tp, "00-" TRACE "-", 36) == 0, "trace id not propagated: %s", tp);
    cr_assert_str_eq(tp + 53, "00", "flags must stay 00: %s", tp);
    struct itest_spans *sp = itest_drain_load(t.dir);
    cr_assert_not_null(sp);
    if (sp->n)
        itest_dump(sp);
    cr_assert_eq(sp->n, 0, "unsampled requests exported %zu spans", sp->n);
    json_decref(ans);
    itest_spans_free(sp);
    chain_free(&t);
}

Test(shim_proxy, sampling_sdk_disabled_creates_no_segment_and_injects_nothing, .timeout = 30)
{
    struct chain t;
    chain_start(&t, 1, 0, 0, "OTEL_SDK_DISABLED=true");
    json_t *ans = chain_get(&t, "/x", NULL, NULL, 0);
    json_t *ans2 = chain_get(&t, "/x", TP_SAMPLED, TS, 0);
    chain_stop(&t);
    cr_assert_eq(json_integer_value(json_object_get(ans, "backend_status")), 200);
    cr_assert_eq(header_count(backend_headers(ans), "traceparent", NULL), 0);
    cr_assert_eq(header_count(backend_headers(ans2), "traceparent", NULL), 0);
    cr_assert_eq(itest_count_files(t.dir, NULL), 0, "a disabled shim created a segment");
    struct itest_spans *sp = itest_drain_load(t.dir);
    cr_assert_not_null(sp);
    cr_assert_eq(sp->n, 0);
    json_decref(ans);
    json_decref(ans2);
    itest_spans_free(sp);
    chain_free(&t);
}

/* The span of service svc and kind whose url.path is path; fails the test when missing. */
static const struct itest_span *span_at(const struct itest_spans *sp, int kind, const char *svc,
                                        const char *path)
{
    const struct itest_span *s = itest_find(sp, kind, svc, "url.path", path);
    if (!s)
        itest_dump(sp);
    cr_assert_not_null(s, "no kind=%d span of %s for %s", kind, svc, path);
    return s;
}

Test(shim_proxy, error_status_on_5xx_servers_and_4xx_5xx_clients, .timeout = 40)
{
    struct chain t;
    chain_start(&t, 1, 0, 0, NULL);
    json_t *a500 = chain_get(&t, "/call/500", NULL, NULL, 0);
    json_t *a404 = chain_get(&t, "/call/404", NULL, NULL, 0);
    chain_stop(&t);
    cr_assert_eq(json_integer_value(json_object_get(a500, "backend_status")), 500);
    cr_assert_eq(json_integer_value(json_object_get(a404, "backend_status")), 404);
    struct itest_spans *sp = itest_drain_load(t.dir);
    cr_assert_not_null(sp);
    const struct itest_span *s500 = span_at(sp, ITEST_SERVER, "backend", "/status/500");
    const struct itest_span *c500 = span_at(sp, ITEST_CLIENT, "proxy", "/status/500");
    const struct itest_span *s404 = span_at(sp, ITEST_SERVER, "backend", "/status/404");
    const struct itest_span *c404 = span_at(sp, ITEST_CLIENT, "proxy", "/status/404");
    cr_expect_eq(itest_attr_int(s500, "http.response.status_code", 0), 500);
    cr_expect_eq(itest_attr_int(c404, "http.response.status_code", 0), 404);
    cr_expect_eq(s500->status, 2, "5xx SERVER span must be ERROR");
    cr_expect_eq(c500->status, 2, "5xx CLIENT span must be ERROR");
    cr_expect_neq(s404->status, 2, "4xx SERVER span is not an error of the server");
    cr_expect_eq(c404->status, 2, "4xx CLIENT span must be ERROR");
    cr_expect_str_eq(s500->parent_id, c500->span_id);
    cr_expect_str_eq(s404->parent_id, c404->span_id);
    json_decref(a500);
    json_decref(a404);
    itest_spans_free(sp);
    chain_free(&t);
}

/* urllib connects with a timeout: a non-blocking connect, then poll and getsockopt(SO_ERROR), which
 * hands the error to the app and clears it; the span must still record the refusal. */
Test(shim_proxy, refused_connect_with_timeout_is_an_error_span, .timeout = 30)
{
    struct chain t;
    chain_start(&t, 1, 0, 0, NULL);
    json_t *ref = chain_get(&t, "/refused", NULL, NULL, 0);
    chain_stop(&t);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(ref, "backend"), "error"))
                         ?: "",
                     "[Errno 111] Connection refused");
    struct itest_spans *sp = itest_drain_load(t.dir);
    cr_assert_not_null(sp);
    const struct itest_span *r = span_at(sp, ITEST_SERVER, "proxy", "/refused");
    cr_expect_eq(itest_attr_int(r, "http.response.status_code", 0), 502);
    cr_expect_eq(r->status, 2, "5xx SERVER span must be ERROR");
    int failed = 0;
    for (size_t i = 0; i < sp->n; i++)
        failed += strcmp(sp->v[i].parent_id, r->span_id) == 0 && sp->v[i].status == 2;
    if (!failed)
        itest_dump(sp);
    cr_expect_gt(failed, 0, "no ERROR span under the request whose connect was refused");
    json_decref(ref);
    itest_spans_free(sp);
    chain_free(&t);
}

Test(shim_proxy, sampling_ratio_0_root_propagates_unsampled_and_exports_nothing, .timeout = 30)
{
    struct chain t;
    chain_start(&t, 1, 0, 0, "OTEL_TRACES_SAMPLER_ARG=0");
    json_t *ans = chain_get(&t, "/x", NULL, NULL, 0);
    chain_stop(&t);
    const char *tp = NULL;
    cr_assert_eq(header_count(backend_headers(ans), "traceparent", &tp), 1);
    cr_assert_eq(strlen(tp), 55, "bad traceparent %s", tp);
    cr_assert((strtol(tp + 53, NULL, 16) & 1) == 0, "ratio 0 root sampled: %s", tp);
    struct itest_spans *sp = itest_drain_load(t.dir);
    cr_assert_not_null(sp);
    if (sp->n)
        itest_dump(sp);
    cr_assert_eq(sp->n, 0, "ratio 0 exported %zu spans", sp->n);
    json_decref(ans);
    itest_spans_free(sp);
    chain_free(&t);
}
