/* cmd_run.c - `ldtrace run` / `ldtrace stop`: a command under the shim, one sidecar per directory.
 *
 * Files in the segment directory (the locks are flock locks, so they vanish with their holder):
 *
 * - .ldtraced.lock: held exclusively by the running ldtraced for its whole life. ldtrace run takes
 *   it in the child it forks, before exec'ing ldtraced, so the lock stays with ldtraced; when it is
 *   busy, a sidecar is already running for the directory.
 * - .ldtrace-run.lock: held shared by every `ldtrace run` while its command runs. A sidecar started
 *   with --exit-when-idle takes it exclusively (non-blocking) to learn that no run is left, and
 *   keeps it until it has exited, so a new run waits for it and then starts a new sidecar instead
 *   of handing its spans to one that is leaving.
 * - .ldtraced.pid, .ldtraced.out: the sidecar's pid and where its spans go (written before exec).
 */
#include "cli.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef LDT_LIBDIR
#define LDT_LIBDIR "lib"
#endif

#if defined(__x86_64__)
#define MULTIARCH "x86_64-linux-gnu"
#elif defined(__aarch64__)
#define MULTIARCH "aarch64-linux-gnu"
#elif defined(__i386__)
#define MULTIARCH "i386-linux-gnu"
#else
#define MULTIARCH "unknown"
#endif

#define SHIM_NAME "libldtrace.so"
#define SIDECAR_NAME "ldtraced"
#define DEFAULT_IDLE "2" /* seconds a started sidecar lingers after the last traced process */
#define STOP_TIMEOUT_MS 30000
#define DRAIN_WAIT_MS 5000 /* longest ldtrace run waits for its spans to reach the output */

/* ---- locating the other deliverables ---- */

/* Copy the directory part of path into out (no trailing slash). */
static int dir_of(const char *path, char *out, size_t cap)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;
    if (n + 1 > cap)
        return -ENAMETOOLONG;
    memcpy(out, path, n);
    out[n] = '\0';
    return 0;
}

/* Join a and b into out and succeed only when the result exists. */
static int try_path(char *out, size_t cap, const char *a, const char *b)
{
    int n = snprintf(out, cap, "%s/%s", a, b);
    if (n < 0 || (size_t)n >= cap)
        return -ENAMETOOLONG;
    return access(out, F_OK) == 0 ? 0 : -ENOENT;
}

/* The build tree's <builddir>/src when exe is <builddir>/src/cli/ldtrace, else "". */
static int build_src_dir(const char *exe, char *out, size_t cap)
{
    char bin[PATH_MAX];
    int rc = dir_of(exe, bin, sizeof(bin));
    size_t n = strlen(bin);
    if (rc < 0 || n < 8 || strcmp(bin + n - 8, "/src/cli") != 0)
        return -ENOENT;
    return dir_of(bin, out, cap);
}

int ldt__find_shim(const char *exe, char *out, size_t cap)
{
    char d[PATH_MAX], prefix[PATH_MAX];
    if (build_src_dir(exe, d, sizeof(d)) == 0)
        return try_path(out, cap, d, "shim/" SHIM_NAME);
    if (dir_of(exe, d, sizeof(d)) < 0 || dir_of(d, prefix, sizeof(prefix)) < 0)
        return -ENAMETOOLONG;
    static const char *const libdirs[] = {LDT_LIBDIR, ("lib/" MULTIARCH), "lib64", "lib"};
    for (size_t i = 0; i < sizeof(libdirs) / sizeof(libdirs[0]); i++) {
        char rel[PATH_MAX];
        snprintf(rel, sizeof(rel), "%s/%s", libdirs[i], SHIM_NAME);
        if (libdirs[i][0] == '/' ? try_path(out, cap, libdirs[i], SHIM_NAME) == 0
                                 : try_path(out, cap, prefix, rel) == 0)
            return 0;
    }
    return -ENOENT;
}

