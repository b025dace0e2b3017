/* bench_http.c - a minimal keep-alive HTTP/1.1 server and a ping-pong client, run by scripts/bench
 * with and without the shim (on one side at a time) to measure the cost of a traced request, and
 * under wrk. A request for a path starting with /err gets a 500 (an error span with the app's
 * stack). Built a second time with BENCH_LTTNG as bench_http_lttng: one LTTng-UST tracepoint per
 * request served. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifdef BENCH_LTTNG
#include "bench_lttng_tp.h"
#endif

static const char RESPONSE[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
static const char RESPONSE_500[] =
    "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nno";

/* Reads one request header block (no bodies here); returns 0 at EOF or error, 2 for a path starting
 * with /err, 1 otherwise. Keeps the bytes after the blank line (a pipelined next request) in buf.
 */
static int read_request(int fd, char *buf, size_t cap, size_t *have)
{
    for (;;) {
        char *end = memmem(buf, *have, "\r\n\r\n", 4);
        if (end) {
            size_t used = (size_t)(end + 4 - buf);
            int err = memchr(buf, ' ', used) && strncmp(memchr(buf, ' ', used), " /err", 5) == 0;
            memmove(buf, buf + used, *have - used);
            *have -= used;
            return err ? 2 : 1;
        }
        if (*have == cap)
            return 0;
        ssize_t n = read(fd, buf + *have, cap - *have);
        if (n <= 0)
            return 0;
        *have += (size_t)n;
    }
}

static void *serve(void *arg)
{
    int fd = (int)(long)arg;
    char buf[8192];
    size_t have = 0;
    int kind;
    while ((kind = read_request(fd, buf, sizeof(buf), &have)) != 0) {
        const char *r = kind == 2 ? RESPONSE_500 : RESPONSE;
        size_t len = kind == 2 ? sizeof(RESPONSE_500) - 1 : sizeof(RESPONSE) - 1;
#ifdef BENCH_LTTNG
        lttng_ust_tracepoint(ldt_bench, request, fd, kind == 2 ? 500 : 200);
#endif
        if (write(fd, r, len) != (ssize_t)len)
            break;
    }
    close(fd);
    return NULL;
}

static int server(const char *portfile, int once)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(ls, (struct sockaddr *)&a, sizeof(a)) || listen(ls, 512) ||
        getsockname(ls, (struct sockaddr *)&a, &alen)) {
        perror("bench_http: listen");
        return 1;
    }
    FILE *f = fopen(portfile, "w");
    if (!f)
        return 1;
    fprintf(f, "%d\n", ntohs(a.sin_port));
    fclose(f);
    for (;;) {
        int c = accept(ls, NULL, NULL);
        if (c < 0)
            continue;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (once) { /* serve one connection in this thread, then exit (callgrind runs) */
            serve((void *)(long)c);
            return 0;
        }
        pthread_t t;
        if (pthread_create(&t, NULL, serve, (void *)(long)c) == 0)
            pthread_detach(t);
        else
            close(c);
    }
}

static int client(int port, long n, const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof(a))) {
        perror("bench_http: connect");
        return 1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    char req[512];
    int reqlen = snprintf(req, sizeof(req),
                          "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\n\r\n", path);
    size_t resplen =
        strncmp(path, "/err", 4) == 0 ? sizeof(RESPONSE_500) - 1 : sizeof(RESPONSE) - 1;
    char buf[4096];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i++) {
        if (write(fd, req, (size_t)reqlen) != (ssize_t)reqlen)
            return 1;
        size_t have = 0;
        while (have < resplen) {
            ssize_t r = read(fd, buf + have, sizeof(buf) - have);
            if (r <= 0)
                return 1;
            have += (size_t)r;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
    printf("%.1f\n", ns / (double)n);
    close(fd);
    return 0;
}

#ifdef BENCH_LTTNG
/* Fires the request tracepoint n times in a loop; prints ns per event (the session decides whether
 * it is recorded: enabled and started, or not). */
static int tploop(long n)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i++)
        lttng_ust_tracepoint(ldt_bench, request, (int)i, 200);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
    printf("%.1f\n", ns / (double)n);
    return 0;
}
#endif

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
#ifdef BENCH_LTTNG
    if (argc == 3 && strcmp(argv[1], "tploop") == 0)
        return tploop(atol(argv[2]));
#endif
    if (argc == 3 && strcmp(argv[1], "server") == 0)
        return server(argv[2], 0);
    if (argc == 3 && strcmp(argv[1], "server1") == 0)
        return server(argv[2], 1);
    if ((argc == 4 || argc == 5) && strcmp(argv[1], "client") == 0)
        return client(atoi(argv[2]), atol(argv[3]), argc == 5 ? argv[4] : "/bench");
    fprintf(stderr, "usage: bench_http server|server1 PORTFILE | client PORT N [PATH]\n");
    return 2;
}
