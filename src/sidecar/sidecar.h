/* sidecar.h - private interfaces of ldtraced: JSON buffer, OTLP encoder, exporters, drain loop.
 *
 * Rules for everything in src/sidecar:
 *   - the segment contents are hostile: every string is bounded by its field and escaped on output;
 *   - the per-span encoding path does no snprintf and no per-span allocation: a batch buffer grows
 *     geometrically and every span reserves its worst case once, then writes unchecked;
 *   - errors are negative errno values passed up to main, which prints one line naming the call;
 *   - functions here are not thread-safe (ldtraced is single-threaded) and not signal-safe, except
 *     where stated.
 */
#ifndef LDTRACE_SIDECAR_H
#define LDTRACE_SIDECAR_H

#include <stddef.h>
#include <stdint.h>

#include "ldtrace/record.h"
#include "ldtrace/ring.h"

/* ---- growable byte buffer (jsonbuf.c) ---- */

struct ldt__buf {
    char *p;
    size_t len;
    size_t cap;
};

/* Make room for n more bytes. Returns 0 or -ENOMEM (the buffer is unchanged then). */
int ldt__buf_reserve(struct ldt__buf *b, size_t n);

/* Free the storage and zero the struct. */
void ldt__buf_free(struct ldt__buf *b);

/* Worst-case output size of ldt__json_str for n input bytes (quotes included). */
#define LDT__JSON_STR_MAX(n) (6 * (size_t)(n) + 2)

/* The unchecked writers below need the room already reserved; each returns the new end. */

/* Write s[0..n) as a JSON string literal with its quotes: '"' and '\\' escaped, \n \r \t as short
 * escapes, every other byte below 0x20 as \u00XX, and every byte that is not part of a well-formed
 * UTF-8 sequence (overlong, surrogate, above U+10FFFF, truncated) replaced by U+FFFD. */
char *ldt__json_str(char *out, const char *s, size_t n);

/* Unsigned decimal, no quotes. At most 20 bytes. */
char *ldt__fmt_u64(char *out, uint64_t v);

/* Signed decimal, no quotes. At most 20 bytes. */
char *ldt__fmt_i64(char *out, int64_t v);

/* Lowercase hex of n bytes (2n bytes). */
char *ldt__fmt_hex(char *out, const uint8_t *in, size_t n);

/* A stored address as text: dotted quad for LDT_AF_INET, RFC 5952 form for LDT_AF_INET6 (longest
 * zero run compressed, IPv4-mapped in dotted form). At most 45 bytes. Other families: nothing. */
char *ldt__fmt_addr(char *out, uint8_t family, const uint8_t addr[16]);

/* ---- resource (resource.c) ---- */

struct ldt__kv {
    char *key;
    char *val;
};

/* Parse OTEL_RESOURCE_ATTRIBUTES (s[0..n), "k=v,k=v"): members split on ',', key and value split at
 * the first '=', spaces and tabs around both trimmed, %XX sequences decoded in both. Empty members
 * are skipped. A member without '=', an empty key or a bad %-escape makes the whole value invalid
 * (as the OpenTelemetry specification asks: the entire variable is then discarded). Returns the
 * number of pairs stored in a new array *out (free it with ldt__kv_free), or -EINVAL, or -ENOMEM.
 */
int ldt__res_parse(const char *s, size_t n, struct ldt__kv **out);

void ldt__kv_free(struct ldt__kv *kv, int n);

/* Encode the OTLP Resource object {"attributes":[...]} for a segment header into b: service.name,
 * service.instance.id ("<pid>-<nonce as 16 hex>"), process.pid, process.executable.name,
 * process.command_args, host.name, telemetry.sdk.name/version, then the header's
 * OTEL_RESOURCE_ATTRIBUTES, which override the defaults of the same key except service.name (the
 * segment's service name always wins). Returns 0, -ENOMEM, or 1 when the resource string was
 * invalid and was discarded (the output is still complete). */
