// matrix_client.js - a node `http` client for the compatibility matrix: GETs each URL in turn over one
// keep-alive agent and writes the bodies to stdout.
//
// Usage: node matrix_client.js [-H "Name: value"]... URL... Exit status 0 when every answer was a 200.
'use strict';
const http = require('http');

const headers = {};
const urls = [];
const args = process.argv.slice(2);
while (args.length) {
  const a = args.shift();
  if (a === '-H') {
    const h = args.shift();
    const i = h.indexOf(':');
    headers[h.slice(0, i).trim()] = h.slice(i + 1).trim();
  } else {
    urls.push(a);
  }
}
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function get(url) {
  return new Promise((resolve, reject) => {
    http.get(url, { agent, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve([res.statusCode, Buffer.concat(chunks)]));
    }).on('error', reject);
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
