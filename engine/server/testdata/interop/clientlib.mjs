// Drives shardhub.js (the copy the server serves) in Node against a live
// server: promises settled by replies, per-channel handlers, errors as
// rejected promises, queued requests, close().
// Usage: node clientlib.mjs <path of shardhub.js copy (.mjs)> ws://host:port/ws
// Prints one JSON line per step; the Go test (client_test.go) checks them.
import WebSocket from "ws";

const [, , libPath, url] = process.argv;
const { Client, ShardhubError, State } = await import(libPath);

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const fail = (why) => { out({ fail: String(why && why.stack || why) }); process.exit(1); };
setTimeout(() => fail("timeout"), 30000).unref();

/** Resolves with the next value fn is called with. */
function once(register) {
  return new Promise((resolve) => { const off = register((...args) => { off(); resolve(args); }); });
}

/** Returns the rejection of p, failing when it resolves. */
async function rejection(p) {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error("the promise resolved; a rejection was expected");
}

try {
  const opts = { WebSocket, minReconnectDelay: 100, maxReconnectDelay: 500, requestTimeout: 5000 };
  const a = new Client(url + "?who=a", opts);
  const states = [a.state]; // the constructor has begun connecting
  a.on("state", (s) => states.push(s));
  const connA = await a.ready();
  out({ step: "connected", conn: connA, states, state: a.state });

  // subscribe resolves with the subscription once the server confirms it.
  const gotNews = [];
  const sub = await a.subscribe("news", (data) => gotNews.push(data));
  out({ step: "subscribed", channel: sub.channel, active: sub.active });

  // Another client publishes: its promise resolves on the ack, and a's handler
  // (and the "message" event) see the data.
  const b = new Client(url + "?who=b", opts);
  const connB = await b.ready();
  const seen = once((fn) => a.on("message", fn));
  await b.publish("news", { n: 1 });
  const [channel, data] = await seen;
  out({ step: "published", channel, data, handler: gotNews });

  // A publish the server refuses rejects with its error code.
  const bad = await rejection(b.publish("bad channel", 1));
  out({ step: "bad-channel", isError: bad instanceof ShardhubError, code: bad.code });

  // The Go side's Authorizer denies sends to user a (?who=a); to b they pass.
  const denied = await rejection(b.send(connA, "psst"));
  out({ step: "send-denied", code: denied.code, reason: denied.reason });
  const priv = once((fn) => b.on("private", fn));
  await a.send(connB, "hello b");
  const [pdata, pmsg] = await priv;
  out({ step: "send-allowed", data: pdata, from: pmsg.from, fromIsA: pmsg.from === connA });

  // A refused subscribe rejects, and the channel is not kept.
  const subErr = await rejection(a.subscribe("secret.x"));
  out({ step: "subscribe-denied", code: subErr.code, kept: a.subscriptions.has("secret.x") });

  // After unsubscribe, publications of the channel no longer reach a: a
  // publication on another channel, published after, arrives first.
  await a.unsubscribe("news");
  const gotOther = once((fn) => a.on("message", fn));
  await a.subscribe("other");
  await b.publish("news", { n: 2 });
  await b.publish("other", { n: 3 });
  const [ch2, d2] = await gotOther;
  out({ step: "unsubscribed", channel: ch2, data: d2, news: gotNews });

  // Requests made before the connection exists wait for it.
  const c = new Client(url, { ...opts, autoConnect: false });
  const cSub = c.subscribe("queued");
  const cPub = c.publish("queued", "early");
  const cGot = once((fn) => c.on("message", fn));
  c.connect();
  await cSub;
  await cPub;
  const [qch, qdata] = await cGot;
  out({ step: "queued", channel: qch, data: qdata });

  // close() rejects what waits and ends in the closed state without reconnecting.
  const d = new Client(url, { ...opts, autoConnect: false });
  const dPub = d.publish("x", 1);
  d.close();
  const closedErr = await rejection(dPub);
  out({ step: "closed", code: closedErr.code, state: d.state, isClosed: d.state === State.CLOSED });

  a.close();
  b.close();
  c.close();
  out({ step: "done" });
  process.exit(0);
} catch (err) {
  fail(err);
}