int ldt__res_encode(struct ldt__buf *b, const struct ldt_seg_hdr *h);

/* ---- OTLP JSON encoder (export_otlp_json.c) ---- */

#define LDT__STACK_TEXT_CAP (LDT_STACK_TEXT_MAX * LDT_STACK_MAX_PARTS)

/* A span's error stack assembled from its stack records. */
struct ldt__stack {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t nparts; /* parts announced */
    uint8_t next;   /* parts received so far (in order) */
    uint32_t len;   /* bytes in text */
    char text[LDT__STACK_TEXT_CAP];
};

/* One line of output in the making: an ExportTraceServiceRequest for one segment (one process). */
struct ldt__batch {
    struct ldt__buf buf; /* prefix, then spans separated by ',' */
    size_t prefix_len;   /* bytes up to and including "spans":[ */
    uint32_t nspans;
    uint64_t first_ns; /* monotonic time of the first span added since the last reset */
};

/* Start a batch for a segment: encodes the resource and scope prefix once. Returns 0, -ENOMEM, or 1
 * when the header's resource attributes were invalid (discarded; the batch is usable). */
int ldt__batch_init(struct ldt__batch *bt, const struct ldt_seg_hdr *h);

/* Append one span (and, when st is not NULL, an "exception" event built from it). Returns 0 or
 * -ENOMEM (nothing appended). */
int ldt__batch_add(struct ldt__batch *bt, const struct ldt_span_rec *s,
                   const struct ldt__stack *st);

/* Close the JSON document and its line: returns a pointer to the whole line (ending in '\n') and
 * its length in *len, or NULL when the batch holds no span or memory ran out. The batch must then
 * be reset before adding more. */
const char *ldt__batch_finish(struct ldt__batch *bt, size_t *len);

/* Drop the spans (keep the prefix) so the batch can be filled again. */
void ldt__batch_reset(struct ldt__batch *bt);

/* Shrink the buffer's capacity to max(keep, bytes in use) when it is more than twice that. */
void ldt__batch_trim(struct ldt__batch *bt, size_t keep);

void ldt__batch_free(struct ldt__batch *bt);

/* The span name: the HTTP method for HTTP spans, "connect", "dns.lookup", "send", "recv", "accept"
 * for INTERNAL ones, "internal" for an unknown op. Static storage. */
const char *ldt__span_name(const struct ldt_span_rec *s);

/* The OTLP error.type for a span, written into out[cap] (NUL-terminated), or "" when the span is
 * not an error: the errno name ("ECONNREFUSED") when err is set, the status code ("503") for a
 * status of 400 or more on an ERROR span, "_OTHER" for any other ERROR span. Returns the length. */
size_t ldt__error_type(const struct ldt_span_rec *s, char *out, size_t cap);

/* ---- stack assembly (drain.c) ---- */

/* Feed a stack record into the assembly st. Returns 1 when it was accepted, 0 when it did not
 * follow the previous part (the assembly restarts from it if it is a part 0, else is cleared;
 * counted by the caller as a bad record). */
int ldt__stack_feed(struct ldt__stack *st, const struct ldt_stack_rec *rec);

/* The assembled stack for span s, or NULL: complete (all parts in order) and for the same trace and
 * span id. Call with the span that follows the stack records; clears st either way. */
const struct ldt__stack *ldt__stack_take(struct ldt__stack *st, const struct ldt_span_rec *s);

/* ---- exporters ---- */

struct ldt__exporter;

