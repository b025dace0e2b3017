/* test_matrix_pairs.c - compatibility matrix: unmodified clients (curl, wget, python urllib, node
 * http) against unmodified servers (python ThreadingHTTPServer, node http, nginx reverse proxy)
 * under the shim: one trace per request with correct parentage, answers byte-identical to an
 * untraced run. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_matrix_lib.h"

#define NREQ 2

enum server_kind { SRV_PYTHON, SRV_NODE, SRV_NGINX, SRV_NGINX_NODE };
enum client_kind { CLI_CURL, CLI_WGET, CLI_URLLIB, CLI_NODE, CLI_COUNT };

static const char *const client_names[CLI_COUNT] = {"curl", "wget", "urllib", "node"};

/* The servers of one run: an echo server (python or node) and, for SRV_NGINX (SRV_NGINX_NODE),
 * nginx in front of backend.py (node/matrix_server.js). port is where the clients go. */
struct servers {
    enum server_kind kind;
    char dir[ITEST_PATH_MAX];
    int port, echo_port;
    pid_t echo;
    struct mx_nginx nginx;
    struct itest_env env_echo, env_nginx, env_client;
};

/* ports: the echo server's and nginx's, 0 to pick free ones (a traced run reuses the plain run's,
 * as the clients send the port in Host). */
static void servers_start(struct servers *s, enum server_kind kind, int traced, const int ports[2])
{
    memset(s, 0, sizeof(*s));
    s->kind = kind;
    cr_assert_eq(itest_mkdtemp(s->dir), 0);
    s->echo_port = ports ? ports[0] : itest_free_port();
    itest_env_init(&s->env_echo);
    itest_env_init(&s->env_nginx);
    itest_env_init(&s->env_client);
    if (traced) {
        cr_assert_eq(itest_env_trace(&s->env_echo, s->dir, "echo"), 0, "shim not built");
        itest_env_trace(&s->env_nginx, s->dir, "nginx");
        itest_env_trace(&s->env_client, s->dir, "client");
    }
    char ep[16];
    snprintf(ep, sizeof(ep), "%d", s->echo_port);
    char *py[] = {ITEST_PYTHON, itest_src("tests/integration/py/backend.py"), ep, NULL};
    char *js[] = {MX_NODE, itest_src("tests/integration/node/matrix_server.js"), "echo", ep, NULL};
    int node = kind == SRV_NODE || kind == SRV_NGINX_NODE;
    s->echo = itest_start_server(&s->env_echo, node ? js : py, s->echo_port, NULL);
    cr_assert_gt(s->echo, 0, "echo server did not start");
    s->port = s->echo_port;
    if (kind == SRV_NGINX || kind == SRV_NGINX_NODE) {
        s->port = ports ? ports[1] : itest_free_port();
        cr_assert_gt(mx_nginx_start(&s->nginx, &s->env_nginx, s->port, s->echo_port), 0,
                     "nginx did not start");
    }
}

static void servers_stop(struct servers *s)
{
    if (s->kind == SRV_NGINX || s->kind == SRV_NGINX_NODE)
        mx_nginx_stop(&s->nginx);
    itest_stop(s->echo);
}

static void servers_free(struct servers *s)
{
    itest_env_free(&s->env_echo);
    itest_env_free(&s->env_nginx);
    itest_env_free(&s->env_client);
    itest_rmtree(s->dir);
}

