/* test_matrix_eventloop.c - parent accuracy under concurrency: 16 keep-alive clients, each request
 * with its own known traceparent and path, through nginx, a node proxy and a python
 * thread-per-request proxy; how often the proxy's CLIENT span got the SERVER span of the same
 * request as parent. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "test_matrix_lib.h"

#define NCONN 16

enum proxy_kind { PX_NGINX, PX_NGINX_STRIP, PX_NODE, PX_PYTHON };

struct rig {
    char dir[ITEST_PATH_MAX];
    int port, up_port;
    pid_t up, proxy;
    struct mx_nginx nginx;
    struct itest_env env_up, env_px, env_cli;
};

/* The upstream (node echo, a deep accept backlog) and the proxy under test, both traced. */
static void rig_start(struct rig *r, enum proxy_kind kind)
{
    memset(r, 0, sizeof(*r));
    cr_assert_eq(itest_mkdtemp(r->dir), 0);
    r->up_port = itest_free_port();
    r->port = itest_free_port();
    itest_env_init(&r->env_up);
    itest_env_init(&r->env_px);
    itest_env_init(&r->env_cli);
    cr_assert_eq(itest_env_trace(&r->env_up, r->dir, "upstream"), 0, "shim not built");
    itest_env_trace(&r->env_px, r->dir, "proxy");
    char up[16], px[16];
    snprintf(up, sizeof(up), "%d", r->up_port);
    snprintf(px, sizeof(px), "%d", r->port);
    char *echo[] = {MX_NODE, itest_src("tests/integration/node/matrix_server.js"), "echo", up,
                    NULL};
    r->up = itest_start_server(&r->env_up, echo, r->up_port, NULL);
    cr_assert_gt(r->up, 0, "node echo upstream did not start");
    char *node[] = {MX_NODE, itest_src("tests/integration/node/matrix_server.js"), "proxy", px, up,
                    NULL};
    char *py[] = {ITEST_PYTHON, itest_src("tests/integration/py/matrix_proxy.py"), px, up, NULL};
    if (kind == PX_NGINX || kind == PX_NGINX_STRIP)
        r->proxy = mx_nginx_start_with(&r->nginx, &r->env_px, r->port, r->up_port,
                                       kind == PX_NGINX_STRIP ? "proxy_set_header traceparent \"\";"
                                                              : NULL);
    else
        r->proxy = itest_start_server(&r->env_px, kind == PX_NODE ? node : py, r->port, NULL);
    cr_assert_gt(r->proxy, 0, "proxy did not start");
}

static void rig_stop(struct rig *r, enum proxy_kind kind)
{
    if (kind == PX_NGINX || kind == PX_NGINX_STRIP)
        mx_nginx_stop(&r->nginx);
    else
        itest_stop(r->proxy);
    itest_stop(r->up);
}

/* Run conc_client (untraced: its traceparents are the known ones) with nconn connections of nreq
 * requests each, drain, count. */
static void measure(enum proxy_kind kind, const char *name, int nconn, int nreq,
                    struct mx_accuracy *a)
{
    struct rig r;
    rig_start(&r, kind);
    char port[16], n[16], nc[16];
    snprintf(port, sizeof(port), "%d", r.port);
    snprintf(n, sizeof(n), "%d", nreq);
    snprintf(nc, sizeof(nc), "%d", nconn);
    char *argv[] = {itest_build("tests/tools/conc_client"), port, nc, n, "acc", NULL};
    int rc = itest_run(&r.env_cli, argv, NULL, 40000);
    rig_stop(&r, kind);
    cr_assert_eq(rc, 0, "conc_client through %s exited with %d", name, rc);
    struct itest_spans *sp = itest_drain_load(r.dir);
    cr_assert_not_null(sp);
    mx_accuracy(sp, "proxy", "upstream", "acc", nconn, nreq, a);
    double pct = a->total ? 100.0 * a->right / a->total : 0;
    fprintf(stderr, "parent accuracy %s: %.1f%% (%d/%d), wrong-trace: %d, missing: %d\n", name, pct,
            a->right, a->total, a->wrong_trace, a->missing);
    cr_log_info("parent accuracy %s: %.1f%% (%d/%d), wrong-trace: %d, missing: %d", name, pct,
                a->right, a->total, a->wrong_trace, a->missing);
    itest_spans_free(sp);
    itest_env_free(&r.env_up);
    itest_env_free(&r.env_px);
    itest_env_free(&r.env_cli);
    itest_rmtree(r.dir);
}

/* nginx forwards the client's traceparent: the shim matches the forwarded copy to its request. */
Test(matrix_eventloop, nginx_16_keepalive_clients_parent_accuracy, .timeout = 60)
{
    struct mx_accuracy a;
    measure(PX_NGINX, "nginx", NCONN, 20, &a);
    cr_expect_eq(a.wrong_trace, 0, "nginx: %d CLIENT spans in another request's trace",
                 a.wrong_trace);
    cr_expect_geq(a.right * 100, a.total * 99, "nginx: parent accuracy %d/%d is under 99%%",
                  a.right, a.total);
}

/* nginx told to drop the inbound traceparent: only the event-loop heuristic is left. */
Test(matrix_eventloop, nginx_without_forwarded_traceparent_parent_accuracy, .timeout = 60)
{
    struct mx_accuracy a;
    measure(PX_NGINX_STRIP, "nginx (traceparent not forwarded)", NCONN, 20, &a);
    cr_expect_eq(a.wrong_trace, 0, "nginx, traceparent dropped: %d CLIENT spans in another trace",
                 a.wrong_trace);
    cr_expect_geq(a.right * 100, a.total * 99, "nginx, traceparent dropped: accuracy %d/%d < 99%%",
                  a.right, a.total);
}

/* node: http.request in the request handler, upstream sockets from a keep-alive agent. */
Test(matrix_eventloop, node_proxy_16_keepalive_clients_never_a_wrong_trace, .timeout = 60)
{
    struct mx_accuracy a;
    measure(PX_NODE, "node", NCONN, 20, &a);
    cr_expect_eq(a.wrong_trace, 0, "node: %d CLIENT spans in another request's trace",
                 a.wrong_trace);
    cr_expect_eq(a.missing, 0, "node: %d requests without their spans", a.missing);
}

/* A thread per request: the thread's open SERVER span is always the right parent. */
Test(matrix_eventloop, python_threading_proxy_parent_accuracy_is_total, .timeout = 60)
{
    struct mx_accuracy a;
    measure(PX_PYTHON, "python ThreadingHTTPServer", NCONN, 10, &a);
    cr_expect_eq(a.right, a.total, "python: parent accuracy %d/%d, want all", a.right, a.total);
    cr_expect_eq(a.wrong_trace, 0, "python: %d CLIENT spans in another trace", a.wrong_trace);
}

/* Without concurrency the event-loop rule (the most recent open inbound request) is always right.
 */
Test(matrix_eventloop, sequential_requests_through_event_loops_are_all_right, .timeout = 60)
{
    struct mx_accuracy a, b;
    measure(PX_NODE, "node, one connection", 1, 20, &a);
    measure(PX_NGINX_STRIP, "nginx (traceparent not forwarded), one connection", 1, 20, &b);
    cr_expect_eq(a.right, a.total, "node, sequential: parent accuracy %d/%d", a.right, a.total);
    cr_expect_eq(b.right, b.total, "nginx, sequential: parent accuracy %d/%d", b.right, b.total);
}
