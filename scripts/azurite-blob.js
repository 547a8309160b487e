// Azurite's blob service as `azurite-blob` starts it (same arguments), with its extent GC
// stopped. Azurite runs a mark-and-sweep over every blob ten minutes after it starts, on its one
// Node thread; with the suite's thousands of blobs it answered nothing for 30 s and more, and a
// test that happened to run then failed (a stall real Azure Blob does not have). With in-memory
// persistence nothing needs collecting before the suite ends.
"use strict";
const path = require("path");
const blob = path.join(__dirname, "../.tools/node_modules/azurite/dist/src/blob");
const { BlobServerFactory } = require(path.join(blob, "BlobServerFactory"));
const { setExtentMemoryLimit } = require(path.join(blob, "../common/ConfigurationBase"));
const BlobEnvironment = require(path.join(blob, "BlobEnvironment")).default;

async function main() {
  const server = await new BlobServerFactory().createServer();
  setExtentMemoryLimit(new BlobEnvironment(), true);
  await server.start();
  // Another Azurite version may keep it elsewhere: serve anyway, and say so in the log.
  const gc = server.gcManager ? "extent GC stopped" : "extent GC NOT stopped (no gcManager)";
  if (server.gcManager) await server.gcManager.close();
  console.log(`Azurite Blob service listens on ${server.getHttpServerAddress()}, ${gc}`);
  for (const signal of ["SIGINT", "SIGTERM"]) {
    process.once(signal, () => server.close().then(() => process.exit(0)));
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
