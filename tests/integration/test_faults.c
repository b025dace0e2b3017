/* test_faults.c - integration: crashes and exhaustion around a traced service lose no committed
 * span.
 *
 * The traced process is the demo db service (thread-per-connection, one SERVER span per request);
 * load comes from threads in this binary over keep-alive connections (this binary is never traced).
 *   - the traced process killed with SIGKILL under load: what it committed is exported;
 *   - ldtraced killed with SIGKILL under load and restarted: no span lost, none exported twice;
 *   - no sidecar: the app keeps its speed, the ring fills, drops are counted and reported;
 *   - the output file's disk full: ldtraced says so, keeps the spans, recovers when space returns.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fault_util.h"

#define PATH_Q "/query?order=%d"

/* A span is pushed right after the write that completes its response returns; the client may read
 * that response first. So per connection at most one answered request may have no span yet when the
 * process dies (and one span may exist for a request whose answer the client never read). */
#define NCONN 4

Test(faults, traced_process_sigkill_keeps_committed_spans, .timeout = 60)
{
    char dir[ITEST_PATH_MAX], out[ITEST_PATH_MAX + 16];
    cr_assert(itest_mkdtemp(dir) == 0);
    snprintf(out, sizeof(out), "%s/spans.json", dir);
    int port;
    pid_t db = fu_service("db", dir, &port, NULL, NULL);
    struct fu_load l = {.port = port, .path_fmt = PATH_Q, .nconn = NCONN};
    fu_load_start(&l);
    double t0 = fu_now_ms();
    while (atomic_load(&l.done) < 2000 && fu_now_ms() - t0 < 8000)
        fu_sleep_ms(5);
    cr_assert(kill(db, SIGKILL) == 0);
    long seen = atomic_load(&l.done);
    fu_load_join(&l);
    long done = atomic_load(&l.done);
    cr_assert_eq(itest_wait(db, 5000), 128 + SIGKILL);
    cr_assert_gt(seen, 50, "only %ld requests answered before the kill", seen);
    cr_assert_eq(itest_drain(dir, out), 0, "ldtraced --once failed on a killed producer's segment");
    size_t dups, bad;
    const char *files[] = {out, NULL};
    size_t spans = fu_server_spans(files, "db", &dups, &bad);
    cr_expect_eq(dups, 0, "%zu span ids exported twice", dups);
    cr_expect_eq(bad, 0, "%zu output lines are not JSON", bad);
    cr_expect_geq((long)spans, seen - NCONN,
                  "client saw %ld answers (%ld at the end) before SIGKILL, only %zu spans exported",
                  seen, done, spans);
    cr_expect_leq((long)spans, done + NCONN, "%zu spans for %ld answered requests", spans, done);
    itest_rmtree(dir);
}

/* Kill the sidecar `kills` times mid-stream (every `every` answered requests), restarting it each
 * time on the same output file, as a supervisor would. pace_us 0 is full speed: the rings may then
 * fill while a sidecar is down or behind, and the producers count what they drop. Checks that the
 * file holds every span once: exported + dropped == answered, no duplicate, no torn line. */