/* Run client c (traced when the servers are) for NREQ paths /m/<client>/<k>; its stdout. */
static char *run_client(struct servers *s, enum client_kind c)
{
    char urls[NREQ][128], svc[32], out[ITEST_PATH_MAX + 32];
    for (int k = 0; k < NREQ; k++)
        snprintf(urls[k], sizeof(urls[k]), "http://127.0.0.1:%d/m/%s/%d", s->port, client_names[c],
                 k);
    snprintf(svc, sizeof(svc), "c-%s", client_names[c]);
    snprintf(out, sizeof(out), "%s.%s.out", s->dir, client_names[c]);
    itest_env_set(&s->env_client, "OTEL_SERVICE_NAME", svc);
    char *curl[] = {ITEST_CURL, "-s", "-f", urls[0], urls[1], NULL};
    char *wget[] = {MX_WGET, "-q", "-O", "-", urls[0], urls[1], NULL};
    char *urllib[] = {ITEST_PYTHON, itest_src("tests/integration/py/matrix_urllib.py"), urls[0],
                      urls[1], NULL};
    char *node[] = {MX_NODE, itest_src("tests/integration/node/matrix_client.js"), urls[0], urls[1],
                    NULL};
    char *const *argv[CLI_COUNT] = {curl, wget, urllib, node};
    int rc = itest_run(&s->env_client, argv[c], out, 20000);
    cr_assert_eq(rc, 0, "%s exited with %d", client_names[c], rc);
    char *body = itest_slurp(out, NULL);
    unlink(out);
    cr_assert_not_null(body);
    return body;
}

/* The spans of request path: client CLIENT -> [nginx SERVER -> nginx CLIENT ->] echo SERVER. */
static void check_chain(const struct itest_spans *sp, const struct servers *s, const char *svc,
                        const char *path, char *trace_out)
{
    const struct itest_span *cc = mx_one(sp, ITEST_CLIENT, svc, path);
    const struct itest_span *es = mx_one(sp, ITEST_SERVER, "echo", path);
    if (!cc || !es)
        itest_dump(sp);
    cr_assert_not_null(cc, "%s: no unique CLIENT span of %s", path, svc);
    cr_assert_not_null(es, "%s: no unique SERVER span of the echo server", path);
    mx_expect_id(path, "the client's span is a root", cc->parent_id, "");
    const struct itest_span *parent = cc;
    if (s->kind == SRV_NGINX) {
        const struct itest_span *ns = mx_one(sp, ITEST_SERVER, "nginx", path);
        const struct itest_span *nc = mx_one(sp, ITEST_CLIENT, "nginx", path);
        cr_assert_not_null(ns, "%s: no unique nginx SERVER span", path);
        cr_assert_not_null(nc, "%s: no unique nginx CLIENT span", path);
        mx_expect_id(path, "nginx SERVER left the trace", ns->trace_id, cc->trace_id);
        mx_expect_id(path, "nginx SERVER parent", ns->parent_id, cc->span_id);
        mx_expect_id(path, "nginx CLIENT left the trace", nc->trace_id, cc->trace_id);
        mx_expect_id(path, "nginx CLIENT parent", nc->parent_id, ns->span_id);
        parent = nc;
    }
    mx_expect_id(path, "echo SERVER left the trace", es->trace_id, cc->trace_id);
    mx_expect_id(path, "echo SERVER parent", es->parent_id, parent->span_id);
    mx_expect(itest_attr_int(es, "http.response.status_code", 0) == 200, "%s: echo status", path);
    mx_expect(cc->status != 2, "%s: client span is an error", path);
    snprintf(trace_out, 33, "%s", cc->trace_id);
}

static int client_runs(enum client_kind c)
{
    /* A preloaded libasan deadlocks curl in setlocale (see itest_get_argv): not the shim's doing.
     */
    return !(c == CLI_CURL && mx_asan());
}

/* Every client that runs in this build against the servers; answers[c] NULL when c does not run. */
static void run_clients(struct servers *s, char *answers[CLI_COUNT])
{
    for (int c = 0; c < CLI_COUNT; c++)
        answers[c] = client_runs(c) ? run_client(s, c) : NULL;
}

