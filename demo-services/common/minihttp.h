/* minihttp.h - a tiny HTTP/1.1 server and keep-alive client on plain libc sockets, for the demo.
 *
 * The demo services know nothing about tracing: they are ordinary programs that accept(), read()
 * and write() on sockets, which is exactly what a preloaded tracer sees. Nothing here allocates on
 * the request path except one small struct per accepted connection.
 *
 * Server: one thread per connection, keep-alive, requests framed by Content-Length (no chunked
 * bodies). The handler runs on the connection's thread, so upstream calls made from it happen on
 * that thread. Client: a per-thread cache of keep-alive connections, one per upstream peer.
 */
#ifndef DEMO_MINIHTTP_H
#define DEMO_MINIHTTP_H

#include <netinet/in.h>
#include <stddef.h>

#define MH_BODY_MAX 8192    /* largest request or response body we handle */
#define MH_TARGET_MAX 1024  /* largest request target (path and query) */
#define MH_HEADERS_MAX 4096 /* largest header block we keep for a request */

struct mh_request {
    char method[16];
    char target[MH_TARGET_MAX];   /* as received: path and query */
    char path[MH_TARGET_MAX];     /* target up to '?' */
    char query[MH_TARGET_MAX];    /* after '?', empty when none */
    char headers[MH_HEADERS_MAX]; /* the header lines, NUL-terminated */
    char body[MH_BODY_MAX + 1];   /* NUL-terminated for convenience */
    size_t body_len;
    int keep_alive;
};

struct mh_response {
    int status;
    char body[MH_BODY_MAX];
    size_t body_len;
    int fd;         /* the connection, for mh_respond_now */
    int keep_alive; /* whether the connection stays open after this response */
    int sent;       /* mh_respond_now already wrote it; send_err is its result */
    int send_err;
};

/* A reply read by the client: the status and the body (NUL-terminated). */
struct mh_reply {
    int status;
    char body[MH_BODY_MAX + 1];
    size_t body_len;
};

/* An upstream address given as "host:port" (a dotted IPv4 address or "localhost"). */
struct mh_peer {
    char text[64];
    struct sockaddr_in addr;
};

typedef void (*mh_handler_fn)(const struct mh_request *req, struct mh_response *resp, void *ctx);

struct mh_server {
    const char *name;      /* service name, used in /health and the verbose log */
    const char *bind_host; /* default 127.0.0.1 */
    int port;              /* 0 picks a free port */
    const char *port_file; /* when set, the bound port is written there once listening */
    int verbose;           /* one line per request on stderr */
    int latency_ms;        /* simulated work per request: latency_ms plus up to jitter_ms */
    int jitter_ms;
    mh_handler_fn handler; /* called for every request except GET /health */
    void *ctx;
};

/* Parse the options every service shares (--port, --port-file, --bind, --verbose, --latency,
 * --jitter) at argv[*i]; advances *i past what it consumed. Returns 1 when the option was one of
 * those, 0 when it is not, -1 (after printing a message) when its value is missing or invalid. */
int mh_common_opt(struct mh_server *srv, int argc, char **argv, int *i);

/* A service's own integer option `name` at argv[*i] (a value in 0..INT_MAX follows): 1 when parsed
 * into *out (*i advanced), 0 when argv[*i] is another option, -1 after a message naming the service
 * when the value is missing or invalid. */
int mh_int_opt(const struct mh_server *srv, int argc, char **argv, int *i, const char *name,
               int *out);

/* Listen on srv->bind_host:srv->port and serve until SIGTERM or SIGINT, then stop accepting, close
 * the open connections once their current request is done (waiting at most a few seconds), and
 * return 0. Returns 1 after printing a message naming the failing call when it cannot listen.
 * Must be called from the main thread before any other thread exists (it blocks the signals). */
int mh_serve(const struct mh_server *srv);

/* Fill resp with a status and a JSON body formatted like printf. Truncates to MH_BODY_MAX. */
void mh_respond(struct mh_response *resp, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sleep the service's simulated work time: base milliseconds plus a random 0..jitter. */
/* Like mh_respond, and write the response on the connection right away, from the caller's frame: the
 * services' error paths answer this way, so the write of an error status happens inside the function
 * that decided it (a stack taken at that write names it). */
void mh_respond_now(struct mh_response *resp, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

void mh_work(int base_ms, int jitter_ms);

/* Parse "host:port" into peer. Returns 0, or -EINVAL. */
int mh_peer_parse(const char *text, struct mh_peer *peer);

/* Send one request to peer over this thread's cached keep-alive connection (opening one when there
 * is none, and retrying once on a fresh connection when a reused one turns out to be closed), and
 * read the reply. extra_headers is zero or more "Name: value\r\n" lines, or NULL; body may be NULL.
 * Returns the reply's status (>= 100), or a negative errno when the exchange failed (-ECONNREFUSED,
 * -ETIMEDOUT, -EPROTO for a malformed reply, -EMSGSIZE when it does not fit). Thread-safe: each
 * thread uses only its own connections. */
int mh_call(const struct mh_peer *peer, const char *method, const char *target,
            const char *extra_headers, const char *body, struct mh_reply *reply);

/* Close this thread's cached client connections (the server does this when a connection thread
 * ends). */
void mh_client_close_all(void);

/* Find query parameter key in a query string ("a=1&b=2") and copy its value (not decoded) to out.
 * Returns the value's length, or -1 when absent or when it does not fit. */
int mh_query_get(const char *query, const char *key, char *out, size_t out_size);

/* Find a header by name (case-insensitive) in req->headers and copy its value, trimmed, to out.
 * Returns the value's length, or -1 when absent or when it does not fit. */
int mh_header_get(const struct mh_request *req, const char *name, char *out, size_t out_size);

/* Read the integer member "key" of a flat JSON object. Returns 0 and sets *out, or -1. */
int mh_json_int(const char *json, const char *key, long *out);

/* Read the string member "key" of a flat JSON object (no escapes) into out. Returns its length or
 * -1. */
int mh_json_str(const char *json, const char *key, char *out, size_t out_size);

/* Parse a decimal id in 1..999999999 from text. Returns the id, or -1 when text is not one. */
long mh_parse_id(const char *text);

#endif
