/* test_otlp_interop.c - integration: the OpenTelemetry Node.js SDK in one chain with shim-traced
 * services, every span exported to the same OTLP receiver (otlp_receiver.py), checked as one tree.
 *
 *   client (traced, root) -> proxy (python, traced) -> node SDK service -> backend (python, traced)
 *
 * The node service (node/interop_service.js) is instrumented with NodeTracerProvider,
 * BatchSpanProcessor(OTLPTraceExporter) and HttpInstrumentation; it exports through
 * node/interop_relay.js (the SDK streams its body chunked, the receiver reads Content-Length);
 * ldtraced --otlp exports the shim's spans to the receiver directly. Both directions are checked:
 * shim CLIENT -> SDK SERVER (the SDK's server span has our client span as parent) and SDK CLIENT
 * -> shim SERVER (our server span has the SDK's client span as parent). The backend echoes the
 * headers it received: exactly one traceparent, the SDK's own.
 *
 * Variant "sdk_under_shim": the node service also runs under the shim (an SDK app under
 * `ldtrace run`). The shim must leave the SDK's traceparent alone and must not add a second tree:
 * no span id twice in the receiver, one SERVER span per client request. The shim's own record of
 * the SDK exporter's POST /v1/traces (a separate trace) is allowed.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "itest.h"

#define NODE "/usr/bin/node"
#define SDK_SERVICE "sdk-node"      /* service.name in the SDK's resource */
#define SDK_SHIM_SERVICE "sdk-shim" /* OTEL_SERVICE_NAME the shim uses in the node process */

/* The processes of one run and where they write. */
struct chain {
    pid_t rx, relay, ldtraced, backend, node, proxy;
    int rx_port, relay_port, backend_port, node_port, proxy_port;
    char rx_out[ITEST_PATH_MAX + 32], rx_log[ITEST_PATH_MAX + 32];
    char node_err[ITEST_PATH_MAX + 32];
};

/* The spans of one request through the chain, by role. */
struct roles {
    const struct itest_span *client, *proxy_srv, *proxy_cli, *sdk_srv, *sdk_cli, *backend;
};

/* One request of a run: its path (distinct per request), the client's output, its spans. */
struct req {
    char path[32];
    char out[ITEST_PATH_MAX + 32];
    struct roles r;
};

#define REQS_MAX 8

static char dir[ITEST_PATH_MAX];

static void setup(void)
{
    cr_assert_eq(itest_mkdtemp(dir), 0);
}

static void teardown(void)
{
    itest_rmtree(dir);
}

TestSuite(interop, .init = setup, .fini = teardown, .timeout = 60);

/* Wait (up to 10 s) for a port file written by rename and return the port in it. */
static int port_from_file(const char *path)
{
    char *s = NULL;
    for (int i = 0; i < 1000 && !(s = itest_slurp(path, NULL)); i++)
        usleep(10000);
    cr_assert_not_null(s, "%s did not appear: the process did not start", path);
    int port = atoi(s);
    free(s);
    cr_assert_gt(port, 0);
    return port;
}

/* Untraced: the receiver, the relay in front of it for the SDK, ldtraced --otlp to the receiver. */
static void start_exporters(struct chain *c)
{
    char rx_pf[ITEST_PATH_MAX + 32], relay_pf[ITEST_PATH_MAX + 32], rx_port_s[16], url[64];
    snprintf(rx_pf, sizeof(rx_pf), "%s/rx.port", dir);
    snprintf(relay_pf, sizeof(relay_pf), "%s/relay.port", dir);
    struct itest_env env;
    itest_env_init(&env);
    char *rx[] = {ITEST_PYTHON, itest_src("tests/integration/otlp_receiver.py"), "--port-file",
                  rx_pf, "--out", c->rx_out, "--log", c->rx_log, NULL};
    c->rx = itest_spawn_io(&env, rx, NULL, NULL);
    cr_assert_gt(c->rx, 0);
    c->rx_port = port_from_file(rx_pf);
    snprintf(rx_port_s, sizeof(rx_port_s), "%d", c->rx_port);
    char *relay[] = {NODE, itest_src("tests/integration/node/interop_relay.js"), relay_pf,
                     rx_port_s, NULL};
    c->relay = itest_spawn_io(&env, relay, NULL, NULL);
    cr_assert_gt(c->relay, 0);
    c->relay_port = port_from_file(relay_pf);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", c->rx_port);
    char *ld[] = {itest_build("src/sidecar/ldtraced"), "--dir", dir, "--otlp", url, "--poll-ms",
                  "2", NULL};
    c->ldtraced = itest_spawn_io(&env, ld, NULL, NULL);
    cr_assert_gt(c->ldtraced, 0);
    itest_env_free(&env);
}

