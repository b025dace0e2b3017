/* main.c - ldtraced, the sidecar: parse the command line, open the exporter, run the drain loop
 * until SIGTERM/SIGINT (or once with --once), report statistics; also the --bench-encode
 * measurement. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"
#include "sidecar/sidecar.h"

#define DEFAULT_OUT "./ldtrace.otlp.jsonl"
#define STATS_EVERY_NS 10000000000ull
#define FINAL_ONCE_MS 15000 /* --once: how long a failing exporter is retried */
#define FINAL_STOP_MS 5000  /* SIGTERM: the same, shorter */

struct opts {
    char dir[512];
    const char *out;
    const char *otlp;
    struct ldt__http_opts http; /* --otlp-ca, --spool-dir, --spool-max-mb, OTEL_EXPORTER_OTLP_* */
    char env_url[512];          /* the traces URL from the environment, when no --out/--otlp */
    int once;
    int stats;
    unsigned poll_ms;
    unsigned long long bench;
    long idle_s; /* --exit-when-idle SECONDS, -1 when not given */
};

static volatile sig_atomic_t stop_flag;
static volatile sig_atomic_t stats_flag;

static void on_stop(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void on_usr1(int sig)
{
    (void)sig;
    stats_flag = 1;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: ldtraced [--dir DIR] [--out FILE | --otlp URL] [--once] [--stats] "
               "[--poll-ms N] [--exit-when-idle SECONDS]\n"
               "                [--spool-dir DIR] [--spool-max-mb N] [--otlp-ca FILE]\n"
               "       ldtraced --bench-encode N [--out FILE]\n"
               "Drains the ldtrace span rings in DIR (default $LDTRACE_DIR, else "
               "/dev/shm/ldtrace-<uid>)\n"
               "into OTLP JSON lines in FILE (default " DEFAULT_OUT "), or to an OTLP/HTTP\n"
               "collector: --otlp URL, else OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or\n"
               "OTEL_EXPORTER_OTLP_ENDPOINT when set (and no --out). --spool-dir: queue on disk\n"
               "while the collector is down (cap --spool-max-mb, default 256). --otlp-ca: a CA\n"
               "file trusted besides the system store.\n"
               "--once: drain what is committed and exit. --stats: print counters every 10 s.\n"
               "--poll-ms N: shortest pause between passes while rings are busy (default 1);\n"
               "quiet rings are polled every 20 ms (or N, if longer).\n"
               "--exit-when-idle S: exit once no segment is left and no `ldtrace run` holds\n"
               "DIR/.ldtrace-run.lock, for S seconds.\n"
               "SIGTERM/SIGINT: drain, flush and exit 0. SIGUSR1: print counters to stderr.\n");
}

static int parse_uint(const char *s, unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-')
        return -EINVAL;
    *out = v;
    return 0;
}

/* --poll-ms N (at most a minute) or --bench-encode N. Returns 0, or -1 after printing the error. */
static int parse_num(int c, const char *arg, struct opts *o)
{
    unsigned long long v;
    static const char *const names[] = {['p'] = "poll-ms",
                                        ['b'] = "bench-encode",
                                        ['i'] = "exit-when-idle",
                                        ['m'] = "spool-max-mb"};
    if (parse_uint(arg, &v) < 0 || (c != 'b' && v > 86400000) || (c == 'm' && v == 0)) {
        fprintf(stderr, "ldtraced: --%s %s: Invalid argument\n", names[c], arg);
        return -1;
    }
    if (c == 'p')
        o->poll_ms = (unsigned)v;
    else if (c == 'i')
        o->idle_s = (long)v;
    else if (c == 'm')
        o->http.spool_max = v << 20;
    else
        o->bench = v;
    return 0;
}

/* What getopt leaves to check: stray arguments, exclusive outputs, the default directory. */
static int finish_args(int argc, char **argv, struct opts *o)
{
    if (optind < argc) {
        fprintf(stderr, "ldtraced: %s: unexpected argument\n", argv[optind]);
        return -1;
    }
    if (o->out && o->otlp) {
        fprintf(stderr, "ldtraced: --out and --otlp are exclusive\n");
        return -1;
    }
    if (!o->dir[0]) {
        const char *env = getenv("LDTRACE_DIR");
        if (env && env[0])
            snprintf(o->dir, sizeof(o->dir), "%s", env);
        else
            ldt_config_default_dir(o->dir, sizeof(o->dir));
    }
    return 0;
}

