/* record.h - the shared-memory segment and span record layout: the ABI between the shim and ldtraced.
 *
 * Written by: libldtrace.so (one producer process per segment, one producer thread per ring).
 * Read by:    ldtraced, which maps the same file and treats every byte of it as hostile input.
 *
 * Everything here is fixed-width, little-endian as the host, and position-independent (offsets, never
 * pointers). A change to any layout bumps LDT_SEG_VERSION. The _Static_asserts at the bottom pin every
 * size and offset, so an accidental change breaks the build instead of the reader.
 *
 * Segment file layout:
 *
 *     [ struct ldt_seg_hdr            ]  hdr_size bytes (LDT_SEG_HDR_SIZE)
 *     [ ring 0: struct ldt_ring_hdr   ]  ring_stride bytes per ring:
 *     [         slot 0 .. cap-1       ]    sizeof(struct ldt_ring_hdr) + ring_cap * slot_size
 *     [ ring 1 ...                    ]
 *     [ ring nrings-1 (shared ring)   ]  the multi-producer fallback when threads outnumber rings
 *
 * Slot protocol (per ring):
 *   - positions count up from 0 forever; position p lives in slot p % ring_cap.
 *   - the producer may write position p only when p - tail < ring_cap (tail is the reader's cursor);
 *     otherwise the record is dropped and ring.dropped is incremented: the producer never waits.
 *   - the producer writes the record bytes, then stores slot.seq = p + 1 with release ordering (commit).
 *   - the reader at tail t accepts the slot when seq == t + 1 (acquire), copies the record out,
 *     validates it, then stores tail = t + 1 with release ordering (which frees the slot).
 *   - seq == 0 means never committed; a file created with ftruncate() is therefore a valid empty ring.
 */
#ifndef LDTRACE_RECORD_H
#define LDTRACE_RECORD_H

#include <stddef.h>
#include <stdint.h>

#define LDT_SEG_MAGIC UINT64_C(0x31454341525444ff) /* "\xffLDTRACE1" read as little-endian bytes */
#define LDT_SEG_VERSION 1u
#define LDT_SEG_HDR_SIZE 4096u
#define LDT_SLOT_SIZE 256u                         /* one record per slot, including the seq word */
#define LDT_REC_SIZE (LDT_SLOT_SIZE - 8u)          /* bytes of record payload in a slot */

/* Default geometry; the shim may override from LDTRACE_RINGS / LDTRACE_RING_SLOTS. */
#define LDT_SEG_DEFAULT_RINGS 16u
#define LDT_SEG_DEFAULT_SLOTS 8192u                /* power of two: 8 ms of headroom at 1M spans/s */
#define LDT_SEG_MAX_RINGS 1024u
#define LDT_SEG_MAX_SLOTS (1u << 20)

/* Segment header flags. */
#define LDT_SEG_F_EXITED 0x1u /* the producer ran its exit handler: no more records will come */

#define LDT_SEG_SERVICE_MAX 128
#define LDT_SEG_EXE_MAX 64
#define LDT_SEG_HOST_MAX 64
#define LDT_SEG_ARGS_MAX 1024
#define LDT_SEG_RESOURCE_MAX 2048

/* The segment header: written once by the producer before any record, except the counters. All
 * strings are NUL-terminated inside their arrays; a reader rejects a header where one is not. */