/* A traced python server (backend.py or matrix_proxy.py) on a fresh port. */
static pid_t start_py(const char *script, const char *service, int *port, int upstream)
{
    char port_s[16], up_s[16];
    *port = itest_free_port();
    snprintf(port_s, sizeof(port_s), "%d", *port);
    snprintf(up_s, sizeof(up_s), "%d", upstream);
    struct itest_env env;
    itest_env_init(&env);
    cr_assert_eq(itest_env_trace(&env, dir, service), 0, "libldtrace.so is not built");
    char *argv[] = {ITEST_PYTHON, itest_src(script), port_s, upstream ? up_s : NULL, NULL};
    pid_t p = itest_start_server(&env, argv, *port, NULL);
    itest_env_free(&env);
    cr_assert_gt(p, 0, "%s did not start", script);
    return p;
}

/* The SDK service, under the shim when traced; its stderr is kept for failure messages. */
static void start_node(struct chain *c, int traced)
{
    char port_s[16], up_s[16], url[64];
    c->node_port = itest_free_port();
    snprintf(port_s, sizeof(port_s), "%d", c->node_port);
    snprintf(up_s, sizeof(up_s), "%d", c->backend_port);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/traces", c->relay_port);
    struct itest_env env;
    itest_env_init(&env);
    if (traced)
        cr_assert_eq(itest_env_trace(&env, dir, SDK_SHIM_SERVICE), 0);
    char *argv[] = {NODE, itest_src("tests/integration/node/interop_service.js"), port_s, up_s,
                    url, SDK_SERVICE, NULL};
    c->node = itest_start_server(&env, argv, c->node_port, c->node_err);
    itest_env_free(&env);
    cr_assert_gt(c->node, 0, "the node SDK service did not start: see %s", c->node_err);
    if (traced)
        cr_assert_eq(itest_has_shim(c->node), 1, "node does not run under the shim");
}

static void start_chain(struct chain *c, int node_traced)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->rx_out, sizeof(c->rx_out), "%s/rx.jsonl", dir);
    snprintf(c->rx_log, sizeof(c->rx_log), "%s/rx.log", dir);
    snprintf(c->node_err, sizeof(c->node_err), "%s/node.err", dir);
    start_exporters(c);
    c->backend = start_py("tests/integration/py/backend.py", "backend", &c->backend_port, 0);
    start_node(c, node_traced);
    c->proxy = start_py("tests/integration/py/matrix_proxy.py", "proxy", &c->proxy_port,
                        c->node_port);
}

/* The clients, traced roots, all at once: request k GETs /interop/k through the chain and prints
 * the backend's echo into q[k].out. */
static void run_clients(const struct chain *c, struct req *q, int n)
{
    pid_t pid[REQS_MAX];
    struct itest_env env;
    itest_env_init(&env);
    itest_env_trace(&env, dir, "client");
    for (int k = 0; k < n; k++) {
        char url[64], *argv[16];
        snprintf(q[k].path, sizeof(q[k].path), "/interop/%d", k);
        snprintf(q[k].out, sizeof(q[k].out), "%s/client%d.out", dir, k);
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/interop/%d", c->proxy_port, k);
        const char *const urls[] = {url, NULL};
        itest_get_argv(argv, NULL, urls);
        pid[k] = itest_spawn(&env, argv, q[k].out);
        cr_assert_gt(pid[k], 0);
    }
    itest_env_free(&env);
    for (int k = 0; k < n; k++)
        cr_expect_eq(itest_wait(pid[k], 15000), 0, "client %d failed", k);
}

/* Wait (up to 10 s) until the receiver holds want spans of the SDK: its batches go out every
 * 100 ms, so they normally come before the shutdown flush is needed. */
static void wait_sdk_spans(const struct chain *c, size_t want)
{
    size_t have = 0;
    for (int i = 0; i < 200 && have < want; i++) {
        struct itest_spans *sp = itest_load_spans(c->rx_out); /* NULL: a line half written */
        have = sp ? itest_count(sp, 0, SDK_SERVICE, NULL, NULL) : 0;
        itest_spans_free(sp);
        if (have < want)
            usleep(50000);
    }
    cr_expect_geq(have, want, "the SDK's spans did not reach the receiver within 10 s: see %s",
                  c->node_err);
}

