/* echo_client.c - sends random binary payloads to echo_server, checks they come back identical.
 *
 * Usage: echo_client PORT [SEED [ROUNDS]]. Opens two connections; each round sends one payload of
 * random length (1..20000 bytes) of random bytes, some with HTTP-looking text planted mid-stream
 * ("GET / HTTP/1.1", "HTTP/1.1 200 OK", "traceparent: ..."), then reads exactly as many bytes back
 * and compares them. Each connection's first bytes are binary, so a sniffer must classify it as
 * "other" and pass it through. Prints "ok bytes=N rounds=R" and exits 0, or names the first
 * mismatch and exits 1 (2: connect failed).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static uint64_t rng = 88172645463325252u;

static uint32_t next(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

static const char *const lures[] = {
    "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "POST /a HTTP/1.0\r\n",
    "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n",
};

static size_t fill(char *buf, int first)
{
    size_t len = 1 + next() % 20000;
    for (size_t i = 0; i < len; i++)
        buf[i] = (char)next();
    if (first)
        memcpy(buf, len >= 4 ? "\x00\x01\xfe\x80" : "\x00", len >= 4 ? 4 : 1);
    for (unsigned k = 0; k < 3 && len > 200; k++) {
        const char *l = lures[next() % 4];
        size_t at = 8 + next() % (len - 150);
        memcpy(buf + at, l, strlen(l));
    }
    return len;
}

static int connect_to(int port)
{
    int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return -1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static int send_all(int fd, const char *p, size_t len, unsigned k)
{
    while (len) {
        struct iovec iov = {(void *)p, len};
        ssize_t n = k % 3 == 0   ? write(fd, p, len)
                    : k % 3 == 1 ? send(fd, p, len, MSG_NOSIGNAL)
                                 : writev(fd, &iov, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || (size_t)n > len)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int recv_all(int fd, char *p, size_t len, unsigned k)
{
    while (len) {
        ssize_t n = k++ % 2 ? recv(fd, p, len, 0) : read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || (size_t)n > len)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: echo_client PORT [SEED [ROUNDS]]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    rng ^= argc > 2 ? strtoull(argv[2], NULL, 10) * 0x9e3779b97f4a7c15u : 0;
    unsigned rounds = argc > 3 ? (unsigned)atoi(argv[3]) : 40;
    static char out[20000], in[20000];
    size_t total = 0;
    for (int conn = 0; conn < 2; conn++) {
        int fd = connect_to(port);
        if (fd < 0) {
            perror("echo_client: connect 127.0.0.1");
            return 2;
        }
        for (unsigned r = 0; r < rounds; r++) {
            size_t len = fill(out, r == 0);
            if (send_all(fd, out, len, r) < 0 || recv_all(fd, in, len, r) < 0 ||
                memcmp(out, in, len) != 0) {
                printf("mismatch conn=%d round=%u len=%zu\n", conn, r, len);
                return 1;
            }
            total += len;
        }
        close(fd);
    }
    printf("ok bytes=%zu rounds=%u\n", total, rounds * 2);
    return 0;
}
