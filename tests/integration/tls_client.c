/* tls_client.c - a non-blocking OpenSSL client for test_shim_tls: POSTs a request of BODY bytes
 * (byte k = k % 251) in ONE SSL_write call retried with the same arguments after WANT_WRITE (a
 * small send buffer and a slow server make it block), or advancing on partial writes with
 * "partial". Prints the response body, then "retries=N". Usage: PORT BODY [partial]. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int wait_fd(int fd, int err)
{
    struct pollfd p = {fd, err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, 0};
    return err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE ? poll(&p, 1, 10000) : -1;
}

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), sz = 4096;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        return -1;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* The whole request in one logical SSL_write; *retries counts calls after WANT_*. */
static int send_all(SSL *ssl, int fd, const char *buf, size_t len, int partial, int *retries)
{
    size_t off = 0;
    while (off < len) {
        int r = SSL_write(ssl, buf + off, (int)(len - off));
        if (r > 0) {
            if (!partial && (size_t)r != len - off)
                return -1; /* a partial write we did not allow */
            off += (size_t)r;
            continue;
        }
        if (wait_fd(fd, SSL_get_error(ssl, r)) <= 0)
            return -1;
        (*retries)++;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    size_t body = (size_t)atol(argv[2]);
    int partial = argc > 3 && strcmp(argv[3], "partial") == 0, retries = 0;
    int fd = connect_to(atoi(argv[1]));
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = ctx ? SSL_new(ctx) : NULL;
    if (fd < 0 || !ssl || SSL_set_fd(ssl, fd) != 1)
        return 3;
    if (partial)
        SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE);
    int r;
    while ((r = SSL_connect(ssl)) != 1)
        if (wait_fd(fd, SSL_get_error(ssl, r)) <= 0)
            return 4;
    char head[256];
    int hl = snprintf(head, sizeof head,
                      "POST /big HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n",
                      body);
    char *buf = malloc((size_t)hl + body);
    memcpy(buf, head, (size_t)hl);
    for (size_t k = 0; k < body; k++)
        buf[(size_t)hl + k] = (char)(k % 251);
    if (send_all(ssl, fd, buf, (size_t)hl + body, partial, &retries) != 0)
        return 5;
    char in[4096];
    for (;;) {
        r = SSL_read(ssl, in, sizeof in);
        if (r > 0) {
            fwrite(in, 1, (size_t)r, stdout);
            continue;
        }
        int e = SSL_get_error(ssl, r);
        if (e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL || wait_fd(fd, e) <= 0)
            break;
    }
    printf("\nretries=%d\n", retries);
    free(buf);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    return 0;
}