/* One client's row: its answers with and without the shim, and the spans of its requests. */
static void check_client(const struct itest_spans *sp, const struct servers *t, enum client_kind c,
                         const char *plain, const char *traced)
{
    const char *name = client_names[c];
    int min, max;
    mx_expect(mx_header_counts(plain, "traceparent", &min, &max) == NREQ, "%s: plain answer", name);
    mx_expect(max == 0, "%s: a traceparent without the shim", name);
    mx_expect(mx_header_counts(traced, "traceparent", &min, &max) == NREQ, "%s: traced answer",
              name);
    mx_expect(min == 1 && max == 1, "%s: traceparent lines per request %d..%d, want 1", name, min,
              max);
    char *a = mx_canonical(plain), *b = mx_canonical(traced);
    mx_expect(a && b && strcmp(a, b) == 0, "%s: answers differ: %s VERSUS %s", name, a ? a : plain,
              b ? b : traced);
    free(a);
    free(b);
    char traces[NREQ][33], svc[32];
    snprintf(svc, sizeof(svc), "c-%s", name);
    for (int k = 0; k < NREQ; k++) {
        char path[64];
        snprintf(path, sizeof(path), "/m/%s/%d", name, k);
        check_chain(sp, t, svc, path, traces[k]);
    }
    mx_expect(strcmp(traces[0], traces[1]) != 0, "%s: two requests in one trace", name);
}

static void matrix_for_server(enum server_kind kind)
{
    struct servers u, t;
    char *plain[CLI_COUNT], *traced[CLI_COUNT];
    servers_start(&u, kind, 0, NULL);
    run_clients(&u, plain);
    servers_stop(&u);
    servers_start(&t, kind, 1, (int[2]){u.echo_port, u.port});
    run_clients(&t, traced);
    servers_stop(&t);
    struct itest_spans *sp = itest_drain_load(t.dir);
    cr_assert_not_null(sp, "ldtraced failed");
    mx_expect(itest_duplicates(sp) == 0, "duplicate span ids");
    for (int c = 0; c < CLI_COUNT; c++) {
        if (plain[c])
            check_client(sp, &t, c, plain[c], traced[c]);
        free(plain[c]);
        free(traced[c]);
    }
    if (mx_failures) /* diagnostics only */
        itest_dump(sp);
    itest_spans_free(sp);
    servers_free(&u);
    servers_free(&t);
}

Test(matrix_pairs, clients_to_python_threading_server, .timeout = 60)
{
    matrix_for_server(SRV_PYTHON);
}

Test(matrix_pairs, clients_to_node_http_server, .timeout = 60)
{
    matrix_for_server(SRV_NODE);
}

Test(matrix_pairs, clients_through_nginx_reverse_proxy, .timeout = 60)
{
    matrix_for_server(SRV_NGINX);
}

/* GET /ka/0../ka/4 on one connection (curl, or client.py in a sanitizer build); the answers. */
static char *ka_fetch(struct servers *t)
{
    char urls[5][128], out[ITEST_PATH_MAX + 32];
    const char *u[6] = {NULL};
    for (int k = 0; k < 5; k++) {
        snprintf(urls[k], sizeof(urls[k]), "http://127.0.0.1:%d/ka/%d", t->port, k);
        u[k] = urls[k];
    }
    char *argv[24];
    itest_get_argv(argv, NULL, u);
    snprintf(out, sizeof(out), "%s.ka.out", t->dir);
    itest_env_set(&t->env_client, "OTEL_SERVICE_NAME", "c-ka");
    cr_assert_eq(itest_run(&t->env_client, argv, out, 20000), 0, "%s failed", argv[0]);
    char *body = itest_slurp(out, NULL);
    unlink(out);
    cr_assert_not_null(body);
    return body;
}

/* The number of distinct client ports backend.py saw in these answers (upstream connections). */
static size_t ka_connections(char *body)
{
    json_t *ports = json_object();
    for (char *line = strtok(body, "\n"); line; line = strtok(NULL, "\n")) {
        json_t *j = json_loads(line, 0, NULL);
        cr_assert_not_null(j, "answer line is not JSON: %s", line);
        char port[32];
        snprintf(port, sizeof(port), "%lld", json_integer_value(json_object_get(j, "client_port")));
        json_object_set_new(ports, port, json_true());
        json_decref(j);
    }
    size_t n = json_object_size(ports);
    json_decref(ports);
    return n;
}

