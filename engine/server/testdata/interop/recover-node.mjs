// The Node half of the restart tests (client_test.go): runs
// ../client/recover.mjs with the shardhub.js the server serves.
// Usage: node recover-node.mjs <shardhub.js copy (.mjs)> ws://host:port/ws <mode> <total>
import WebSocket from "ws";
import { run } from "../client/recover.mjs";

const [, , libPath, url, mode, total] = process.argv;
const { Client } = await import(libPath);
const report = (o) => process.stdout.write(JSON.stringify({ who: "node", ...o }) + "\n");
run(Client, url, { WebSocket }, report, mode, Number(total)).then(
  () => process.exit(0),
  (err) => { report({ fail: String(err && err.stack || err) }); process.exit(1); },
);
