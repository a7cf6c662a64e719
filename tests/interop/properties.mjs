// An early approval sent the way a Node service would (the official JavaScript SDK, @azure/service-bus over rhea),
// with applicationProperties of every kind of value the SDK takes: numbers of each width rhea picks a type for, a
// Date, a string, a boolean and null. tests/integration/test_property_types.py checks that sbworker's copies of it
// keep each AMQP type. Usage: node properties.mjs <connection string> <json options>
import { ServiceBusClient } from "@azure/service-bus";

const [connectionString, rawOptions] = process.argv.slice(2);
const o = JSON.parse(rawOptions);

const sb = new ServiceBusClient(connectionString, { retryOptions: { maxRetries: 0, timeoutInMs: 15000 } });
try {
  await sb.createSender(o.queue).sendMessages({
    messageId: o.messageId,
    subject: "approval",
    contentType: "application/json",
    body: { instance_id: o.instanceId, approved: true, approver: "node" },
    applicationProperties: {
      count: 7,
      big: 5_000_000_000,
      zero: 0,
      negative: -5,
      "very-negative": -5_000_000_000,
      ratio: 1.5,
      at: new Date(o.atMs),
      name: "text",
      flag: false,
      nothing: null,
    },
  });
} finally {
  await sb.close();
}
