/* minihttp.c - thread-per-connection HTTP/1.1 server, keep-alive client, parsers for the demo. */
#include "minihttp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define CONN_BUF 16384  /* bytes buffered per server connection: headers plus body */
#define MAX_CONNS 1024  /* open server connections at once; more are refused */
#define CLIENT_SLOTS 8  /* cached upstream connections per thread */
#define IO_TIMEOUT_S 10 /* client socket send/receive timeout */
#define STOP_WAIT_MS 5000

/* ---- small helpers shared by both sides ---- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Write all of buf, retrying short writes. Returns 0 or a negative errno. */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Find "\r\n\r\n" in buf[0..len). Returns the length of the head including it, or 0. */
static size_t head_end(const char *buf, size_t len)
{
    for (size_t i = 3; i < len; i++) {
        if (buf[i] == '\n' && buf[i - 1] == '\r' && buf[i - 2] == '\n' && buf[i - 3] == '\r')
            return i + 1;
    }
    return 0;
}

/* Look a header up in a block of "Name: value\r\n" lines (NUL-terminated). */
static int find_header(const char *headers, const char *name, char *out, size_t out_size)
{
    size_t nlen = strlen(name);
    for (const char *line = headers; line && *line;) {
        const char *eol = strstr(line, "\r\n");
        size_t llen = eol ? (size_t)(eol - line) : strlen(line);
        if (llen > nlen && line[nlen] == ':' && strncasecmp(line, name, nlen) == 0) {
            const char *v = line + nlen + 1, *end = line + llen;
            while (v < end && (*v == ' ' || *v == '\t'))
                v++;
            while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
                end--;
            if ((size_t)(end - v) >= out_size)
                return -1;
            memcpy(out, v, (size_t)(end - v));
            out[end - v] = '\0';
            return (int)(end - v);
        }
        line = eol ? eol + 2 : NULL;
    }
    return -1;
}

/* Parse a Content-Length value. Returns it, or -1 when absent, -2 when invalid or too large. */
static long content_length(const char *headers)
{
    char v[32];
    if (find_header(headers, "Content-Length", v, sizeof(v)) < 0)
        return -1;
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || *end || n < 0 || n > MH_BODY_MAX)
        return -2;
    return n;
}

/* ---- public parsing helpers ---- */

int mh_query_get(const char *query, const char *key, char *out, size_t out_size)
{
    size_t klen = strlen(key);
    for (const char *p = query; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t plen = amp ? (size_t)(amp - p) : strlen(p);
        if (plen >= klen && strncmp(p, key, klen) == 0 && (plen == klen || p[klen] == '=')) {
            size_t vlen = plen == klen ? 0 : plen - klen - 1;
            if (vlen >= out_size)
                return -1;
            memcpy(out, p + plen - vlen, vlen);
            out[vlen] = '\0';
            return (int)vlen;
        }
        p = amp ? amp + 1 : NULL;
    }
    return -1;
}

int mh_header_get(const struct mh_request *req, const char *name, char *out, size_t out_size)
{
    return find_header(req->headers, name, out, out_size);
}

int mh_json_int(const char *json, const char *key, long *out)
{
    char pat[64];
    int n = snprintf(pat, sizeof(pat), "\"%s\"", key);
    if (n < 0 || (size_t)n >= sizeof(pat))
        return -1;
    const char *p = strstr(json, pat);
    if (!p)
        return -1;
    p += n;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    if (*p++ != ':')
        return -1;
    char *end;
    errno = 0;
    long v = strtol(p, &end, 10);
    if (errno || end == p)
        return -1;
    *out = v;
    return 0;
}

int mh_json_str(const char *json, const char *key, char *out, size_t out_size)
{
    char pat[64];
    int n = snprintf(pat, sizeof(pat), "\"%s\"", key);
    const char *p = n > 0 && (size_t)n < sizeof(pat) ? strstr(json, pat) : NULL;
    if (!p)
        return -1;
    p += n;
    while (*p == ' ')
        p++;
    if (*p++ != ':')
        return -1;
    while (*p == ' ')
        p++;
    const char *end = *p == '"' ? strchr(p + 1, '"') : NULL;
    if (!end || (size_t)(end - p - 1) >= out_size)
        return -1;
    memcpy(out, p + 1, (size_t)(end - p - 1));
    out[end - p - 1] = '\0';
    return (int)(end - p - 1);
}

