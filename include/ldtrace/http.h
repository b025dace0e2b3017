/* http.h - incremental, bounded HTTP/1.x message sniffer: one parser per direction of a connection.
 *
 * Used by: the shim (fed the bytes the app sends and receives), the fuzzers and the tests.
 * Pure: no syscalls, no allocation; the parser is a plain struct the caller owns. It never needs the
 * bytes of an earlier call again: headers may arrive one byte at a time, and what the tracer needs
 * (method, target, status, framing, Host, traceparent, tracestate) is copied into bounded fields as it
 * streams past. Thread-safe per parser; async-signal-safe.
 *
 * Usage: ldt_http_init(), then call ldt_http_feed() on every chunk of the stream in order. Each call
 * consumes bytes up to and including the next event and returns how many it consumed; call again with
 * the rest. Events (p->ev after the call):
 *   LDT_HTTP_EV_NONE     all bytes consumed, no event
 *   LDT_HTTP_EV_HEADERS  the header block of a message just ended (the last byte consumed is the LF of
 *                        the blank line); p->msg is complete
 *   LDT_HTTP_EV_DONE     the message (headers + body) just ended; the next byte starts a new message
 * A message without a body yields EV_HEADERS and then, on the next call (even with len 0), EV_DONE.
 * A negative return is LDT_HTTP_INVALID: the stream is not HTTP/1.x, is malformed, or a header block
 * passed LDT_HTTP_HDR_CAP. The parser is then in LDT_HTTP_S_PASS: it consumes everything, forever.
 * After a 101 response, a 2xx response to CONNECT, or a request whose Upgrade is answered with 101,
 * the parser also moves to LDT_HTTP_S_PASS (p->passthrough says why) with no error.
 */
#ifndef LDTRACE_HTTP_H
#define LDTRACE_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define LDT_HTTP_INVALID (-1)
#define LDT_HTTP_PARTIAL (-2)         /* used by the one-shot helpers below */

#define LDT_HTTP_HDR_CAP (64 * 1024)  /* longest header block sniffed; longer ones are passed through */
#define LDT_HTTP_PATH_MAX 128         /* bytes of the request target kept */
#define LDT_HTTP_HOST_MAX 64
#define LDT_HTTP_TP_MAX 128           /* bytes of a traceparent value kept (v00 is 55) */
#define LDT_HTTP_TS_MAX 512           /* bytes of the joined tracestate kept */
#define LDT_HTTP_METHOD_MAX 24        /* a longer method token is not HTTP */

enum ldt_http_dir {
    LDT_HTTP_REQUEST = 1,   /* this stream carries requests (a client's output, a server's input) */
    LDT_HTTP_RESPONSE = 2,  /* this stream carries responses */
};

enum ldt_http_method {      /* stored in ldt_span_rec.method */
    LDT_HTTP_M_OTHER = 0,   /* any other token: reported as "_OTHER" */
    LDT_HTTP_M_GET,
    LDT_HTTP_M_HEAD,
    LDT_HTTP_M_POST,
    LDT_HTTP_M_PUT,
    LDT_HTTP_M_DELETE,
    LDT_HTTP_M_CONNECT,
    LDT_HTTP_M_OPTIONS,
    LDT_HTTP_M_TRACE,
    LDT_HTTP_M_PATCH,
    LDT_HTTP_M_COUNT
};

enum ldt_http_ev {
    LDT_HTTP_EV_NONE = 0,
    LDT_HTTP_EV_HEADERS = 1,
    LDT_HTTP_EV_DONE = 2,
};

/* msg.flags */
#define LDT_HTTP_F_CHUNKED 0x0001u    /* Transfer-Encoding ends in chunked */
#define LDT_HTTP_F_HAS_CL 0x0002u     /* a valid Content-Length was seen */
#define LDT_HTTP_F_CLOSE 0x0004u      /* Connection: close (or HTTP/1.0 without keep-alive) */
#define LDT_HTTP_F_UPGRADE 0x0008u    /* Upgrade header present (request) / 101 (response) */
#define LDT_HTTP_F_EXPECT100 0x0010u  /* Expect: 100-continue */
#define LDT_HTTP_F_PATH_TRUNC 0x0020u /* the target was longer than LDT_HTTP_PATH_MAX */
#define LDT_HTTP_F_HOST_TRUNC 0x0040u
#define LDT_HTTP_F_TP_TRUNC 0x0080u   /* a traceparent value was longer than LDT_HTTP_TP_MAX */
#define LDT_HTTP_F_TS_TRUNC 0x0100u   /* tracestate lines added up to more than LDT_HTTP_TS_MAX */
#define LDT_HTTP_F_TP_MULTI 0x0200u   /* more than one traceparent line (the spec says: invalid) */
#define LDT_HTTP_F_UNTIL_CLOSE 0x0400u /* response body delimited by the connection closing */
#define LDT_HTTP_F_HTTP10 0x0800u     /* HTTP/1.0 */

