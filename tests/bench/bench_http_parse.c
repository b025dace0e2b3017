/* bench_http_parse.c - feeds the captures' header blocks to the HTTP sniffer N times (for
 * callgrind).
 *
 * Usage: bench_http_parse N [CAPTURE_DIR | pair | shim]
 *   (default dir: $LDT_SOURCE_ROOT/tests/data/captures; "pair": one traced request of 213 bytes
 *   with traceparent and tracestate and its 172-byte response, built in; "shim": the request and
 *   response of tests/bench/bench_http.c, what the shim's instructions per request are measured on)
 * Each round parses the first header block of every capture's request and response stream, whole,
 * as the shim sees them (one call up to EV_HEADERS, then the empty call for EV_DONE when there is
 * no body). Run it under `valgrind --tool=callgrind` with two values of N: the difference in
 * instructions divided by the difference in rounds is the cost of one round, start-up excluded.
 * It prints the messages and header bytes of one round so the slope can be turned into
 * instructions per message and per byte.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ldtrace/http.h"

#define MSG_MAX 64

struct msg {
    char *data;
    size_t len;
    enum ldt_http_dir dir;
    enum ldt_http_method expect;
};

static struct msg msgs[MSG_MAX];
static size_t nmsgs;

/* The header block of the first message of file path (up to its blank line), or 0 on error. */
static size_t load_head(const char *path, char **out)
{
    static char buf[1 << 16];
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    char *end = memmem(buf, n, "\r\n\r\n", 4);
    if (!end)
        return 0;
    n = (size_t)(end - buf) + 4;
    *out = malloc(n);
    if (!*out)
        return 0;
    memcpy(*out, buf, n);
    return n;
}

/* A traced API call as the shim sees it: the request a server reads, the response it writes. */
static char pair_request[] = "GET /api/orders/1234?expand=items HTTP/1.1\r\n"
                             "Host: orders.internal:8080\r\nUser-Agent: curl/7.88.1\r\n"
                             "Accept: */*\r\ntraceparent: "
                             "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
                             "tracestate: congo=t61rcWkgMzE\r\n\r\n";
static char pair_response[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
                              "Content-Length: 1234\r\nDate: Sat, 28 Nov 2026 10:45:38 GMT\r\n"
                              "Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n";

/* bench_http.c's request and the header block of its response. */
static char shim_request[] = "GET /bench HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\n\r\n";
static char shim_response[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n";

static void load_pair(char *rq, size_t rq_len, char *rs, size_t rs_len)
{
    msgs[0] = (struct msg){rq, rq_len, LDT_HTTP_REQUEST, 0};
    msgs[1] = (struct msg){rs, rs_len, LDT_HTTP_RESPONSE, LDT_HTTP_M_GET};
    nmsgs = 2;
}

static int load_dir(const char *dir)
{
    char path[4096 + 512];
    struct dirent *e;
    DIR *d = opendir(dir);

    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL && nmsgs < MSG_MAX) {
        size_t l = strlen(e->d_name);
        int rq = l > 12 && strcmp(e->d_name + l - 12, ".request.bin") == 0;
        int rs = l > 13 && strcmp(e->d_name + l - 13, ".response.bin") == 0;
        if (!rq && !rs)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        struct msg *m = &msgs[nmsgs];
        m->len = load_head(path, &m->data);
        if (!m->len)
            continue;
        m->dir = rq ? LDT_HTTP_REQUEST : LDT_HTTP_RESPONSE;
        m->expect = strstr(e->d_name, "conn3") ? LDT_HTTP_M_HEAD : LDT_HTTP_M_GET;
        nmsgs++;
    }
    closedir(d);
    return nmsgs ? 0 : -1;
}

/* One message: returns 0 when it gave EV_HEADERS after exactly its header block. */
static int parse_one(const struct msg *m)
{
    struct ldt_http_parser p;

    ldt_http_init(&p, m->dir);
    if (m->dir == LDT_HTTP_RESPONSE)
        ldt_http_expect(&p, m->expect);
    if (ldt_http_feed(&p, m->data, m->len) != (ssize_t)m->len || p.ev != LDT_HTTP_EV_HEADERS)
        return -1;
    (void)ldt_http_feed(&p, m->data, 0);
    return 0;
}

int main(int argc, char **argv)
{
    const char *root = getenv("LDT_SOURCE_ROOT");
    char dir[4096];
    long rounds = argc > 1 ? atol(argv[1]) : 1000;
    size_t bytes = 0;

    if (argc > 2)
        snprintf(dir, sizeof(dir), "%s", argv[2]);
    else
        snprintf(dir, sizeof(dir), "%s/tests/data/captures", root ? root : ".");
    if (strcmp(dir, "pair") == 0)
        load_pair(pair_request, sizeof(pair_request) - 1, pair_response, sizeof(pair_response) - 1);
    else if (strcmp(dir, "shim") == 0)
        load_pair(shim_request, sizeof(shim_request) - 1, shim_response, sizeof(shim_response) - 1);
    else if (load_dir(dir) < 0) {
        fprintf(stderr, "bench_http_parse: no captures in %s\n", dir);
        return 1;
    }
    for (size_t i = 0; i < nmsgs; i++)
        bytes += msgs[i].len;
    for (long r = 0; r < rounds; r++) {
        for (size_t i = 0; i < nmsgs; i++) {
            if (parse_one(&msgs[i]) < 0) {
                fprintf(stderr, "bench_http_parse: message %zu not parsed\n", i);
                return 1;
            }
        }
    }
    printf("rounds %ld messages/round %zu bytes/round %zu\n", rounds, nmsgs, bytes);
    return 0;
}