long mh_parse_id(const char *text)
{
    if (!text || !*text || strlen(text) > 9)
        return -1;
    long v = 0;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    return v >= 1 ? v : -1;
}

int mh_peer_parse(const char *text, struct mh_peer *peer)
{
    const char *colon = text ? strrchr(text, ':') : NULL;
    if (!colon || strlen(text) >= sizeof(peer->text))
        return -EINVAL;
    char host[64];
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || port < 1 || port > 65535)
        return -EINVAL;
    memset(peer, 0, sizeof(*peer));
    snprintf(peer->text, sizeof(peer->text), "%s", text);
    peer->addr.sin_family = AF_INET;
    peer->addr.sin_port = htons((uint16_t)port);
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    return inet_pton(AF_INET, host, &peer->addr.sin_addr) == 1 ? 0 : -EINVAL;
}

static void vrespond(struct mh_response *resp, int status, const char *fmt, va_list ap)
{
    int n = vsnprintf(resp->body, sizeof(resp->body), fmt, ap);
    resp->status = status;
    resp->body_len = n < 0                             ? 0
                     : (size_t)n >= sizeof(resp->body) ? sizeof(resp->body) - 1
                                                       : (size_t)n;
}

void mh_respond(struct mh_response *resp, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vrespond(resp, status, fmt, ap);
    va_end(ap);
}

static int send_response(int fd, const struct mh_response *resp, int keep_alive);

void mh_respond_now(struct mh_response *resp, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vrespond(resp, status, fmt, ap);
    va_end(ap);
    resp->send_err = send_response(resp->fd, resp, resp->keep_alive);
    resp->sent = 1;
}

void mh_work(int base_ms, int jitter_ms)
{
    static __thread unsigned seed;
    if (seed == 0)
        seed = (unsigned)now_ms() ^ (unsigned)syscall(SYS_gettid) * 2654435761u;
    int ms = base_ms + (jitter_ms > 0 ? rand_r(&seed) % (jitter_ms + 1) : 0);
    if (ms > 0)
        sleep_ms(ms);
}

/* ---- server ---- */

struct conn {
    int fd;
    int slot;
    size_t len; /* bytes buffered in buf */
    char buf[CONN_BUF];
    struct mh_request req;
    struct mh_response resp;
};

static struct {
    const struct mh_server *srv;
    int listen_fd;
    volatile sig_atomic_t stopping;
    pthread_mutex_t lock;
    pthread_cond_t idle;
    int active;
    int fds[MAX_CONNS]; /* open connection fds, -1 for a free slot */
} g = {.lock = PTHREAD_MUTEX_INITIALIZER, .idle = PTHREAD_COND_INITIALIZER};

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 413:
        return "Content Too Large";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Status";
    }
}

/* Send resp as one write: status line, fixed headers, body. Returns 0 or a negative errno. */
static int send_response(int fd, const struct mh_response *resp, int keep_alive)
{
    char out[MH_BODY_MAX + 256];
    int n = snprintf(
        out, sizeof(out),
        "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n",
        resp->status, reason(resp->status), resp->body_len,
        keep_alive ? "" : "Connection: close\r\n");
    memcpy(out + n, resp->body, resp->body_len);
    return write_all(fd, out, (size_t)n + resp->body_len);
}

