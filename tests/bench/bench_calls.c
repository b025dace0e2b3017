/* bench_calls.c - a fixed loop of libc I/O calls, run by scripts/bench with and without the shim to
 * measure what interposition adds per call on fds that are not traced HTTP sockets. */
#include <fcntl.h>
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

/* Runs `iters` write+read pairs on the pair (wfd, rfd); returns ns per call (2 calls per iteration). */
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

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_calls file|pipe|socket ITERATIONS\n");
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