int ldt__find_sidecar(const char *exe, char *out, size_t cap)
{
    char d[PATH_MAX];
    if (build_src_dir(exe, d, sizeof(d)) == 0)
        return try_path(out, cap, d, "sidecar/" SIDECAR_NAME);
    if (dir_of(exe, d, sizeof(d)) < 0)
        return -ENAMETOOLONG;
    return try_path(out, cap, d, SIDECAR_NAME);
}

/* ---- environment ---- */

/* True when the list entry [p, p+n) names the same file as shim. */
static int same_lib(const char *p, size_t n, const char *shim)
{
    return strlen(shim) == n && memcmp(p, shim, n) == 0;
}

/* A sanitizer runtime must stay the first object in the link map, so it keeps its place in front.
 */
static int is_sanitizer(const char *p, size_t n)
{
    const char *base = p;
    for (size_t i = 0; i < n; i++)
        if (p[i] == '/')
            base = p + i + 1;
    size_t bn = n - (size_t)(base - p);
    return (bn >= 7 && (memcmp(base, "libasan", 7) == 0 || memcmp(base, "libtsan", 7) == 0)) ||
           (bn >= 12 && memcmp(base, "libclang_rt.", 12) == 0);
}

/* Append the entries of `list` that are (sanitizers != 0) or are not (0) sanitizer runtimes. */
static int append_entries(char *out, size_t cap, size_t *len, const char *list, const char *shim,
                          int sanitizers)
{
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ": ");
        if (n && !same_lib(p, n, shim) && is_sanitizer(p, n) == sanitizers) {
            if (*len + 1 + n + 1 > cap)
                return -ENAMETOOLONG;
            if (*len)
                out[(*len)++] = ':';
            memcpy(out + *len, p, n);
            *len += n;
            out[*len] = '\0';
        }
        p += n + (p[n] != '\0');
    }
    return 0;
}

int ldt__run_preload_value(const char *shim, const char *existing, char *out, size_t cap)
{
    size_t len = 0, n = strlen(shim);
    const char *list = existing ? existing : "";
    if (cap == 0)
        return -ENAMETOOLONG;
    out[0] = '\0';
    /* ld.so separates LD_PRELOAD entries by spaces or colons; the others keep their order. */
    if (append_entries(out, cap, &len, list, shim, 1) < 0 || len + 1 + n + 1 > cap)
        return -ENAMETOOLONG;
    if (len)
        out[len++] = ':';
    memcpy(out + len, shim, n + 1);
    len += n;
    if (append_entries(out, cap, &len, list, shim, 0) < 0)
        return -ENAMETOOLONG;
    return (int)len;
}

int ldt__run_exit_code(int wstatus)
{
    if (WIFEXITED(wstatus))
        return WEXITSTATUS(wstatus);
    if (WIFSIGNALED(wstatus))
        return 128 + WTERMSIG(wstatus);
    return 1;
}

/* ---- options ---- */

struct run_args {
    const char *service, *out, *otlp, *dir, *idle;
    char **cmd;
    char dirbuf[PATH_MAX];
    char outbuf[PATH_MAX];
};

static void run_usage(FILE *f)
{
    fprintf(f, "usage: ldtrace run [--service NAME] [--out FILE | --otlp URL] [--dir DIR] "
               "[--idle SECONDS] -- CMD [ARGS...]\n"
               "       ldtrace stop [--dir DIR]\n");
}

/* The segment directory: --dir, else $LDTRACE_DIR, else the shim's default. */
static void pick_dir(struct run_args *a, const char *opt)
{
    const char *env = getenv("LDTRACE_DIR");
    if (opt && *opt)
        snprintf(a->dirbuf, sizeof(a->dirbuf), "%s", opt);
    else if (env && *env)
        snprintf(a->dirbuf, sizeof(a->dirbuf), "%s", env);
    else
        snprintf(a->dirbuf, sizeof(a->dirbuf), "/dev/shm/ldtrace-%u", (unsigned)getuid());
    a->dir = a->dirbuf;
}

