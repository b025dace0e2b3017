/* raw_client.c - send a file's bytes on one TCP connection in writes of a fixed size, then read to
 * EOF: the traced client of the request-smuggling tests (the shim's injector sees exactly these
 * writes).
 *
 * Usage: raw_client PORT CHUNK FILE. CHUNK 0 writes the whole file at once; otherwise each write(2)
 * carries at most CHUNK bytes. After the last byte: shutdown(SHUT_WR), read until EOF (answers are
 * discarded). Exit status 0, or 1 with a message on stderr.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static int fail(const char *what)
{
    perror(what);
    return 1;
}

int main(int argc, char **argv)
{
    static char data[65536], sink[4096];
    if (argc != 4) {
        fprintf(stderr, "usage: raw_client PORT CHUNK FILE\n");
        return 2;
    }
    size_t chunk = strtoul(argv[2], NULL, 10);
    FILE *f = fopen(argv[3], "rb");
    if (!f)
        return fail("raw_client: fopen");
    size_t len = fread(data, 1, sizeof(data), f);
    fclose(f);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return fail("raw_client: connect");
    for (size_t off = 0; off < len;) {
        size_t n = chunk && len - off > chunk ? chunk : len - off;
        ssize_t w = write(fd, data + off, n);
        if (w <= 0)
            return fail("raw_client: write");
        off += (size_t)w;
    }
    shutdown(fd, SHUT_WR);
    while (read(fd, sink, sizeof(sink)) > 0)
        ;
    close(fd);
    return 0;
}