struct ldt_seg_hdr {
    uint64_t magic;              /* LDT_SEG_MAGIC */
    uint32_t version;            /* LDT_SEG_VERSION */
    uint32_t hdr_size;           /* LDT_SEG_HDR_SIZE */
    uint64_t seg_size;           /* total file size: hdr_size + nrings * ring_stride */
    uint32_t nrings;             /* rings in the pool, the last one is the shared ring */
    uint32_t ring_cap;           /* slots per ring, a power of two */
    uint32_t slot_size;          /* LDT_SLOT_SIZE */
    uint32_t ring_stride;        /* bytes from one ring header to the next */
    uint32_t pid;                /* producer pid */
    uint32_t uid;                /* producer uid (the reader checks the file owner, not this) */
    uint64_t start_wall_ns;      /* when the segment was created, ns since the epoch */
    uint64_t proc_start_ticks;   /* field 22 of /proc/<pid>/stat, to tell a reused pid apart */
    uint64_t nonce;              /* random, also in the file name */
    uint32_t flags;              /* LDT_SEG_F_* (atomic access) */
    uint32_t _pad0;
    uint64_t claim_fails;        /* threads that found no free ring and used the shared one (atomic) */
    uint64_t untracked_conns;    /* connections passed through because their state could not be kept */
    uint64_t sniff_rejects;      /* messages passed through unsniffed: over the header cap, invalid */
    uint64_t _counters[4];       /* reserved for more producer counters, zero */
    char service_name[LDT_SEG_SERVICE_MAX]; /* service.name */
    char exe_name[LDT_SEG_EXE_MAX];         /* process.executable.name */
    char host_name[LDT_SEG_HOST_MAX];       /* host.name */
    char command_args[LDT_SEG_ARGS_MAX];    /* argv joined with NUL bytes; args_len says how long */
    uint32_t args_len;
    uint32_t resource_len;
    char resource[LDT_SEG_RESOURCE_MAX];    /* OTEL_RESOURCE_ATTRIBUTES as given (k=v,k=v) */
    uint8_t _reserved[LDT_SEG_HDR_SIZE - 136 - LDT_SEG_SERVICE_MAX - LDT_SEG_EXE_MAX
                      - LDT_SEG_HOST_MAX - LDT_SEG_ARGS_MAX - 8 - LDT_SEG_RESOURCE_MAX];
};

/* One ring's control block: the producer's line and the reader's line are 64 bytes apart so the two
 * sides do not false-share. */
struct ldt_ring_hdr {
    uint64_t head;      /* next position the producer will write (atomic; producer-owned) */
    uint32_t owner;     /* tid of the thread that claimed this ring, 0 when free (atomic CAS) */
    uint32_t _pad0;
    uint64_t dropped;   /* records dropped because the ring was full (atomic) */
    uint64_t pushed;    /* records committed (atomic) */
    uint64_t tail_cache; /* producer-private: its last load of tail (the reader never reads it) */
    uint8_t _pad1[24];
    uint64_t tail;      /* next position the reader will read (atomic; reader-owned) */
    uint64_t torn;      /* slots the reader skipped: reserved but never committed (reader-owned) */
    uint8_t _pad2[48];
};

struct ldt_slot {
    uint64_t seq;                 /* position + 1 once committed (atomic) */
    uint8_t rec[LDT_REC_SIZE];    /* a record: the first byte is its enum ldt_rec_type */
};

enum ldt_rec_type {
    LDT_REC_SPAN = 1,   /* struct ldt_span_rec */
    LDT_REC_STACK = 2,  /* struct ldt_stack_rec: a part of an error span's stack, before the span */
};

enum ldt_span_kind {    /* values as in OTLP's Span.SpanKind */
    LDT_SPAN_INTERNAL = 1,
    LDT_SPAN_SERVER = 2,
    LDT_SPAN_CLIENT = 3,
};

enum ldt_span_status {  /* values as in OTLP's Status.StatusCode */
    LDT_STATUS_UNSET = 0,
    LDT_STATUS_OK = 1,
    LDT_STATUS_ERROR = 2,
};

/* What an INTERNAL span measured (ldt_span_rec.op); HTTP spans use LDT_OP_HTTP. */
enum ldt_span_op {
    LDT_OP_HTTP = 0,
    LDT_OP_CONNECT = 1,
    LDT_OP_DNS = 2,      /* getaddrinfo: host holds the name looked up */
    LDT_OP_SEND = 3,     /* one intercepted send-side call (LDTRACE_SYSCALL_SPANS=1) */
    LDT_OP_RECV = 4,     /* one intercepted receive-side call (LDTRACE_SYSCALL_SPANS=1) */
    LDT_OP_ACCEPT = 5,
};

/* Address families as stored (our own values, not the host's AF_* numbers). */
enum ldt_addr_family {
    LDT_AF_NONE = 0,
    LDT_AF_INET = 1,     /* addr[0..3] */
    LDT_AF_INET6 = 2,    /* addr[0..15] */
    LDT_AF_UNIX = 3,     /* the socket path, if any, is in host[] of a server span's peer */
};

