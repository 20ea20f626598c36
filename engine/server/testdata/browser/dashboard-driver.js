// Injected by TestDashboardBrowser (dashboard_test.go) at the top of the
// dashboard's <head>, before the dashboard's own module: it records every
// error the page logs or throws, then works the page as a person would (reads
// the connection count, uses the try-it panel) and POSTs what it saw to
// /result. The dashboard itself is served unchanged, under its own CSP.
"use strict";
(() => {
  const q = new URLSearchParams(location.search);
  const want = q.get("want");
  const errors = [];
  const consoleError = console.error.bind(console);
  console.error = (...args) => { errors.push(args.map(String).join(" ")); consoleError(...args); };
  window.addEventListener("error", (e) => errors.push("error: " + e.message));
  window.addEventListener("unhandledrejection", (e) => errors.push("unhandled rejection: " + (e.reason && e.reason.message || e.reason)));
  document.addEventListener("securitypolicyviolation", (e) => errors.push("CSP violation: " + e.violatedDirective + " " + e.blockedURI));

  const report = (o) => fetch("/result", { method: "POST", body: JSON.stringify(o) });
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const deadline = Date.now() + 1000 * Number(q.get("wait") || 60);
  const $ = (id) => document.getElementById(id);
  const text = (id) => $(id).textContent.trim();
  const logHas = (s) => $("log").textContent.includes(s);
  async function until(what, f) {
    for (;;) {
      const v = f();
      if (v) return v;
      if (Date.now() > deadline) throw new Error("timed out waiting for " + what);
      await sleep(50);
    }
  }

  window.addEventListener("load", async () => {
    try {
      await until("the page to connect", () => text("state") === "connected" && text("conn") !== "–");
      const seen = [];
      const look = () => { const t = text("t-conns"); if (seen[seen.length - 1] !== t) seen.push(t); return t; };
      await until("a first count", () => look() !== "–");
      report({ event: "connected", conn: text("conn") });
      await until(`the count ${want}`, () => look() === want);

      $("channel").value = "panel-test";
      $("subscribe").click();
      await until("the subscribe to be confirmed", () => logHas("✓ subscribe panel-test"));
      $("data").value = '{"from":"panel"}';
      $("publish").click();
      await until("the panel's own publication", () => logHas('← panel-test: {"from":"panel"}'));

      $("conn").click(); // the page's own conn id becomes the send target
      $("data").value = '"psst"';
      $("send").click();
      const send = await until("the send's outcome", () => (logHas("✓ send") ? "sent" : logHas("✗ send") ? "refused" : ""));
      if (send === "sent") await until("the private message", () => logHas('← private from ' + text("conn") + ': "psst"'));

      const rows = (id) => [...$(id).tBodies[0].rows].map((r) => [...r.cells].map((c) => c.textContent));
      report({
        event: "done",
        seen,
        send,
        sendTarget: $("to").value,
        broker: text("broker"),
        instances: text("instances"),
        cluster: rows("cluster"),
        drops: rows("drops"),
        tiles: ["t-in", "t-out", "t-deliv", "t-bytes", "t-drops"].map(text),
        fits: { width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight, vw: innerWidth, vh: innerHeight },
        log: $("log").textContent,
        errors,
      });
    } catch (err) {
      report({ fail: String(err), errors, log: $("log") && $("log").textContent });
    }
  });
})();
