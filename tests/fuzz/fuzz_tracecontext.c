/* fuzz_tracecontext.c - libFuzzer target: traceparent/tracestate parsing never crashes, never accepts
 * what it must not, and what it emits round-trips and carries no control byte. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ldtrace/tracecontext.h"

static void check_traceparent(const char *s, size_t n)
{
    struct ldt_tc tc, again;
    char out[LDT_TP_LEN + 1];
    if (ldt_tc_parse(s, n, &tc) != 0)
        return;
    static const uint8_t zero[16];
    if (memcmp(tc.trace_id, zero, 16) == 0 || memcmp(tc.span_id, zero, 8) == 0)
        abort();                        /* all-zero ids are invalid */
    if (tc.flags & ~LDT_TC_FLAGS_KNOWN)
        abort();                        /* unknown flag bits must be cleared */
    if (ldt_tc_format(&tc, out) != LDT_TP_LEN || out[LDT_TP_LEN] != '\0')
        abort();
    if (ldt_tc_parse(out, LDT_TP_LEN, &again) != 0 || memcmp(&tc.trace_id, &again.trace_id, 16)
        || memcmp(tc.span_id, again.span_id, 8) || tc.flags != again.flags)
        abort();                        /* what we emit parses back to the same context */
}

static void check_tracestate(const char *s, size_t n)
{
    char out[LDT_TS_MAX + 1];
    int len = ldt_ts_normalize(s, n, out, sizeof(out));
    if (len < 0)
        return;
    if ((size_t)len >= sizeof(out) || out[len] != '\0')
        abort();
    for (int i = 0; i < len; i++)
        if ((unsigned char)out[i] < 0x20 || (unsigned char)out[i] > 0x7e)
            abort();                    /* never a control byte: this is re-sent on the wire */
    char again[LDT_TS_MAX + 1];
    int len2 = ldt_ts_normalize(out, (size_t)len, again, sizeof(again));
    if (len2 != len || memcmp(out, again, (size_t)len) != 0)
        abort();                        /* normalising is idempotent */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_traceparent((const char *)data, size);
    check_tracestate((const char *)data, size);
    return 0;
}