/* ldt_span_rec.flags */
#define LDT_SPAN_F_PARENT_REMOTE 0x0001u  /* parent came from an incoming traceparent */
#define LDT_SPAN_F_PATH_TRUNC 0x0002u     /* path[] holds only the start of the target */
#define LDT_SPAN_F_HOST_TRUNC 0x0004u
#define LDT_SPAN_F_STACK 0x0008u          /* stack records for this span precede it in the ring */
#define LDT_SPAN_F_CONN_DIED 0x0010u      /* the connection closed or failed before the message ended */
#define LDT_SPAN_F_INJECTED 0x0020u       /* we added a traceparent to this outgoing request */
#define LDT_SPAN_F_REPLACED 0x0040u       /* we replaced the parent-id of a forwarded traceparent */
#define LDT_SPAN_F_APP_TP 0x0080u         /* the app sent its own traceparent; we left it alone */
#define LDT_SPAN_F_HTTP10 0x0100u         /* HTTP/1.0 on the wire */
#define LDT_SPAN_F_TIMEOUT 0x0200u        /* the call failed with ETIMEDOUT/EAGAIN on a deadline */
#define LDT_SPAN_F_QUERY 0x0400u          /* path[] includes the query string (LDTRACE_CAPTURE_QUERY) */

#define LDT_SPAN_PATH_MAX 80
#define LDT_SPAN_HOST_MAX 38

/* One finished span, written when it ends. 248 bytes; strings are length-prefixed, not terminated. */
struct ldt_span_rec {
    uint8_t type;           /* LDT_REC_SPAN */
    uint8_t kind;           /* enum ldt_span_kind */
    uint8_t status;         /* enum ldt_span_status */
    uint8_t trace_flags;    /* W3C trace-flags as propagated (sampled, random) */
    uint8_t method;         /* enum ldt_http_method (http.h) */
    uint8_t op;             /* enum ldt_span_op */
    uint16_t flags;         /* LDT_SPAN_F_* */
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t parent_id[8];   /* all zero: a root span */
    uint64_t start_ns;      /* wall clock at start, ns since the epoch */
    uint64_t dur_ns;        /* monotonic duration */
    uint64_t bytes_in;      /* bytes received for this request/response (headers + body) */
    uint64_t bytes_out;     /* bytes sent by the app (injected bytes excluded) */
    uint64_t io_ns;         /* time spent inside intercepted calls for this span */
    uint32_t io_calls;      /* intercepted calls counted in io_ns */
    int32_t err;            /* errno of the failing call, 0 if none */
    uint16_t status_code;   /* HTTP status, 0 if none was seen */
    uint16_t peer_port;
    uint16_t local_port;
    uint8_t peer_family;    /* enum ldt_addr_family */
    uint8_t local_family;
    uint8_t peer_addr[16];
    uint8_t local_addr[16];
    uint8_t path_len;       /* bytes used in path[] */
    uint8_t host_len;       /* bytes used in host[] */
    char path[LDT_SPAN_PATH_MAX];  /* url.path (query dropped unless LDT_SPAN_F_QUERY) */
    char host[LDT_SPAN_HOST_MAX];  /* Host header (client spans), DNS name, or unix socket path */
};

#define LDT_STACK_TEXT_MAX 216

/* A part of the libunwind stack of an error span: the text is frames separated by '\n', each
 * "module+0xoffset symbol+0xoff" (symbol optional). Parts 0..nparts-1 are pushed, in order and on the
 * same ring, immediately before the span record they belong to. */
struct ldt_stack_rec {
    uint8_t type;           /* LDT_REC_STACK */
    uint8_t part;           /* 0-based */
    uint8_t nparts;         /* >= 1, <= LDT_STACK_MAX_PARTS */
    uint8_t _pad0;
    uint16_t len;           /* bytes used in text[] */
    uint16_t _pad1;
    uint8_t trace_id[16];
    uint8_t span_id[8];
    char text[LDT_STACK_TEXT_MAX];
};

#define LDT_STACK_MAX_PARTS 16

