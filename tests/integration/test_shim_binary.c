/* test_shim_binary.c - a binary echo protocol through the shim: bytes untouched, no HTTP spans. */
#include <criterion/criterion.h>
#include <string.h>
#include <unistd.h>

#include "itest.h"

Test(shim_binary, random_payloads_echo_identically_and_export_no_http_spans, .timeout = 30)
{
    char dir[ITEST_PATH_MAX], port_s[16], out[ITEST_PATH_MAX + 16];
    cr_assert_eq(itest_mkdtemp(dir), 0);
    int port = itest_free_port();
    snprintf(port_s, sizeof(port_s), "%d", port);
    snprintf(out, sizeof(out), "%s.out", dir);
    struct itest_env es, ec;
    itest_env_init(&es);
    itest_env_init(&ec);
    cr_assert_eq(itest_env_trace(&es, dir, "echo-server"), 0, "libldtrace.so is not built");
    cr_assert_eq(itest_env_trace(&ec, dir, "echo-client"), 0, "libldtrace.so is not built");
    char *sargv[] = {itest_build("tests/tools/echo_server"), port_s, NULL};
    pid_t srv = itest_start_server(&es, sargv, port, NULL);
    cr_assert_gt(srv, 0);
    cr_assert_eq(itest_has_shim(srv), 1, "the shim is not loaded in echo_server");
    for (int seed = 1; seed <= 3; seed++) {
        char seed_s[8];
        snprintf(seed_s, sizeof(seed_s), "%d", seed);
        char *cargv[] = {itest_build("tests/tools/echo_client"), port_s, seed_s, "40", NULL};
        int rc = itest_run(&ec, cargv, out, 15000);
        char *text = itest_slurp(out, NULL);
        cr_assert_eq(rc, 0, "seed %d: echo_client exited %d: %s", seed, rc, text ? text : "");
        cr_assert(text && strncmp(text, "ok bytes=", 9) == 0, "seed %d: %s", seed, text);
        free(text);
    }
    itest_settle(250);
    itest_stop(srv);
    struct itest_spans *sp = itest_drain_load(dir);
    cr_assert_not_null(sp);
    size_t http = itest_count(sp, ITEST_SERVER, NULL, NULL, NULL) +
                  itest_count(sp, ITEST_CLIENT, NULL, NULL, NULL) +
                  itest_count(sp, 0, NULL, "http.request.method", NULL);
    if (http)
        itest_dump(sp);
    cr_assert_eq(http, 0, "a binary protocol produced HTTP spans");
    itest_spans_free(sp);
    itest_env_free(&es);
    itest_env_free(&ec);
    unlink(out);
    itest_rmtree(dir);
}