/* Stop in data-flow order: the SDK flushes on SIGTERM, ldtraced drains everything on SIGTERM, then
 * the relay and the receiver, which by then has written every accepted request. */
static void stop_chain(struct chain *c)
{
    itest_settle(300);
    cr_expect_eq(itest_stop(c->node), 0, "the node service did not exit cleanly on SIGTERM");
    itest_stop(c->proxy);
    itest_stop(c->backend);
    cr_expect_eq(itest_stop(c->ldtraced), 0, "ldtraced did not drain and exit on SIGTERM");
    itest_stop(c->relay);
    itest_stop(c->rx);
}

/* Every request the receiver got was valid and accepted (both exporters' output passed its
 * OTLP/JSON checks); returns how many requests came. */
static int receiver_all_valid(const struct chain *c)
{
    FILE *f = fopen(c->rx_log, "r");
    cr_assert_not_null(f, "the receiver wrote no log");
    long ms;
    int status, gz, n, valid, reqs = 0;
    char why[256];
    while (fscanf(f, "%ld %d %d %d %d %255s", &ms, &status, &gz, &n, &valid, why) == 6) {
        reqs++;
        cr_expect(status == 200 && valid, "the receiver answered %d to a request: %s", status, why);
    }
    fclose(f);
    return reqs;
}

/* The traceparent values in the backend's echo of the request it received (one JSON line). */
static int echoed_traceparents(const char *out, char tp[][64], int max)
{
    char *body = itest_slurp(out, NULL);
    cr_assert_not_null(body, "no client output");
    json_error_t jerr;
    json_t *doc = json_loads(body, JSON_DISABLE_EOF_CHECK, &jerr);
    cr_assert_not_null(doc, "the echo does not parse (%s): %s", jerr.text, body);
    free(body);
    json_t *headers = json_object_get(doc, "headers"), *h;
    size_t i;
    int n = 0;
    json_array_foreach(headers, i, h) {
        const char *name = json_string_value(json_array_get(h, 0));
        const char *value = json_string_value(json_array_get(h, 1));
        if (name && value && strcasecmp(name, "traceparent") == 0 && n < max)
            snprintf(tp[n++], 64, "%s", value);
    }
    json_decref(doc);
    return n;
}

/* The one span of this kind and service for path (the shim writes url.path, the SDK's
 * HttpInstrumentation the older http.target). */
static const struct itest_span *one(const struct itest_spans *sp, int kind, const char *service,
                                    const char *path, const char *what)
{
    const char *key = strcmp(service, SDK_SERVICE) == 0 ? "http.target" : "url.path";
    const struct itest_span *s = itest_find(sp, kind, service, key, path);
    cr_assert_not_null(s, "no %s span for %s in the receiver's output", what, path);
    cr_expect_eq(itest_count(sp, kind, service, key, path), 1, "more than one %s span for %s",
                 what, path);
    return s;
}

static void find_roles(const struct itest_spans *sp, const char *path, struct roles *r)
{
    r->client = one(sp, ITEST_CLIENT, "client", path, "root client's CLIENT");
    r->proxy_srv = one(sp, ITEST_SERVER, "proxy", path, "proxy's SERVER");
    r->proxy_cli = one(sp, ITEST_CLIENT, "proxy", path, "proxy's CLIENT");
    r->sdk_srv = one(sp, ITEST_SERVER, SDK_SERVICE, path, "SDK's SERVER");
    r->sdk_cli = one(sp, ITEST_CLIENT, SDK_SERVICE, path, "SDK's CLIENT");
    r->backend = one(sp, ITEST_SERVER, "backend", path, "backend's SERVER");
}

static void expect_parent(const struct itest_span *child, const struct itest_span *parent,
                          const char *edge)
{
    cr_expect_str_eq(child->trace_id, parent->trace_id, "%s: different trace ids", edge);
    cr_expect_str_eq(child->parent_id, parent->span_id, "%s: parent %s, expected %s", edge,
                     child->parent_id, parent->span_id);
}

