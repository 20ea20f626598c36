// The application side of the restart tests (client_test.go), shared by Node
// (testdata/interop/recover-node.mjs) and the browser (recover.html): a
// shardhub.js client that checks what it receives and reports to the Go test.
//
// mode "history": subscribes to hist.a and tiny.a (channels with history,
// tiny.a keeps 5) and checks that the publications {seq} of hist.a arrive
// exactly once and in order, 1…total, across the server's death; tiny.a must
// end in a "resync" event. mode "restart": subscribes to news and, while the
// server is down, publishes on it; after the restart the queued publish must
// reach the resubscribed channel.
//
// report(obj) sends one observation: {event: "ready"|"progress"|"state"|"done", …}.

/**
 * @param {typeof import("../../web/shardhub.js").Client} Client
 * @param {string} url
 * @param {object} options client options (WebSocket in Node)
 * @param {(o: object) => void} report
 * @param {string} mode "history" or "restart"
 * @param {number} total the last seq of hist.a (history mode)
 */
export async function run(Client, url, options, report, mode, total) {
  const hub = new Client(url, { minReconnectDelay: 100, maxReconnectDelay: 1000, ...options });
  const res = {
    states: [], subscribed: [], resync: [], errors: [],
    got: 0, last: 0, dups: 0, gaps: [], tinyGot: 0, queued: null, queuedArrived: false,
  };
  hub.on("state", (s) => { res.states.push(s); report({ event: "state", state: s }); });
  hub.on("subscribed", (channel, info) => res.subscribed.push({ channel, ...info }));
  hub.on("resync", (channel) => res.resync.push(channel));
  hub.on("error", (err) => res.errors.push(err.code));
  let finish;
  const finished = new Promise((resolve) => { finish = resolve; });

  if (mode === "history") {
    // Done when the last publication is in and tiny.a has been through its
    // resubscription too (its reply may come after hist.a's last message).
    const check = () => {
      if (res.last === total && res.subscribed.some((s) => s.channel === "tiny.a" && s.resubscribed)) finish();
    };
    hub.on("subscribed", check);
    await hub.subscribe("hist.a", (data) => {
      const seq = data.seq;
      if (seq <= res.last) res.dups++;
      else if (seq !== res.last + 1) res.gaps.push([res.last, seq]);
      res.last = Math.max(res.last, seq);
      res.got++;
      if (res.got % 25 === 0) report({ event: "progress", n: res.got });
      check();
    });
    await hub.subscribe("tiny.a", () => { res.tinyGot++; });
  } else {
    await hub.subscribe("news", (data) => {
      if (data && data.queued) {
        res.queuedArrived = true;
        finish();
      }
    });
    hub.on("disconnected", () => {
      if (res.queued !== null) return;
      res.queued = "waiting";
      hub.publish("news", { queued: true }).then(() => { res.queued = "acked"; }, (err) => { res.queued = err.code; });
    });
  }
  report({ event: "ready", conn: hub.connId });
  await finished;
  // Let the queued publish's ack land before reporting it.
  for (let i = 0; i < 100 && res.queued === "waiting"; i++) await new Promise((r) => setTimeout(r, 20));
  hub.close();
  report({ event: "done", result: res });
}
