/* privdrop_server.c - tiny HTTP servers for test_shim_privdrop, run under the shim.
 *   PORT          answers one request after dropping from root to uid 65534 (an nginx worker)
 *   PORT BADEXE   answers requests; after answering /fail-exec it execs BADEXE (which fails), after
 *                 /exec it execs `sleep 5` (same pid, new image) */
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

static char buf[4096];

/* Read until the blank line that ends the request head (left in buf). */
static int read_head(int fd)
{
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

static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";

static int exec_mode(int ls, char *bad)
{
    for (;;) {
        int c = accept(ls, NULL, NULL);
        if (c < 0)
            return 3;
        if (read_head(c) != 0) {
            close(c);
            continue;
        }
        if (write(c, resp, sizeof resp - 1) != (ssize_t)sizeof resp - 1)
            return 5;
        close(c);
        if (strncmp(buf, "GET /fail-exec ", 15) == 0) {
            char *av[] = {bad, NULL};
            execv(bad, av);
        } else if (strncmp(buf, "GET /exec ", 10) == 0) {
            char *av[] = {"sleep", "5", NULL};
            execv("/bin/sleep", av);
            return 6;
        }
    }
}

int main(int argc, char **argv)
{
    int ls = argc >= 2 ? listen_on(atoi(argv[1])) : -1;
    if (ls < 0)
        return 2;
    if (argc == 3)
        return exec_mode(ls, argv[2]);
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
