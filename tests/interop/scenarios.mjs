// Scenarios run with the official JavaScript SDK (@azure/service-bus over rhea) against a LocalBus.
// Usage: node scenarios.mjs <scenario> <connection string> [json options]
// Prints one JSON object on stdout; the pytest side (test_js_sdk.py) asserts on it. Errors are reported as data
// ({error: {name, code, message}}) so the test can say what went wrong.
import { ServiceBusClient } from "@azure/service-bus";

const [scenario, connectionString, rawOptions] = process.argv.slice(2);
const options = rawOptions ? JSON.parse(rawOptions) : {};
const RETRY = { maxRetries: 0, timeoutInMs: 15000 };

function client() {
  return new ServiceBusClient(connectionString, { retryOptions: RETRY });
}

function describe(m) {
  return {
    body: m.body,
    sequenceNumber: m.sequenceNumber === undefined ? null : Number(m.sequenceNumber),
    deliveryCount: m.deliveryCount ?? null,
    state: m.state,
    applicationProperties: m.applicationProperties ?? {},
    deadLetterReason: m.deadLetterReason ?? null,
    deadLetterErrorDescription: m.deadLetterErrorDescription ?? null,
    deadLetterSource: m.deadLetterSource ?? null,
  };
}

function failure(e) {
  return { name: e?.name ?? null, code: e?.code ?? null, message: String(e?.message ?? e) };
}

// What a call came to: `ok` when it succeeded, its error (as data) when it threw.
async function outcome(call, ok) {
  try {
    await call();
    return ok;
  } catch (e) {
    return { error: failure(e) };
  }
}

async function receiveAll(receiver, count, waitMs = 3000) {
  const got = [];
  for (let attempt = 0; attempt < 10 && got.length < count; attempt++) {
    got.push(...(await receiver.receiveMessages(count - got.length, { maxWaitTimeInMs: waitMs })));
  }
  return got;
}

// complete, abandon (with propertiesToModify), defer, dead-letter; then what each became.
async function settle(queue) {
  const sb = client();
  try {
    const sender = sb.createSender(queue);
    await sender.sendMessages(["complete", "abandon", "defer", "deadletter"].map((body) => ({ body })));
    const receiver = sb.createReceiver(queue);
    const first = await receiveAll(receiver, 4);
    const byBody = Object.fromEntries(first.map((m) => [m.body, m]));
    await receiver.completeMessage(byBody.complete);
    await receiver.abandonMessage(byBody.abandon, { attempt: "first", n: 7 });
    await receiver.deferMessage(byBody.defer);
    await receiver.deadLetterMessage(byBody.deadletter, { deadLetterReason: "Bad", deadLetterErrorDescription: "why" });
    const again = await receiveAll(receiver, 1);
    await receiver.completeMessage(again[0]);
    const deferred = await receiver.receiveDeferredMessages([byBody.defer.sequenceNumber]);
    await receiver.completeMessage(deferred[0]);
    const dlqReceiver = sb.createReceiver(queue, { subQueueType: "deadLetter" });
    const dead = await receiveAll(dlqReceiver, 1);
    await dlqReceiver.completeMessage(dead[0]);
    return {
      first: first.map(describe),
      abandoned: describe(again[0]),
      deferred: describe(deferred[0]),
      deadLettered: describe(dead[0]),
    };
  } finally {
    await sb.close();
  }
}

// A consumer that always abandons: the message must reach the DLQ with MaxDeliveryCountExceeded.
async function abandonLoop(queue, limit) {
  const sb = client();
  try {
    await sb.createSender(queue).sendMessages({ body: "poison" });
    const receiver = sb.createReceiver(queue);
    const counts = [];
    for (let i = 0; i < limit + 3; i++) {
      const got = await receiver.receiveMessages(1, { maxWaitTimeInMs: 1500 });
      if (got.length === 0) break;
      counts.push(got[0].deliveryCount);
      await receiver.abandonMessage(got[0]);
    }
    const dead = await receiveAll(sb.createReceiver(queue, { subQueueType: "deadLetter" }), 1);
    return { deliveryCounts: counts, deadLettered: dead.map(describe) };
  } finally {
    await sb.close();
  }
}