/* What the sniffer keeps of one message. Offsets are from the first byte of this message. */
struct ldt_http_msg {
    uint8_t method;               /* enum ldt_http_method (requests) */
    uint8_t minor;                /* HTTP/1.<minor> */
    uint16_t status;              /* responses: the status code */
    uint16_t flags;               /* LDT_HTTP_F_* */
    uint16_t path_len;            /* bytes in path[] */
    uint16_t host_len;
    uint16_t tp_len;              /* bytes in tp[] (the value, OWS trimmed) */
    uint16_t ts_len;              /* bytes in ts[] (lines joined with ',', OWS trimmed) */
    uint16_t _pad;
    uint32_t tp_off;              /* offset of the first byte of the traceparent value (if tp_len) */
    uint32_t hdr_len;             /* offset of the blank line's CR (or LF) that ends the headers */
    uint32_t reqline_len;         /* offset just past the LF of the request/status line */
    int64_t content_length;       /* -1 when absent */
    char path[LDT_HTTP_PATH_MAX];
    char host[LDT_HTTP_HOST_MAX];
    char tp[LDT_HTTP_TP_MAX];
    char ts[LDT_HTTP_TS_MAX];
};

enum ldt_http_state {             /* coarse state, for the caller's information */
    LDT_HTTP_S_START = 0,         /* before the first byte of a message */
    LDT_HTTP_S_HEAD,              /* inside the start line or headers */
    LDT_HTTP_S_BODY,              /* inside a body */
    LDT_HTTP_S_PASS,              /* not (or no longer) HTTP: everything is consumed, no events */
};

struct ldt_http_parser {
    uint8_t dir;                  /* enum ldt_http_dir */
    uint8_t state;                /* enum ldt_http_state */
    uint8_t ev;                   /* enum ldt_http_ev of the last ldt_http_feed */
    uint8_t passthrough;          /* why S_PASS: 0 none, 1 invalid, 2 over cap, 3 upgrade/connect */
    uint8_t no_body;              /* response side: the request was HEAD (set via ldt_http_expect) */
    uint8_t connect;              /* response side: the request was CONNECT */
    uint8_t sub;                  /* internal sub-state (start line, header name/value, chunk ...) */
    uint8_t hdr_id;               /* internal: which interesting header is being read */
    uint32_t pos;                 /* bytes of the current message consumed so far (header part) */
    uint32_t tok;                 /* internal: length of the current token */
    uint64_t remaining;           /* body bytes (or chunk bytes) left */
    uint64_t msg_bytes;           /* bytes of the current message so far, headers and body */
    uint64_t messages;            /* messages completed on this stream */
    char name[32];                /* internal: the current header name, lowercase, truncated */
    struct ldt_http_msg msg;      /* the current message; reset when the next one starts */
};

/* Start a parser for one direction of a connection. */
void ldt_http_init(struct ldt_http_parser *p, enum ldt_http_dir dir);

/* Response side: the next response answers a request with this method (HEAD: no body; CONNECT: a 2xx
 * switches to pass-through). Call before feeding that response; the shim keeps the queue of pending
 * request methods for pipelining. */
void ldt_http_expect(struct ldt_http_parser *p, enum ldt_http_method method);

/* Feed len bytes. Returns bytes consumed (0..len; less than len only when an event stopped it), or
 * LDT_HTTP_INVALID. See the top of this file. */
ssize_t ldt_http_feed(struct ldt_http_parser *p, const char *buf, size_t len);

/* Account n body bytes the caller sent without seeing them (sendfile). Valid inside a Content-Length
 * or read-until-close body: returns the bytes accounted (fewer than n when the body ends there, with
 * p->ev == LDT_HTTP_EV_DONE). Anywhere else (headers, chunked framing) the parser cannot follow, so it
 * moves to pass-through and returns LDT_HTTP_INVALID. */
ssize_t ldt_http_skip(struct ldt_http_parser *p, size_t n);

/* The connection reached end of stream. Returns 1 when that completes the current message (a response
 * read until close, or nothing pending), 0 when a message was cut short (headers or body incomplete). */
int ldt_http_eof(struct ldt_http_parser *p);

/* Quick classifier for a socket's first bytes: LDT_HTTP_REQUEST if they begin like a request line
 * (token of uppercase letters, SP), LDT_HTTP_RESPONSE if they begin with "HTTP/1.", 0 when they cannot
 * be HTTP/1.x, LDT_HTTP_PARTIAL when more bytes are needed to tell. */
int ldt_http_classify(const char *buf, size_t len);

/* Method token to enum (LDT_HTTP_M_OTHER for unknown tokens) and back ("_OTHER" for OTHER). */
enum ldt_http_method ldt_http_method_from(const char *tok, size_t len);
const char *ldt_http_method_name(enum ldt_http_method m);

#endif
