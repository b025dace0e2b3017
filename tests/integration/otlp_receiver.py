#!/usr/bin/env python3
"""otlp_receiver.py - a test OTLP/HTTP receiver: decodes and validates every request, answers from
a script, and records what it got (for the OTLP exporter and SDK interop integration tests).

Validation follows the OTLP/JSON encoding rules (opentelemetry-proto docs/specification.md, "JSON
Protobuf Encoding", and the protobuf JSON mapping): lowerCamelCase field names, traceId/spanId as
lowercase hex (not base64), 64-bit integers (times, intValue, rejectedSpans) as decimal strings,
enums (kind, status.code) as integers. A request that breaks a rule is answered 400 and logged.

Usage: otlp_receiver.py --port-file F --out SPANS.jsonl --log LOG [--script 503,429,200]
       [--retry-after S] [--partial N] [--tls CERT KEY] [--port P]
  --out: each accepted body (decompressed) as one line: the collector file format, which
         itest_load_spans reads.
  --log: one line per request: "<ms since start> <status> <gzip 0|1> <spans> <valid 0|1> <why>".
  --script: the statuses of the first requests, in order (then 200).
"""
import argparse
import gzip
import json
import re
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEX32 = re.compile(r'^[0-9a-f]{32}$')
HEX16 = re.compile(r'^[0-9a-f]{16}$')
DEC = re.compile(r'^-?[0-9]+$')
CAMEL = re.compile(r'^[a-z][A-Za-z0-9]*$')

SPAN_FIELDS = {'traceId', 'spanId', 'traceState', 'parentSpanId', 'flags', 'name', 'kind',
               'startTimeUnixNano', 'endTimeUnixNano', 'attributes', 'droppedAttributesCount',
               'events', 'droppedEventsCount', 'links', 'droppedLinksCount', 'status'}


class Invalid(Exception):
    pass


REQ = threading.local()  # per request: .lenient_ints is strict (False) for ldtrace's own exporter


def need(cond, why):
    if not cond:
        raise Invalid(why)


def check_value(v, where):
    need(isinstance(v, dict) and len(v) <= 1, where + ': AnyValue must have one field')
    for k, x in v.items():
        if k == 'stringValue':
            need(isinstance(x, str), where + ': stringValue')
        elif k == 'intValue':
            # Decoders must accept both (protobuf JSON mapping); ldtrace's exporter writes strings.
            need((isinstance(x, str) and DEC.match(x)) or (getattr(REQ, 'lenient_ints', False) and type(x) is int),
                 where + ': intValue must be a decimal string')
        elif k == 'boolValue':
            need(isinstance(x, bool), where + ': boolValue')
        elif k == 'doubleValue':
            need(isinstance(x, (int, float)) or x in ('NaN', 'Infinity', '-Infinity'),
                 where + ': doubleValue')
        elif k == 'arrayValue':
            for i, e in enumerate(x.get('values', [])):
                check_value(e, '%s[%d]' % (where, i))
        elif k == 'kvlistValue':
            check_attrs(x.get('values', []), where)
        elif k == 'bytesValue':
            need(isinstance(x, str), where + ': bytesValue')
        else:
            raise Invalid(where + ': unknown AnyValue field ' + k)


def check_attrs(attrs, where):
    need(isinstance(attrs, list), where + ': attributes must be a list')
    seen = set()
    for a in attrs:
        need(set(a) <= {'key', 'value'} and isinstance(a.get('key'), str), where + ': KeyValue')
        need(a['key'] not in seen, where + ': duplicate attribute ' + a['key'])
        seen.add(a['key'])
        check_value(a.get('value', {}), where + '.' + a['key'])


def check_span(s):
    for k in s:
        need(k in SPAN_FIELDS, 'unknown span field ' + k)
    need(HEX32.match(s.get('traceId', '')) and s['traceId'] != '0' * 32, 'traceId: 32 hex')
    need(HEX16.match(s.get('spanId', '')) and s['spanId'] != '0' * 16, 'spanId: 16 hex')
    if s.get('parentSpanId'):
        need(HEX16.match(s['parentSpanId']), 'parentSpanId: 16 hex or empty')
    need(isinstance(s.get('name'), str) and s['name'], 'name')
    need(isinstance(s.get('kind', 0), int) and 0 <= s.get('kind', 0) <= 5, 'kind: an integer')
    for t in ('startTimeUnixNano', 'endTimeUnixNano'):
        need(isinstance(s.get(t), str) and DEC.match(s[t]), t + ': a decimal string')
    need(int(s['endTimeUnixNano']) >= int(s['startTimeUnixNano']), 'end before start')
    check_attrs(s.get('attributes', []), 'span')
    st = s.get('status', {})
    need(set(st) <= {'code', 'message'} and isinstance(st.get('code', 0), int), 'status.code: int')
    for e in s.get('events', []):
        need(isinstance(e.get('timeUnixNano'), str) and DEC.match(e['timeUnixNano']),
             'event timeUnixNano')
        check_attrs(e.get('attributes', []), 'event')


