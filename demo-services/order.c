/* order.c - demo order service: POST /orders queries db, then charges payment. No tracing code.
 *
 * A 5xx or failed exchange with payment is retried (3 retries by default). */
#include "common/minihttp.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct order_cfg {
    struct mh_peer payment;
    struct mh_peer db;
    int retries;    /* extra payment attempts after a 5xx or a failed exchange */
    int backoff_ms; /* pause before retry k: k * backoff_ms */
};

struct order_info {
    long id;
    long items;
    long total_cents;
    int slow;
};

/* Answer 502: the inventory query failed, so the order cannot be priced. */
__attribute__((noinline)) void order_db_failed(struct mh_response *resp, long id, int rc)
{
    mh_respond_now(resp, 502,
               "{\"error\":\"inventory query failed\",\"order\":%ld,\"upstream_status\":%d}", id,
               rc > 0 ? rc : 0);
}

/* Answer 503: every payment attempt failed; the error came from payment and is passed upstream. */
__attribute__((noinline)) void order_payment_failed(struct mh_response *resp, long id, int attempts,
                                                    int rc)
{
    mh_respond_now(resp, 503,
               "{\"error\":\"payment unavailable\",\"order\":%ld,\"payment_attempts\":%d,"
               "\"upstream_status\":%d}",
               id, attempts, rc > 0 ? rc : 0);
}

/* Wait before the next payment attempt: a short linear backoff (the retry storm is the point). */
__attribute__((noinline)) void order_retry_charge(const struct order_cfg *cfg, int attempt)
{
    int ms = attempt * cfg->backoff_ms;
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Ask db for the order's items and price. Returns 0, or the failing status / negative errno. */
static int lookup(const struct order_cfg *cfg, struct order_info *info)
{
    char target[96];
    struct mh_reply reply;
    snprintf(target, sizeof(target), "/query?order=%ld%s", info->id, info->slow ? "&slow=1" : "");
    int rc = mh_call(&cfg->db, "GET", target, NULL, NULL, &reply);
    if (rc != 200)
        return rc == 0 ? -EPROTO : rc;
    if (mh_json_int(reply.body, "items", &info->items) < 0 ||
        mh_json_int(reply.body, "total_cents", &info->total_cents) < 0)
        return -EPROTO;
    return 0;
}

/* Charge payment, retrying on 5xx and failed exchanges. Returns 200 with the charge id in
 * charge_id, or the last failure; *attempts says how many were made. */
static int charge(const struct order_cfg *cfg, const struct order_info *info, char *charge_id,
                  size_t size, int *attempts)
{
    int rc = 0;
    for (int k = 1; k <= 1 + cfg->retries; k++) {
        char body[160];
        struct mh_reply reply;
        if (k > 1)
            order_retry_charge(cfg, k - 1);
        snprintf(body, sizeof(body), "{\"order\":%ld,\"amount_cents\":%ld,\"attempt\":%d}",
                 info->id, info->total_cents, k);
        *attempts = k;
        rc = mh_call(&cfg->payment, "POST", "/charge", NULL, body, &reply);
        if (rc == 200 && mh_json_str(reply.body, "charge_id", charge_id, size) < 0)
            rc = -EPROTO;
        if (rc == 200 || (rc >= 400 && rc < 500))
            return rc;
    }
    return rc;
}

static void place(const struct order_cfg *cfg, const struct mh_request *req,
                  struct mh_response *resp)
{
    struct order_info info = {0};
    long slow = 0;
    if (mh_json_int(req->body, "order", &info.id) < 0 || info.id < 1 || info.id > 999999999) {
        mh_respond(resp, 400, "{\"error\":\"body needs a positive order id\"}");
        return;
    }
    info.slow = mh_json_int(req->body, "slow", &slow) == 0 && slow == 1;
    int rc = lookup(cfg, &info);
    if (rc != 0) {
        order_db_failed(resp, info.id, rc);
        return;
    }
    char charge_id[64];
    int attempts = 0;
    rc = charge(cfg, &info, charge_id, sizeof(charge_id), &attempts);
    if (rc != 200) {
        order_payment_failed(resp, info.id, attempts, rc);
        return;
    }
    mh_respond(resp, 200,
               "{\"order\":%ld,\"status\":\"confirmed\",\"items\":%ld,\"total_cents\":%ld,"
               "\"charge_id\":\"%s\",\"payment_attempts\":%d}",
               info.id, info.items, info.total_cents, charge_id, attempts);
}

static void handle(const struct mh_request *req, struct mh_response *resp, void *ctx)
{
    if (strcmp(req->path, "/orders") != 0)
        mh_respond(resp, 404, "{\"error\":\"not found\"}");
    else if (strcmp(req->method, "POST") != 0)
        mh_respond(resp, 405, "{\"error\":\"method not allowed\"}");
    else
        place(ctx, req, resp);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: order [--port N] [--port-file FILE] [--bind ADDR] [--payment HOST:PORT]\n"
            "             [--db HOST:PORT] [--retries N] [--backoff MS] [--latency MS]\n"
            "             [--jitter MS] [--verbose]\n");
}

/* Parse the options only order has. Returns 1 when consumed, 0 when unknown, -1 on a bad value. */
static int order_opt(struct order_cfg *cfg, int argc, char **argv, int *i)
{
    const char *opt = argv[*i], *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    int peer = strcmp(opt, "--payment") == 0 || strcmp(opt, "--db") == 0;
    int num = strcmp(opt, "--retries") == 0 || strcmp(opt, "--backoff") == 0;
    if (!peer && !num)
        return 0;
    (*i)++;
    if (peer && v && mh_peer_parse(v, opt[2] == 'p' ? &cfg->payment : &cfg->db) == 0)
        return 1;
    if (num && v && atoi(v) >= 0 && atoi(v) <= 100) {
        *(opt[2] == 'r' ? &cfg->retries : &cfg->backoff_ms) = atoi(v);
        return 1;
    }
    fprintf(stderr, "order: %s needs %s\n", opt, peer ? "HOST:PORT" : "an integer in 0..100");
    return -1;
}

int main(int argc, char **argv)
{
    struct order_cfg cfg = {.retries = 3, .backoff_ms = 2};
    struct mh_server srv = {.name = "order",
                            .port = 8082,
                            .latency_ms = 3,
                            .jitter_ms = 2,
                            .handler = handle,
                            .ctx = &cfg};
    mh_peer_parse("127.0.0.1:8083", &cfg.payment);
    mh_peer_parse("127.0.0.1:8084", &cfg.db);
    for (int i = 1; i < argc; i++) {
        int rc = mh_common_opt(&srv, argc, argv, &i);
        if (rc == 0)
            rc = order_opt(&cfg, argc, argv, &i);
        if (rc < 0)
            return 2;
        if (rc > 0)
            continue;
        usage();
        return strcmp(argv[i], "--help") == 0 ? 0 : 2;
    }
    return mh_serve(&srv);
}
