/* bench_calls.c - a fixed loop of libc I/O calls, run by scripts/bench with and without the shim to
 * measure what interposition adds per call on fds that are not traced HTTP sockets; and (conns
 * mode) the same with N open HTTP connections, with the per-request cost and the process's memory.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Runs `iters` write+read pairs on the pair (wfd, rfd); returns ns per call (2 calls per
 * iteration). */
static double pingpong(int wfd, int rfd, long iters, int rewind_file)
{
    char c = 'x';
    double t0 = now_ns();
    for (long i = 0; i < iters; i++) {
        if (write(wfd, &c, 1) != 1)
            return -1;
        if (rewind_file)
            lseek(rfd, 0, SEEK_SET);
        if (read(rfd, &c, 1) != 1)
            return -1;
    }
    return (now_ns() - t0) / (double)(iters * 2);
}

/* Prints the named kB counters of /proc/self/status (" VmRSS=123"), then " ring=K": the resident kB
 * of shared writable mappings (rw-s: only the shim's span segment in this program), from smaps. */
static void print_mem(void)
{
    static const char *const keys[] = {"VmRSS:", "RssAnon:", "RssFile:", "RssShmem:"};
    char line[512];
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return;
    while (fgets(line, sizeof(line), f))
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
            if (strncmp(line, keys[i], strlen(keys[i])) == 0)
                printf(" %.*s=%ld", (int)strlen(keys[i]) - 1, line, atol(line + strlen(keys[i])));
    fclose(f);
    long ring = 0;
    int in_ring = 0;
    if (!(f = fopen("/proc/self/smaps", "r")))
        return;
    while (fgets(line, sizeof(line), f)) {
        char *sp = strchr(line, ' ');
        if (sp && strchr(line, '-') && strchr(line, '-') < sp)
            in_ring = strncmp(sp + 1, "rw-s", 4) == 0;
        else if (in_ring && strncmp(line, "Rss:", 4) == 0)
            ring += atol(line + 4);
    }
    fclose(f);
    printf(" ring=%ld", ring);
}

/* Reads from fd until buf holds at least min bytes ending in "\r\n\r\n" or "ok"; -1 on EOF or
 * error. */
static int read_msg(int fd, char *buf, size_t cap, size_t min)
{
    size_t have = 0;
    while (have < min ||
           (memcmp(buf + have - 4, "\r\n\r\n", 4) && memcmp(buf + have - 2, "ok", 2))) {
        ssize_t n = read(fd, buf + have, cap - have);
        if (n <= 0)
            return -1;
        have += (size_t)n;
    }
    return 0;
}

/* One HTTP request and its response over the connected pair (cfd client, sfd server): 4 calls or a
 * few more (the shim may add traceparent to the request). */
static int exchange(int cfd, int sfd)
{
    static const char req[] = "GET /c HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    char buf[1024];
    if (write(cfd, req, sizeof(req) - 1) != (ssize_t)sizeof(req) - 1 ||
        read_msg(sfd, buf, sizeof(buf), sizeof(req) - 1) ||
        write(sfd, resp, sizeof(resp) - 1) != (ssize_t)sizeof(resp) - 1 ||
        read_msg(cfd, buf, sizeof(buf), sizeof(resp) - 1))
        return -1;
    return 0;
}

/* Opens n loopback TCP connections (both ends in this process) and makes one HTTP exchange on each,
 * so a traced run tracks 2n sockets; fds[2i] is a client end, fds[2i+1] its server end. Raises the
 * fd limit as far as allowed. */
static int *open_conns(long n)
{
    struct rlimit rl = {.rlim_cur = (rlim_t)n * 2 + 64, .rlim_max = (rlim_t)n * 2 + 64};
    struct rlimit old;
    if (getrlimit(RLIMIT_NOFILE, &old) == 0 && old.rlim_cur < rl.rlim_cur &&
        setrlimit(RLIMIT_NOFILE, &rl) != 0) { /* root may raise the hard limit; else up to it */
        old.rlim_cur = old.rlim_max;
        setrlimit(RLIMIT_NOFILE, &old);
    }
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    int *fds = calloc((size_t)n * 2, sizeof(int));
    if (ls < 0 || !fds || bind(ls, (struct sockaddr *)&a, sizeof(a)) || listen(ls, 64) ||
        getsockname(ls, (struct sockaddr *)&a, &alen))
        goto fail;
    for (long i = 0; i < n; i++) {
        fds[2 * i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[2 * i] < 0 || connect(fds[2 * i], (struct sockaddr *)&a, sizeof(a)))
            goto fail;
        fds[2 * i + 1] = accept(ls, NULL, NULL);
        if (fds[2 * i + 1] < 0 || exchange(fds[2 * i], fds[2 * i + 1])) {
            fprintf(stderr, "bench_calls: connection %ld of %ld\n", i, n);
            goto fail;
        }
    }
    close(ls);
    return fds;
fail:
    free(fds);
    return NULL; /* the process exits: the fds opened so far close with it */
}

/* The timed part of conns mode (see below) on n open connections fds[] and the socketpair sp. */
static int conns_measure(const int *fds, long n, const int *sp, long iters)
{
    double call = pingpong(sp[0], sp[1], iters, 0);
    long reqs = iters / 10 > 0 ? iters / 10 : 1;
    double t0 = now_ns();
    for (long i = 0; i < reqs; i++)
        if (exchange(fds[2 * (i % n)], fds[2 * (i % n) + 1]))
            return 1;
    printf("%.3f %.1f", call, (now_ns() - t0) / (double)reqs);
    print_mem();
    for (long i = 0; i < n; i++)
        if (exchange(fds[2 * i], fds[2 * i + 1]))
            return 1;
    printf("\nafter");
    print_mem();
    printf("\n");
    return 0;
}

/* conns mode: n open connection fds (n / 2 loopback connections, both ends here), then "ns_per_call
 * ns_per_request" on a socketpair and on the connections in turn, then the memory counters; a
 * second round of one request per connection and the memory again (flat over time: the second line
 * should match the first). */
static int conns(long n, long iters)
{
    n = n / 2 > 0 ? n / 2 : 1;
    int *fds = open_conns(n), sp[2];
    if (!fds || socketpair(AF_UNIX, SOCK_STREAM, 0, sp)) {
        perror("bench_calls: conns");
        free(fds);
        return 1;
    }
    int rc = conns_measure(fds, n, sp, iters);
    free(fds);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "conns") == 0)
        return conns(atol(argv[2]), atol(argv[3]));
    if (argc < 3) {
        fprintf(stderr, "usage: bench_calls file|pipe|socket ITERATIONS | conns N ITERATIONS\n");
        return 2;
    }
    long iters = atol(argv[2]);
    int fds[2];
    double ns = -1;
    if (strcmp(argv[1], "file") == 0) {
        char path[] = "/tmp/ldtrace-bench-XXXXXX";
        int fd = mkstemp(path);
        if (fd < 0)
            return 1;
        unlink(path);
        ns = pingpong(fd, fd, iters, 1);
    } else if (strcmp(argv[1], "pipe") == 0) {
        if (pipe(fds) != 0)
            return 1;
        ns = pingpong(fds[1], fds[0], iters, 0);
    } else if (strcmp(argv[1], "socket") == 0) {
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0)
            return 1;
        ns = pingpong(fds[0], fds[1], iters, 0);
    } else {
        fprintf(stderr, "bench_calls: unknown mode %s\n", argv[1]);
        return 2;
    }
    if (ns < 0) {
        perror("bench_calls");
        return 1;
    }
    printf("%.3f\n", ns);
    return 0;
}
