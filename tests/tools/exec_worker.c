/* exec_worker.c - test server for process trees across exec: "serve" accepts, forks and execs this
 * binary again as a "worker" with the connection as fd 0 and 1; the worker reads the request from
 * fd 0, calls an upstream (GET the same path) and writes the answer to fd 1.
 *
 * Usage: exec_worker serve PORT UPSTREAM_PORT (exec_worker worker UPSTREAM_PORT is what it runs).
 * The answer (Connection: close) is one line "pid=<worker pid> upstream=<status> bytes=<upstream
 * body length>". No tracing code: it is traced only through LD_PRELOAD.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Read until the end of the request headers; the request line's path goes to path. 0 or -1. */
static int read_request(int fd, char *path, size_t cap)
{
    char buf[4096];
    size_t n = 0;
    while (n < sizeof(buf) - 1) {
        ssize_t r = read(fd, buf + n, sizeof(buf) - 1 - n);
        if (r <= 0)
            return -1;
        n += (size_t)r;
        buf[n] = '\0';
        if (strstr(buf, "\r\n\r\n"))
            break;
    }
    char fmt[32];
    snprintf(fmt, sizeof(fmt), "%%*s %%%zus", cap - 1);
    return sscanf(buf, fmt, path) == 1 ? 0 : -1;
}

static int connect_local(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* GET path from the upstream (Connection: close, read to EOF); its status, *blen the body size. */
static int call_upstream(int port, const char *path, size_t *blen)
{
    int fd = connect_local(port);
    if (fd < 0)
        return -1;
    char req[1200], buf[65536];
    int l = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
    size_t n = 0;
    ssize_t r;
    if (write(fd, req, (size_t)l) != l) {
        close(fd);
        return -1;
    }
    while (n < sizeof(buf) - 1 && (r = read(fd, buf + n, sizeof(buf) - 1 - n)) > 0)
        n += (size_t)r;
    close(fd);
    buf[n] = '\0';
    int status = 0;
    char *body = strstr(buf, "\r\n\r\n");
    *blen = body ? n - (size_t)(body + 4 - buf) : 0;
    return sscanf(buf, "HTTP/1.%*d %d", &status) == 1 ? status : -1;
}

/* The worker: the request on fd 0, the answer on fd 1 (both the accepted socket). */
static int worker(int upstream)
{
    char path[1024], body[256], resp[512];
    if (read_request(0, path, sizeof(path)) != 0)
        return 1;
    size_t blen = 0;
    int st = call_upstream(upstream, path, &blen);
    int bl =
        snprintf(body, sizeof(body), "pid=%d upstream=%d bytes=%zu\n", (int)getpid(), st, blen);
    int l = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                     "Connection: close\r\n\r\n%s",
                     bl, body);
    if (write(1, resp, (size_t)l) != l)
        return 1;
    shutdown(1, SHUT_WR);
    return 0;
}

static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 64) != 0) {
        perror("exec_worker: bind/listen");
        exit(1);
    }
    return fd;
}

static void spawn_worker(int c, int lfd, const char *upstream)
{
    if (fork() != 0)
        return;
    dup2(c, 0);
    dup2(c, 1);
    close(c);
    close(lfd);
    execl("/proc/self/exe", "exec_worker", "worker", upstream, (char *)NULL);
    _exit(127);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "worker") == 0)
        return worker(atoi(argv[2]));
    if (argc != 4 || strcmp(argv[1], "serve") != 0) {
        fprintf(stderr, "usage: exec_worker serve PORT UPSTREAM_PORT\n");
        return 2;
    }
    int lfd = listen_on(atoi(argv[2]));
    signal(SIGCHLD, SIG_IGN);
    for (;;) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0)
            continue;
        spawn_worker(c, lfd, argv[3]);
        close(c);
    }
}
