#!/usr/bin/python3
"""backend.py - an HTTP/1.1 keep-alive server that answers every request with the headers it received.

Usage: backend.py PORT. GET /status/NNN answers with status NNN, everything else with 200. The body is one JSON line: {"method", "path", "client_port", "headers": [[name,
value], ...]} with the header lines in the order and spelling they arrived, so a test can see exactly what
a traced client put on the wire.
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({"method": self.command, "path": self.path,
                           "client_port": self.client_address[1],
                           "headers": [[k, v] for k, v in self.headers.items()]}) + "\n"
        data = body.encode()
        status = 200
        if self.path.startswith("/status/"):
            status = int(self.path[8:])
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = answer
    do_POST = answer

    def log_message(self, *args):
        pass


def main():
    ThreadingHTTPServer.allow_reuse_address = True
    srv = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo)
    srv.daemon_threads = True
    srv.serve_forever()


if __name__ == "__main__":
    main()
