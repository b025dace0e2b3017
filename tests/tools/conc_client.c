/* conc_client.c - concurrent keep-alive load with a known traceparent per request, for measuring
 * how often a traced proxy gives its outbound call the right parent.
 *
 * Usage: conc_client PORT NCONN NREQ PREFIX. NCONN threads each open one keep-alive connection to
 * 127.0.0.1:PORT and send NREQ sequential "GET /PREFIX/<c>/<i>" requests, request (c, i) carrying
 * "traceparent: 00-<conc_client_trace(c, i)>-<conc_client_span(c, i)>-01" (formats below, which the
 * test recomputes from the path). Exit status 0 when every answer was a 200, 1 otherwise.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Trace id "c0c0<c:4 hex><i:8 hex>0000000000000001", parent span id "5<c:7 hex><i:8 hex>". */
#define TRACE_FMT "c0c0%04x%08x0000000000000001"
#define SPAN_FMT "5%07x%08x"

static int port, nreq;
static const char *prefix;
static atomic_int failures;

static int connect_local(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        return -1;
    return fd;
}

/* Read one response with a Content-Length body; its status, or -1. */
static int read_response(int fd)
{
    char buf[65536];
    size_t n = 0;
    char *end = NULL;
    while (!end) {
        ssize_t r = recv(fd, buf + n, sizeof(buf) - 1 - n, 0);
        if (r <= 0)
            return -1;
        n += (size_t)r;
        buf[n] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    char *cl = strcasestr(buf, "\r\nContent-Length:");
    size_t want = (size_t)(end + 4 - buf) + (cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0);
    while (n < want) {
        ssize_t r = recv(fd, buf + n, sizeof(buf) - 1 - n, 0);
        if (r <= 0)
            return -1;
        n += (size_t)r;
    }
    int status = -1;
    sscanf(buf, "HTTP/1.%*d %d", &status);
    return status;
}

static void *conn_main(void *arg)
{
    unsigned c = (unsigned)(uintptr_t)arg;
    int fd = connect_local();
    for (int i = 0; fd >= 0 && i < nreq; i++) {
        char req[512];
        int l = snprintf(req, sizeof(req),
                         "GET /%s/%u/%d HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         "traceparent: 00-" TRACE_FMT "-" SPAN_FMT "-01\r\n\r\n",
                         prefix, c, i, c, (unsigned)i, c, (unsigned)i);
        if (send(fd, req, (size_t)l, 0) != l || read_response(fd) != 200) {
            atomic_fetch_add(&failures, 1);
            break;
        }
    }
    if (fd < 0)
        atomic_fetch_add(&failures, 1);
    else
        close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: conc_client PORT NCONN NREQ PREFIX\n");
        return 2;
    }
    port = atoi(argv[1]);
    int nconn = atoi(argv[2]);
    nreq = atoi(argv[3]);
    prefix = argv[4];
    pthread_t t[256];
    if (nconn < 1 || nconn > 256)
        return 2;
    for (int c = 0; c < nconn; c++)
        pthread_create(&t[c], NULL, conn_main, (void *)(uintptr_t)c);
    for (int c = 0; c < nconn; c++)
        pthread_join(t[c], NULL);
    if (failures)
        fprintf(stderr, "conc_client: %d connections failed\n", (int)failures);
    return failures ? 1 : 0;
}