/* Returns 0, 1 for --help (exit 0), or -1 after printing the error (exit 1). */
static int parse_args(int argc, char **argv, struct opts *o)
{
    static const struct option longopts[] = {{"dir", required_argument, 0, 'd'},
                                             {"out", required_argument, 0, 'o'},
                                             {"otlp", required_argument, 0, 'u'},
                                             {"once", no_argument, 0, '1'},
                                             {"stats", no_argument, 0, 's'},
                                             {"poll-ms", required_argument, 0, 'p'},
                                             {"bench-encode", required_argument, 0, 'b'},
                                             {"help", no_argument, 0, 'h'},
                                             {"exit-when-idle", required_argument, 0, 'i'},
                                             {"spool-dir", required_argument, 0, 'S'},
                                             {"spool-max-mb", required_argument, 0, 'm'},
                                             {"otlp-ca", required_argument, 0, 'C'},
                                             {0, 0, 0, 0}};
    int c;
    o->poll_ms = 1;
    o->idle_s = -1;
    opterr = 0; /* one-line errors of our own */
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (c == 'd')
            snprintf(o->dir, sizeof(o->dir), "%s", optarg);
        else if (c == 'o' || c == 'u')
            *(c == 'o' ? &o->out : &o->otlp) = optarg;
        else if (c == '1' || c == 's')
            *(c == '1' ? &o->once : &o->stats) = 1;
        else if (c == 'S' || c == 'C')
            *(c == 'S' ? &o->http.spool_dir : &o->http.ca_file) = optarg;
        else if ((c == 'p' || c == 'b' || c == 'i' || c == 'm') && parse_num(c, optarg, o) < 0)
            return -1;
        else if (c == 'h' || c == '?')
            break;
    }
    if (c == 'h') {
        usage(stdout);
        return 1;
    }
    if (c == '?') {
        fprintf(stderr, "ldtraced: %s: unknown option or missing argument (see --help)\n",
                argv[optind - 1]);
        return -1;
    }
    return finish_args(argc, argv, o);
}

static void print_stats(struct ldt__drain *d, const struct ldt__exporter *e)
{
    struct ldt__stats st;
    struct ldt__http_stats hs;
    ldt__drain_stats(d, &st);
    ldt__export_http_stats(e, &hs);
    fprintf(stderr,
            "ldtraced: spans=%llu dropped_by_producers=%llu bad_records=%llu bad_segments=%llu "
            "segments=%llu write_errors=%llu",
            (unsigned long long)st.spans, (unsigned long long)st.dropped,
            (unsigned long long)st.bad_records, (unsigned long long)st.bad_segments,
            (unsigned long long)st.segments, (unsigned long long)st.write_errors);
    if (st.orphan_parts)
        fprintf(stderr, " orphan_stack_parts=%llu", (unsigned long long)st.orphan_parts);
    if (e->ops && strcmp(e->ops->name, "otlp-http") == 0)
        fprintf(stderr,
                " requests=%llu retries=%llu rejected_spans=%llu spooled=%llu spool_lines=%llu "
                "spool_dropped_spans=%llu",
                (unsigned long long)hs.requests, (unsigned long long)hs.retries,
                (unsigned long long)hs.rejected_spans, (unsigned long long)hs.spooled,
                (unsigned long long)hs.spool_lines, (unsigned long long)hs.spool_dropped);
    fputc('\n', stderr);
}

static void set_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop; /* no SA_RESTART: let nanosleep return early */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u),
                          .tv_nsec = (long)(ns % 1000000000u)};
    nanosleep(&ts, NULL);
}

static void sleep_ms(unsigned ms)
{
    sleep_ns((uint64_t)ms * 1000000u);
}

/* Report a drain error once per distinct errno, not once per pass, as "ldtraced: <call> <obj>:
 * ...". */
static void report(struct ldt__drain *d, int rc, int *last)
{
    if (rc >= 0 && !ldt__drain_failing(d))
        *last = 0; /* working again: a new failure is news */
    if (rc >= 0 || rc == *last)
        return;
    *last = rc;
    const char *what = ldt__drain_errwhat(d);
    fprintf(stderr, "ldtraced: %s: %s\n", rc == -ENOMEM || !what[0] ? "malloc" : what,
            strerror(-rc));
}

/* --exit-when-idle: ldtrace run holds DIR/.ldtrace-run.lock shared while its command runs. We are
 * idle when no segment is open and that lock can be taken exclusively; after idle_s seconds of that
 * we keep the lock (so a new run waits for us to leave and then starts a new sidecar) and exit. */
struct idle {
    long idle_s;
    uint64_t since; /* monotonic ns when the idle stretch began, 0 when busy */
    uint64_t next;  /* next check (every 100 ms: the lock costs two syscalls) */
    int lockfd;
};

static int runs_active(const char *dir, struct idle *id)
{
    if (id->lockfd < 0) {
        char path[600];
        snprintf(path, sizeof(path), "%s/.ldtrace-run.lock", dir);
        id->lockfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (id->lockfd < 0)
            return 0; /* no directory, no lock file: no run can be waiting on us */
    }
    return flock(id->lockfd, LOCK_EX | LOCK_NB) < 0;
}

/* Returns 1 when it is time to exit (the run lock is then held). */
static int idle_expired(const char *dir, struct ldt__drain *d, struct idle *id)
{
    uint64_t now = ldt_clock_mono_ns();
    if (id->idle_s < 0 || now < id->next)
        return 0;
    id->next = now + 100000000u;
    if (ldt__drain_open_segments(d) > 0 || runs_active(dir, id)) {
        id->since = 0;
        return 0;
    }
    if (id->since == 0)
        id->since = now;
    if (now - id->since >= (uint64_t)id->idle_s * 1000000000u)
        return 1;
    if (id->lockfd >= 0)
        flock(id->lockfd, LOCK_UN);
    return 0;
}