static void sidecar_kills(int pace_us, int kills, long every)
{
    char dir[ITEST_PATH_MAX], out[ITEST_PATH_MAX + 16], err[ITEST_PATH_MAX + 16];
    cr_assert(itest_mkdtemp(dir) == 0);
    snprintf(out, sizeof(out), "%s/spans.json", dir);
    snprintf(err, sizeof(err), "%s/ldtraced.err", dir);
    int port;
    pid_t db = fu_service("db", dir, &port, NULL, NULL);
    pid_t sc = fu_sidecar(dir, out, err);
    struct fu_load l = {.port = port, .path_fmt = PATH_Q, .nconn = NCONN, .pace_us = pace_us};
    fu_load_start(&l);
    for (int round = 0; round < kills; round++) {
        double t0 = fu_now_ms();
        long at = atomic_load(&l.done);
        while (atomic_load(&l.done) < at + every && fu_now_ms() - t0 < 8000)
            fu_sleep_ms(1);
        cr_assert(kill(sc, SIGKILL) == 0);
        cr_assert_eq(itest_wait(sc, 5000), 128 + SIGKILL);
        fu_sleep_ms(20);
        sc = fu_sidecar(dir, out, err); /* truncates err: the last one's words remain */
    }
    fu_sleep_ms(200);
    fu_load_join(&l);
    long done = atomic_load(&l.done);
    cr_assert_eq(itest_stop(db), 0, "db did not exit cleanly on SIGTERM");
    fu_sleep_ms(300);
    cr_assert_eq(itest_stop(sc), 0, "ldtraced did not exit 0 on SIGTERM");
    size_t dups, bad, len;
    const char *files[] = {out, NULL};
    size_t spans = fu_server_spans(files, "db", &dups, &bad);
    char *said = itest_slurp(err, &len);
    const char *d = said ? strstr(said, "dropped_by_producers=") : NULL;
    long dropped = d ? strtol(d + strlen("dropped_by_producers="), NULL, 10) : 0;
    cr_expect_eq(bad, 0,
                 "%zu lines of the output are not JSON (a line torn by the kill, and the "
                 "restarted sidecar appending to it)",
                 bad);
    cr_expect_eq(dups, 0, "%zu span ids exported twice across the sidecar restarts", dups);
    if (pace_us)
        cr_expect_eq(dropped, 0, "paced load, yet the producers dropped %ld spans", dropped);
    cr_expect_eq((long)spans + dropped, done,
                 "%ld requests answered, %zu spans exported + %ld dropped; ldtraced said:\n%s",
                 done, spans, dropped, said ? said : "");
    free(said);
    itest_rmtree(dir);
}

/* Paced (4 x 1000 requests/s at most) so that the rings (4096 slots a thread) never fill while the
 * sidecar is down for a moment: what goes missing here was committed. */
Test(faults, sidecar_sigkill_and_restart_loses_nothing_duplicates_nothing, .timeout = 90)
{
    sidecar_kills(1000, 8, 250);
}

/* Full speed (~40k requests/s): the sidecar is busy writing when it dies. */
Test(faults, sidecar_sigkill_at_full_speed_every_span_exported_or_counted, .timeout = 90)
{
    sidecar_kills(0, 12, 2000);
}

/* Time n requests over NCONN connections to a db started with env (NULL: untraced). */
static double timed_load(const char *dir, struct itest_env *env, long n, pid_t *pid_out)
{
    int port;
    pid_t db = fu_service("db", dir, &port, NULL, env);
    struct fu_load l = {.port = port, .path_fmt = PATH_Q, .nconn = NCONN, .max = n};
    double t0 = fu_now_ms();
    fu_load_start(&l);
    for (int i = 0; i < l.nconn; i++)
        pthread_join(l.th[i], NULL);
    double ms = fu_now_ms() - t0;
    cr_assert_eq(atomic_load(&l.done), n, "%ld of %ld answered", atomic_load(&l.done), n);
    *pid_out = db;
    return ms;
}

