#!/usr/bin/env python3
"""make-fixture.py - writes trace-demo.jsonl, the hand-made OTLP JSON fixture of the CLI tests.

Shaped like the demo chain: gateway -> auth, gateway -> order -> payment (503, ERROR, retried 3 times),
order -> db (slow). Run it from this folder; the output is committed, so this is only for changes.
"""
import json

BASE = 1795856400 * 10**9  # 2026-11-28 09:00:00 UTC
MS = 10**6


def attr(k, v):
    if isinstance(v, int):
        return {"key": k, "value": {"intValue": str(v)}}
    return {"key": k, "value": {"stringValue": v}}


def span(tid, sid, parent, name, kind, t0, t1, method, path, code, peer=None, error=False,
         exc=None):
    attrs = [attr("http.request.method", method), attr("url.path", path),
             attr("http.response.status_code", code)]
    if peer:
        host, port = peer.split(":")
        attrs += [attr("server.address", host), attr("server.port", int(port))]
    s = {"traceId": tid, "spanId": sid, "parentSpanId": parent, "name": name, "kind": kind,
         "startTimeUnixNano": str(BASE + t0), "endTimeUnixNano": str(BASE + t1),
         "attributes": attrs, "status": {"code": 2} if error else {}}
    if exc:
        s["events"] = [{"timeUnixNano": str(BASE + t1), "name": "exception", "attributes": [
            attr("exception.type", exc[0]), attr("exception.message", exc[1]),
            attr("exception.stacktrace", exc[2])]}]
    return s


def checkout(tid, t0, fail, n):
    """One /checkout request; n gives distinct span ids per trace."""
    sp = {}
    ids = iter("%02x%014x" % (n, i) for i in range(1, 100))
    g, gc1, a, gc2, o, oc1, d = (next(ids) for _ in range(7))
    code = 502 if fail else 200
    end = t0 + (260 if fail else 150) * MS
    sp.setdefault("gateway", []).append(span(tid, g, "", "GET /checkout", 2, t0, end, "GET",
                                             "/checkout", code, error=fail))
    sp["gateway"].append(span(tid, gc1, g, "GET", 3, t0 + 2 * MS, t0 + 12 * MS, "GET", "/verify",
                              200, "auth:8081"))
    sp.setdefault("auth", []).append(span(tid, a, gc1, "GET /verify", 2, t0 + 3 * MS,
                                          t0 + 11 * MS, "GET", "/verify", 200))
    sp["gateway"].append(span(tid, gc2, g, "POST", 3, t0 + 14 * MS, end - 2 * MS, "POST",
                              "/order", code, "order:8082", error=fail))
    sp.setdefault("order", []).append(span(tid, o, gc2, "POST /order", 2, t0 + 15 * MS,
                                           end - 3 * MS, "POST", "/order", code, error=fail))
    sp["order"].append(span(tid, oc1, o, "GET", 3, t0 + 16 * MS, t0 + 136 * MS, "GET", "/query",
                            200, "db:8084"))
    sp.setdefault("db", []).append(span(tid, d, oc1, "GET /query", 2, t0 + 17 * MS, t0 + 135 * MS,
                                        "GET", "/query", 200))
    attempts = [(138, 150), (160, 172), (190, 202), (230, 243)] if fail else [(138, 145)]
    for k, (a0, a1) in enumerate(attempts):
        c, p = next(ids), next(ids)
        pcode = 503 if fail else 200
        sp["order"].append(span(tid, c, o, "POST", 3, t0 + a0 * MS, t0 + a1 * MS, "POST", "/pay",
                                pcode, "payment:8083", error=fail))
        exc = None
        if fail and k == 0:
            exc = ("HTTP 503", "card processor unavailable",
                   "#0 0x401136 handle_pay+0x46 (payment)\n#1 0x4012a0 serve+0x90 (payment)\n"
                   "#2 0x7f3a2c main+0x1c (payment)")
        sp.setdefault("payment", []).append(span(tid, p, c, "POST /pay", 2, t0 + (a0 + 1) * MS,
                                                 t0 + (a1 - 1) * MS, "POST", "/pay", pcode,
                                                 error=fail, exc=exc))
    return sp


def request(batches):
    rs = []
    for svc, spans in batches.items():
        rs.append({"resource": {"attributes": [attr("service.name", svc),
                                               attr("process.pid", 4000 + len(svc))]},
                   "scopeSpans": [{"scope": {"name": "ldtrace", "version": "0.1.0"},
                                   "spans": spans}]})
    return json.dumps({"resourceSpans": rs}, separators=(",", ":"))


def main():
    lines = []
    lines.append(request(checkout("0af7651916cd43dd8448eb211c80319c", 1 * 10**9, False, 1)))
    health = {"gateway": [span("5b8efff798038103d269b633813fc60c", "0300000000000001", "",
                               "GET /health", 2, 3 * 10**9, 3 * 10**9 + 420000, "GET",
                               "/health", 200)]}
    lines.append(request(health))
    # Only the payment side of a trace whose caller was not traced: its parent is not in the file.
    orphan = {"payment": [span("b7ad6b7169203331b7ad6b7169203331", "0400000000000001",
                               "00f067aa0ba902b7", "POST /pay", 2, 4 * 10**9,
                               4 * 10**9 + 9 * MS, "POST", "/pay", 200)]}
    lines.append(request(orphan))
    # The failing checkout, exported by each service in its own batch (as ldtraced does per process).
    for svc, spans in checkout("4bf92f3577b34da6a3ce929d0e0e4736", 5 * 10**9, True, 2).items():
        lines.append(request({svc: spans}))
    # A trace sharing the prefix 4bf92f35 with the one above.
    other = {"auth": [span("4bf92f35aaaaaaaaaaaaaaaaaaaaaaaa", "0500000000000001", "",
                           "GET /verify", 2, 2 * 10**9, 2 * 10**9 + 5 * MS, "GET", "/verify",
                           200)]}
    lines.append(request(other))
    with open("trace-demo.jsonl", "w") as f:
        f.write("\n".join(lines) + "\n")


main()