/* Split the request line and copy the header lines. Returns 0, or the status to answer with. */
static int parse_head(const char *head, size_t head_len, struct mh_request *req)
{
    const char *eol = strstr(head, "\r\n");
    char version[16];
    char fmt[48];
    snprintf(fmt, sizeof(fmt), "%%15s %%%ds %%15s", MH_TARGET_MAX - 1);
    if (!eol || sscanf(head, fmt, req->method, req->target, version) != 3)
        return 400;
    if (strncmp(version, "HTTP/1.", 7) != 0)
        return 400;
    size_t hlen = head_len - (size_t)(eol + 2 - head) - 2;
    if (hlen >= sizeof(req->headers))
        return 431;
    memcpy(req->headers, eol + 2, hlen);
    req->headers[hlen] = '\0';
    char conn[32] = "";
    find_header(req->headers, "Connection", conn, sizeof(conn));
    req->keep_alive =
        version[7] == '1' ? strcasecmp(conn, "close") != 0 : strcasecmp(conn, "keep-alive") == 0;
    const char *q = strchr(req->target, '?');
    size_t plen = q ? (size_t)(q - req->target) : strlen(req->target);
    memcpy(req->path, req->target, plen);
    req->path[plen] = '\0';
    snprintf(req->query, sizeof(req->query), "%s", q ? q + 1 : "");
    return 0;
}

/* Read more bytes into the connection buffer. Returns bytes read, 0 at end of stream, or -errno. */
static ssize_t fill(struct conn *c)
{
    if (c->len == sizeof(c->buf))
        return -EMSGSIZE;
    for (;;) {
        ssize_t n = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n > 0)
            c->len += (size_t)n;
        return n < 0 ? -errno : n;
    }
}

/* Read one complete request into c->req. Returns 0 on success, 1 at a clean end of stream, or an
 * HTTP status (>= 400) to answer with before closing, or -1 on a read error. */
static int read_request(struct conn *c)
{
    size_t hl;
    while ((hl = head_end(c->buf, c->len)) == 0) {
        ssize_t n = fill(c);
        if (n == -EMSGSIZE)
            return 431;
        if (n <= 0)
            return n == 0 && c->len == 0 ? 1 : -1;
    }
    char save = c->buf[hl - 1];
    c->buf[hl - 1] = '\0';
    memset(&c->req, 0, offsetof(struct mh_request, body));
    int st = parse_head(c->buf, hl, &c->req);
    c->buf[hl - 1] = save;
    if (st)
        return st;
    char te[32];
    if (find_header(c->req.headers, "Transfer-Encoding", te, sizeof(te)) >= 0)
        return 501;
    long cl = content_length(c->req.headers);
    if (cl == -2)
        return 413;
    size_t blen = cl > 0 ? (size_t)cl : 0;
    while (c->len < hl + blen) {
        if (fill(c) <= 0)
            return -1;
    }
    memcpy(c->req.body, c->buf + hl, blen);
    c->req.body[blen] = '\0';
    c->req.body_len = blen;
    memmove(c->buf, c->buf + hl + blen, c->len - hl - blen);
    c->len -= hl + blen;
    return 0;
}

static void dispatch(struct conn *c)
{
    const struct mh_server *srv = g.srv;
    memset(&c->resp, 0, sizeof(c->resp));
    c->resp.fd = c->fd;
    c->resp.keep_alive = c->req.keep_alive && !g.stopping;
    if (strcmp(c->req.path, "/health") == 0 && strcmp(c->req.method, "GET") == 0) {
        mh_respond(&c->resp, 200, "{\"service\":\"%s\",\"status\":\"ok\"}", srv->name);
        return;
    }
    mh_work(srv->latency_ms, srv->jitter_ms);
    srv->handler(&c->req, &c->resp, srv->ctx);
    if (c->resp.status < 100)
        mh_respond(&c->resp, 500, "{\"error\":\"handler gave no status\"}");
}