/* The links of the chain, in both directions between the shim and the SDK. */
static void check_links(const struct roles *r)
{
    cr_expect_str_eq(r->client->parent_id, "", "the root client's span has a parent");
    expect_parent(r->proxy_srv, r->client, "client CLIENT -> proxy SERVER");
    expect_parent(r->proxy_cli, r->proxy_srv, "proxy SERVER -> proxy CLIENT");
    cr_expect_not_null(json_object_get(r->proxy_cli->attrs, "ldtrace.injected"),
                       "the proxy's request went out without our traceparent");
    expect_parent(r->sdk_srv, r->proxy_cli, "shim CLIENT (proxy) -> SDK SERVER");
    expect_parent(r->sdk_cli, r->sdk_srv, "SDK SERVER -> SDK CLIENT");
    expect_parent(r->backend, r->sdk_cli, "SDK CLIENT -> shim SERVER (backend)");
}

/* What reached the backend: exactly one traceparent, the SDK client span's context, untouched. */
static void check_wire(const struct req *q)
{
    const struct roles *r = &q->r;
    char tp[4][64], want[64];
    int n = echoed_traceparents(q->out, tp, 4);
    cr_expect_eq(n, 1, "the backend received %d traceparent lines, expected exactly 1", n);
    snprintf(want, sizeof(want), "00-%s-%s-01", r->sdk_cli->trace_id, r->sdk_cli->span_id);
    for (int i = 0; i < n; i++)
        cr_expect_str_eq(tp[i], want, "the backend received %s, the SDK produced %s", tp[i], want);
}

/* A span outside the chain's trace is only acceptable as the shim's record of the SDK exporter's
 * own traffic (node under the shim): POST /v1/traces, or its connect. */
static int exporter_traffic(const struct itest_span *s, int node_traced)
{
    if (!node_traced || strcmp(s->service, SDK_SHIM_SERVICE) != 0)
        return 0;
    const char *path = itest_attr_str(s, "url.path");
    return s->kind == ITEST_INTERNAL || (path && strcmp(path, "/v1/traces") == 0);
}

/* "service:id service:id ..." of the SERVER children of client span c (a static buffer). */
static const char *servers_of(const struct itest_spans *sp, const struct itest_span *c)
{
    static char buf[512];
    size_t n = 0;
    buf[0] = 0;
    for (size_t j = 0; j < sp->n && n < sizeof(buf) - 1; j++)
        if (sp->v[j].kind == ITEST_SERVER && !strcmp(sp->v[j].parent_id, c->span_id))
            n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s:%s ", sp->v[j].service,
                                  sp->v[j].span_id);
    return buf;
}

/* No span id twice in the receiver (the OTLP data model: a span id names one span); each clash is
 * named with both holders. */
static void expect_unique_ids(const struct itest_spans *sp)
{
    for (size_t i = 0; i < sp->n; i++)
        for (size_t j = i + 1; j < sp->n; j++) {
            const struct itest_span *a = &sp->v[i], *b = &sp->v[j];
            cr_expect(strcmp(a->span_id, b->span_id) != 0,
                      "span id %s twice: kind %d of %s (parent %s) and kind %d of %s (parent %s)",
                      a->span_id, a->kind, a->service, a->parent_id, b->kind, b->service,
                      b->parent_id);
        }
}

/* The request whose trace this is, or -1. */
static int trace_of(const struct req *q, int n, const char *trace_id)
{
    for (int k = 0; k < n; k++)
        if (strcmp(q[k].r.client->trace_id, trace_id) == 0)
            return k;
    return -1;
}

/* One tree per request: its own trace id, one root, every parent present, no span id twice, at
 * most one SERVER span per CLIENT span (one request is served once). */
static void check_tree(const struct itest_spans *sp, const struct req *q, int n, int node_traced)
{
    size_t roots[REQS_MAX] = {0};
    expect_unique_ids(sp);
    for (int k = 0; k < n; k++)
        cr_expect_eq(trace_of(q, n, q[k].r.client->trace_id), k, "two requests share a trace");
    for (size_t i = 0; i < sp->n; i++) {
        const struct itest_span *s = &sp->v[i];
        int k = trace_of(q, n, s->trace_id);
        if (k < 0) {
            cr_expect(exporter_traffic(s, node_traced), "span %s (%s, %s) is in another trace %s",
                      s->span_id, s->service, s->name, s->trace_id);
            continue;
        }
        if (!s->parent_id[0]) {
            roots[k]++;
            continue;
        }
        cr_expect_not_null(itest_by_id(sp, s->parent_id), "span %s (%s) has a missing parent %s",
                           s->span_id, s->service, s->parent_id);
        size_t servers = 0;
        for (size_t j = 0; s->kind == ITEST_CLIENT && j < sp->n; j++)
            servers += sp->v[j].kind == ITEST_SERVER && !strcmp(sp->v[j].parent_id, s->span_id);
        cr_expect_leq(servers, 1, "CLIENT span %s (%s) has %zu SERVER children: %s",
                      s->span_id, s->service, servers, servers > 1 ? servers_of(sp, s) : "");
    }
    for (int k = 0; k < n; k++)
        cr_expect_eq(roots[k], 1, "%zu roots in the trace of %s", roots[k], q[k].path);
}