Test(faults, no_sidecar_ring_fills_app_keeps_speed_drops_reported, .timeout = 90)
{
    char dir[ITEST_PATH_MAX], out[ITEST_PATH_MAX + 16], err[ITEST_PATH_MAX + 16];
    cr_assert(itest_mkdtemp(dir) == 0);
    snprintf(out, sizeof(out), "%s/spans.json", dir);
    snprintf(err, sizeof(err), "%s/ldtraced.err", dir);
    const long n = 10000;
    pid_t db;
    struct itest_env env;
    itest_env_init(&env);
    if (fu_asan())
        itest_env_set(&env, "ASAN_OPTIONS", "detect_leaks=0:verify_asan_link_order=0");
    double plain = timed_load(NULL, &env, n, &db);
    itest_stop(db);
    /* Small rings so that they fill: 4 rings of 64 slots hold at most 256 spans. */
    itest_env_trace(&env, dir, "db");
    itest_env_set(&env, "LDTRACE_RINGS", "4");
    itest_env_set(&env, "LDTRACE_RING_SLOTS", "64");
    double traced = timed_load(dir, &env, n, &db);
    cr_assert_eq(itest_stop(db), 0);
    itest_env_free(&env);
    fprintf(stderr, "faults: %ld requests untraced %.0f ms, traced with full rings %.0f ms\n", n,
            plain, traced);
    cr_expect_leq(traced, 3 * plain + 1000, "traced with no sidecar: %.0f ms vs %.0f ms untraced",
                  traced, plain);
    struct itest_env sc;
    itest_env_init(&sc);
    char *argv[] = {
        itest_build("src/sidecar/ldtraced"), "--dir", dir, "--once", "--out", out, NULL};
    pid_t p = itest_spawn_io(&sc, argv, NULL, err);
    itest_env_free(&sc);
    cr_assert_eq(itest_wait(p, 20000), 0);
    size_t dups, bad;
    const char *files[] = {out, NULL};
    size_t spans = fu_server_spans(files, "db", &dups, &bad);
    size_t len;
    char *text = itest_slurp(err, &len);
    cr_assert_not_null(text);
    const char *d = strstr(text, "dropped_by_producers=");
    cr_assert_not_null(d, "ldtraced reports no producer drops:\n%s", text);
    long dropped = strtol(d + strlen("dropped_by_producers="), NULL, 10);
    cr_expect_gt(dropped, 0, "rings of 64 slots took %zu spans of %ld and dropped none", spans, n);
    cr_expect_leq(spans, 4 * 64);
    cr_expect_eq((long)spans + dropped, n, "%zu exported + %ld dropped != %ld requests", spans,
                 dropped, n);
    free(text);
    itest_rmtree(dir);
}

/* Fill the file system at mnt until a write fails; returns the filler's path in out. */
static void fill_disk(const char *mnt, char *out, size_t cap)
{
    snprintf(out, cap, "%s/filler", mnt);
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert(fd >= 0);
    static char block[4096];
    while (write(fd, block, sizeof(block)) > 0)
        ;
    while (write(fd, block, 1) > 0)
        ;
    cr_assert_eq(errno, ENOSPC);
    close(fd);
}

Test(faults, disk_full_is_reported_spans_kept_and_recovered, .timeout = 90)
{
    char dir[ITEST_PATH_MAX], mnt[ITEST_PATH_MAX + 16], out[ITEST_PATH_MAX + 32];
    char err[ITEST_PATH_MAX + 16], filler[ITEST_PATH_MAX + 32];
    cr_assert(itest_mkdtemp(dir) == 0);
    snprintf(mnt, sizeof(mnt), "%s/disk", dir);
    snprintf(out, sizeof(out), "%s/spans.json", mnt);
    snprintf(err, sizeof(err), "%s/ldtraced.err", dir);
    cr_assert(mkdir(mnt, 0700) == 0);
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=1m") != 0) {
        itest_rmtree(dir);
        cr_skip_test("cannot mount a small tmpfs here (%s): needs root", strerror(errno));
    }
    /* 1 MiB: room for the 300 spans (~1.1 kB each) once the filler is gone. */
    fill_disk(mnt, filler, sizeof(filler));
    int port;
    pid_t db = fu_service("db", dir, &port, NULL, NULL);
    pid_t sc = fu_sidecar(dir, out, err);
    struct fu_load l = {.port = port, .path_fmt = PATH_Q, .nconn = NCONN, .max = 300};
    fu_load_start(&l);
    for (int i = 0; i < l.nconn; i++)
        pthread_join(l.th[i], NULL);
    cr_assert_eq(atomic_load(&l.done), 300);
    fu_sleep_ms(1000);
    size_t said = fu_count_in_file(err, "No space left on device");
    cr_expect_geq(said, 1, "ldtraced did not say the disk is full");
    cr_expect_leq(said, 3, "ldtraced repeated the disk-full error %zu times", said);
    cr_assert(unlink(filler) == 0);
    /* Space is back: every span must arrive, once, while both keep running. */
    size_t spans = 0, dups = 0, bad = 0;
    const char *files[] = {out, NULL};
    for (double t0 = fu_now_ms(); fu_now_ms() - t0 < 6000; fu_sleep_ms(100))
        if ((spans = fu_server_spans(files, "db", &dups, &bad)) >= 300)
            break;
    size_t elen;
    char *text = itest_slurp(err, &elen);
    cr_expect_eq(spans, 300,
                 "%zu of 300 spans written after space returned (%zu lines not JSON, %zu "
                 "duplicates); ldtraced said:\n%s",
                 spans, bad, dups, text ? text : "");
    free(text);
    cr_expect_eq(dups, 0);
    itest_stop(db);
    itest_stop(sc);
    umount2(mnt, MNT_DETACH);
    rmdir(mnt);
    itest_rmtree(dir);
}