static int run_parse(int argc, char **argv, struct run_args *a)
{
    static const struct option opts[] = {{"service", required_argument, 0, 's'},
                                         {"out", required_argument, 0, 'o'},
                                         {"otlp", required_argument, 0, 'O'},
                                         {"dir", required_argument, 0, 'd'},
                                         {"idle", required_argument, 0, 'i'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *dir = NULL;
    int ch;
    memset(a, 0, sizeof(*a));
    a->idle = DEFAULT_IDLE;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "+s:o:d:h", opts, NULL)) != -1) {
        switch (ch) {
        case 's':
            a->service = optarg;
            break;
        case 'o':
            a->out = optarg;
            break;
        case 'O':
            a->otlp = optarg;
            break;
        case 'd':
            dir = optarg;
            break;
        case 'i':
            a->idle = optarg;
            break;
        case 'h':
            run_usage(stdout);
            exit(0);
        default:
            return -EINVAL;
        }
    }
    pick_dir(a, dir);
    a->cmd = argv + optind;
    return (a->out && a->otlp) ? -EINVAL : 0;
}

/* ---- the sidecar ---- */

/* mkdir DIR 0700 unless it exists; warn when an existing one is not private to us, because the shim
 * and the sidecar only use a 0700 directory owned by the user. */
static int ensure_dir(const char *dir)
{
    struct stat st;
    if (mkdir(dir, 0700) == 0)
        return 0;
    if (errno != EEXIST)
        return -errno;
    if (stat(dir, &st) == 0 && (st.st_uid != getuid() || (st.st_mode & 077)))
        fprintf(stderr,
                "ldtrace: run: %s is not a 0700 directory owned by uid %u: the shim may "
                "refuse it (chmod 700 %s)\n",
                dir, (unsigned)getuid(), dir);
    return 0;
}

static int open_in(const char *dir, const char *name, int flags)
{
    char p[PATH_MAX];
    if ((size_t)snprintf(p, sizeof(p), "%s/%s", dir, name) >= sizeof(p))
        return -ENAMETOOLONG;
    int fd = open(p, flags, 0600);
    return fd < 0 ? -errno : fd;
}

/* In the grandchild: report `code` (0 = about to exec) to the parent over the pipe. */
static void report(int fd, int code)
{
    ssize_t n = write(fd, &code, sizeof(code));
    (void)n;
}

/* The future sidecar: take the lock, record the pid, detach stdio, exec ldtraced. Never returns. */
static void sidecar_child(const char *exe, char **argv, const char *dir, int pipe_w)
{
    int lock =
        open_in(dir, ".ldtraced.lock", O_RDWR | O_CREAT); /* no O_CLOEXEC: ldtraced keeps it */
    if (lock < 0 || flock(lock, LOCK_EX | LOCK_NB) < 0) {
        report(pipe_w, lock < 0 ? lock : (errno == EWOULDBLOCK ? 1 : -errno));
        _exit(0);
    }
    int fd = open_in(dir, ".ldtraced.pid", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC);
    if (fd >= 0) {
        dprintf(fd, "%ld\n", (long)getpid());
        close(fd);
    }
    fd = open_in(dir, ".ldtraced.out", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC);
    if (fd >= 0) {
        dprintf(fd, "%s", argv[4]); /* where its spans go: told to later runs of this directory */
        close(fd);
    }
    int log = open_in(dir, "ldtraced.log", O_WRONLY | O_CREAT | O_APPEND);
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0)
        dup2(null, 0);
    if (log >= 0) {
        dup2(log, 1);
        dup2(log, 2);
    }
    unsetenv("LD_PRELOAD"); /* the sidecar itself is never traced */
    report(pipe_w, 0);
    execv(exe, argv);
    report(pipe_w, -errno);
    _exit(127);
}

/* Fork twice (so the sidecar is nobody's child and outlives us in its own session) and learn from
 * the grandchild whether it became the sidecar. Returns its pid, 0 when one was already running, or
 * a negative errno. */
