/* privdrop_server.c - a one-request HTTP server that starts as root and drops to uid 65534 after
 * accept, like an nginx worker: test_shim_privdrop runs it under the shim. Usage: PORT. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int listen_on(int port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 8) != 0)
        return -1;
    return s;
}

/* Read until the blank line that ends the request head. */
static int read_head(int fd)
{
    char buf[4096];
    size_t have = 0;
    while (have < sizeof buf - 1) {
        ssize_t n = read(fd, buf + have, sizeof buf - 1 - have);
        if (n <= 0)
            return -1;
        have += (size_t)n;
        buf[have] = '\0';
        if (strstr(buf, "\r\n\r\n"))
            return 0;
    }
    return -1;
}

int main(int argc, char **argv)
{
    static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";
    int ls = argc == 2 ? listen_on(atoi(argv[1])) : -1;
    if (ls < 0)
        return 2;
    for (;;) {
        int c = accept(ls, NULL, NULL);
        if (c < 0)
            return 3;
        /* The wait_port probe connects and closes without a request: serve the first real one. */
        if (read_head(c) != 0) {
            close(c);
            continue;
        }
        if (setuid(65534) != 0 || geteuid() != 65534)
            return 4;
        if (write(c, resp, sizeof resp - 1) != (ssize_t)sizeof resp - 1)
            return 5;
        close(c);
        return 0;
    }
}
