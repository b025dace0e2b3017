/* gateway.c - demo edge service: GET /checkout?order=N calls auth, then order. No tracing code.
 *
 * auth verifies the caller's token, order places the order; the answer is JSON. */
#include "common/minihttp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct gateway_cfg {
    struct mh_peer auth;
    struct mh_peer order;
};

/* Answer 502: an upstream failed (payment's 503 surfaces here, through order). Named and out of
 * line so an error stack shows where the failure was turned into the caller's answer. */
__attribute__((noinline)) void gateway_upstream_failed(struct mh_response *resp, long order,
                                                       const char *stage, int rc,
                                                       const struct mh_reply *reply)
{
    char err[96] = "unreachable";
    if (rc > 0 && mh_json_str(reply->body, "error", err, sizeof(err)) < 0)
        snprintf(err, sizeof(err), "unexpected status");
    mh_respond_now(resp, 502,
               "{\"checkout\":\"failed\",\"order\":%ld,\"stage\":\"%s\",\"upstream_status\":%d,"
               "\"error\":\"%s\"}",
               order, stage, rc > 0 ? rc : 0, err);
}

/* Answer 401: auth refused the caller's token. */
__attribute__((noinline)) void gateway_auth_denied(struct mh_response *resp, long order)
{
    mh_respond(resp, 401, "{\"checkout\":\"denied\",\"order\":%ld,\"error\":\"invalid token\"}",
               order);
}

/* Ask auth about the caller's token (or the demo token when the caller sent none). Returns auth's
 * status or a negative errno; fills user on 200. */
static int verify(const struct gateway_cfg *cfg, const struct mh_request *req,
                  struct mh_reply *reply, char *user, size_t size)
{
    char value[256] = "Bearer demo-token";
    char header[300];
    mh_header_get(req, "Authorization", value, sizeof(value));
    snprintf(header, sizeof(header), "Authorization: %s\r\n", value);
    int rc = mh_call(&cfg->auth, "GET", "/verify", header, NULL, reply);
    if (rc == 200 && mh_json_str(reply->body, "user", user, size) < 0)
        snprintf(user, size, "unknown");
    return rc;
}

static void checkout(const struct gateway_cfg *cfg, const struct mh_request *req,
                     struct mh_response *resp)
{
    char v[32], user[64], body[160];
    struct mh_reply reply;
    long id = mh_query_get(req->query, "order", v, sizeof(v)) > 0 ? mh_parse_id(v) : -1;
    if (id < 0) {
        mh_respond(resp, 400,
                   "{\"checkout\":\"rejected\",\"error\":\"order must be 1..999999999\"}");
        return;
    }
    int slow = mh_query_get(req->query, "slow", v, sizeof(v)) >= 0 && strcmp(v, "1") == 0;
    int rc = verify(cfg, req, &reply, user, sizeof(user));
    if (rc == 401 || rc == 403) {
        gateway_auth_denied(resp, id);
        return;
    }
    if (rc != 200) {
        gateway_upstream_failed(resp, id, "auth", rc, &reply);
        return;
    }
    snprintf(body, sizeof(body), "{\"order\":%ld,\"user\":\"%s\",\"slow\":%d}", id, user, slow);
    rc = mh_call(&cfg->order, "POST", "/orders", NULL, body, &reply);
    if (rc != 200) {
        gateway_upstream_failed(resp, id, "order", rc, &reply);
        return;
    }
    mh_respond(resp, 200, "{\"checkout\":\"ok\",\"order\":%ld,\"user\":\"%s\",\"result\":%s}", id,
               user, reply.body);
}

static void handle(const struct mh_request *req, struct mh_response *resp, void *ctx)
{
    if (strcmp(req->path, "/checkout") != 0)
        mh_respond(resp, 404, "{\"error\":\"not found\"}");
    else if (strcmp(req->method, "GET") != 0)
        mh_respond(resp, 405, "{\"error\":\"method not allowed\"}");
    else
        checkout(ctx, req, resp);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: gateway [--port N] [--port-file FILE] [--bind ADDR] [--auth HOST:PORT]\n"
            "               [--order HOST:PORT] [--latency MS] [--jitter MS] [--verbose]\n");
}

int main(int argc, char **argv)
{
    struct gateway_cfg cfg;
    struct mh_server srv = {.name = "gateway",
                            .port = 8080,
                            .latency_ms = 1,
                            .jitter_ms = 2,
                            .handler = handle,
                            .ctx = &cfg};
    mh_peer_parse("127.0.0.1:8081", &cfg.auth);
    mh_peer_parse("127.0.0.1:8082", &cfg.order);
    for (int i = 1; i < argc; i++) {
        int rc = mh_common_opt(&srv, argc, argv, &i);
        int peer = rc == 0 && (strcmp(argv[i], "--auth") == 0 || strcmp(argv[i], "--order") == 0);
        if (peer && (i + 1 >= argc ||
                     mh_peer_parse(argv[i + 1], argv[i][2] == 'a' ? &cfg.auth : &cfg.order) < 0)) {
            fprintf(stderr, "gateway: %s needs HOST:PORT\n", argv[i]);
            return 2;
        }
        if (peer)
            rc = 1, i++;
        if (rc < 0)
            return 2;
        if (rc > 0)
            continue;
        usage();
        return strcmp(argv[i], "--help") == 0 ? 0 : 2;
    }
    return mh_serve(&srv);
}
