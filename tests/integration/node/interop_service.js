// interop_service.js - a Node.js service instrumented with the OpenTelemetry SDK
// (NodeTracerProvider, BatchSpanProcessor + OTLPTraceExporter over HTTP/JSON, HttpInstrumentation),
// placed in a chain with shim-traced services by test_otlp_interop.c.
//
// Usage: node interop_service.js PORT UPSTREAM_PORT OTLP_TRACES_URL SERVICE_NAME
// Every request is forwarded to 127.0.0.1:UPSTREAM_PORT (same method and path, a new connection,
// no inbound header forwarded: the SDK makes the outgoing traceparent) and answered with the
// upstream's status and body. Spans are exported in batches every 100 ms; SIGTERM flushes them
// (provider.shutdown) and exits 0. Under the shim or not: the service itself has no shim code.
'use strict';
const { NodeTracerProvider } = require('@opentelemetry/sdk-trace-node');
const { BatchSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http');
const { Resource } = require('@opentelemetry/resources');
const { registerInstrumentations } = require('@opentelemetry/instrumentation');
const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http');

const [port, upstream, url, service] = process.argv.slice(2);

const provider = new NodeTracerProvider({
  resource: new Resource({ 'service.name': service }),
  spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url }), {
    scheduledDelayMillis: 100,
    exportTimeoutMillis: 5000,
  })],
});
provider.register();
registerInstrumentations({ instrumentations: [new HttpInstrumentation()] });

// Required after the instrumentation is registered, so that `http` is the patched module.
const http = require('http');
const agent = new http.Agent({ keepAlive: false });

function reply(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': body.length });
  res.end(body);
}

const server = http.createServer((req, res) => {
  req.resume();
  const out = http.request({ host: '127.0.0.1', port: +upstream, path: req.url, method: req.method,
    agent }, (up) => {
    const chunks = [];
    up.on('data', (c) => chunks.push(c));
    up.on('end', () => reply(res, up.statusCode, Buffer.concat(chunks)));
  });
  out.on('error', () => reply(res, 502, Buffer.from('upstream failed\n')));
  out.end();
});

server.listen(+port, '127.0.0.1');

process.on('SIGTERM', () => {
  server.close();
  provider.shutdown().finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 1500).unref();
});
