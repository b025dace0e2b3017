#!/usr/bin/python3
"""proxy.py - an HTTP server that calls a backend with urllib and returns what the backend saw.

Usage: proxy.py PORT BACKEND_PORT. GET /x calls http://127.0.0.1:BACKEND_PORT/y with urllib's default
headers; /fwd also forwards the inbound traceparent and tracestate (what a proxy does); /other sends a
traceparent of a different trace. The answer is one JSON line: {"backend_status", "backend": <the
backend's JSON body>, "received": [[name, value], ...] (the headers this proxy received)}.
"""
import json
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OTHER_TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def outbound_headers(self):
        if self.path == "/fwd":
            return {k: v for k, v in self.headers.items()
                    if k.lower() in ("traceparent", "tracestate")}
        if self.path == "/other":
            return {"traceparent": OTHER_TP}
        return {}

    def do_GET(self):
        port = int(sys.argv[2])
        req = urllib.request.Request("http://127.0.0.1:%d/y" % port,
                                     headers=self.outbound_headers())
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, body = resp.status, resp.read()
        out = json.dumps({"backend_status": status, "backend": json.loads(body),
                          "received": [[k, v] for k, v in self.headers.items()]}) + "\n"
        data = out.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def main():
    ThreadingHTTPServer.allow_reuse_address = True
    srv = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Proxy)
    srv.daemon_threads = True
    srv.serve_forever()


if __name__ == "__main__":
    main()