/* A small vtable: the file exporter and the OTLP/HTTP exporter. */
struct ldt__exporter_ops {
    const char *name;
    const char *verb; /* the call named in error messages: "write", "POST" */
    /* Deliver one complete line (an ExportTraceServiceRequest holding nspans spans). Returns 0 once
     * the line is delivered or durably queued (the drain loop then moves the ring tails past its
     * records), or a negative errno: nothing of it stays behind (a partial line is cut off) and
     * the drain loop reads the records again later, after e->retry_at. */
    int (*export_line)(struct ldt__exporter *e, const char *line, size_t len, uint32_t nspans);
    /* Called on every pass of the drain loop: send what is queued when it is due. Returns 0 or a
     * negative errno (reported; the queue is kept). */
    int (*flush)(struct ldt__exporter *e);
    /* For exporters whose output can be checked after a crash (the file): the offset the next line
     * will be written at. NULL otherwise (then delivery is at least once across a crash). */
    int (*position)(struct ldt__exporter *e, uint64_t *off);
    void (*close)(struct ldt__exporter *e);
};

struct ldt__exporter {
    const struct ldt__exporter_ops *ops;
    int fd;            /* file exporter */
    void *impl;        /* other exporters' state */
    uint64_t retry_at; /* monotonic ns: do not call export_line before (0: any time) */
    char target[512];  /* file path or URL, for error messages */
};

/* Open the file exporter: append to path (created 0644). Returns 0 or a negative errno. A failed
 * write (ENOSPC, EIO) truncates the file back to where the line began. */
int ldt__export_file_open(struct ldt__exporter *e, const char *path);

/* Settings of the OTLP/HTTP exporter, from the command line and the OTEL_EXPORTER_OTLP_* variables
 * (ldt__http_opts_env fills them; the command line overrides). */
struct ldt__http_opts {
    const char *url;       /* --otlp URL, else NULL (then the environment's endpoint) */
    const char *ca_file;   /* --otlp-ca FILE: an extra CA bundle (the system store is used too) */
    const char *spool_dir; /* --spool-dir DIR: on-disk queue while the collector is down */
    uint64_t spool_max;    /* --spool-max-mb: cap of the spool in bytes (oldest dropped past it) */
    unsigned timeout_ms;   /* OTEL_EXPORTER_OTLP[_TRACES]_TIMEOUT, default 10000 */
    int gzip;              /* OTEL_EXPORTER_OTLP[_TRACES]_COMPRESSION=gzip */
    unsigned backoff_ms;   /* first retry delay (doubles, with jitter, up to backoff_max_ms) */
    unsigned backoff_max_ms;
};

/* Defaults, then OTEL_EXPORTER_OTLP_TRACES_* over OTEL_EXPORTER_OTLP_*. Returns 0, or -EINVAL for
 * an unusable value (its variable's name in *bad). */
int ldt__http_opts_env(struct ldt__http_opts *o, const char **bad);

/* The traces URL when --otlp is not given: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as is, else
 * OTEL_EXPORTER_OTLP_ENDPOINT with "/v1/traces" appended to its path (after one '/', as the
 * specification says), else NULL. Returns 0 (out filled), 1 (no variable set), -EINVAL or
 * -ENAMETOOLONG. */
int ldt__otlp_env_url(char *out, size_t cap);

/* Open the OTLP/HTTP exporter (libcurl) for a collector URL (see ldt__otlp_url), with the headers
 * of OTEL_EXPORTER_OTLP_HEADERS / OTEL_EXPORTER_OTLP_TRACES_HEADERS. One attempt per line, the
 * OTLP retry rules: 2xx delivered (partialSuccess.rejectedSpans counted and logged); 429, 502,
 * 503, 504 and transport errors retried after an exponential backoff with jitter (at least the
 * Retry-After the server sent); any other status dropped and logged with the response body. A line
 * to retry goes to the spool when there is one (and every later line after it, so the order holds),
 * else back to the rings (export_line fails). Returns 0, -EINVAL for a bad URL or headers variable,
 * or -ENOMEM/-EIO from libcurl, or -errno from the spool directory. */
int ldt__export_http_open(struct ldt__exporter *e, const struct ldt__http_opts *o);

