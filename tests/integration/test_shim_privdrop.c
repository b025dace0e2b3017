/* test_shim_privdrop.c - process identity changes under the shim: a server that starts as root and
 * drops to nobody (uid 65534) before it answers still exports its SERVER span (the segment is made
 * before the drop); an exec marks the old image's segment exited, a failed exec does not. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "itest.h"
#include "ldtrace/record.h"

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

/* The flags word of pid's segment in dir, or -1 when there is none. */
static long seg_flags(const char *dir, pid_t pid)
{
    char prefix[32], path[ITEST_PATH_MAX + 300];
    snprintf(prefix, sizeof prefix, "%d.", (int)pid);
    DIR *d = opendir(dir);
    struct dirent *de;
    long flags = -1;
    while (d && (de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, prefix, strlen(prefix)) != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        int fd = open(path, O_RDONLY);
        uint32_t f;
        if (fd >= 0 && pread(fd, &f, sizeof f, offsetof(struct ldt_seg_hdr, flags)) == sizeof f)
            flags = f;
        if (fd >= 0)
            close(fd);
    }
    if (d)
        closedir(d);
    return flags;
}

static void get(const struct itest_env *e, int port, const char *path, const char *out)
{
    char url[96], *argv[16];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    const char *urls[] = {url, NULL};
    itest_get_argv(argv, NULL, urls);
    int rc = itest_run(e, argv, out, 15000);
    cr_assert_eq(rc, 0, "GET %s: client exited %d", path, rc);
}

Test(shim_exec, exec_marks_the_old_segment_exited_and_a_failed_exec_does_not, .timeout = 40)
{
    char dir[ITEST_PATH_MAX], port_s[16], out[ITEST_PATH_MAX + 16], bad[ITEST_PATH_MAX + 16];
    cr_assert_eq(itest_mkdtemp(dir), 0);
    int port = itest_free_port();
    snprintf(port_s, sizeof port_s, "%d", port);
    snprintf(out, sizeof out, "%s.out", dir);
    snprintf(bad, sizeof bad, "%s.bad", dir); /* executable, but no known format: ENOEXEC */
    FILE *f = fopen(bad, "w");
    cr_assert_not_null(f);
    fputs("\x01\x02 not a program\n", f);
    fclose(f);
    chmod(bad, 0755);
    struct itest_env es, ec;
    itest_env_init(&es);
    itest_env_init(&ec);
    cr_assert_eq(itest_env_trace(&es, dir, "execer"), 0, "libldtrace.so is not built");
    char *sargv[] = {itest_build("tests/integration/privdrop_server"), port_s, bad, NULL};
    pid_t srv = itest_start_server(&es, sargv, port, NULL);
    cr_assert_gt(srv, 0);
    get(&ec, port, "/fail-exec", out);
    itest_settle(300);
    long fl = seg_flags(dir, srv);
    cr_assert_geq(fl, 0, "no segment for the server");
    cr_assert_eq(fl & LDT_SEG_F_EXITED, 0, "a failed exec left the segment marked exited");
    get(&ec, port, "/exec", out);
    itest_settle(300);
    cr_assert_eq(kill(srv, 0), 0, "the exec'd image (sleep 5) should still run");
    fl = seg_flags(dir, srv);
    cr_assert(fl >= 0 && (fl & LDT_SEG_F_EXITED), "exec did not mark the segment exited (%ld)", fl);
    itest_stop(srv);
    struct itest_spans *sp = itest_drain_load(dir);
    cr_assert_not_null(sp);
    cr_assert_eq(itest_count(sp, ITEST_SERVER, "execer", NULL, NULL), 2);
    itest_spans_free(sp);
    itest_env_free(&es);
    itest_env_free(&ec);
    unlink(out);
    unlink(bad);
    itest_rmtree(dir);
}

/* nginx as root without a `user` directive runs its worker as nobody: the worker's spans arrive. */
Test(shim_privdrop, nginx_worker_as_nobody_exports_its_server_spans, .timeout = 40)
{
    if (geteuid() != 0 || access("/usr/sbin/nginx", X_OK) != 0)
        cr_skip_test("needs root and nginx");
    char dir[ITEST_PATH_MAX], prefix[ITEST_PATH_MAX], conf[ITEST_PATH_MAX + 16];
    char globals[3 * ITEST_PATH_MAX], out[ITEST_PATH_MAX + 16], url[64];
    cr_assert_eq(itest_mkdtemp(dir), 0);
    cr_assert_eq(itest_mkdtemp(prefix), 0);
    chmod(prefix, 0755); /* the worker (nobody) reads nothing there, but nginx checks the path */
    int port = itest_free_port();
    snprintf(conf, sizeof conf, "%s/nginx.conf", prefix);
    FILE *f = fopen(conf, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "worker_processes 1;\nevents { worker_connections 64; }\n"
            "http { access_log off;\n  server { listen 127.0.0.1:%d;\n"
            "    location / { return 200 \"ok\\n\"; } } }\n",
            port);
    fclose(f);
    snprintf(globals, sizeof globals, "daemon off; pid %s/nginx.pid; error_log %s/error.log;",
             prefix, prefix);
    struct itest_env es, ec;
    itest_env_init(&es);
    itest_env_init(&ec);
    cr_assert_eq(itest_env_trace(&es, dir, "ngx-nobody"), 0, "libldtrace.so is not built");
    char *sargv[] = {"/usr/sbin/nginx", "-p", prefix, "-c", "nginx.conf", "-g", globals, NULL};
    pid_t srv = itest_start_server(&es, sargv, port, NULL);
    cr_assert_gt(srv, 0, "nginx did not start");
    snprintf(url, sizeof url, "http://127.0.0.1:%d/nobody", port);
    snprintf(out, sizeof out, "%s.out", dir);
    char *cargv[16];
    const char *urls[] = {url, NULL};
    itest_get_argv(cargv, NULL, urls);
    int rc = itest_run(&ec, cargv, out, 15000);
    itest_settle(300);
    kill(srv, SIGQUIT);
    itest_wait(srv, 5000);
    cr_assert_eq(rc, 0, "client failed");
    struct itest_spans *sp = itest_drain_load(dir);
    cr_assert_not_null(sp);
    const struct itest_span *s = itest_find(sp, ITEST_SERVER, "ngx-nobody", "url.path", "/nobody");
    if (!s)
        itest_dump(sp);
    cr_assert_not_null(s, "no SERVER span from nginx's nobody worker");
    itest_spans_free(sp);
    itest_env_free(&es);
    itest_env_free(&ec);
    unlink(out);
    itest_rmtree(prefix);
    itest_rmtree(dir);
}