static pid_t spawn_sidecar(const char *exe, char **argv, const char *dir)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    pid_t child = fork();
    if (child == 0) {
        close(p[0]);
        setsid();
        pid_t g = fork();
        if (g == 0)
            sidecar_child(exe, argv, dir, p[1]);
        _exit(g < 0 ? 1 : 0);
    }
    close(p[1]);
    if (child < 0) {
        close(p[0]);
        return -errno;
    }
    waitpid(child, NULL, 0);
    int codes[2] = {-ECHILD, 0};
    ssize_t n = 0, r;
    /* Until EOF: the pipe closes on a successful exec, after a failed one the error follows. */
    while (n < (ssize_t)sizeof(codes) &&
           ((r = read(p[0], (char *)codes + n, sizeof(codes) - (size_t)n)) > 0 ||
            (r < 0 && errno == EINTR)))
        n += r > 0 ? r : 0;
    close(p[0]);
    if (n < (ssize_t)sizeof(int))
        return -ECHILD;
    if (codes[0] == 1)
        return 0;
    if (codes[0] < 0 || (n == (ssize_t)sizeof(codes) && codes[1] < 0))
        return codes[0] < 0 ? codes[0] : codes[1];
    return -EAGAIN; /* started: the caller reads the pid file */
}

/* Read a small file of the directory into buf (NUL-terminated). Returns its length or -1. */
static ssize_t read_small(const char *dir, const char *name, char *buf, size_t cap)
{
    int fd = open_in(dir, name, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, cap - 1) : -1;
    if (fd >= 0)
        close(fd);
    buf[n > 0 ? n : 0] = '\0';
    return n;
}

static long read_pid(const char *dir)
{
    char buf[32];
    long pid = read_small(dir, ".ldtraced.pid", buf, sizeof(buf)) > 0 ? strtol(buf, NULL, 10) : -1;
    return pid > 0 ? pid : -1;
}

/* Where the spans go, made absolute because the sidecar runs with its own working directory. */
static const char *out_path(struct run_args *a)
{
    const char *out = a->out ? a->out : "ldtrace.otlp.jsonl";
    char cwd[PATH_MAX];
    if (out[0] == '/' || !getcwd(cwd, sizeof(cwd)) ||
        strlen(cwd) + 1 + strlen(out) >= sizeof(a->outbuf))
        return out;
    strcpy(a->outbuf, cwd);
    strcat(a->outbuf, "/");
    strcat(a->outbuf, out);
    return a->outbuf;
}

/* Make sure a sidecar drains DIR, starting one when none runs. Returns 0 or a negative errno. */
static int ensure_sidecar(struct run_args *a, const char *sidecar)
{
    const char *dest = a->otlp ? a->otlp : out_path(a);
    char *argv[] = {(char *)SIDECAR_NAME, "--dir",
                    (char *)a->dir,       a->otlp ? "--otlp" : "--out",
                    (char *)dest,         "--exit-when-idle",
                    (char *)a->idle,      NULL};
    pid_t rc = spawn_sidecar(sidecar, argv, a->dir);
    if (rc == -EAGAIN) {
        fprintf(stderr, "ldtrace: spans from %s -> %s (ldtraced pid %ld)\n", a->dir, dest,
                read_pid(a->dir));
        return 0;
    }
    char cur[PATH_MAX];
    if (rc == 0 && (a->out || a->otlp) &&
        (read_small(a->dir, ".ldtraced.out", cur, sizeof(cur)) <= 0 || strcmp(cur, dest) != 0))
        fprintf(stderr,
                "ldtrace: the sidecar already draining %s (pid %ld) writes to %s; %s is "
                "ignored\n",
                a->dir, read_pid(a->dir), cur[0] ? cur : "its own output", dest);
    return rc < 0 ? (int)rc : 0;
}

/* ---- running the command ---- */

static volatile sig_atomic_t cmd_pid;

/* SIGTERM/SIGHUP to ldtrace run are meant for the command: pass them on. */
static void forward(int sig)
{
    if (cmd_pid > 0)
        kill((pid_t)cmd_pid, sig);
}