/* Serve requests on one connection until the peer closes it or the server stops. */
static void conn_loop(struct conn *c)
{
    for (;;) {
        int st = read_request(c);
        if (st < 0 || st == 1)
            return;
        uint64_t t0 = now_ms();
        if (st >= 400)
            mh_respond(&c->resp, st, "{\"error\":\"bad request\"}");
        else
            dispatch(c);
        int keep = st == 0 && c->req.keep_alive && !g.stopping;
        if (g.srv->verbose)
            fprintf(stderr, "%s: %s %s -> %d (%llu ms)\n", g.srv->name, c->req.method,
                    c->req.target, c->resp.status, (unsigned long long)(now_ms() - t0));
        if (c->resp.sent && (c->resp.send_err < 0 || !c->resp.keep_alive))
            return;
        if (!c->resp.sent && (send_response(c->fd, &c->resp, keep) < 0 || !keep))
            return;
    }
}

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    conn_loop(c);
    mh_client_close_all();
    pthread_mutex_lock(&g.lock);
    g.fds[c->slot] = -1;
    close(c->fd);
    g.active--;
    pthread_cond_broadcast(&g.idle);
    pthread_mutex_unlock(&g.lock);
    free(c);
    return NULL;
}

/* Register fd and start its thread. Closes fd when either fails. */
static void start_conn(int fd)
{
    struct conn *c = malloc(sizeof(*c));
    pthread_attr_t attr;
    pthread_t tid;
    pthread_mutex_lock(&g.lock);
    int slot = 0;
    while (slot < MAX_CONNS && g.fds[slot] >= 0)
        slot++;
    if (!c || slot == MAX_CONNS) {
        pthread_mutex_unlock(&g.lock);
        free(c);
        close(fd);
        return;
    }
    c->fd = fd;
    c->slot = slot;
    c->len = 0;
    g.fds[slot] = fd;
    g.active++;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&tid, &attr, conn_main, c) != 0) {
        g.fds[slot] = -1;
        g.active--;
        close(fd);
        free(c);
    }
    pthread_attr_destroy(&attr);
    pthread_mutex_unlock(&g.lock);
}

static void *accept_main(void *arg)
{
    (void)arg;
    while (!g.stopping) {
        int fd = accept(g.listen_fd, NULL, NULL);
        if (fd >= 0) {
            set_nodelay(fd);
            start_conn(fd);
        } else if (errno == EMFILE || errno == ENFILE || errno == ENOMEM) {
            sleep_ms(10);
        }
    }
    return NULL;
}

