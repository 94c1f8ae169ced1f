// A node service on the LangSmith JS SDK: it continues the caller's trace from its headers
// (RunTree.fromHeaders), runs a traceable handler with metadata and tags of its own, and calls
// DOWNSTREAM_URL with the handler's headers (getCurrentRunTree().toHeaders()).
const http = require("http");
const { RunTree } = require("langsmith/run_trees");
const { getCurrentRunTree, traceable, withRunTree } = require("langsmith/traceable");

// The shared client: a run continued from headers (RunTree.fromHeaders) sends through it, so
// /flush waits for it.
const client = RunTree.getSharedClient();
const handle = traceable(async () => {
  const headers = getCurrentRunTree().toHeaders();
  const response = await fetch(process.env.DOWNSTREAM_URL, { headers });
  return { downstream: await response.json(), sent: headers };
}, { name: "js-handler", client, metadata: { js_key: "from js" }, tags: ["from-js"] });

const server = http.createServer(async (req, res) => {
  try {
    if (req.url === "/flush") {
      await client.awaitPendingTraceBatches();
      res.end("{}");
      return;
    }
    const parent = RunTree.fromHeaders(req.headers);
    const out = await withRunTree(parent, () => handle());
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({
      ...out,
      parent: { id: parent.id, tags: parent.tags, metadata: parent.metadata,
                project: parent.project_name },
    }));
  } catch (e) {
    res.writeHead(500);
    res.end(String(e && e.stack));
  }
});
server.listen(0, "127.0.0.1", () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