/* Counters of the OTLP/HTTP exporter (zeros for another exporter). */
struct ldt__http_stats {
    uint64_t requests;       /* POSTs made */
    uint64_t retries;        /* retryable failures */
    uint64_t rejected_lines; /* lines refused with a non-retryable status (dropped) */
    uint64_t rejected_spans; /* partialSuccess.rejectedSpans summed, plus the spans of the above */
    uint64_t spooled;        /* lines written into the spool */
    uint64_t spool_dropped;  /* spans dropped because the spool was over its cap */
    uint64_t spool_lines;    /* lines waiting in the spool now */
};
void ldt__export_http_stats(const struct ldt__exporter *e, struct ldt__http_stats *out);

/* The traces endpoint for --otlp: a base URL without a path ("http://h:4318" or "http://h:4318/")
 * gets "/v1/traces"; a URL with a path is used as is. Returns 0, -EINVAL (not http[s]://...) or
 * -ENAMETOOLONG. */
int ldt__otlp_url(const char *base, char *out, size_t cap);

/* ---- the spool: an on-disk queue of lines, oldest first (spool.c) ---- */

struct ldt__spool;

/* Open (creating it 0700) or resume the spool in dir: the lines a previous ldtraced left are
 * queued again, oldest first. max is the byte cap. Returns 0 or a negative errno. */
int ldt__spool_open(const char *dir, uint64_t max, struct ldt__spool **out);

/* Append a line of nspans spans (written to a temporary name, then renamed: a crash never leaves
 * half a line). Past the cap, the oldest lines are deleted and their spans added to *dropped.
 * Returns 0 or a negative errno (nothing queued). */
int ldt__spool_push(struct ldt__spool *s, const char *line, size_t len, uint32_t nspans,
                    uint64_t *dropped);

/* Read the oldest line into a buffer of the caller's (ldt__buf). Returns 1 (line in b, its span
 * count in *nspans), 0 when empty, or a negative errno. */
int ldt__spool_peek(struct ldt__spool *s, struct ldt__buf *b, uint32_t *nspans);

/* Delete the oldest line. */
void ldt__spool_pop(struct ldt__spool *s);

/* Lines and bytes queued. */
size_t ldt__spool_lines(const struct ldt__spool *s);
uint64_t ldt__spool_bytes(const struct ldt__spool *s);

void ldt__spool_close(struct ldt__spool *s);

/* ---- the write-ahead journal of the file exporter (journal.c) ---- */

struct ldt__journal {
    int fd; /* -1 until ldt__journal_open */
    void *buf;
    char path[600];
};

/* Open (create) DIR/.ldtraced.journal. Returns 0 or a negative errno. */
int ldt__journal_open(struct ldt__journal *j, const char *dir);

/* Record that line[len] is about to be appended to out at off and that the ring tails of segment
 * r move to tails[r->nrings] once it is. Returns 0 or a negative errno (then do not write). */
int ldt__journal_begin(struct ldt__journal *j, const struct ldt_seg_reader *r,
                       const uint64_t *tails, const char *out, uint64_t off, const char *line,
                       size_t len);

/* The tails were stored: forget the entry. */
int ldt__journal_end(struct ldt__journal *j);

/* On start: finish what a crashed ldtraced left. Returns 0 (nothing to do), 1 (the line was all
 * written: its tails applied), 2 (it was not: a partial line cut off, records read again), 3 (the
 * output does not match: left alone, records read again), or a negative errno. */
int ldt__journal_recover(struct ldt__journal *j);

void ldt__journal_close(struct ldt__journal *j);

/* ---- the drain loop (drain.c) ---- */

