/* nbclient.c - a non-blocking HTTP client that forces partial writes and EAGAIN (test load).
 *
 * Usage: nbclient PORT [BODY_BYTES [SNDBUF]]. POSTs a deterministic pseudo-random body of
 * BODY_BYTES (default 1 MiB) to 127.0.0.1:PORT/upload over a non-blocking socket with a tiny
 * SO_SNDBUF (default 4096). The request line goes out in two writes ("POST /up" then "load
 * HTTP/1.1\r\n"), the rest with a rotating mix of write, send, two-part writev and sendmsg calls of
 * varying sizes. Every return value is checked: never more than asked, a short count is a partial
 * write, -1 must be EAGAIN (then poll) or EINTR. The response is read until the server closes,
 * alternating recv and read.
 *
 * Output on stdout: "sent=N expected=N calls=C partial=P eagain=E\n---\n" then the raw response
 * bytes. Exit status: 0 when every byte was accounted for, 1 on an inconsistent return value or
 * count, 2 on any other failure (connect, poll timeout).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

struct stats {
    size_t sent;
    unsigned calls, partial, eagain, bad;
};

static int wait_fd(int fd, short events)
{
    struct pollfd p = {.fd = fd, .events = events};
    int rc;
    do
        rc = poll(&p, 1, 10000);
    while (rc < 0 && errno == EINTR);
    return rc == 1 ? 0 : -1;
}

static int connect_nb(int port, int sndbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS)
        return -1;
    int err = 0;
    socklen_t el = sizeof(err);
    if (wait_fd(fd, POLLOUT) < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err)
        return -1;
    return fd;
}

/* One call of the rotating kind for at most want bytes; returns what the call returned. */
static ssize_t one_call(int fd, const char *p, size_t want, unsigned call)
{
    size_t cut = want / 3;
    struct iovec iov[2] = {{(void *)p, cut}, {(void *)(p + cut), want - cut}};
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
    switch (call % 4) {
    case 0:
        return write(fd, p, want);
    case 1:
        return send(fd, p, want, MSG_NOSIGNAL);
    case 2:
        return writev(fd, iov, 2);
    default:
        return sendmsg(fd, &msg, MSG_NOSIGNAL);
    }
}

/* Send len bytes, checking every return value against what was asked. */
static int send_all(int fd, const char *buf, size_t len, struct stats *st)
{
    static const size_t sizes[] = {1, 7, 700, 3000, 9000, 65536, 200000}; /* 7: coprime to 4 */
    size_t off = 0;
    while (off < len) {
        size_t want = sizes[st->calls % 7];
        want = want > len - off ? len - off : want;
        ssize_t n = one_call(fd, buf + off, want, st->calls++);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            st->eagain++;
            if (wait_fd(fd, POLLOUT) < 0)
                return -2;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || (size_t)n > want || n == 0) {
            st->bad++;
            return -1;
        }
        st->partial += (size_t)n < want;
        off += (size_t)n;
        st->sent += (size_t)n;
    }
    return 0;
}

/* Read until the server closes; returns the bytes read or -1. */
static ssize_t read_all(int fd, char *buf, size_t cap)
{
    size_t got = 0;
    for (unsigned i = 0;; i++) {
        ssize_t n = i % 2 ? recv(fd, buf + got, cap - got, 0) : read(fd, buf + got, cap - got);
        if (n == 0)
            return (ssize_t)got;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(fd, POLLIN) < 0)
                return -1;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || (size_t)n > cap - got)
            return -1;
        got += (size_t)n;
        if (got == cap)
            return -1;
    }
}

static char *make_request(int port, size_t body, size_t *len)
{
    char head[512];
    int hl = snprintf(head, sizeof(head),
                      "Host: 127.0.0.1:%d\r\nUser-Agent: nbclient/1\r\n"
                      "Content-Type: application/octet-stream\r\nContent-Length: %zu\r\n"
                      "X-Probe: partial-writes\r\n\r\n",
                      port, body);
    char *buf = malloc((size_t)hl + body);
    if (!buf)
        return NULL;
    memcpy(buf, head, (size_t)hl);
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (size_t i = 0; i < body; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        buf[hl + i] = (char)(x >> 24);
    }
    *len = (size_t)hl + body;
    return buf;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: nbclient PORT [BODY_BYTES [SNDBUF]]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    size_t body = argc > 2 ? strtoul(argv[2], NULL, 10) : 1u << 20;
    int fd = connect_nb(port, argc > 3 ? atoi(argv[3]) : 4096);
    size_t len;
    char *req = make_request(port, body, &len);
    if (fd < 0 || !req) {
        perror("nbclient: connect 127.0.0.1");
        return 2;
    }
    struct stats st = {0};
    static const char l1[] = "POST /up", l2[] = "load HTTP/1.1\r\n";
    int rc = send_all(fd, l1, sizeof(l1) - 1, &st);
    rc = rc ? rc : send_all(fd, l2, sizeof(l2) - 1, &st);
    rc = rc ? rc : send_all(fd, req, len, &st);
    size_t expected = sizeof(l1) - 1 + sizeof(l2) - 1 + len;
    static char resp[1 << 16];
    ssize_t rn = rc ? -1 : read_all(fd, resp, sizeof(resp));
    printf("sent=%zu expected=%zu calls=%u partial=%u eagain=%u\n---\n", st.sent, expected,
           st.calls, st.partial, st.eagain);
    if (rn > 0)
        fwrite(resp, 1, (size_t)rn, stdout);
    free(req);
    close(fd);
    if (rc == -1 || st.bad || st.sent != expected)
        return 1;
    return rn > 0 ? 0 : 2;
}
