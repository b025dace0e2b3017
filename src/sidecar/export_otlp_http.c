/* export_otlp_http.c - the OTLP/HTTP exporter (POST /v1/traces with libcurl, retry and spool):
 * not implemented yet; it will plug into the struct ldt__exporter_ops vtable like the file one. */
#include <errno.h>
#include <string.h>

#include "sidecar/sidecar.h"

int ldt__export_http_open(struct ldt__exporter *e, const char *url)
{
    memset(e, 0, sizeof(*e));
    e->fd = -1;
    strncpy(e->target, url, sizeof(e->target) - 1);
    return -ENOTSUP;
}
