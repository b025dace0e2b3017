// server.js - the Node.js http server scripts/bench drives with wrk: answers "ok" to every request.
// Usage: node [--require ./otel.js] server.js PORTFILE
// (listens on a free 127.0.0.1 port and writes it to PORTFILE)
'use strict';
const http = require('http');
const fs = require('fs');

const server = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': 2 });
    res.end('ok');
  });
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => {
  fs.writeFileSync(process.argv[2], String(server.address().port) + '\n');
});
// SIGTERM: stop listening, let otel.js (when preloaded) flush its spans, then exit.
process.on('SIGTERM', () => {
  server.close();
  Promise.resolve(global.benchShutdown && global.benchShutdown()).finally(() => process.exit(0));
});