struct ldt__stats {
    uint64_t spans;        /* spans exported */
    uint64_t dropped;      /* producers' drop counters (closed segments + live ones) */
    uint64_t bad_records;  /* records rejected by the reader or out of place (stack parts) */
    uint64_t bad_segments; /* segment files rejected (each counted once while unchanged) */
    uint64_t segments;     /* segments opened */
    uint64_t torn;         /* uncommitted slots skipped after their producer died */
    uint64_t write_errors; /* lines the exporter failed to take (their records read again) */
    uint64_t recovered;    /* journal entries finished at start (1 or 0) */
    uint64_t orphan_parts; /* stack parts out of place in a segment whose producer dropped records
                            * (the parts before them were dropped on a full ring: not bad) */
};

struct ldt__drain;

struct ldt__drain_opts {
    const char *dir;
    struct ldt__exporter *exp;
    unsigned poll_ms;     /* shortest sleep between passes */
    unsigned poll_max_ms; /* longest sleep, while every ring is quiet (0: 20; at least poll_ms) */
    unsigned rescan_ms;   /* directory rescan and liveness check period */
    unsigned flush_ms;    /* longest time a span waits in a batch */
    uint32_t batch_max;   /* flush a batch when it reaches this many spans */
    size_t batch_bytes;   /* ... or this many bytes (0: 256 KiB to a file, else 4 MiB) */
    int no_journal;       /* file exporter without the crash journal (tests, benches) */
};

/* Create the drain state. Returns NULL when out of memory.
 *
 * Delivery: each ring is read at a cursor of the sidecar's own; the shared tail moves past a
 * batch's records only once the exporter took its line (ldt_seg_read_at, ldt_seg_release). With the
 * file exporter, a write-ahead journal in the directory closes the window between the write and the
 * tail store, so a killed ldtraced followed by a new one exports every committed span exactly once.
 * When the exporter fails (disk full, collector down without a spool), the records stay in the
 * rings, the error is reported once, and the batch is tried again with a backoff (100 ms doubling
 * to 5 s). */
struct ldt__drain *ldt__drain_new(const struct ldt__drain_opts *o);

/* One pass: rescan the directory when due or changed (its mtime), read every ring of every segment,
 * finish the segments of producers that are gone, flush batches that are due. Returns the number of
 * records read (> 0 means more may be waiting), or a negative errno from the exporter or the
 * directory. */
int ldt__drain_pass(struct ldt__drain *d);

/* How long to sleep before the next pass, as the last pass advises: 0 when a ring had more than
 * one pass may read; else the time in which no ring fills beyond an eighth of its free room at
 * its recent rate (rates rise at once and decay over 100 ms), between poll_ms and poll_max_ms.
 * Busy rings are thus polled every poll_ms, quiet ones every poll_max_ms. */
uint64_t ldt__drain_sleep_ns(const struct ldt__drain *d);

/* Drain everything committed right now in every segment (after a fresh rescan), finish gone
 * producers, and flush every batch. Used by --once and at SIGTERM. Returns 0 or -errno. */
int ldt__drain_all(struct ldt__drain *d);

/* What failed last, as "<call> <object>" ("opendir /dev/shm/x", "write out.jsonl"), for the
 * one-line error message of a negative return above; "" before any failure (and for -ENOMEM). */
const char *ldt__drain_errwhat(const struct ldt__drain *d);

/* 1 while the exporter is failing (since the last error, no line was delivered), else 0. */
int ldt__drain_failing(const struct ldt__drain *d);

/* Segments open right now (producers alive, or not yet noticed gone). */
size_t ldt__drain_open_segments(const struct ldt__drain *d);

/* Current counters (dropped includes the live segments' counters). */
void ldt__drain_stats(struct ldt__drain *d, struct ldt__stats *out);

/* Flush and close every segment (without unlinking live ones) and free the state. */
void ldt__drain_free(struct ldt__drain *d);

/* ---- measurement (bench.c) ---- */

/* Encode n synthetic spans (batches of 4096, varied ids, addresses and paths) through exporter e
 * and print the rate to stdout. Returns the process exit status. */
int ldt__bench_encode(unsigned long long n, struct ldt__exporter *e);

#endif