def check_request(doc):
    """Returns the span ids of a valid ExportTraceServiceRequest, raises Invalid otherwise."""
    need(isinstance(doc, dict) and set(doc) == {'resourceSpans'}, 'top level: resourceSpans only')
    ids = []
    for rs in doc['resourceSpans']:
        need(set(rs) <= {'resource', 'scopeSpans', 'schemaUrl'}, 'ResourceSpans fields')
        check_attrs(rs.get('resource', {}).get('attributes', []), 'resource')
        for ss in rs.get('scopeSpans', []):
            need(set(ss) <= {'scope', 'spans', 'schemaUrl'}, 'ScopeSpans fields')
            for s in ss.get('spans', []):
                check_span(s)
                ids.append(s['spanId'])
    return ids


class Receiver:
    def __init__(self, args):
        self.args = args
        self.script = [int(x) for x in args.script.split(',') if x] if args.script else []
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.out = open(args.out, 'a') if args.out else None
        self.log = open(args.log, 'a') if args.log else None

    def next_status(self):
        with self.lock:
            return self.script.pop(0) if self.script else 200

    def record(self, status, gz, n, valid, why, body):
        with self.lock:
            ms = int((time.monotonic() - self.t0) * 1000)
            if self.log:
                self.log.write('%d %d %d %d %d %s\n' % (ms, status, gz, n, valid, why or '-'))
                self.log.flush()
            if self.out and body is not None:
                self.out.write(body.decode() + '\n')
                self.out.flush()


def make_handler(rx):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'

        def log_message(self, *a):
            pass

        def setup(self):
            super().setup()
            # Headers and body go out in two writes: without this, Nagle holds the body for the
            # client's delayed ACK (40 ms a request).
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def answer(self, code, body, extra=()):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(data)))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def read_body(self):
            if 'chunked' not in self.headers.get('Transfer-Encoding', '').lower():
                return self.rfile.read(int(self.headers.get('Content-Length', '0')))
            raw = b''
            while True:  # RFC 9112 7.1: size line (extensions ignored), data, CRLF; trailers
                size = int(self.rfile.readline().split(b';')[0].strip() or b'0', 16)
                if size == 0:
                    while self.rfile.readline() not in (b'\r\n', b'\n', b''):
                        pass
                    return raw
                raw += self.rfile.read(size)
                self.rfile.readline()

        def do_POST(self):
            raw = self.read_body()
            REQ.lenient_ints = not self.headers.get('User-Agent', '').startswith('OTel-OTLP-Exporter-C-ldtrace')
            gz = self.headers.get('Content-Encoding', '') == 'gzip'
            try:
                need(self.path == '/v1/traces', 'path ' + self.path)
                need(self.headers.get('Content-Type', '').startswith('application/json'),
                     'Content-Type ' + str(self.headers.get('Content-Type')))
                for h in rx.args.require_header:
                    k, v = h.split(':', 1)
                    need(self.headers.get(k) == v, 'missing header ' + h)
                body = gzip.decompress(raw) if gz else raw
                ids = check_request(json.loads(body))
            except (Invalid, ValueError, OSError, KeyError, TypeError, AttributeError) as e:
                rx.record(400, gz, 0, 0, str(e).replace(' ', '_'), None)
                self.answer(400, {'code': 3, 'message': 'invalid: %s' % e})
                return
            status = rx.next_status()
            if status == 200:
                rx.record(200, gz, len(ids), 1, None, body)
                resp = {}
                if rx.args.partial:
                    resp = {'partialSuccess': {'rejectedSpans': str(rx.args.partial),
                                               'errorMessage': 'test rejects some'}}
                self.answer(200, resp)
            else:
                rx.record(status, gz, len(ids), 1, 'scripted', None)
                extra = [('Retry-After', str(rx.args.retry_after))] if status in (429, 503) \
                    and rx.args.retry_after is not None else []
                self.answer(status, {'code': 14, 'message': 'scripted %d' % status}, extra)

    return Handler


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--port', type=int, default=0)
    p.add_argument('--port-file')
    p.add_argument('--out')
    p.add_argument('--log')
    p.add_argument('--script', default='')
    p.add_argument('--retry-after', type=int)
    p.add_argument('--partial', type=int, default=0)
    p.add_argument('--require-header', action='append', default=[])
    p.add_argument('--tls', nargs=2, metavar=('CERT', 'KEY'))
    args = p.parse_args()
    rx = Receiver(args)
    srv = ThreadingHTTPServer(('127.0.0.1', args.port), make_handler(rx))
    if args.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls[0], args.tls[1])
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    if args.port_file:
        with open(args.port_file + '.tmp', 'w') as f:
            f.write(str(srv.server_address[1]))
        import os
        os.rename(args.port_file + '.tmp', args.port_file)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == '__main__':
    sys.exit(main())
