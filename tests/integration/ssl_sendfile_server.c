/* ssl_sendfile_server.c - an HTTPS file server for test_ssl_sendfile that sends response bodies
 * the way nginx does under kernel TLS: SSL_sendfile, and SSL_write from then on when it fails.
 *
 * Any GET is answered with FILE (Content-Length, keep-alive), one connection at a time. Kernel TLS
 * is asked for (SSL_OP_ENABLE_KTLS); where the kernel has none (no "tls" ULP) SSL_sendfile fails
 * with SSL_ERROR_SSL and the body goes with SSL_write. Every SSL_sendfile call is logged on stdout:
 * "sendfile ret=R errno=E ssl_error=S err=LIB:REASON ktls=K" (errno is set to EDOM before the call,
 * so the line also shows whether anything touched it). A call interrupted by a signal (-1,
 * SSL_ERROR_SYSCALL, EINTR) is made again. Usage: PORT CERT KEY FILE.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 16) != 0)
        return -1;
    return fd;
}

/* Read one request head (up to the blank line): 1, or 0 when the connection ended. */
static int read_request(SSL *ssl)
{
    char buf[4096];
    size_t len = 0;
    while (len < sizeof buf - 1) {
        int r = SSL_read(ssl, buf + len, (int)(sizeof buf - 1 - len));
        if (r <= 0)
            return 0;
        len += (size_t)r;
        buf[len] = '\0';
        if (strstr(buf, "\r\n\r\n"))
            return 1;
    }
    return 0;
}

static int write_all(SSL *ssl, const char *p, size_t n)
{
    while (n > 0) {
        int r = SSL_write(ssl, p, (int)(n > 65536 ? 65536 : n));
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* One SSL_sendfile call, logged; *again: it failed only for a signal (try again). */
static ssize_t try_sendfile(SSL *ssl, int file, off_t off, size_t n, int *again)
{
    ERR_clear_error();
    errno = EDOM;
    ssize_t r = SSL_sendfile(ssl, file, off, n, 0);
    int err = errno;
    int code = r > 0 ? 0 : SSL_get_error(ssl, (int)r);
    unsigned long e = ERR_peek_last_error();
    printf("sendfile ret=%zd errno=%d ssl_error=%d err=%d:%d ktls=%d\n", r, err, code,
           ERR_GET_LIB(e), ERR_GET_REASON(e), (int)BIO_get_ktls_send(SSL_get_wbio(ssl)));
    ERR_clear_error();
    *again = r < 0 && code == SSL_ERROR_SYSCALL && err == EINTR;
    return r;
}

/* The body: SSL_sendfile while it works, then SSL_write (pread chunks). */
static int send_body(SSL *ssl, int file, size_t size, int *use_sendfile)
{
    off_t off = 0;
    char buf[32768];
    while ((size_t)off < size) {
        size_t left = size - (size_t)off;
        int again = 0;
        ssize_t r = *use_sendfile ? try_sendfile(ssl, file, off, left, &again) : -1;
        if (again)
            continue;
        if (r <= 0) {
            *use_sendfile = 0;
            r = pread(file, buf, left < sizeof buf ? left : sizeof buf, off);
            if (r <= 0 || write_all(ssl, buf, (size_t)r) != 0)
                return -1;
        }
        off += r;
    }
    return 0;
}

static void serve(SSL_CTX *ctx, int fd, int file, size_t size)
{
    SSL *ssl = SSL_new(ctx);
    int use_sendfile = 1;
    if (ssl && SSL_set_fd(ssl, fd) == 1 && SSL_accept(ssl) == 1) {
        while (read_request(ssl)) {
            char head[128];
            int hl = snprintf(head, sizeof head,
                              "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n"
                              "Content-Type: application/octet-stream\r\n\r\n",
                              size);
            if (write_all(ssl, head, (size_t)hl) != 0 ||
                send_body(ssl, file, size, &use_sendfile) != 0)
                break;
        }
        SSL_shutdown(ssl);
    }
    ERR_clear_error();
    SSL_free(ssl);
    close(fd);
}

int main(int argc, char **argv)
{
    if (argc < 5)
        return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    int lfd = listen_on(atoi(argv[1]));
    int file = open(argv[4], O_RDONLY);
    struct stat st;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (lfd < 0 || file < 0 || fstat(file, &st) != 0 || !ctx)
        return 3;
    SSL_CTX_set_options(ctx, SSL_OP_ENABLE_KTLS);
    if (SSL_CTX_use_certificate_chain_file(ctx, argv[2]) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, argv[3], SSL_FILETYPE_PEM) != 1)
        return 4;
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd >= 0)
            serve(ctx, fd, file, (size_t)st.st_size);
    }
}
