// CloudEvents sent to sbworker's queue the way a Node service would: the official JavaScript SDK (@azure/service-bus
// over rhea), in both content modes of the CloudEvents AMQP binding, plus two broken envelopes.
// Usage: node cloudevents.mjs <connection string> <json options>
// Prints one JSON object on stdout: the message id of each message sent, by label. test_js_cloudevents.py asserts on
// what sbworker made of them.
import { ServiceBusClient } from "@azure/service-bus";

const [connectionString, rawOptions] = process.argv.slice(2);
const o = JSON.parse(rawOptions);

function structured(label, attributes, data) {
  return {
    label,
    message: {
      messageId: `js-${label}-${o.run}`,
      contentType: "application/cloudevents+json; charset=utf-8",
      body: { specversion: "1.0", datacontenttype: "application/json", ...attributes, data },
    },
  };
}

function binary(label, attributes, data) {
  const applicationProperties = {};
  for (const [name, value] of Object.entries(attributes)) applicationProperties[`cloudEvents_${name}`] = value;
  return {
    label,
    message: { messageId: `js-${label}-${o.run}`, contentType: "application/json", applicationProperties, body: data },
  };
}

const sends = [
  structured("structuredStart",
    { id: o.structuredStartId, source: "/node/orders", type: "sbworker.start", subject: "order-js",
      time: "2026-12-06T10:00:00Z", traceparent: o.traceparent },
    { orchestration: "hello_cities" }),
  binary("binaryStart",
    { specversion: "1.0", id: o.binaryStartId, source: "/node/orders", type: "sbworker.start", time: new Date(o.timeMs) },
    { orchestration: "fan_out_fan_in", input: ["Lima", "Quito"] }),
  binary("binaryApproval",
    { specversion: "1.0", id: `approval-${o.run}`, source: "/node/people", type: "sbworker.approval" },
    { instance_id: o.orderId, approved: true, approver: "node" }),
  structured("structuredEvent",
    { id: `payment-${o.run}`, source: "/node/psp", type: "sbworker.event" },
    { instance_id: o.invoiceId, name: "PaymentReceived",
      data: { amount_cents: 900, currency: "EUR", reference: "node-psp-1" } }),
  structured("missingSource", { id: `broken-1-${o.run}`, type: "sbworker.start" }, { orchestration: "hello_cities" }),
  binary("oldSpecversion",
    { specversion: "0.3", id: `broken-2-${o.run}`, source: "/node", type: "sbworker.start" },
    { orchestration: "hello_cities" }),
];

const sb = new ServiceBusClient(connectionString, { retryOptions: { maxRetries: 0, timeoutInMs: 15000 } });
try {
  const sender = sb.createSender(o.queue);
  await sender.sendMessages(sends.map((s) => s.message));
  console.log(JSON.stringify(Object.fromEntries(sends.map((s) => [s.label, s.message.messageId]))));
} finally {
  await sb.close();
}