/* The shim added or changed no traceparent on the SDK's requests in the chain (its own record of
 * them, if any, carries ldtrace.app_traceparent). */
static void check_untouched(const struct itest_spans *sp, const struct req *q, int n)
{
    for (size_t i = 0; i < sp->n; i++) {
        const struct itest_span *s = &sp->v[i];
        if (strcmp(s->service, SDK_SHIM_SERVICE) != 0 || trace_of(q, n, s->trace_id) < 0)
            continue;
        cr_expect_null(json_object_get(s->attrs, "ldtrace.injected"), "the shim injected into %s",
                       s->name);
        cr_expect_null(json_object_get(s->attrs, "ldtrace.replaced"),
                       "the shim rewrote %s's traceparent", s->name);
    }
}

/* What a run checks besides the receiver's validation and the roles of the chain's spans. */
enum checks {
    CHECK_LINKS = 1, /* parent links, the backend's one traceparent, nothing injected by the shim */
    CHECK_TREE = 2,  /* one tree: ids unique, one SERVER span per request, one trace, one root */
};

/* The whole run: chain, n concurrent requests, the checks asked for. */
static void run_interop(int node_traced, int n, int checks)
{
    struct chain c;
    struct req q[REQS_MAX];
    start_chain(&c, node_traced);
    run_clients(&c, q, n);
    wait_sdk_spans(&c, 2 * (size_t)n);
    stop_chain(&c);
    int reqs = receiver_all_valid(&c);
    struct itest_spans *sp = itest_load_spans(c.rx_out);
    cr_assert_not_null(sp, "the receiver's output does not parse");
    cr_assert_geq(reqs, 2, "the receiver got %d requests", reqs);
    itest_dump(sp); /* in the log: the spans a failure is about */
    for (int k = 0; k < n; k++)
        find_roles(sp, q[k].path, &q[k].r);
    for (int k = 0; k < n && (checks & CHECK_LINKS); k++) {
        check_links(&q[k].r);
        check_wire(&q[k]);
    }
    if (checks & CHECK_LINKS)
        check_untouched(sp, q, n);
    if (checks & CHECK_TREE)
        check_tree(sp, q, n, node_traced);
    itest_spans_free(sp);
}

/* The SDK service untraced between shim-traced ones: both directions, one tree. */
Test(interop, sdk_between_shim_services)
{
    run_interop(0, 1, CHECK_LINKS | CHECK_TREE);
}

/* The same with 6 requests at once: each its own tree, no link across requests (the proxy is
 * thread-per-request, the SDK keeps its context per request). */
Test(interop, sdk_between_shim_services_concurrent)
{
    run_interop(0, 6, CHECK_LINKS | CHECK_TREE);
}

/* The SDK service under the shim too: its traceparent reaches the backend as the SDK made it, and
 * the links between the SDK's spans and the other services' are unchanged; 4 requests at once, so
 * the shim's event-loop guesses in node are exercised while the SDK's context must stay intact. */
Test(interop, sdk_under_shim_keeps_sdk_context)
{
    run_interop(1, 4, CHECK_LINKS);
}

/* The SDK service under the shim: still one tree (the shim adds no span id the SDK already
 * exported and no second SERVER span for the request the SDK serves).
 * Fails as of this writing, two shim bugs: (1) for a request that carries the app's own traceparent
 * (LDT_SPAN_F_APP_TP), ldt__span_client_headers gives the shim's CLIENT span the SDK's span id
 * (tc.span_id) but keeps the shim's own SERVER span as its parent, so the receiver gets that id
 * twice with two different parents; (2) the shim's SERVER span for the request the SDK serves is a
 * second child of the proxy's CLIENT span, next to the SDK's, and heads a second subtree. */
Test(interop, sdk_under_shim_one_tree)
{
    run_interop(1, 1, CHECK_TREE);
}
