/* tracecontext.h - W3C Trace Context (traceparent, tracestate) parse and format, Level 1 + Level 2 flag.
 *
 * Used by: the shim (extract from inbound requests, inject into outbound ones) and the tests.
 * Pure functions: no syscalls, no allocation, thread- and async-signal-safe. Inputs are not
 * NUL-terminated (pointer + length); outputs are written into caller buffers of stated size.
 */
#ifndef LDTRACE_TRACECONTEXT_H
#define LDTRACE_TRACECONTEXT_H

#include <stddef.h>
#include <stdint.h>

#define LDT_TC_FLAG_SAMPLED 0x01u  /* W3C trace-flags bit 0 */
#define LDT_TC_FLAG_RANDOM 0x02u   /* Level 2: the trace-id's right 7 bytes are random */
#define LDT_TC_FLAGS_KNOWN (LDT_TC_FLAG_SAMPLED | LDT_TC_FLAG_RANDOM)

#define LDT_TP_LEN 55              /* "00-" 32 hex "-" 16 hex "-" 2 hex */
#define LDT_TS_MAX 512             /* longest tracestate we keep and re-send (the spec's minimum) */
#define LDT_TS_MAX_MEMBERS 32

/* A parsed traceparent. */
struct ldt_tc {
    uint8_t trace_id[16];
    uint8_t span_id[8];      /* the parent-id field of the header */
    uint8_t flags;           /* unknown bits already cleared */
    uint8_t version;         /* as received; we always emit 00 */
};

/* Parse a traceparent header value (leading/trailing spaces and tabs are allowed and ignored).
 * Rules (W3C Trace Context, section 3.2): version is 2 lowercase hex digits, ff invalid; version 00
 * must be exactly 55 characters; a higher version must be at least 55 characters and, when longer,
 * continue with '-' after the flags; trace-id 32 and parent-id 16 lowercase hex, neither all zero;
 * flags 2 lowercase hex; flag bits other than sampled and random are cleared.
 * Returns 0 and fills *out, or -EINVAL (out is then zeroed). */
int ldt_tc_parse(const char *s, size_t len, struct ldt_tc *out);

/* Write "00-<trace>-<span>-<flags>" (exactly LDT_TP_LEN bytes, then a NUL) into out.
 * Returns LDT_TP_LEN. */
int ldt_tc_format(const struct ldt_tc *tc, char out[LDT_TP_LEN + 1]);

/* Validate a tracestate value, possibly several header lines already joined with ','
 * (W3C Trace Context section 3.3): list-members "key=value" separated by ',' with optional spaces
 * and tabs around them; empty members are allowed and dropped; keys are
 * lcalpha 0*255(lcalpha / DIGIT / "_" / "-" / "*" / "/") or a multi-tenant
 * "tenant@system" (tenant 1*241, system 1*14 of the same set, tenant may start with a digit);
 * values are 1*256 of printable ASCII 0x20-0x7E except ',' and '=', not ending in a space;
 * at most LDT_TS_MAX_MEMBERS members and no duplicate keys. Any CR, LF, NUL or other control byte
 * makes the whole value invalid.
 * On success writes the normalised value (members joined by ',' with no surrounding whitespace) into
 * out[cap] (NUL-terminated) and returns its length; returns -EINVAL when invalid (the whole tracestate
 * must then be dropped) and -ENOSPC when the normalised value does not fit in cap (also dropped). */
int ldt_ts_normalize(const char *s, size_t len, char *out, size_t cap);

/* Lowercase hex of n bytes into out[2n] (not terminated). */
void ldt_hex_encode(const uint8_t *in, size_t n, char *out);

/* Parse exactly 2n lowercase hex characters into out[n]. Returns 0 or -EINVAL. */
int ldt_hex_decode(const char *in, size_t n, uint8_t *out);

#endif
