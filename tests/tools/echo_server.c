/* echo_server.c - a binary echo server on 127.0.0.1 (integration tests: a non-HTTP protocol).
 *
 * Usage: echo_server PORT. Serves one connection at a time and writes back every byte it reads,
 * with a mix of read/recv and write/send so every receive and send hook sees non-HTTP traffic. Runs
 * until killed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static int write_all(int fd, const char *p, size_t len, unsigned k)
{
    while (len) {
        ssize_t n = k++ % 2 ? send(fd, p, len, MSG_NOSIGNAL) : write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void serve(int c)
{
    char buf[8192];
    for (unsigned k = 0;; k++) {
        ssize_t n = k % 2 ? recv(c, buf, sizeof(buf), 0) : read(c, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || write_all(c, buf, (size_t)n, k) < 0)
            return;
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: echo_server PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int one = 1, lsn = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(lsn, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (lsn < 0 || bind(lsn, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lsn, 16) < 0) {
        perror("echo_server: bind 127.0.0.1");
        return 2;
    }
    for (;;) {
        int c = accept(lsn, NULL, NULL);
        if (c < 0)
            continue;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        serve(c);
        close(c);
    }
}
