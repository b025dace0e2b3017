/* test_shim_privdrop.c - a server that starts as root and drops to nobody (uid 65534) before it
 * answers still exports its SERVER span: the shim creates the segment before the drop. */
#include <criterion/criterion.h>
#include <string.h>
#include <unistd.h>

#include "itest.h"

Test(shim_privdrop, server_dropping_root_after_accept_exports_its_server_span, .timeout = 40)
{
    if (geteuid() != 0)
        cr_skip_test("needs root to drop privileges");
    char dir[ITEST_PATH_MAX], port_s[16], url[64], out[ITEST_PATH_MAX + 16];
    cr_assert_eq(itest_mkdtemp(dir), 0);
    int port = itest_free_port();
    snprintf(port_s, sizeof port_s, "%d", port);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/dropped", port);
    snprintf(out, sizeof out, "%s.out", dir);
    struct itest_env es, ec;
    itest_env_init(&es);
    itest_env_init(&ec);
    cr_assert_eq(itest_env_trace(&es, dir, "privdrop"), 0, "libldtrace.so is not built");
    /* LeakSanitizer cannot ptrace a process that changed its uid: leak checks off in the server. */
    itest_env_set(&es, "ASAN_OPTIONS", "detect_leaks=0");
    char *sargv[] = {itest_build("tests/integration/privdrop_server"), port_s, NULL};
    pid_t srv = itest_start_server(&es, sargv, port, NULL);
    cr_assert_gt(srv, 0);
    cr_assert_eq(itest_has_shim(srv), 1, "the shim is not loaded in privdrop_server");
    char *cargv[16];
    const char *urls[] = {url, NULL};
    itest_get_argv(cargv, NULL, urls);
    int rc = itest_run(&ec, cargv, out, 15000);
    char *text = itest_slurp(out, NULL);
    cr_assert_eq(rc, 0, "client exited %d: %s", rc, text ? text : "");
    cr_assert(text && strstr(text, "ok"), "response: %s", text ? text : "");
    free(text);
    cr_assert_eq(itest_wait(srv, 10000), 0, "privdrop_server did not drop to 65534 and answer");
    struct itest_spans *sp = itest_drain_load(dir);
    cr_assert_not_null(sp);
    const struct itest_span *s = itest_find(sp, ITEST_SERVER, "privdrop", "url.path", "/dropped");
    if (!s)
        itest_dump(sp);
    cr_assert_not_null(s, "no SERVER span from the process that dropped root");
    cr_assert_eq(itest_attr_int(s, "http.response.status_code", 0), 200);
    itest_spans_free(sp);
    itest_env_free(&es);
    itest_env_free(&ec);
    unlink(out);
    itest_rmtree(dir);
}