/* Five requests on one client connection through nginx, which reuses one upstream connection:
 * five traces, each client -> nginx SERVER -> nginx CLIENT -> backend SERVER. */
Test(matrix_pairs, nginx_reused_upstream_connection_traces_each_request, .timeout = 60)
{
    struct servers t;
    servers_start(&t, SRV_NGINX, 1, NULL);
    char *body = ka_fetch(&t);
    servers_stop(&t);
    size_t conns = ka_connections(body);
    mx_expect(conns == 1, "nginx used %zu upstream connections, want 1 reused", conns);
    struct itest_spans *sp = itest_drain_load(t.dir);
    cr_assert_not_null(sp);
    json_t *traces = json_object();
    for (int k = 0; k < 5; k++) {
        char path[32], trace[33] = "";
        snprintf(path, sizeof(path), "/ka/%d", k);
        check_chain(sp, &t, "c-ka", path, trace);
        json_object_set_new(traces, trace, json_true());
    }
    mx_expect(json_object_size(traces) == 5, "5 requests gave %zu traces",
              json_object_size(traces));
    if (mx_failures)
        itest_dump(sp);
    json_decref(traces);
    free(body);
    itest_spans_free(sp);
    servers_free(&t);
}

/* The first header line called name in one echo answer line, or NULL; *count gets how many. */
static const char *echo_header(json_t *answer, const char *name, int *count)
{
    const char *first = NULL;
    size_t i;
    json_t *h;
    *count = 0;
    json_array_foreach(json_object_get(answer, "headers"), i, h)
    {
        if (strcasecmp(json_string_value(json_array_get(h, 0)) ?: "", name) != 0)
            continue;
        if ((*count)++ == 0)
            first = json_string_value(json_array_get(h, 1));
    }
    return first;
}

/* GET url (curl, or client.py in a sanitizer build; untraced) with headers; the JSON answer. */
static json_t *get_json(const struct servers *t, const char *url, const char *const headers[])
{
    char out[ITEST_PATH_MAX + 32];
    snprintf(out, sizeof(out), "%s.get.out", t->dir);
    const char *urls[] = {url, NULL};
    char *argv[24];
    itest_get_argv(argv, headers, urls);
    struct itest_env plain;
    itest_env_init(&plain);
    int rc = itest_run(&plain, argv, out, 20000);
    itest_env_free(&plain);
    cr_assert_eq(rc, 0, "%s %s exited with %d", argv[0], url, rc);
    json_t *answer = json_load_file(out, 0, NULL);
    unlink(out);
    cr_assert_not_null(answer, "the answer of %s is not JSON", url);
    return answer;
}

/* A client that sends its own traceparent and tracestate through nginx: nginx forwards both, the
 * shim only replaces the parent id in nginx's copy; the backend gets each line once. */
