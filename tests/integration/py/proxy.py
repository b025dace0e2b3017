#!/usr/bin/python3
"""proxy.py - an HTTP server that calls a backend with urllib and returns what the backend saw.

Usage: proxy.py PORT BACKEND_PORT [DEAD_PORT]. GET /x calls http://127.0.0.1:BACKEND_PORT/y with
urllib's default headers; /fwd also forwards the inbound traceparent and tracestate (what a proxy does);
/other sends a traceparent of a different trace; /call/NNN calls the backend's /status/NNN; /refused
calls DEAD_PORT, where nothing listens, and answers 502. The answer is one JSON line: {"backend_status",
"backend": <the backend's JSON body>, "received": [[name, value], ...] (the headers this proxy got)}.
"""
import json
import sys
import urllib.error
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

    def target(self):
        if self.path.startswith("/call/"):
            return int(sys.argv[2]), "/status/" + self.path[6:]
        if self.path == "/refused":
            return int(sys.argv[3]), "/y"
        return int(sys.argv[2]), "/y"

    def call(self):
        port, path = self.target()
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path),
                                     headers=self.outbound_headers())
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return 200, resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return 200, err.code, json.loads(err.read())
        except urllib.error.URLError as err:
            return 502, 0, {"error": str(err.reason)}

    def do_GET(self):
        mine, status, body = self.call()
        out = json.dumps({"backend_status": status, "backend": body,
                          "received": [[k, v] for k, v in self.headers.items()]}) + "\n"
        data = out.encode()
        self.send_response(mine)
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
