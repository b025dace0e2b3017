/* auth.c - demo service that checks the caller's bearer token: GET /verify. No tracing code. */
#include "common/minihttp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct auth_cfg {
    const char *token; /* the one accepted bearer token */
};

/* Answer 401: the caller's token is missing or not the accepted one. Kept out of line and named, so
 * an error stack taken here says what happened. */
__attribute__((noinline)) void auth_reject_token(struct mh_response *resp, const char *why)
{
    mh_respond(resp, 401, "{\"error\":\"invalid token\",\"reason\":\"%s\"}", why);
}

static void handle(const struct mh_request *req, struct mh_response *resp, void *ctx)
{
    const struct auth_cfg *cfg = ctx;
    if (strcmp(req->path, "/verify") != 0) {
        mh_respond(resp, 404, "{\"error\":\"not found\"}");
        return;
    }
    if (strcmp(req->method, "GET") != 0) {
        mh_respond(resp, 405, "{\"error\":\"method not allowed\"}");
        return;
    }
    char value[256];
    if (mh_header_get(req, "Authorization", value, sizeof(value)) < 0) {
        auth_reject_token(resp, "missing");
        return;
    }
    if (strncmp(value, "Bearer ", 7) != 0 || strcmp(value + 7, cfg->token) != 0) {
        auth_reject_token(resp, "mismatch");
        return;
    }
    mh_respond(resp, 200, "{\"user\":\"demo\",\"scope\":\"checkout\"}");
}

static void usage(void)
{
    fprintf(stderr, "usage: auth [--port N] [--port-file FILE] [--bind ADDR] [--token TOKEN]\n"
                    "            [--latency MS] [--jitter MS] [--verbose]\n");
}

int main(int argc, char **argv)
{
    struct auth_cfg cfg = {.token = "demo-token"};
    struct mh_server srv = {.name = "auth",
                            .port = 8081,
                            .latency_ms = 2,
                            .jitter_ms = 2,
                            .handler = handle,
                            .ctx = &cfg};
    for (int i = 1; i < argc; i++) {
        int rc = mh_common_opt(&srv, argc, argv, &i);
        if (rc < 0)
            return 2;
        if (rc > 0)
            continue;
        if (strcmp(argv[i], "--token") == 0 && i + 1 < argc) {
            cfg.token = argv[++i];
            continue;
        }
        usage();
        return strcmp(argv[i], "--help") == 0 ? 0 : 2;
    }
    return mh_serve(&srv);
}