Test(matrix_pairs, nginx_forwards_client_trace_context_once_with_its_own_parent, .timeout = 60)
{
    struct servers t;
    servers_start(&t, SRV_NGINX, 1, NULL);
    char url[128], want[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/tc/1", t.port);
    const char *headers[] = {"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                             "tracestate: vendor1=abc,vendor2=xyz", NULL};
    json_t *answer = get_json(&t, url, headers);
    servers_stop(&t);
    struct itest_spans *sp = itest_drain_load(t.dir);
    cr_assert_not_null(sp);
    const struct itest_span *ns = mx_one(sp, ITEST_SERVER, "nginx", "/tc/1");
    const struct itest_span *nc = mx_one(sp, ITEST_CLIENT, "nginx", "/tc/1");
    const struct itest_span *es = mx_one(sp, ITEST_SERVER, "echo", "/tc/1");
    cr_assert(ns && nc && es, "spans missing: %d %d %d", !!ns, !!nc, !!es);
    int ntp, nts;
    const char *tp = echo_header(answer, "traceparent", &ntp);
    const char *ts = echo_header(answer, "tracestate", &nts);
    snprintf(want, sizeof(want), "00-4bf92f3577b34da6a3ce929d0e0e4736-%s-01", nc->span_id);
    cr_expect(ntp == 1 && nts == 1, "traceparent x%d, tracestate x%d at the backend", ntp, nts);
    cr_expect_str_eq(tp ?: "", want, "the forwarded traceparent carries nginx's CLIENT span id");
    cr_expect_str_eq(ts ?: "", "vendor1=abc,vendor2=xyz");
    cr_expect_str_eq(ns->parent_id, "00f067aa0ba902b7");
    cr_expect_str_eq(nc->parent_id, ns->span_id);
    cr_expect_str_eq(es->parent_id, nc->span_id);
    json_decref(answer);
    itest_spans_free(sp);
    servers_free(&t);
}

/* ---- large bodies: nginx sendfile, a chunked 1 MB answer, a 200 KB POST (node client) ---- */

#define STATIC_LEN 300000
#define BIG_LEN 1000000
#define POST_LEN 200000

struct big {
    char *file, *chunked, *posted;
    size_t file_len, chunked_len, posted_len;
};

static void write_pattern(const char *path, size_t n, unsigned mul)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "fopen %s", path);
    for (size_t k = 0; k < n; k++)
        fputc((int)((k * mul) & 0xff), f);
    cr_assert_eq(fclose(f), 0);
}

/* node/matrix_client.js with extra arguments; its stdout and length. */
static char *node_client(struct servers *s, char *const extra[], size_t *len)
{
    char out[ITEST_PATH_MAX + 32];
    snprintf(out, sizeof(out), "%s.big.out", s->dir);
    char *argv[8] = {MX_NODE, itest_src("tests/integration/node/matrix_client.js")};
    for (int i = 0; extra[i]; i++)
        argv[2 + i] = extra[i];
    int rc = itest_run(&s->env_client, argv, out, 30000);
    cr_assert_eq(rc, 0, "matrix_client.js %s exited with %d", extra[0], rc);
    char *body = itest_slurp(out, len);
    unlink(out);
    cr_assert_not_null(body);
    return body;
}

static void big_run(struct servers *s, struct big *b)
{
    char dir[ITEST_PATH_MAX + 16], file[ITEST_PATH_MAX + 32], post[ITEST_PATH_MAX + 32];
    char u1[128], u2[128], u3[128];
    snprintf(dir, sizeof(dir), "%s/static", s->nginx.prefix);
    snprintf(file, sizeof(file), "%s/big.bin", dir);
    snprintf(post, sizeof(post), "%s.post", s->dir);
    cr_assert_eq(mkdir(dir, 0755), 0);
    write_pattern(file, STATIC_LEN, 7);
    write_pattern(post, POST_LEN, 13);
    snprintf(u1, sizeof(u1), "http://127.0.0.1:%d/static/big.bin", s->port);
    snprintf(u2, sizeof(u2), "http://127.0.0.1:%d/big/%d", s->port, BIG_LEN);
    snprintf(u3, sizeof(u3), "http://127.0.0.1:%d/post/1", s->port);
    itest_env_set(&s->env_client, "OTEL_SERVICE_NAME", "c-big");
    b->file = node_client(s, (char *[]){u1, NULL}, &b->file_len);
    b->chunked = node_client(s, (char *[]){u2, NULL}, &b->chunked_len);
    b->posted = node_client(s, (char *[]){"--post", post, u3, NULL}, &b->posted_len);
    unlink(post);
}