// Each management operation as the very first use of a fresh client (its own connection and token).
async function managementFirst(queue) {
  const out = {};
  async function fresh(name, fn) {
    const sb = client();
    try {
      out[name] = await fn(sb);
    } catch (e) {
      out[name] = { error: failure(e) };
    } finally {
      await sb.close();
    }
  }
  await fresh("peekEmpty", async (sb) => (await sb.createReceiver(queue).peekMessages(5)).length);
  let scheduled;
  await fresh("schedule", async (sb) => {
    const when = new Date(Date.now() + 3600_000);
    scheduled = await sb.createSender(queue).scheduleMessages([{ body: "later" }, { body: "later2" }], when);
    return scheduled.map(Number);
  });
  await fresh("peekScheduled", async (sb) =>
    (await sb.createReceiver(queue).peekMessages(5, { fromSequenceNumber: undefined })).map(describe));
  await fresh("cancel", async (sb) => {
    await sb.createSender(queue).cancelScheduledMessages([scheduled[0]]);
    return (await sb.createReceiver(queue).peekMessages(5)).map((m) => m.body);
  });
  // defer one message, then receive it by sequence number from a fresh client
  let deferredSeq;
  await fresh("defer", async (sb) => {
    await sb.createSender(queue).sendMessages({ body: "deferred" });
    const r = sb.createReceiver(queue);
    const [m] = await receiveAll(r, 1);
    deferredSeq = m.sequenceNumber;
    await r.deferMessage(m);
    return Number(m.sequenceNumber);
  });
  await fresh("receiveDeferred", async (sb) => {
    const r = sb.createReceiver(queue);
    const got = await r.receiveDeferredMessages([deferredSeq]);
    await r.completeMessage(got[0]);
    return got.map(describe);
  });
  await fresh("peekDeferredGone", async (sb) => (await sb.createReceiver(queue).peekMessages(5)).map(describe));
  return out;
}

// Send to a topic; read what each subscription got.
async function topics(topic, subscriptions, messages) {
  const sb = client();
  try {
    await sb.createSender(topic).sendMessages(messages);
    const out = {};
    for (const sub of subscriptions) {
      const receiver = sb.createReceiver(topic, sub);
      const got = [];
      for (;;) {
        // Everything was sent before the first receive: once some came, a short wait is enough to see the end.
        const batch = await receiver.receiveMessages(20, { maxWaitTimeInMs: got.length ? 300 : 1000 });
        if (batch.length === 0) break;
        for (const m of batch) {
          got.push(m.body);
          await receiver.completeMessage(m);
        }
      }
      out[sub] = got.sort();
    }
    let topicReceive;
    try {
      await sb.createReceiver(topic, subscriptions[0], { subQueueType: "deadLetter" }).peekMessages(1);
      const sendToSub = sb.createSender(`${topic}/Subscriptions/${subscriptions[0]}`);
      await sendToSub.sendMessages({ body: "x" });
      topicReceive = { sentToSubscription: true };
    } catch (e) {
      topicReceive = { error: failure(e) };
    }
    return { received: out, sendToSubscription: topicReceive };
  } finally {
    await sb.close();
  }
}