/* The directory may not exist yet (no producer has started), but one we cannot read is an error. */
static int check_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d && errno != ENOENT) {
        fprintf(stderr, "ldtraced: opendir %s: %s\n", dir, strerror(errno));
        return -1;
    }
    if (d)
        closedir(d);
    return 0;
}

static int spool_waiting(const struct ldt__exporter *e)
{
    struct ldt__http_stats hs;
    ldt__export_http_stats(e, &hs);
    return hs.spool_lines > 0;
}

/* The last drain (--once, SIGTERM): while the exporter fails (or, for --once, the spool still holds
 * lines), try again when the backoff allows, for up to 15 s (--once) or 5 s. What is still
 * undelivered then stays in the rings (or the spool) for the next ldtraced. */
static int final_drain(struct ldt__drain *d, struct ldt__exporter *e, int once, int *last)
{
    unsigned ms = once ? FINAL_ONCE_MS : FINAL_STOP_MS;
    uint64_t end = ldt_clock_mono_ns() + (uint64_t)ms * 1000000u;
    int rc = ldt__drain_all(d);
    report(d, rc, last);
    /* At SIGTERM the spool can wait for the next ldtraced; --once means "deliver it now". */
    while ((ldt__drain_failing(d) || (once && spool_waiting(e))) && ldt_clock_mono_ns() < end) {
        sleep_ms(50);
        if (ldt_clock_mono_ns() < e->retry_at)
            continue;
        rc = ldt__drain_all(d);
        report(d, rc, last);
    }
    return ldt__drain_failing(d) ? (rc < 0 ? rc : -EIO) : 0;
}

static int run(const struct opts *o, struct ldt__exporter *e)
{
    if (check_dir(o->dir) < 0)
        return 1;
    struct ldt__drain_opts dopts = {.dir = o->dir, .exp = e, .poll_ms = o->poll_ms};
    struct ldt__drain *d = ldt__drain_new(&dopts);
    if (!d) {
        fprintf(stderr, "ldtraced: malloc: %s\n", strerror(ENOMEM));
        return 1;
    }
    int last = 0;
    struct idle id = {.idle_s = o->idle_s, .lockfd = -1};
    uint64_t next_stats = ldt_clock_mono_ns() + STATS_EVERY_NS;
    while (!o->once && !stop_flag && !idle_expired(o->dir, d, &id)) {
        int rc = ldt__drain_pass(d);
        report(d, rc, &last);
        if (stats_flag || (o->stats && ldt_clock_mono_ns() >= next_stats)) {
            stats_flag = 0;
            next_stats = ldt_clock_mono_ns() + STATS_EVERY_NS;
            print_stats(d, e);
        }
        /* Adaptive: every poll_ms while rings are busy, up to 20 ms while they are quiet. */
        uint64_t ns = rc < 0 ? (uint64_t)o->poll_ms * 1000000u : ldt__drain_sleep_ns(d);
        if (ns)
            sleep_ns(ns);
    }
    int rc = final_drain(d, e, o->once, &last);
    print_stats(d, e);
    ldt__drain_free(d);
    return o->once && rc < 0 ? 1 : 0;
}

/* --otlp URL, else the environment's endpoint unless --out was given. Returns 0 or -1 (printed). */
static int pick_otlp(struct opts *o)
{
    const char *bad = NULL;
    if (!o->otlp && !o->out && !o->bench) {
        int rc = ldt__otlp_env_url(o->env_url, sizeof(o->env_url));
        if (rc < 0) {
            fprintf(stderr, "ldtraced: OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT: %s\n", strerror(-rc));
            return -1;
        }
        if (rc == 0)
            o->otlp = o->env_url;
    }
    if (!o->otlp)
        return 0;
    if (ldt__http_opts_env(&o->http, &bad) < 0) {
        fprintf(stderr, "ldtraced: %s=%s: Invalid argument\n", bad, getenv(bad));
        return -1;
    }
    o->http.url = o->otlp;
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o = {0};
    int rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc > 0 ? 0 : 1;
    if (pick_otlp(&o) < 0)
        return 1;
    struct ldt__exporter e;
    const char *target = o.otlp ? o.otlp : o.out ? o.out : o.bench ? "/dev/null" : DEFAULT_OUT;
    rc = o.otlp ? ldt__export_http_open(&e, &o.http) : ldt__export_file_open(&e, target);
    if (rc < 0) {
        fprintf(stderr, "ldtraced: %s %s: %s\n", o.otlp ? "--otlp" : "open", target, strerror(-rc));
        return 1;
    }
    set_signals();
    int status = o.bench ? ldt__bench_encode(o.bench, &e) : run(&o, &e);
    e.ops->close(&e);
    return status;
}