static int listen_on(const struct mh_server *srv)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)srv->port)};
    const char *host = srv->bind_host ? srv->bind_host : "127.0.0.1";
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "%s: bind address %s: not an IPv4 address\n", srv->name, host);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 128) < 0) {
        fprintf(stderr, "%s: listen %s:%d: %s\n", srv->name, host, srv->port, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Write the bound port to path through a temporary file and rename, so a reader never sees half. */
static int write_port_file(const char *name, const char *path, int fd)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    char tmp[4096];
    if (getsockname(fd, (struct sockaddr *)&sa, &sl) < 0)
        return -1;
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%d\n", ntohs(sa.sin_port)) < 0 || fclose(f) != 0 || rename(tmp, path)) {
        fprintf(stderr, "%s: write port file %s: %s\n", name, path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Stop: wake the acceptor, end idle connections, and wait for busy ones to finish. */
static void stop_serving(pthread_t acceptor)
{
    g.stopping = 1;
    shutdown(g.listen_fd, SHUT_RDWR);
    pthread_join(acceptor, NULL);
    close(g.listen_fd);
    uint64_t deadline = now_ms() + STOP_WAIT_MS;
    pthread_mutex_lock(&g.lock);
    for (int i = 0; i < MAX_CONNS; i++) {
        if (g.fds[i] >= 0)
            shutdown(g.fds[i], SHUT_RD);
    }
    while (g.active > 0 && now_ms() < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&g.idle, &g.lock, &ts);
    }
    pthread_mutex_unlock(&g.lock);
}

int mh_serve(const struct mh_server *srv)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    for (int i = 0; i < MAX_CONNS; i++)
        g.fds[i] = -1;
    g.srv = srv;
    g.listen_fd = listen_on(srv);
    if (g.listen_fd < 0)
        return 1;
    if (srv->port_file && write_port_file(srv->name, srv->port_file, g.listen_fd) < 0)
        return 1;
    pthread_t acceptor;
    if (pthread_create(&acceptor, NULL, accept_main, NULL) != 0) {
        fprintf(stderr, "%s: pthread_create: failed\n", srv->name);
        return 1;
    }
    int sig = 0;
    while (sigwait(&set, &sig) != 0) {
    }
    if (srv->verbose)
        fprintf(stderr, "%s: signal %d, stopping\n", srv->name, sig);
    stop_serving(acceptor);
    return 0;
}

static int int_arg(const char *name, const char *opt, const char *v, int lo, int hi, int *out)
{
    char *end;
    long n = v ? strtol(v, &end, 10) : 0;
    if (!v || *end || end == v || n < lo || n > hi) {
        fprintf(stderr, "%s: %s needs an integer in %d..%d\n", name, opt, lo, hi);
        return -1;
    }
    *out = (int)n;
    return 1;
}

int mh_int_opt(const struct mh_server *srv, int argc, char **argv, int *i, const char *name,
               int *out)
{
    if (strcmp(argv[*i], name) != 0)
        return 0;
    const char *v = *i + 1 < argc ? argv[++*i] : NULL;
    return int_arg(srv->name, name, v, 0, INT_MAX, out);
}

int mh_common_opt(struct mh_server *srv, int argc, char **argv, int *i)
{
    const char *opt = argv[*i];
    const char *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    if (strcmp(opt, "--verbose") == 0 || strcmp(opt, "-v") == 0) {
        srv->verbose = 1;
        return 1;
    }
    int known = strcmp(opt, "--port") == 0 || strcmp(opt, "--port-file") == 0 ||
                strcmp(opt, "--bind") == 0 || strcmp(opt, "--latency") == 0 ||
                strcmp(opt, "--jitter") == 0;
    if (!known)
        return 0;
    (*i)++;
    if (strcmp(opt, "--port") == 0)
        return int_arg(srv->name, opt, v, 0, 65535, &srv->port);
    if (strcmp(opt, "--latency") == 0)
        return int_arg(srv->name, opt, v, 0, 60000, &srv->latency_ms);
    if (strcmp(opt, "--jitter") == 0)
        return int_arg(srv->name, opt, v, 0, 60000, &srv->jitter_ms);
    if (!v) {
        fprintf(stderr, "%s: %s needs a value\n", srv->name, opt);
        return -1;
    }
    if (strcmp(opt, "--port-file") == 0)
        srv->port_file = v;
    else
        srv->bind_host = v;
    return 1;
}

/* ---- client ---- */

struct client_slot {
    struct sockaddr_in addr;
    int fd; /* 0 when the slot is free: we never cache fd 0 */
};

static __thread struct client_slot t_slots[CLIENT_SLOTS];

static int same_peer(const struct sockaddr_in *a, const struct sockaddr_in *b)
{
    return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
}

static int client_connect(const struct mh_peer *peer)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct timeval tv = {IO_TIMEOUT_S, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    set_nodelay(fd);
    if (connect(fd, (const struct sockaddr *)&peer->addr, sizeof(peer->addr)) < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

/* Return this thread's cached connection to peer, or open one; *reused tells which. */
static struct client_slot *client_get(const struct mh_peer *peer, int *reused, int *err)
{
    struct client_slot *free_slot = NULL;
    for (int i = 0; i < CLIENT_SLOTS; i++) {
        if (t_slots[i].fd > 0 && same_peer(&t_slots[i].addr, &peer->addr)) {
            *reused = 1;
            return &t_slots[i];
        }
        if (t_slots[i].fd <= 0 && !free_slot)
            free_slot = &t_slots[i];
    }
    if (!free_slot) {
        free_slot = &t_slots[0];
        close(free_slot->fd);
        free_slot->fd = 0;
    }
    int fd = client_connect(peer);
    if (fd == 0) { /* 0 marks a free slot: move the socket up when stdin was closed */
        fd = fcntl(0, F_DUPFD_CLOEXEC, 3);
        close(0);
    }
    if (fd < 0) {
        *err = fd == -1 ? -EMFILE : fd;
        return NULL;
    }
    free_slot->fd = fd;
    free_slot->addr = peer->addr;
    *reused = 0;
    return free_slot;
}

static void client_drop(struct client_slot *s)
{
    if (s->fd > 0)
        close(s->fd);
    s->fd = 0;
}

void mh_client_close_all(void)
{
    for (int i = 0; i < CLIENT_SLOTS; i++)
        client_drop(&t_slots[i]);
}

static int build_request(char *out, size_t size, const struct mh_peer *peer, const char *method,
                         const char *target, const char *extra, const char *body)
{
    size_t blen = body ? strlen(body) : 0;
    char cl[96] = "";
    if (body)
        snprintf(cl, sizeof(cl), "Content-Type: application/json\r\nContent-Length: %zu\r\n", blen);
    int n = snprintf(out, size, "%s %s HTTP/1.1\r\nHost: %s\r\n%s%s\r\n", method, target,
                     peer->text, cl, extra ? extra : "");
    if (n < 0 || (size_t)n + blen >= size)
        return -EMSGSIZE;
    memcpy(out + n, body ? body : "", blen);
    return n + (int)blen;
}

/* Read until buf holds len bytes or more. Returns 0, -ENOTCONN at end of stream, or -errno. */
static int read_at_least(int fd, char *buf, size_t *have, size_t cap, size_t want)
{
    while (*have < want) {
        if (*have == cap)
            return -EMSGSIZE;
        ssize_t n = read(fd, buf + *have, cap - *have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0)
            return -ENOTCONN;
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
        *have += (size_t)n;
    }
    return 0;
}

/* Read one response. Returns its status, or a negative errno; *close_after when the server closes.
 */
static int read_reply(int fd, struct mh_reply *reply, int *close_after)
{
    char buf[MH_BODY_MAX + 4096];
    size_t have = 0, hl = 0;
    while ((hl = head_end(buf, have)) == 0) {
        int rc = read_at_least(fd, buf, &have, sizeof(buf), have + 1);
        if (rc < 0)
            return rc == -ENOTCONN && have > 0 ? -EPROTO : rc;
    }
    buf[hl - 1] = '\0';
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1 || status < 100 || status > 999)
        return -EPROTO;
    const char *headers = strstr(buf, "\r\n") + 2;
    char conn[32] = "";
    find_header(headers, "Connection", conn, sizeof(conn));
    *close_after = strcasecmp(conn, "close") == 0;
    long cl = content_length(headers);
    if (cl == -2 || (cl < 0 && !*close_after))
        return -EPROTO;
    int rc = read_at_least(fd, buf, &have, sizeof(buf), hl + (size_t)(cl > 0 ? cl : 0));
    if (rc < 0)
        return rc == -ENOTCONN ? -EPROTO : rc;
    reply->status = status;
    reply->body_len = cl > 0 ? (size_t)cl : 0;
    memcpy(reply->body, buf + hl, reply->body_len);
    reply->body[reply->body_len] = '\0';
    return status;
}

int mh_call(const struct mh_peer *peer, const char *method, const char *target,
            const char *extra_headers, const char *body, struct mh_reply *reply)
{
    char req[MH_BODY_MAX + 2048];
    int n = build_request(req, sizeof(req), peer, method, target, extra_headers, body);
    if (n < 0)
        return n;
    memset(reply, 0, offsetof(struct mh_reply, body) + 1);
    for (int attempt = 0; attempt < 2; attempt++) {
        int reused = 0, err = 0, close_after = 0;
        struct client_slot *s = client_get(peer, &reused, &err);
        if (!s)
            return err;
        int rc = write_all(s->fd, req, (size_t)n);
        if (rc == 0)
            rc = read_reply(s->fd, reply, &close_after);
        if (rc < 0 || close_after)
            client_drop(s);
        /* A cached connection the server closed while idle fails before any reply byte: the
         * request was not processed, so sending it again on a fresh connection is safe. */
        int stale = reused && (rc == -ENOTCONN || rc == -EPIPE || rc == -ECONNRESET);
        if (!stale)
            return rc == -ENOTCONN ? -ECONNRESET : rc;
    }
    return -ECONNRESET;
}
