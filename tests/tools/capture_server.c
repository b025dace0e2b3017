/* capture_server.c - an HTTP/1.1 keep-alive server that appends every request head it receives,
 * byte for byte, to a file: the "next service" of the hostile-input tests, which inspect what a
 * traced service in front of it put on the wire.
 *
 * Usage: capture_server PORT DUMP_FILE [BODY | --raw]. Each request head (request line through the
 * blank line, NUL and CR bytes as they came) is appended as "\n=== <length>\n" followed by the raw
 * bytes, in one write. With --raw nothing is parsed or answered: everything a connection carries
 * until the peer's EOF is appended the same way, once, and the connection is closed. Every request
 * is answered 200 with BODY (default {"user":"demo","ok":true}) as application/json. A request body
 * (Content-Length) is read and discarded. Thread per connection; exits 0 on SIGTERM.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_MAX 65536

static int dump_fd = -1;
static int raw;
static const char *body = "{\"user\":\"demo\",\"ok\":true}";

static void on_term(int sig)
{
    (void)sig;
    _exit(0);
}

static long content_length(const char *head, size_t n)
{
    for (size_t i = 0; i + 16 < n; i++)
        if (head[i] == '\n' && strncasecmp(head + i + 1, "content-length:", 15) == 0)
            return strtol(head + i + 16, NULL, 10);
    return 0;
}

static void record(const char *head, size_t n)
{
    char *rec = malloc(n + 32);
    if (!rec)
        return;
    int k = snprintf(rec, 32, "\n=== %zu\n", n);
    memcpy(rec + k, head, n);
    if (write(dump_fd, rec, (size_t)k + n) < 0)
        perror("capture_server: write");
    free(rec);
}

static int answer(int fd)
{
    char out[1024];
    int n = snprintf(out, sizeof(out),
                     "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "\r\n%s",
                     strlen(body), body);
    return send(fd, out, (size_t)n, MSG_NOSIGNAL) == n ? 0 : -1;
}

/* --raw: the whole stream up to EOF as one record. */
static void raw_conn(int fd, char *buf)
{
    size_t n = 0;
    ssize_t r;
    while (n < BUF_MAX && (r = recv(fd, buf + n, BUF_MAX - n, 0)) > 0)
        n += (size_t)r;
    record(buf, n);
}

static void *conn_main(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char *buf = malloc(BUF_MAX);
    size_t n = 0;
    if (raw) {
        raw_conn(fd, buf);
        free(buf);
        close(fd);
        return NULL;
    }
    for (;;) {
        char *end = n ? memmem(buf, n, "\r\n\r\n", 4) : NULL;
        if (end) {
            size_t hdr = (size_t)(end - buf) + 4;
            long cl = content_length(buf, hdr);
            if (cl < 0 || (size_t)cl > BUF_MAX - hdr)
                break;
            if (n >= hdr + (size_t)cl) {
                record(buf, hdr);
                if (answer(fd) < 0)
                    break;
                memmove(buf, buf + hdr + cl, n - hdr - (size_t)cl);
                n -= hdr + (size_t)cl;
                continue;
            }
        }
        if (n == BUF_MAX)
            break;
        ssize_t r = recv(fd, buf + n, BUF_MAX - n, 0);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    free(buf);
    close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: capture_server PORT DUMP_FILE [BODY | --raw]\n");
        return 2;
    }
    if (argc > 3 && strcmp(argv[3], "--raw") == 0)
        raw = 1;
    else if (argc > 3)
        body = argv[3];
    signal(SIGTERM, on_term);
    signal(SIGPIPE, SIG_IGN);
    dump_fd = open(argv[2], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (dump_fd < 0 || ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(ls, 128) < 0) {
        perror("capture_server: setup");
        return 1;
    }
    for (;;) {
        int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            perror("capture_server: accept");
            return 1;
        }
        pthread_t t;
        if (pthread_create(&t, NULL, conn_main, (void *)(intptr_t)fd) != 0)
            close(fd);
        else
            pthread_detach(t);
    }
}