/* In the command's child: the environment, then exec. Never returns. */
static void cmd_child(const struct run_args *a, const char *shim, pid_t parent)
{
    char preload[8192];
    if (ldt__run_preload_value(shim, getenv("LD_PRELOAD"), preload, sizeof(preload)) < 0) {
        fprintf(stderr, "ldtrace: run: LD_PRELOAD too long\n");
        _exit(126);
    }
    setenv("LD_PRELOAD", preload, 1);
    setenv("LDTRACE_DIR", a->dir, 1);
    if (a->service)
        setenv("OTEL_SERVICE_NAME", a->service, 1);
    signal(SIGINT, SIG_DFL);
    signal(SIGQUIT, SIG_DFL);
    /* If ldtrace run is killed (even with SIGKILL), the command it wraps goes with it. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
        _exit(128 + SIGTERM);
    execvp(a->cmd[0], a->cmd);
    int err = errno;
    fprintf(stderr, "ldtrace: run: exec %s: %s\n", a->cmd[0], strerror(err));
    _exit(err == ENOENT ? 127 : 126);
}

/* Start the command and wait for it, as a shell would: Ctrl-C goes to the command (the terminal
 * sends it to the whole foreground group) while we wait to report its status. */
static int run_command(const struct run_args *a, const char *shim)
{
    struct sigaction ign = {.sa_handler = SIG_IGN}, fwd = {.sa_handler = forward};
    struct sigaction old_int, old_quit;
    sigaction(SIGINT, &ign, &old_int);
    sigaction(SIGQUIT, &ign, &old_quit);
    pid_t self = getpid(), pid = fork();
    if (pid == 0)
        cmd_child(a, shim, self);
    if (pid < 0) {
        fprintf(stderr, "ldtrace: run: fork: %s\n", strerror(errno));
        return 1;
    }
    cmd_pid = pid;
    sigaction(SIGTERM, &fwd, NULL);
    sigaction(SIGHUP, &fwd, NULL);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    cmd_pid = 0;
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGQUIT, &old_quit, NULL);
    return ldt__run_exit_code(st);
}

/* True when pid runs (a zombie has finished running). */
static int pid_running(long pid)
{
    char path[64], buf[256];
    if (pid <= 0 || (kill((pid_t)pid, 0) < 0 && errno != EPERM))
        return 0;
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
    if (fd >= 0)
        close(fd);
    if (n <= 0)
        return 1;
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    return !(rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X'));
}

/* Segments ("<pid>.<nonce>.ring") created since `since` whose producer has exited: the sidecar
 * still has to drain them (it unlinks each one after writing its last spans out). */
static int undrained(const char *dir, time_t since)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    struct stat st;
    int n = 0;
    while (d && (de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len < 6 || strcmp(de->d_name + len - 5, ".ring") != 0)
            continue;
        if (fstatat(dirfd(d), de->d_name, &st, 0) == 0 && st.st_ctime >= since &&
            !pid_running(strtol(de->d_name, NULL, 10)))
            n++;
    }
    if (d)
        closedir(d);
    return n;
}

static long lock_holder(int fd);

/* Wait (bounded) until the sidecar has written out the spans of the processes that ran, so that
 * `ldtrace view` right after `ldtrace run` sees them. */
static void wait_drained(const char *dir, time_t since)
{
    int lock = open_in(dir, ".ldtraced.lock", O_RDWR | O_CLOEXEC);
    for (int waited = 0; lock >= 0 && waited < DRAIN_WAIT_MS && undrained(dir, since);
         waited += 20) {
        if (lock_holder(lock) < 0)
            break; /* no sidecar (any more): nobody will drain them */
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    if (lock >= 0)
        close(lock);
}

/* Resolve our own executable and the two deliverables next to it. */
static int find_tools(char *shim, char *sidecar, size_t cap)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0) {
        fprintf(stderr, "ldtrace: run: readlink /proc/self/exe: %s\n", strerror(errno));
        return -1;
    }
    exe[n] = '\0';
    if (ldt__find_shim(exe, shim, cap) < 0) {
        fprintf(stderr, "ldtrace: run: %s not found next to %s\n", SHIM_NAME, exe);
        return -1;
    }
    if (ldt__find_sidecar(exe, sidecar, cap) < 0) {
        fprintf(stderr, "ldtrace: run: %s not found next to %s\n", SIDECAR_NAME, exe);
        return -1;
    }
    return 0;
}

