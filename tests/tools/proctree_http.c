/* proctree_http.c - the one-request HTTP server and upstream client shared by the process-tree test
 * servers (see proctree_http.h). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proctree_http.h"

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

int pt_serve(int in_fd, int out_fd, int upstream)
{
    char path[1024], body[256], resp[512];
    if (read_request(in_fd, path, sizeof(path)) != 0)
        return -1;
    size_t blen = 0;
    int st = call_upstream(upstream, path, &blen);
    int bl =
        snprintf(body, sizeof(body), "pid=%d upstream=%d bytes=%zu\n", (int)getpid(), st, blen);
    int l = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                     "Connection: close\r\n\r\n%s",
                     bl, body);
    return write(out_fd, resp, (size_t)l) == l ? 0 : -1;
}

int pt_listen_on(const char *who, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 64) != 0) {
        fprintf(stderr, "%s: bind/listen: ", who);
        perror(NULL);
        exit(1);
    }
    return fd;
}