static void big_check_bytes(const struct big *b, const char *run)
{
    mx_expect(b->file_len == STATIC_LEN, "%s: static file: %zu bytes", run, b->file_len);
    for (size_t k = 0; k < b->file_len && k < STATIC_LEN; k++)
        if ((unsigned char)b->file[k] != ((k * 7) & 0xff)) {
            mx_expect(0, "%s: static file differs at byte %zu", run, k);
            break;
        }
    mx_expect(b->chunked_len == BIG_LEN, "%s: chunked answer: %zu bytes", run, b->chunked_len);
    for (size_t k = 0; k < b->chunked_len && k < BIG_LEN; k++)
        if ((unsigned char)b->chunked[k] != k % 251) {
            mx_expect(0, "%s: chunked answer differs at byte %zu", run, k);
            break;
        }
    mx_expect(strstr(b->posted, "\"body_len\":200000") != NULL, "%s: POST answer %.200s", run,
              b->posted);
}

static void big_free(struct big *b)
{
    free(b->file);
    free(b->chunked);
    free(b->posted);
}

/* client CLIENT -> nginx SERVER [-> nginx CLIENT -> echo SERVER when proxied]. */
static void big_chain(const struct itest_spans *sp, const char *path, int proxied)
{
    const struct itest_span *cc = mx_one(sp, ITEST_CLIENT, "c-big", path);
    const struct itest_span *ns = mx_one(sp, ITEST_SERVER, "nginx", path);
    const struct itest_span *nc = mx_one(sp, ITEST_CLIENT, "nginx", path);
    const struct itest_span *es = mx_one(sp, ITEST_SERVER, "echo", path);
    mx_expect(cc && ns && (!proxied || (nc && es)) && (proxied || (!nc && !es)),
              "%s: spans client %d, nginx SERVER %d, nginx CLIENT %d, echo SERVER %d", path, !!cc,
              !!ns, !!nc, !!es);
    if (!cc || !ns)
        return;
    mx_expect_id(path, "nginx SERVER parent", ns->parent_id, cc->span_id);
    mx_expect(itest_attr_int(ns, "http.response.status_code", 0) == 200, "%s: nginx status", path);
    mx_expect(itest_attr_int(cc, "http.response.status_code", 0) == 200, "%s: client status", path);
    if (proxied && nc && es) {
        mx_expect_id(path, "nginx CLIENT parent", nc->parent_id, ns->span_id);
        mx_expect_id(path, "echo SERVER parent", es->parent_id, nc->span_id);
        mx_expect_id(path, "echo SERVER trace", es->trace_id, cc->trace_id);
    }
}

Test(matrix_pairs, nginx_sendfile_chunked_and_posted_bodies_are_identical, .timeout = 60)
{
    struct servers u, t;
    struct big bu, bt;
    servers_start(&u, SRV_NGINX_NODE, 0, NULL);
    big_run(&u, &bu);
    servers_stop(&u);
    servers_start(&t, SRV_NGINX_NODE, 1, (int[2]){u.echo_port, u.port});
    big_run(&t, &bt);
    servers_stop(&t);
    big_check_bytes(&bu, "plain");
    big_check_bytes(&bt, "traced");
    char *a = mx_canonical(bu.posted), *b = mx_canonical(bt.posted);
    mx_expect(a && b && strcmp(a, b) == 0, "POST answers differ: %s VERSUS %s", bu.posted,
              bt.posted);
    free(a);
    free(b);
    struct itest_spans *sp = itest_drain_load(t.dir);
    cr_assert_not_null(sp);
    big_chain(sp, "/static/big.bin", 0);
    big_chain(sp, "/big/1000000", 1);
    big_chain(sp, "/post/1", 1);
    const struct itest_span *ns = mx_one(sp, ITEST_SERVER, "nginx", "/static/big.bin");
    mx_expect(!ns || itest_attr_int(ns, "ldtrace.bytes_out", 0) >= STATIC_LEN,
              "sendfile bytes not counted: ldtrace.bytes_out %lld",
              ns ? itest_attr_int(ns, "ldtrace.bytes_out", 0) : -1);
    if (mx_failures)
        itest_dump(sp);
    itest_spans_free(sp);
    big_free(&bu);
    big_free(&bt);
    servers_free(&u);
    servers_free(&t);
}