int ldt__run_main(int argc, char **argv)
{
    struct run_args a;
    char shim[PATH_MAX], sidecar[PATH_MAX];
    if (run_parse(argc, argv, &a) < 0 || !a.cmd[0]) {
        run_usage(stderr);
        return 2;
    }
    if (find_tools(shim, sidecar, sizeof(shim)) < 0)
        return 1;
    int rc = ensure_dir(a.dir);
    if (rc < 0) {
        fprintf(stderr, "ldtrace: run: mkdir %s: %s\n", a.dir, strerror(-rc));
        return 1;
    }
    /* Shared while the command runs; waits for a sidecar that is on its way out (see the top). */
    int runlock = open_in(a.dir, ".ldtrace-run.lock", O_RDWR | O_CREAT | O_CLOEXEC);
    if (runlock >= 0)
        while (flock(runlock, LOCK_SH) < 0 && errno == EINTR)
            ;
    time_t since = time(NULL) - 1;
    rc = ensure_sidecar(&a, sidecar);
    if (rc < 0)
        fprintf(stderr, "ldtrace: run: start %s for %s: %s (running without a sidecar)\n", sidecar,
                a.dir, strerror(-rc));
    int status = run_command(&a, shim);
    if (rc == 0)
        wait_drained(a.dir, since);
    if (runlock >= 0)
        close(runlock);
    return status;
}

/* ---- stop ---- */

/* The pid holding an flock on the file open as fd, from /proc/locks; -1 when none is listed. */
static long lock_holder(int fd)
{
    struct stat st;
    FILE *f = fstat(fd, &st) == 0 ? fopen("/proc/locks", "re") : NULL;
    char line[256];
    long found = -1;
    while (f && fgets(line, sizeof(line), f)) {
        long pid;
        unsigned maj, min;
        unsigned long long ino;
        if (sscanf(line, "%*[^:]: FLOCK %*s %*s %ld %x:%x:%llu", &pid, &maj, &min, &ino) == 4 &&
            ino == (unsigned long long)st.st_ino && maj == major(st.st_dev) &&
            min == minor(st.st_dev))
            found = pid;
    }
    if (f)
        fclose(f);
    return found;
}

/* Poll the lock until the sidecar has let go of it (it exits after its final drain). */
static int wait_unlocked(int fd, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            flock(fd, LOCK_UN);
            return 0;
        }
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    return -ETIMEDOUT;
}

int ldt__stop_main(int argc, char **argv)
{
    struct run_args a;
    if (run_parse(argc, argv, &a) < 0 || a.cmd[0]) {
        run_usage(stderr);
        return 2;
    }
    int fd = open_in(a.dir, ".ldtraced.lock", O_RDWR | O_CLOEXEC);
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) == 0) {
        fprintf(stderr, "ldtrace: stop: no sidecar is running for %s\n", a.dir);
        if (fd >= 0)
            close(fd);
        return 0;
    }
    long pid = lock_holder(fd);
    pid = pid > 0 ? pid : read_pid(a.dir);
    if (pid <= 0 || kill((pid_t)pid, SIGTERM) < 0) {
        fprintf(stderr, "ldtrace: stop: kill %ld: %s\n", pid,
                pid <= 0 ? "pid unknown" : strerror(errno));
        close(fd);
        return 1;
    }
    int rc = wait_unlocked(fd, STOP_TIMEOUT_MS);
    close(fd);
    if (rc < 0) {
        fprintf(stderr, "ldtrace: stop: ldtraced pid %ld did not exit within %d s\n", pid,
                STOP_TIMEOUT_MS / 1000);
        return 1;
    }
    fprintf(stderr, "ldtrace: stop: ldtraced pid %ld drained and exited\n", pid);
    return 0;
}
