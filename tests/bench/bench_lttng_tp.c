/* bench_lttng_tp.c - instantiates the ldt_bench tracepoint provider (bench_lttng_tp.h) inside
 * bench_http_lttng. */
#define LTTNG_UST_TRACEPOINT_CREATE_PROBES
#define LTTNG_UST_TRACEPOINT_DEFINE
#include "bench_lttng_tp.h"
