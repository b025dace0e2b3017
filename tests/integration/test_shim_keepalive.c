/* test_shim_keepalive.c - three requests on one keep-alive connection, client and server traced. */
#include <criterion/criterion.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "itest.h"

/* The n-th JSON line of the file (backend.py answers one line per request). */
static json_t *nth_line(const char *text, int n)
{
    const char *p = text;
    for (int i = 0; i < n && p; i++) {
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    cr_assert_not_null(p, "answer %d missing", n);
    json_error_t err;
    json_t *j = json_loadb(p, strcspn(p, "\n"), 0, &err);
    cr_assert_not_null(j, "answer %d is not JSON: %s", n, err.text);
    return j;
}

/* The single traceparent the backend received in this answer. */
static const char *received_tp(json_t *answer)
{
    const char *tp = NULL;
    int n = 0;
    size_t i;
    json_t *h;
    json_array_foreach(json_object_get(answer, "headers"), i, h)
    {
        if (strcasecmp(json_string_value(json_array_get(h, 0)), "traceparent") == 0) {
            tp = json_string_value(json_array_get(h, 1));
            n++;
        }
    }
    cr_assert_eq(n, 1, "%d traceparent lines", n);
    return tp;
}

static const char *const paths[] = {"/a", "/b", "/c"};

/* backend.py on 127.0.0.1:port, traced into dir as "backend". */
static pid_t start_backend(const char *dir, int port)
{
    char port_s[16];
    snprintf(port_s, sizeof(port_s), "%d", port);
    struct itest_env es;
    itest_env_init(&es);
    cr_assert_eq(itest_env_trace(&es, dir, "backend"), 0, "libldtrace.so is not built");
    char *sargv[] = {ITEST_PYTHON, itest_src("tests/integration/py/backend.py"), port_s, NULL};
    pid_t srv = itest_start_server(&es, sargv, port, NULL);
    itest_env_free(&es);
    cr_assert_gt(srv, 0);
    return srv;
}

/* Run argv traced into dir as service name (its output to out), let its spans settle, stop the
 * server srv; the client's output, after checking it exited with 0. */
static char *client_output(const char *dir, const char *name, char *const argv[], const char *out,
                           int timeout_ms, pid_t srv)
{
    struct itest_env ec;
    itest_env_init(&ec);
    cr_assert_eq(itest_env_trace(&ec, dir, name), 0, "libldtrace.so is not built");
    int rc = itest_run(&ec, argv, out, timeout_ms);
    itest_settle(250);
    itest_stop(srv);
    itest_env_free(&ec);
    cr_assert_eq(rc, 0, "%s exited with %d", argv[0], rc);
    char *text = itest_slurp(out, NULL);
    cr_assert_not_null(text);
    unlink(out);
    return text;
}

/* Start backend.py traced into dir, GET the three paths with one traced client; its output. */
static char *fetch_three(const char *dir, const char *out)
{
    char url[3][64];
    int port = itest_free_port();
    for (int i = 0; i < 3; i++)
        snprintf(url[i], sizeof(url[i]), "http://127.0.0.1:%d%s", port, paths[i]);
    pid_t srv = start_backend(dir, port);
    const char *const urls[] = {url[0], url[1], url[2], NULL};
    char *cargv[16];
    itest_get_argv(cargv, NULL, urls);
    return client_output(dir, "curl", cargv, out, 15000, srv);
}

/* The i-th request: its CLIENT span is a root, its SERVER span the CLIENT's child, and the backend
 * got the CLIENT's ids. Returns the client port the backend saw. */
static long long check_pair(const struct itest_spans *sp, const char *text, int i)
{
    json_t *ans = nth_line(text, i);
    cr_assert_str_eq(json_string_value(json_object_get(ans, "path")), paths[i]);
    long long cport = json_integer_value(json_object_get(ans, "client_port"));
    const struct itest_span *s = itest_find(sp, ITEST_SERVER, "backend", "url.path", paths[i]);
    const struct itest_span *c = itest_find(sp, ITEST_CLIENT, "curl", "url.path", paths[i]);
    cr_assert_not_null(s, "no SERVER span for %s", paths[i]);
    cr_assert_not_null(c, "no CLIENT span for %s", paths[i]);
    cr_assert_str_eq(s->parent_id, c->span_id, "%s: SERVER not a child of CLIENT", paths[i]);
    cr_assert_str_eq(s->trace_id, c->trace_id);
    cr_assert_str_eq(c->parent_id, "", "the client's request %s is a root", paths[i]);
    char want[64];
    snprintf(want, sizeof(want), "00-%s-%s-", c->trace_id, c->span_id);
    const char *tp = received_tp(ans);
    cr_assert(strncmp(tp, want, 53) == 0 && strlen(tp) == 55, "%s: got %s", paths[i], tp);
    cr_assert(strcmp(tp + 53, "01") == 0 || strcmp(tp + 53, "03") == 0, "not sampled: %s", tp);
    cr_expect_eq(itest_attr_int(c, "http.response.status_code", 0), 200);
    cr_expect_eq(itest_attr_int(s, "http.response.status_code", 0), 200);
    json_decref(ans);
    return cport;
}

Test(shim_keepalive, three_requests_on_one_connection_give_three_linked_pairs, .timeout = 30)
{
    char dir[ITEST_PATH_MAX], out[ITEST_PATH_MAX + 16];
    cr_assert_eq(itest_mkdtemp(dir), 0);
    snprintf(out, sizeof(out), "%s.out", dir);
    char *text = fetch_three(dir, out);
    struct itest_spans *sp = itest_drain_load(dir);
    cr_assert_not_null(sp);
    cr_assert_eq(itest_duplicates(sp), 0);
    size_t http = itest_count(sp, ITEST_SERVER, NULL, NULL, NULL) +
                  itest_count(sp, ITEST_CLIENT, NULL, NULL, NULL);
    if (http != 6)
        itest_dump(sp);
    cr_expect_eq(http, 6, "expected 6 HTTP spans, got %zu", http);
    cr_assert_eq(itest_count(sp, ITEST_SERVER, "backend", NULL, NULL), 3);
    cr_assert_eq(itest_count(sp, ITEST_CLIENT, "curl", NULL, NULL), 3);
    long long port0 = check_pair(sp, text, 0);
    cr_assert_eq(check_pair(sp, text, 1), port0, "the client did not reuse the connection");
    cr_assert_eq(check_pair(sp, text, 2), port0, "the client did not reuse the connection");
    const struct itest_span *c0 = itest_find(sp, ITEST_CLIENT, "curl", "url.path", "/a");
    const struct itest_span *c1 = itest_find(sp, ITEST_CLIENT, "curl", "url.path", "/b");
    cr_expect_str_neq(c0->trace_id, c1->trace_id, "each root request starts its own trace");
    free(text);
    itest_spans_free(sp);
    itest_rmtree(dir);
}

/* One socket, a writer thread and a reader thread (tests/integration/py/twothreads.py): the shim's
 * connection state is given back whenever the reader catches up and taken again by the writer's
 * next request, racing the reader. Every request still gets its linked CLIENT/SERVER pair. */
Test(shim_keepalive, a_reader_and_a_writer_thread_on_one_socket, .timeout = 60)
{
    enum { N = 60 };
    char dir[ITEST_PATH_MAX], out[ITEST_PATH_MAX + 16], port_s[16], n_s[16];
    cr_assert_eq(itest_mkdtemp(dir), 0);
    snprintf(out, sizeof(out), "%s.out", dir);
    int port = itest_free_port();
    snprintf(port_s, sizeof(port_s), "%d", port);
    snprintf(n_s, sizeof(n_s), "%d", N);
    pid_t srv = start_backend(dir, port);
    char *cargv[] = {ITEST_PYTHON, itest_src("tests/integration/py/twothreads.py"), port_s, n_s,
                     NULL};
    char *text = client_output(dir, "tt", cargv, out, 30000, srv);
    struct itest_spans *sp = itest_drain_load(dir);
    cr_assert_not_null(sp);
    cr_assert_eq(itest_duplicates(sp), 0);
    cr_assert_eq(itest_count(sp, ITEST_CLIENT, "tt", NULL, NULL), N);
    cr_assert_eq(itest_count(sp, ITEST_SERVER, "backend", NULL, NULL), N);
    const char *line = text;
    for (int i = 0; i < N; i++) {
        char path[32], want[40];
        snprintf(path, sizeof(path), "/tt/%d", i);
        snprintf(want, sizeof(want), "200 %s\n", path);
        cr_assert(line && strncmp(line, want, strlen(want)) == 0, "response %d: %.40s", i, line);
        line = strchr(line, '\n') + 1;
        const struct itest_span *c = itest_find(sp, ITEST_CLIENT, "tt", "url.path", path);
        const struct itest_span *s = itest_find(sp, ITEST_SERVER, "backend", "url.path", path);
        cr_assert_not_null(c, "no CLIENT span for %s", path);
        cr_assert_not_null(s, "no SERVER span for %s", path);
        cr_assert_str_eq(s->parent_id, c->span_id, "%s: SERVER not a child of its CLIENT", path);
        cr_expect_eq(itest_attr_int(c, "http.response.status_code", 0), 200);
        cr_expect_eq(itest_attr_int(c, "server.port", 0), port);
    }
    free(text);
    itest_spans_free(sp);
    itest_rmtree(dir);
}