Test(faults, unwritable_output_is_refused_clearly_and_spans_stay_in_the_rings, .timeout = 60)
{
    char dir[ITEST_PATH_MAX], bad_out[ITEST_PATH_MAX + 32], out[ITEST_PATH_MAX + 16];
    char err[ITEST_PATH_MAX + 16];
    cr_assert(itest_mkdtemp(dir) == 0);
    snprintf(bad_out, sizeof(bad_out), "%s/no-such-dir/spans.json", dir);
    snprintf(out, sizeof(out), "%s/spans.json", dir);
    snprintf(err, sizeof(err), "%s/ldtraced.err", dir);
    int port;
    pid_t db = fu_service("db", dir, &port, NULL, NULL);
    struct fu_load l = {.port = port, .path_fmt = PATH_Q, .nconn = NCONN, .max = 200};
    fu_load_start(&l);
    for (int i = 0; i < l.nconn; i++)
        pthread_join(l.th[i], NULL);
    cr_assert_eq(itest_stop(db), 0);
    pid_t sc = fu_sidecar(dir, bad_out, err);
    cr_expect_eq(itest_wait(sc, 10000), 1, "ldtraced with an unwritable output must exit 1");
    size_t len;
    char *said = itest_slurp(err, &len);
    cr_assert_not_null(said);
    cr_expect(strstr(said, bad_out) && strstr(said, "No such file or directory"),
              "the error names neither the file nor the reason:\n%s", said);
    free(said);
    cr_assert_eq(itest_drain(dir, out), 0);
    size_t dups, bad;
    const char *files[] = {out, NULL};
    size_t spans = fu_server_spans(files, "db", &dups, &bad);
    cr_expect_eq(spans, 200, "%zu of 200 spans left in the rings for the next sidecar", spans);
    cr_expect_eq(dups + bad, 0);
    itest_rmtree(dir);
}

Test(faults, drops_reported_as_soon_as_ldtraced_starts, .timeout = 60)
{
    char dir[ITEST_PATH_MAX], out[ITEST_PATH_MAX + 16], err[ITEST_PATH_MAX + 16];
    cr_assert(itest_mkdtemp(dir) == 0);
    snprintf(out, sizeof(out), "%s/spans.json", dir);
    snprintf(err, sizeof(err), "%s/ldtraced.err", dir);
    struct itest_env env;
    itest_env_init(&env);
    itest_env_trace(&env, dir, "db");
    itest_env_set(&env, "LDTRACE_RINGS", "4");
    itest_env_set(&env, "LDTRACE_RING_SLOTS", "64");
    pid_t db;
    timed_load(dir, &env, 1000, &db);
    itest_env_free(&env);
    /* The app keeps running; a sidecar started now must say, without being asked (no --stats, no
     * signal, no exit), that spans were dropped while none was running. */
    pid_t sc = fu_sidecar(dir, out, err);
    fu_sleep_ms(fu_asan() ? 2000 : 1000);
    size_t len;
    char *said = itest_slurp(err, &len);
    cr_expect(said && strstr(said, "drop"), "ldtraced said nothing of the drops on start:\n%s",
              said ? said : "");
    free(said);
    cr_expect_eq(itest_stop(db), 0);
    cr_expect_eq(itest_stop(sc), 0);
    itest_rmtree(dir);
}
