// matrix_server.js - a node `http` server for the compatibility matrix: "echo" answers with what it
// received, "proxy" calls an upstream per request (same path, keep-alive agent) and answers with its body.
//
// Usage: node matrix_server.js echo PORT | node matrix_server.js proxy PORT UPSTREAM_PORT.
// The echo body is one JSON line {"method", "path", "headers": [[name, value], ...]} with the header lines
// in the order and spelling they arrived, plus "body_len" and "body_sha256" when a request body came;
// GET /big/N answers N bytes (byte k = k % 251) in 64 KiB chunks, chunked transfer coding.
// No tracing code: traced only through LD_PRELOAD.
'use strict';
const crypto = require('crypto');
const http = require('http');

const [mode, port, upstream] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });

function reply(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': body.length });
  res.end(body);
}

function big(res, n) {
  res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
  for (let off = 0; off < n; off += 65536) {
    const piece = Buffer.alloc(Math.min(65536, n - off));
    for (let k = 0; k < piece.length; k++)
      piece[k] = (off + k) % 251;
    res.write(piece);
  }
  res.end();
}

function echo(req, res) {
  const headers = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2)
    headers.push([req.rawHeaders[i], req.rawHeaders[i + 1]]);
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const m = /^\/big\/(\d+)$/.exec(req.url);
    if (m && req.method === 'GET')
      return big(res, +m[1]);
    const answer = { method: req.method, path: req.url, headers };
    const body = Buffer.concat(chunks);
    if (body.length) {
      answer.body_len = body.length;
      answer.body_sha256 = crypto.createHash('sha256').update(body).digest('hex');
    }
    reply(res, 200, Buffer.from(JSON.stringify(answer) + '\n'));
  });
}

function proxy(req, res) {
  req.resume();
  const out = http.request({ host: '127.0.0.1', port: +upstream, path: req.url, agent }, (up) => {
    const chunks = [];
    up.on('data', (c) => chunks.push(c));
    up.on('end', () => reply(res, up.statusCode, Buffer.concat(chunks)));
  });
  out.on('error', () => reply(res, 502, Buffer.from('upstream failed\n')));
  out.end();
}

const server = http.createServer(mode === 'proxy' ? proxy : echo);
server.keepAliveTimeout = 30000;
server.listen(+port, '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
