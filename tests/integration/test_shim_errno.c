/* test_shim_errno.c - return values and errno of many calls, identical with or without the shim. */
#include <criterion/criterion.h>
#include <string.h>
#include <unistd.h>

#include "itest.h"

/* Run errno_probe, traced into dir when dir is set; its whole output (malloc'd). */
static char *probe(const char *dir, const char *out)
{
    struct itest_env e;
    itest_env_init(&e);
    if (dir) {
        cr_assert_eq(itest_env_trace(&e, dir, "errno-probe"), 0, "libldtrace.so is not built");
        itest_env_set(&e, "LDTRACE_SYSCALL_SPANS", "1");
    }
    char *argv[] = {itest_build("tests/tools/errno_probe"), NULL}, err[ITEST_PATH_MAX + 24];
    snprintf(err, sizeof(err), "%s.err", out);
    pid_t pid = itest_spawn_io(&e, argv, out, err);
    int rc = pid < 0 ? (int)pid : itest_wait(pid, 20000);
    itest_env_free(&e);
    cr_assert_eq(rc, 0, "errno_probe exited with %d%s", rc, dir ? " under the shim" : "");
    char *text = itest_slurp(out, NULL), *shim = itest_slurp(err, NULL);
    cr_assert_not_null(text);
    cr_assert_str_eq(shim ?: "", dir ? "shim=loaded\n" : "shim=absent\n");
    free(shim);
    unlink(out);
    unlink(err);
    return text;
}

/* The first line where a and b differ, for the failure message. */
static void first_diff(const char *a, const char *b, char *msg, size_t cap)
{
    while (*a && *a == *b)
        a++, b++;
    while (*a && a[-1] != '\n')
        a--, b--;
    snprintf(msg, cap, "without: %.*s\nwith:    %.*s", (int)strcspn(a, "\n"), a,
             (int)strcspn(b, "\n"), b);
}

Test(shim_errno, every_return_value_and_errno_is_unchanged, .timeout = 40)
{
    char dir[ITEST_PATH_MAX], out[ITEST_PATH_MAX + 16];
    cr_assert_eq(itest_mkdtemp(dir), 0);
    snprintf(out, sizeof(out), "%s.out", dir);
    char *plain = probe(NULL, out);
    char *traced = probe(dir, out);
    cr_assert(strstr(plain, "refused.connect              ret=-1 errno=111"), "probe is broken");
    cr_assert(strstr(plain, "tcp.read_eagain              ret=-1 errno=11"), "probe is broken");
    cr_assert(strstr(plain, "closed.send                  ret=-1 errno=9"), "probe is broken");
    char msg[512] = "";
    if (strcmp(plain, traced) != 0)
        first_diff(plain, traced, msg, sizeof(msg));
    cr_assert_str_eq(plain, traced, "output differs under the shim:\n%s", msg);
    free(plain);
    free(traced);
    struct itest_spans *sp = itest_drain_load(dir);
    cr_assert_not_null(sp);
    cr_expect_eq(itest_count(sp, ITEST_SERVER, NULL, NULL, NULL), 0, "no HTTP happened");
    itest_spans_free(sp);
    itest_rmtree(dir);
}
