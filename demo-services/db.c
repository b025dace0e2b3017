/* db.c - demo "database" service: GET /query?order=N[&slow=1] prices an order. No tracing code. */
#include "common/minihttp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct db_cfg {
    int slow_every; /* orders whose id is a multiple of this take the slow path (0: never) */
    int slow_ms;    /* how long the slow path takes */
};

/* The slow path: a query that misses its index and scans. Named and out of line so that a profile
 * or a stack shows where the time went. */
__attribute__((noinline)) void db_slow_query(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static void query(const struct db_cfg *cfg, const struct mh_request *req, struct mh_response *resp)
{
    char v[32];
    long id = mh_query_get(req->query, "order", v, sizeof(v)) > 0 ? mh_parse_id(v) : -1;
    if (id < 0) {
        mh_respond(resp, 400, "{\"error\":\"query needs order=N\"}");
        return;
    }
    int slow = (mh_query_get(req->query, "slow", v, sizeof(v)) >= 0 && strcmp(v, "1") == 0) ||
               (cfg->slow_every > 0 && id % cfg->slow_every == 0);
    if (slow)
        db_slow_query(cfg->slow_ms);
    long items = 1 + id % 5;
    long total = items * (499 + (id * 37) % 1000);
    mh_respond(
        resp, 200,
        "{\"order\":%ld,\"items\":%ld,\"total_cents\":%ld,\"sku\":\"SKU-%05ld\",\"plan\":\"%s\"}",
        id, items, total, id % 100000, slow ? "full-scan" : "index");
}

static void handle(const struct mh_request *req, struct mh_response *resp, void *ctx)
{
    if (strcmp(req->path, "/query") != 0)
        mh_respond(resp, 404, "{\"error\":\"not found\"}");
    else if (strcmp(req->method, "GET") != 0)
        mh_respond(resp, 405, "{\"error\":\"method not allowed\"}");
    else
        query(ctx, req, resp);
}

static void usage(void)
{
    fprintf(stderr, "usage: db [--port N] [--port-file FILE] [--bind ADDR] [--slow-every N]\n"
                    "          [--slow-ms MS] [--latency MS] [--jitter MS] [--verbose]\n");
}

int main(int argc, char **argv)
{
    struct db_cfg cfg = {.slow_every = 0, .slow_ms = 150};
    struct mh_server srv = {.name = "db",
                            .port = 8084,
                            .latency_ms = 2,
                            .jitter_ms = 2,
                            .handler = handle,
                            .ctx = &cfg};
    for (int i = 1; i < argc; i++) {
        int rc = mh_common_opt(&srv, argc, argv, &i);
        if (rc == 0)
            rc = mh_int_opt(&srv, argc, argv, &i, "--slow-every", &cfg.slow_every);
        if (rc == 0)
            rc = mh_int_opt(&srv, argc, argv, &i, "--slow-ms", &cfg.slow_ms);
        if (rc < 0)
            return 2;
        if (rc > 0)
            continue;
        usage();
        return strcmp(argv[i], "--help") == 0 ? 0 : 2;
    }
    return mh_serve(&srv);
}
