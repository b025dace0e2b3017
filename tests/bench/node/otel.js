// otel.js - the official OpenTelemetry SDK set up as its docs show (NodeTracerProvider, HTTP
// instrumentation, BatchSpanProcessor, OTLP/HTTP exporter), preloaded into server.js with
// --require. The exporter's endpoint comes from OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (a local sink
// in the bench).
'use strict';
const { NodeTracerProvider } = require('@opentelemetry/sdk-trace-node');
const { BatchSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http');
const { registerInstrumentations } = require('@opentelemetry/instrumentation');
const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http');
const { Resource } = require('@opentelemetry/resources');

const provider = new NodeTracerProvider({
  resource: new Resource({ 'service.name': process.env.OTEL_SERVICE_NAME || 'bench-node-otel' }),
});
provider.addSpanProcessor(new BatchSpanProcessor(new OTLPTraceExporter()));
provider.register();
registerInstrumentations({ instrumentations: [new HttpInstrumentation()] });

// server.js calls this on SIGTERM: the batch still queued goes to the exporter before exit.
global.benchShutdown = () => provider.shutdown();
