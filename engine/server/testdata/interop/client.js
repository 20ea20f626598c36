// A non-Go WebSocket client (the npm "ws" library) driving shardhub through a
// scripted session. Usage: node client.js ws://host:port/ws
// It prints one JSON line per observation; the Go test reads them.
"use strict";
const WebSocket = require("ws");

const url = process.argv[2];
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const fail = (why) => { out({ fail: why }); process.exit(1); };
setTimeout(() => fail("timeout"), 20000).unref();

function open(u) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(u);
    const queue = [];
    const waiters = [];
    ws.on("message", (data, isBinary) => {
      const m = JSON.parse(data.toString());
      const w = waiters.shift();
      if (w) w(m); else queue.push(m);
    });
    ws.next = () => new Promise((res) => { const m = queue.shift(); if (m) res(m); else waiters.push(res); });
    ws.closed = new Promise((res) => ws.on("close", (code, reason) => res({ code, reason: reason.toString() })));
    ws.on("open", () => resolve(ws));
    ws.on("error", reject);
  });
}

(async () => {
  const a = await open(url);
  const b = await open(url);
  const wa = await a.next();
  const wb = await b.next();
  out({ step: "welcome", a: wa, b: wb });

  a.send(JSON.stringify({ type: "subscribe", channel: "interop", id: 1 }));
  out({ step: "subscribed", msg: await a.next() });
  out({ step: "ready", conn: wa.conn });

  // The Go side publishes {"from":"go"} to "interop" once it reads "ready".
  out({ step: "published-by-go", msg: await a.next() });

  b.send(JSON.stringify({ type: "publish", channel: "interop", data: { from: "node" }, id: "p1" }));
  out({ step: "ack", msg: await b.next() });
  out({ step: "published-by-node", msg: await a.next() });

  b.send(JSON.stringify({ type: "send", to: wa.conn, data: "psst" }));
  out({ step: "private", msg: await a.next() });

  b.send("not json");
  out({ step: "bad-json", msg: await b.next() });

  b.send("x".repeat(70 * 1024)); // over the 64 KiB limit
  out({ step: "oversize", close: await b.closed });

  a.close(1000, "done");
  out({ step: "closed", close: await a.closed });
  process.exit(0);
})().catch((e) => fail(String(e)));