// Sessions: sending without a session id, a named session in order with state and renewal, exclusivity,
// next-available, abandon and dead-letter inside a session, and next-available with nothing left.
async function sessions(queue) {
  const sb = client();
  try {
    const result = {};
    const sender = sb.createSender(queue);
    result.sendWithoutSession = await outcome(() => sender.sendMessages({ body: "no session" }), { sent: true });
    await sender.sendMessages(["1", "2", "3"].flatMap((n) => [
      { body: `s1-${n}`, sessionId: "s1" }, { body: `s2-${n}`, sessionId: "s2" }]));
    const s1 = await sb.acceptSession(queue, "s1");
    result.named = { sessionId: s1.sessionId, lockedUntil: s1.sessionLockedUntilUtc?.toISOString() ?? null };
    result.named.bodies = (await receiveAll(s1, 3)).map((m) => {
      result.named.sessionIds = [...(result.named.sessionIds ?? []), m.sessionId];
      return m;
    });
    for (const m of result.named.bodies) await s1.completeMessage(m);
    result.named.bodies = result.named.bodies.map((m) => m.body);
    await s1.setSessionState("checkpoint-1");
    result.named.state = await s1.getSessionState();
    const before = s1.sessionLockedUntilUtc.getTime();
    await new Promise((resolve) => setTimeout(resolve, 50));
    result.named.renewed = (await s1.renewSessionLock()).getTime() > before;
    result.second = await outcome(
      () => sb.acceptSession(queue, "s1", { maxAutoLockRenewalDurationInMs: 0 }), { accepted: true });
    await s1.close();
    const next = await sb.acceptNextSession(queue);
    result.next = { sessionId: next.sessionId };
    const [first] = await next.receiveMessages(1, { maxWaitTimeInMs: 3000 });
    await next.abandonMessage(first);
    const again = await receiveAll(next, 3);
    result.next.afterAbandon = again.map((m) => [m.body, m.deliveryCount]);
    await next.deadLetterMessage(again[0], { deadLetterReason: "Bad", deadLetterErrorDescription: "in a session" });
    for (const m of again.slice(1)) await next.completeMessage(m);
    await next.close();
    const dlq = sb.createReceiver(queue, { subQueueType: "deadLetter" });
    result.deadLettered = (await receiveAll(dlq, 1)).map((m) => ({ ...describe(m), sessionId: m.sessionId }));
    // With no session to give, the broker refuses the receiver once the wait the client asked for
    // (com.microsoft:timeout, from the operation timeout) is over: 2 s here rather than the 15 s of the others.
    const quick = new ServiceBusClient(connectionString, { retryOptions: { ...RETRY, timeoutInMs: 2000 } });
    try {
      result.nextWhenEmpty = await outcome(() => quick.acceptNextSession(queue, { maxAutoLockRenewalDurationInMs: 0 }),
        { accepted: true });
    } finally {
      await quick.close();
    }
    return result;
  } finally {
    await sb.close();
  }
}

// A session lock that is not renewed expires: settling fails with SessionLockLost, and the message comes back
// to the next receiver of the session with its delivery count raised.
async function sessionLockExpiry(queue) {
  const sb = client();
  try {
    await sb.createSender(queue).sendMessages({ body: "slow", sessionId: "x" });
    const held = await sb.acceptSession(queue, "x", { maxAutoLockRenewalDurationInMs: 0 });
    const [m] = await held.receiveMessages(1, { maxWaitTimeInMs: 3000 });
    await new Promise((resolve) => setTimeout(resolve, 2500));
    const result = { lateComplete: await outcome(() => held.completeMessage(m), { completed: true }) };
    await held.close();
    const again = await sb.acceptSession(queue, "x");
    const [m2] = await again.receiveMessages(1, { maxWaitTimeInMs: 3000 });
    result.again = [m2.body, m2.deliveryCount];
    await again.completeMessage(m2);
    await again.close();
    return result;
  } finally {
    await sb.close();
  }
}

async function sendToDeadLetterQueue(queue) {
  const sb = client();
  try {
    await sb.createSender(`${queue}/$DeadLetterQueue`).sendMessages({ body: "x" });
    return { sent: true };
  } catch (e) {
    return { error: failure(e) };
  } finally {
    await sb.close();
  }
}

const scenarios = {
  settle: () => settle(options.queue),
  abandonLoop: () => abandonLoop(options.queue, options.maxDeliveryCount),
  managementFirst: () => managementFirst(options.queue),
  topics: () => topics(options.topic, options.subscriptions, options.messages),
  sessions: () => sessions(options.queue),
  sessionLockExpiry: () => sessionLockExpiry(options.queue),
  sendToDeadLetterQueue: () => sendToDeadLetterQueue(options.queue),
};

const run = scenarios[scenario];
if (!run) {
  console.error(`unknown scenario ${scenario}; one of ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}
const timer = setTimeout(() => {
  console.error(`scenario ${scenario} did not finish within 90 s`);
  process.exit(3);
}, 90_000);
try {
  const result = await run();
  process.stdout.write(JSON.stringify(result) + "\n");
  clearTimeout(timer);
  process.exit(0);
} catch (e) {
  process.stdout.write(JSON.stringify({ error: failure(e) }) + "\n");
  clearTimeout(timer);
  process.exit(1);
}
