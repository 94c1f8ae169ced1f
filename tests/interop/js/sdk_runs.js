// The LangSmith JS SDK sending every kind of run to LANGSMITH_ENDPOINT: traceable functions
// nested, a RunTree with createChild/end/postRun/patchRun (ended at a fractional epoch
// millisecond), and a run that fails. Prints what it made as one JSON line.
const { Client } = require("langsmith");
const { RunTree } = require("langsmith/run_trees");
const { traceable } = require("langsmith/traceable");

async function main() {
  const client = new Client();
  const project = process.env.JS_PROJECT;
  const inner = traceable(async (x) => x * 2, {
    name: "js-inner", run_type: "tool", client, project_name: project,
  });
  const outer = traceable(async (x) => (await inner(x)) + 1, {
    name: "js-outer", client, project_name: project, metadata: { lang: "js" }, tags: ["js"],
  });
  const failing = traceable(async () => { throw new Error("js boom"); }, {
    name: "js-error", client, project_name: project,
  });
  const result = await outer(20);
  let caught = null;
  try { await failing(); } catch (e) { caught = e.message; }

  const root = new RunTree({
    name: "js-manual", inputs: { a: 1 }, client, project_name: project, tracingEnabled: true,
  });
  await root.postRun();
  const child = root.createChild({ name: "js-manual-child", run_type: "llm", inputs: { p: "hi" } });
  await child.postRun();
  const childEnd = Date.now() + 0.25; // epoch milliseconds with a fraction: 250 microseconds
  await child.end(
    { text: "hello", usage_metadata: { input_tokens: 5, output_tokens: 2, total_tokens: 7 } },
    undefined,
    childEnd,
  );
  await child.patchRun();
  await root.end({ done: true });
  await root.patchRun();
  await client.awaitPendingTraceBatches();
  console.log(JSON.stringify({
    result, caught,
    root: { id: root.id, trace_id: root.trace_id, dotted_order: root.dotted_order },
    child: { id: child.id, end_time: childEnd, dotted_order: child.dotted_order },
  }));
}

main().catch((e) => { console.error(e); process.exit(1); });