/* Layout pins: the file format is an ABI. */
_Static_assert(sizeof(struct ldt_seg_hdr) == LDT_SEG_HDR_SIZE, "segment header size");
_Static_assert(offsetof(struct ldt_seg_hdr, version) == 8, "seg version");
_Static_assert(offsetof(struct ldt_seg_hdr, seg_size) == 16, "seg size");
_Static_assert(offsetof(struct ldt_seg_hdr, nrings) == 24, "seg nrings");
_Static_assert(offsetof(struct ldt_seg_hdr, ring_cap) == 28, "seg ring_cap");
_Static_assert(offsetof(struct ldt_seg_hdr, slot_size) == 32, "seg slot_size");
_Static_assert(offsetof(struct ldt_seg_hdr, ring_stride) == 36, "seg ring_stride");
_Static_assert(offsetof(struct ldt_seg_hdr, pid) == 40, "seg pid");
_Static_assert(offsetof(struct ldt_seg_hdr, start_wall_ns) == 48, "seg start");
_Static_assert(offsetof(struct ldt_seg_hdr, proc_start_ticks) == 56, "seg ticks");
_Static_assert(offsetof(struct ldt_seg_hdr, nonce) == 64, "seg nonce");
_Static_assert(offsetof(struct ldt_seg_hdr, flags) == 72, "seg flags");
_Static_assert(offsetof(struct ldt_seg_hdr, claim_fails) == 80, "seg claim_fails");
_Static_assert(offsetof(struct ldt_seg_hdr, service_name) == 136, "seg service_name");
_Static_assert(offsetof(struct ldt_seg_hdr, exe_name) == 264, "seg exe_name");
_Static_assert(offsetof(struct ldt_seg_hdr, host_name) == 328, "seg host_name");
_Static_assert(offsetof(struct ldt_seg_hdr, command_args) == 392, "seg command_args");
_Static_assert(offsetof(struct ldt_seg_hdr, args_len) == 1416, "seg args_len");
_Static_assert(offsetof(struct ldt_seg_hdr, resource_len) == 1420, "seg resource_len");
_Static_assert(offsetof(struct ldt_seg_hdr, resource) == 1424, "seg resource");
_Static_assert(sizeof(struct ldt_ring_hdr) == 128, "ring header size");
_Static_assert(offsetof(struct ldt_ring_hdr, tail) == 64, "ring tail on its own line");
_Static_assert(sizeof(struct ldt_slot) == LDT_SLOT_SIZE, "slot size");
_Static_assert(sizeof(struct ldt_span_rec) == LDT_REC_SIZE, "span record size");
_Static_assert(offsetof(struct ldt_span_rec, trace_id) == 8, "span trace_id");
_Static_assert(offsetof(struct ldt_span_rec, span_id) == 24, "span span_id");
_Static_assert(offsetof(struct ldt_span_rec, parent_id) == 32, "span parent_id");
_Static_assert(offsetof(struct ldt_span_rec, start_ns) == 40, "span start");
_Static_assert(offsetof(struct ldt_span_rec, dur_ns) == 48, "span dur");
_Static_assert(offsetof(struct ldt_span_rec, bytes_in) == 56, "span bytes_in");
_Static_assert(offsetof(struct ldt_span_rec, io_ns) == 72, "span io_ns");
_Static_assert(offsetof(struct ldt_span_rec, io_calls) == 80, "span io_calls");
_Static_assert(offsetof(struct ldt_span_rec, err) == 84, "span err");
_Static_assert(offsetof(struct ldt_span_rec, status_code) == 88, "span status_code");
_Static_assert(offsetof(struct ldt_span_rec, peer_family) == 94, "span peer_family");
_Static_assert(offsetof(struct ldt_span_rec, peer_addr) == 96, "span peer_addr");
_Static_assert(offsetof(struct ldt_span_rec, local_addr) == 112, "span local_addr");
_Static_assert(offsetof(struct ldt_span_rec, path_len) == 128, "span path_len");
_Static_assert(offsetof(struct ldt_span_rec, path) == 130, "span path");
_Static_assert(offsetof(struct ldt_span_rec, host) == 210, "span host");
_Static_assert(sizeof(struct ldt_stack_rec) == LDT_REC_SIZE, "stack record size");
_Static_assert(offsetof(struct ldt_stack_rec, text) == 32, "stack text");

#endif
