// interop_relay.js - an OTLP/HTTP relay between the Node SDK's exporter and otlp_receiver.py:
// the SDK streams its request body (Transfer-Encoding: chunked), the receiver reads Content-Length
// only, so each POST is read whole and passed on with a Content-Length; the receiver's status and
// body are passed back. One rewrite: the SDK writes AnyValue.intValue as a JSON number, which
// the protobuf JSON mapping accepts on input but the receiver does not (it wants the canonical
// decimal string), so integer intValues become strings. Nothing else changes (ids, times, kinds,
// parents).
//
// Usage: node interop_relay.js PORT_FILE RECEIVER_PORT. Listens on a free port of 127.0.0.1 and
// writes it to PORT_FILE (through a rename, so a reader never sees it half written). Never traced.
'use strict';
const fs = require('fs');
const http = require('http');

const [portFile, rxPort] = process.argv.slice(2);

function intsAsStrings(v) {
  if (Array.isArray(v))
    return v.forEach(intsAsStrings);
  if (!v || typeof v !== 'object')
    return;
  for (const k of Object.keys(v)) {
    if (k === 'intValue' && Number.isInteger(v[k]))
      v[k] = String(v[k]);
    else
      intsAsStrings(v[k]);
  }
}

function canonical(body, type) {
  if (!type.startsWith('application/json'))
    return body;
  try {
    const doc = JSON.parse(body.toString());
    intsAsStrings(doc);
    return Buffer.from(JSON.stringify(doc));
  } catch (e) {
    return body; // not JSON: the receiver says why
  }
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = canonical(Buffer.concat(chunks), req.headers['content-type'] || '');
    const headers = { 'Content-Length': body.length };
    for (const h of ['content-type', 'content-encoding'])
      if (req.headers[h])
        headers[h] = req.headers[h];
    const out = http.request({ host: '127.0.0.1', port: +rxPort, path: req.url, method: req.method,
      headers }, (up) => {
      const got = [];
      up.on('data', (c) => got.push(c));
      up.on('end', () => {
        const b = Buffer.concat(got);
        res.writeHead(up.statusCode,
          { 'Content-Type': 'application/json', 'Content-Length': b.length });
        res.end(b);
      });
    });
    out.on('error', () => { res.writeHead(503); res.end(); });
    out.end(body);
  });
});

server.listen(0, '127.0.0.1', () => {
  fs.writeFileSync(portFile + '.tmp', String(server.address().port));
  fs.renameSync(portFile + '.tmp', portFile);
});
process.on('SIGTERM', () => process.exit(0));
