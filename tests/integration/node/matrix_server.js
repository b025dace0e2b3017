// matrix_server.js - a node `http` server for the compatibility matrix: "echo" answers with what it
// received, "proxy" calls an upstream per request (same path, keep-alive agent) and answers with its body.
//
// Usage: node matrix_server.js echo PORT | node matrix_server.js proxy PORT UPSTREAM_PORT.
// The echo body is one JSON line {"method", "path", "headers": [[name, value], ...]} with the header lines
// in the order and spelling they arrived. No tracing code: traced only through LD_PRELOAD.
'use strict';
const http = require('http');

const [mode, port, upstream] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });

function reply(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': body.length });
  res.end(body);
}

function echo(req, res) {
  const headers = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2)
    headers.push([req.rawHeaders[i], req.rawHeaders[i + 1]]);
  req.resume();
  req.on('end', () => {
    const body = JSON.stringify({ method: req.method, path: req.url, headers }) + '\n';
    reply(res, 200, Buffer.from(body));
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
