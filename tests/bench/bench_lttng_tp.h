/* bench_lttng_tp.h - the LTTng-UST tracepoint bench_http_lttng fires once per request (the peer
 * ldtrace is compared with): provider ldt_bench, event request (fd, status). */
#undef LTTNG_UST_TRACEPOINT_PROVIDER
#define LTTNG_UST_TRACEPOINT_PROVIDER ldt_bench

#undef LTTNG_UST_TRACEPOINT_INCLUDE
#define LTTNG_UST_TRACEPOINT_INCLUDE "./bench_lttng_tp.h"

#if !defined(BENCH_LTTNG_TP_H) || defined(LTTNG_UST_TRACEPOINT_HEADER_MULTI_READ)
#define BENCH_LTTNG_TP_H

#include <lttng/tracepoint.h>

LTTNG_UST_TRACEPOINT_EVENT(ldt_bench, request,
                           LTTNG_UST_TP_ARGS(int, fd, int, status),
                           LTTNG_UST_TP_FIELDS(lttng_ust_field_integer(int, fd, fd)
                                                   lttng_ust_field_integer(int, status, status)))

#endif

#include <lttng/tracepoint-event.h>
