// Scenarios run with the official JavaScript Durable Task SDK (@microsoft/durabletask-js, over @grpc/grpc-js)
// against localdts. Usage: node scenarios.mjs <scenario> <host:port> [json options]
// Prints one JSON object on stdout; the pytest side (test_js_durabletask.py) asserts on it. Errors are reported as
// data ({error: {code, message}}) so the test can say what went wrong. This SDK's waits send no gRPC deadline.
import {
  NoOpLogger,
  OrchestrationStatus,
  TaskHubGrpcClient,
  TaskHubGrpcWorker,
} from "@microsoft/durabletask-js";

const [scenario, address, rawOptions] = process.argv.slice(2);
const options = rawOptions ? JSON.parse(rawOptions) : {};
const WAIT_SECONDS = 30;

function client() {
  return new TaskHubGrpcClient({ hostAddress: address, logger: new NoOpLogger() });
}

async function withWorker(register, body) {
  const worker = new TaskHubGrpcWorker({ hostAddress: address, logger: new NoOpLogger(), shutdownTimeoutMs: 2000 });
  register(worker);
  await worker.start();
  try {
    return await body();
  } finally {
    await worker.stop();
  }
}

function failure(e) {
  return { code: e?.code ?? null, message: String(e?.details ?? e?.message ?? e) };
}

function describe(state) {
  if (!state) return null;
  return {
    instanceId: state.instanceId,
    name: state.name,
    status: OrchestrationStatus[state.runtimeStatus],
    output: state.serializedOutput ?? null,
    failure: state.failureDetails ? { type: state.failureDetails.errorType, message: state.failureDetails.message }
      : null,
  };
}

// --- orchestrations of the JS worker ---------------------------------------------------------------------------

const jsChild = async function* (ctx) {
  const parent = ctx.parent;
  return parent ? { name: parent.name, instanceId: parent.instanceId, taskScheduledId: parent.taskScheduledId }
    : null;
};

const jsParent = async function* (ctx) {
  const seen = yield ctx.callSubOrchestrator("jsChild");
  return { self: ctx.instanceId, childSaw: seen };
};

const jsWaiter = async function* (ctx) {
  const value = yield ctx.waitForExternalEvent("go");
  return { got: value };
};

// --- scenarios -------------------------------------------------------------------------------------------------

// A sub-orchestration learns its parent from its ExecutionStarted event; the wait has no gRPC deadline.
async function subOrchestration() {
  const c = client();
  try {
    return await withWorker(
      (w) => { w.addNamedOrchestrator("jsParent", jsParent); w.addNamedOrchestrator("jsChild", jsChild); },
      async () => {
        const id = await c.scheduleNewOrchestration("jsParent");
        return { id, state: describe(await c.waitForOrchestrationCompletion(id, true, WAIT_SECONDS)) };
      });
  } finally {
    await c.stop();
  }
}

// Start, wait for the start, raise, wait for the end; start another, terminate it; purge both; then ids DTS refuses.
async function manage() {
  const c = client();
  try {
    return await withWorker((w) => w.addNamedOrchestrator("jsWaiter", jsWaiter), async () => {
      const out = {};
      const raised = await c.scheduleNewOrchestration("jsWaiter", undefined, { instanceId: options.raisedId });
      out.started = describe(await c.waitForOrchestrationStart(raised, false, WAIT_SECONDS));
      await c.raiseOrchestrationEvent(raised, "go", { n: 42 });
      out.raised = describe(await c.waitForOrchestrationCompletion(raised, true, WAIT_SECONDS));

      const terminated = await c.scheduleNewOrchestration("jsWaiter", undefined,
        { instanceId: options.terminatedId });
      await c.waitForOrchestrationStart(terminated, false, WAIT_SECONDS);
      await c.terminateOrchestration(terminated, "enough");
      out.terminated = describe(await c.waitForOrchestrationCompletion(terminated, true, WAIT_SECONDS));

      out.purged = [];
      for (const id of [raised, terminated]) {
        const result = await c.purgeOrchestration(id);
        out.purged.push(result?.deletedInstanceCount ?? null);
      }
      out.afterPurge = [describe(await c.getOrchestrationState(raised)),
        describe(await c.getOrchestrationState(terminated))];
      try {
        await c.scheduleNewOrchestration("jsWaiter", undefined, { instanceId: "x".repeat(101) });
        out.longId = { error: null };
      } catch (e) {
        out.longId = { error: failure(e) };
      }
      const clean = await c.cleanEntityStorage();
      out.cleanEntityStorage = { emptyEntitiesRemoved: clean.emptyEntitiesRemoved,
        orphanedLocksReleased: clean.orphanedLocksReleased };
      return out;
    });
  } finally {
    await c.stop();
  }
}

// A JS client starts one of our orchestrations by name; the Python worker of the test runs it.
async function startPython() {
  const c = client();
  try {
    const id = await c.scheduleNewOrchestration(options.name, options.input);
    return { id, state: describe(await c.waitForOrchestrationCompletion(id, true, WAIT_SECONDS)) };
  } finally {
    await c.stop();
  }
}

const scenarios = { subOrchestration, manage, startPython };

try {
  if (!(scenario in scenarios)) throw new Error(`unknown scenario ${scenario}`);
  const result = await scenarios[scenario]();
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(0);
} catch (e) {
  process.stdout.write(JSON.stringify({ error: failure(e), stack: String(e?.stack ?? "") }) + "\n");
  process.exit(1);
}
