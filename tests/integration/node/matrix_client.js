// matrix_client.js - a node `http` client for the compatibility matrix: GETs each URL in turn over one
// keep-alive agent and writes the bodies to stdout.
//
// Usage: node matrix_client.js [-H "Name: value"]... [--post FILE] URL... (--post: POST the file's bytes
// to every URL instead of GET). Exit status 0 when every answer was a 200.
'use strict';
const fs = require('fs');
const http = require('http');

const headers = {};
const urls = [];
let post = null;
const args = process.argv.slice(2);
while (args.length) {
  const a = args.shift();
  if (a === '-H') {
    const h = args.shift();
    const i = h.indexOf(':');
    headers[h.slice(0, i).trim()] = h.slice(i + 1).trim();
  } else if (a === '--post') {
    post = fs.readFileSync(args.shift());
  } else {
    urls.push(a);
  }
}
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function get(url) {
  return new Promise((resolve, reject) => {
    const opts = { agent, headers: { ...headers }, method: post ? 'POST' : 'GET' };
    if (post)
      opts.headers['Content-Length'] = post.length;
    const req = http.request(url, opts, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve([res.statusCode, Buffer.concat(chunks)]));
    });
    req.on('error', reject);
    req.end(post || undefined);
  });
}

(async () => {
  let ok = true;
  for (const u of urls) {
    const [status, body] = await get(u);
    process.stdout.write(body);
    ok = ok && status === 200;
  }
  agent.destroy();
  process.exitCode = ok ? 0 : 1;
})().catch((e) => {
  process.stderr.write('matrix_client.js: ' + e.message + '\n');
  process.exitCode = 7;
});
