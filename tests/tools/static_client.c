/* static_client.c - a tiny HTTP/1.1 client linked statically (-static), to show what LD_PRELOAD cannot
 * reach: it makes its socket calls through the libc copy inside the binary, so the shim never sees them.
 *
 * Also built dynamically as dyn_client: the control that the shim does trace, and the program a test
 * makes setuid root (glibc then ignores LD_PRELOAD).
 *
 * Usage: static_client PORT PATH. Sends "GET PATH" to 127.0.0.1:PORT with Connection: close and writes the
 * whole response (status line, headers, body) to stdout. Exit status 0 for a 200 answer, 1 otherwise.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int get(int port, const char *path, char *buf, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        return -1;
    char req[1200];
    int l = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                     path);
    if (send(fd, req, (size_t)l, 0) != l)
        return -1;
    size_t n = 0;
    ssize_t r;
    while (n < cap - 1 && (r = recv(fd, buf + n, cap - 1 - n, 0)) > 0)
        n += (size_t)r;
    close(fd);
    buf[n] = '\0';
    return (int)n;
}

int main(int argc, char **argv)
{
    static char buf[1 << 16];
    if (argc != 3) {
        fprintf(stderr, "usage: static_client PORT PATH\n");
        return 2;
    }
    int n = get(atoi(argv[1]), argv[2], buf, sizeof(buf));
    if (n < 0) {
        perror("static_client");
        return 1;
    }
    fwrite(buf, 1, (size_t)n, stdout);
    return strncmp(buf, "HTTP/1.1 200", 12) == 0 ? 0 : 1;
}
