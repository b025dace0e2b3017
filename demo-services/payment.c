/* payment.c - demo payment service: POST /charge, with switches that make it fail. No tracing. */
#include "common/minihttp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct payment_cfg {
    int down;        /* every charge fails */
    int fail_every;  /* orders whose id is a multiple of this always fail (0: none) */
    int flaky_every; /* orders whose id is a multiple of this fail on their first attempt (0: none)
                      */
};

/* Answer 503: the charge was refused. This is where the demo's errors originate; it is kept out of
 * line and named so that an error stack taken here points at it. */
__attribute__((noinline)) void payment_reject_charge(struct mh_response *resp, long order,
                                                     const char *reason)
{
    mh_respond_now(resp, 503,
               "{\"error\":\"payment processor unavailable\",\"order\":%ld,\"reason\":\"%s\"}",
               order, reason);
}

/* Decide whether this attempt fails, and why (NULL when it succeeds). Deterministic in its inputs.
 */
static const char *failure_reason(const struct payment_cfg *cfg, long order, long attempt)
{
    if (cfg->down)
        return "down";
    if (cfg->fail_every > 0 && order % cfg->fail_every == 0)
        return "declined";
    if (cfg->flaky_every > 0 && order % cfg->flaky_every == 0 && attempt <= 1)
        return "flaky";
    return NULL;
}

static void charge(const struct payment_cfg *cfg, const struct mh_request *req,
                   struct mh_response *resp)
{
    long order = 0, amount = 0, attempt = 1;
    if (mh_json_int(req->body, "order", &order) < 0 || order < 1 ||
        mh_json_int(req->body, "amount_cents", &amount) < 0 || amount < 0) {
        mh_respond(resp, 400, "{\"error\":\"charge needs order and amount_cents\"}");
        return;
    }
    mh_json_int(req->body, "attempt", &attempt);
    const char *why = failure_reason(cfg, order, attempt);
    if (why) {
        payment_reject_charge(resp, order, why);
        return;
    }
    mh_respond(resp, 200,
               "{\"order\":%ld,\"charge_id\":\"ch-%09ld\",\"amount_cents\":%ld,\"attempt\":%ld}",
               order, order, amount, attempt);
}

static void handle(const struct mh_request *req, struct mh_response *resp, void *ctx)
{
    if (strcmp(req->path, "/charge") != 0)
        mh_respond(resp, 404, "{\"error\":\"not found\"}");
    else if (strcmp(req->method, "POST") != 0)
        mh_respond(resp, 405, "{\"error\":\"method not allowed\"}");
    else
        charge(ctx, req, resp);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: payment [--port N] [--port-file FILE] [--bind ADDR] [--down]\n"
            "               [--fail-every N] [--flaky-every N] [--latency MS] [--jitter MS]\n"
            "               [--verbose]\n");
}

int main(int argc, char **argv)
{
    struct payment_cfg cfg = {0};
    struct mh_server srv = {.name = "payment",
                            .port = 8083,
                            .latency_ms = 4,
                            .jitter_ms = 3,
                            .handler = handle,
                            .ctx = &cfg};
    for (int i = 1; i < argc; i++) {
        int rc = mh_common_opt(&srv, argc, argv, &i);
        if (rc == 0 && strcmp(argv[i], "--down") == 0)
            cfg.down = rc = 1;
        if (rc == 0)
            rc = mh_int_opt(&srv, argc, argv, &i, "--fail-every", &cfg.fail_every);
        if (rc == 0)
            rc = mh_int_opt(&srv, argc, argv, &i, "--flaky-every", &cfg.flaky_every);
        if (rc < 0)
            return 2;
        if (rc > 0)
            continue;
        usage();
        return strcmp(argv[i], "--help") == 0 ? 0 : 2;
    }
    return mh_serve(&srv);
}
