#!/usr/bin/python3
"""matrix_proxy.py - a thread-per-request proxy (ThreadingHTTPServer): every GET is forwarded to an
upstream with urllib (same path, no inbound header forwarded) and answered with the upstream's body.

Usage: matrix_proxy.py PORT UPSTREAM_PORT. No tracing code: traced only through LD_PRELOAD.
"""
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        url = "http://127.0.0.1:%s%s" % (sys.argv[2], self.path)
        with urllib.request.urlopen(url, timeout=10) as resp:
            status, body = resp.status, resp.read()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    ThreadingHTTPServer.allow_reuse_address = True
    srv = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Proxy)
    srv.daemon_threads = True
    srv.request_queue_size = 64
    srv.serve_forever()


if __name__ == "__main__":
    main()
