// The shardhub dashboard (GET /). It subscribes to the $sys.stats system
// channel, which every instance publishes once a second (engine/server
// stats.go, StatsMessage), and draws the cluster from it; the try-it panel
// drives the same connection with shardhub.js. No dependencies, no build step.
import { Client } from "/shardhub.js";

/** The system channel the stats arrive on (server.StatsChannel). */
const statsChannel = "$sys.stats";
/** Points kept per time series: two minutes at one per second. */
const historyLength = 120;
/** An instance silent this long is left out of the totals, and forgotten after forgetAfter. */
const staleAfter = 5000;
const forgetAfter = 60000;

const $ = (id) => document.getElementById(id);

// ---- formatting ----

const intFmt = new Intl.NumberFormat("en-US");

/** Formats a count or rate for a tile: 12, 3.4, 12.3k, 4.56M. */
function human(n) {
  if (n === undefined || n === null || Number.isNaN(n)) return "–";
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(2) + "G";
  if (a >= 1e6) return (n / 1e6).toFixed(2) + "M";
  if (a >= 1e4) return (n / 1e3).toFixed(1) + "k";
  if (a >= 100 || Number.isInteger(n)) return intFmt.format(Math.round(n));
  return n.toFixed(1);
}

/** Formats bytes per second: 512 B, 1.2 KB, 3.4 MB. */
function bytes(n) {
  if (n === undefined || Number.isNaN(n)) return "–";
  if (n >= 1 << 30) return (n / (1 << 30)).toFixed(2) + " GB";
  if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + " MB";
  if (n >= 1 << 10) return (n / (1 << 10)).toFixed(1) + " KB";
  return Math.round(n) + " B";
}

// ---- state: the latest stats of every instance, and the time series ----

/** @type {Map<string, {m: object, seen: number}>} instance id → latest stats message */
const instances = new Map();
const series = {
  conns: [],
  in: [],
  out: [],
  deliv: [],
};
/** The instance whose shards the shard chart shows; "" = the first one. */
let shardInstance = "";

function fresh(now = Date.now()) {
  return [...instances.values()].filter((x) => now - x.seen < staleAfter).map((x) => x.m);
}

function sum(list, f) {
  let s = 0;
  for (const x of list) s += f(x) || 0;
  return s;
}

function totals() {
  const list = fresh();
  return {
    list,
    conns: sum(list, (m) => m.connections),
    in: sum(list, (m) => m.rates && m.rates.messages_in),
    out: sum(list, (m) => m.rates && m.rates.messages_out),
    deliv: sum(list, (m) => m.rates && m.rates.deliveries),
    bytes: sum(list, (m) => m.rates && m.rates.bytes_sent),
    drops: sum(list, (m) => m.dropped_broadcasts) + sum(list, (m) => m.forced_disconnects),
  };
}

function onStats(m) {
  if (!m || typeof m.instance !== "string") return;
  instances.set(m.instance, { m, seen: Date.now() });
  render();
}

/** Once a second: a point for every time series, and forget instances long gone. */
function tick() {
  const now = Date.now();
  for (const [id, x] of instances) if (now - x.seen > forgetAfter) instances.delete(id);
  const t = totals();
  if (t.list.length === 0) return; // no data: leave a gap rather than a false zero
  push(series.conns, t.conns);
  push(series.in, t.in);
  push(series.out, t.out);
  push(series.deliv, t.deliv);
  render();
}

function push(arr, v) {
  arr.push(v);
  if (arr.length > historyLength) arr.shift();
}

// ---- rendering ----

function render() {
  const t = totals();
  const none = t.list.length === 0; // no stats (yet, or any more): show dashes, not zeros
  $("t-conns").textContent = none ? "–" : human(t.conns);
  $("t-in").textContent = none ? "–" : human(t.in);
  $("t-out").textContent = none ? "–" : human(t.out);
  $("t-deliv").textContent = none ? "–" : human(t.deliv);
  $("t-bytes").textContent = none ? "–" : bytes(t.bytes);
  $("t-drops").textContent = none ? "–" : human(t.drops);
  $("t-drops").classList.toggle("bad", t.drops > 0);
  $("instances").textContent = t.list.length || "–";
  renderBroker(t.list);
  drawChart($("c-conns"), [{ values: series.conns, color: "--in" }]);
  drawChart($("c-msgs"), [{ values: series.in, color: "--in" }, { values: series.out, color: "--out" }]);
  drawChart($("c-deliv"), [{ values: series.deliv, color: "--ok" }]);
  renderShards();
  renderDrops(t.list);
  renderCluster();
}

function renderBroker(list) {
  const el = $("broker");
  if (list.length === 0) {
    el.textContent = "no stats yet";
    el.className = "badge";
    return;
  }
  const degraded = list.filter((m) => m.broker && m.broker.state === "degraded");
  const cluster = list.some((m) => m.broker && m.broker.mode === "cluster");
  const detail = (degraded[0] || list[0]).broker.detail || {};
  let text = "single node";
  if (cluster) {
    text = "redis" in detail ? `Redis ${detail.redis}` : "cluster";
    if (degraded.length > 0) text += ` · degraded (${degraded.map((m) => m.instance).join(", ")})`;
  }
  el.textContent = text;
  el.className = "badge " + (degraded.length > 0 ? "bad" : "ok");
  el.title = Object.entries(detail).map(([k, v]) => `${k}: ${v}`).join("\n");
}

function renderShards() {
  const ids = [...instances.keys()].sort();
  if (!instances.has(shardInstance)) shardInstance = ids[0] || "";
  const x = instances.get(shardInstance);
  $("shard-of").textContent = ids.length > 1 ? `(instance ${shardInstance})` : "";
  drawBars($("c-shards"), x ? x.m.shards || [] : []);
}

/** The drop and eviction counters, summed over the live instances, and every number the ledger holds. */
function renderDrops(list) {
  const rows = [
    ["dropped: queue full", sum(list, (m) => m.dropped_broadcasts)],
    ["evicted: slow consumers", sum(list, (m) => m.forced_disconnects)],
    ["write errors", sum(list, (m) => m.write_errors)],
    ["authorizer denials", sum(list, (m) => m.authorizer_denials)],
    ["broadcast queue", list.map((m) => `${m.broadcast_queue_length}/${m.broadcast_queue_capacity}`).join(" ")],
  ];
  const ledger = new Map();
  for (const m of list) flatten(m.ledger, "ledger", ledger);
  for (const [k, v] of ledger) rows.push([k, v]);
  const body = $("drops").tBodies[0];
  body.replaceChildren(...rows.map(([k, v]) => {
    const tr = row([k, typeof v === "number" ? human(v) : v], [false, true]);
    if (typeof v === "number" && v > 0 && !/^ledger\.(accepted|delivered|handed|published|received)/.test(k)) tr.className = "nonzero";
    return tr;
  }));
}

/** Adds every numeric leaf of v to out under its dotted path, summing across instances. */
function flatten(v, path, out) {
  if (typeof v === "number") {
    out.set(path, (out.get(path) || 0) + v);
  } else if (v && typeof v === "object") {
    for (const [k, x] of Object.entries(v)) flatten(x, `${path}.${k}`, out);
  }
}

function renderCluster() {
  const now = Date.now();
  const rows = new Map(); // id → cells
  for (const [id, x] of instances) {
    const r = x.m.rates || {};
    rows.set(id, { id, conns: x.m.connections, out: r.messages_out, deliv: r.deliveries, seen: now - x.seen });
  }
  // Instances the registry lists that publish no stats here (yet).
  for (const x of instances.values()) {
    const list = Array.isArray(x.m.cluster) ? x.m.cluster : [];
    for (const i of list) if (!rows.has(i.id)) rows.set(i.id, { id: i.id, conns: i.connections });
  }
  const body = $("cluster").tBodies[0];
  body.replaceChildren(...[...rows.values()].sort((a, b) => a.id.localeCompare(b.id)).map((x) => {
    const seen = x.seen === undefined ? "registry" : x.seen < 2500 ? "now" : `${Math.round(x.seen / 1000)} s ago`;
    const tr = row([x.id, human(x.conns), human(x.out), human(x.deliv), seen], [false, true, true, true, false]);
    if (x.seen === undefined || x.seen >= staleAfter) tr.className = "stale";
    if (x.seen !== undefined) {
      tr.title = "show this instance's shards";
      tr.addEventListener("click", () => { shardInstance = x.id; render(); });
    }
    return tr;
  }));
}

function row(cells, numeric) {
  const tr = document.createElement("tr");
  cells.forEach((c, i) => {
    const td = document.createElement("td");
    td.textContent = c === undefined ? "–" : String(c);
    if (numeric[i]) td.className = "num";
    tr.append(td);
  });
  return tr;
}

// ---- charts (canvas, no library) ----

function cssColor(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

/** Sizes canvas for the device's pixel ratio and returns its 2D context and CSS size. */
function prepare(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui, sans-serif";
  return { ctx, w, h };
}

/** The smallest 1, 2 or 5 × 10^n at or above v. */
function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/** Draws time series (newest on the right, one point per second) with a 0…max grid. */
function drawChart(canvas, lines) {
  const { ctx, w, h } = prepare(canvas);
  const left = 44, top = 6, bottom = 16, plotW = w - left - 4, plotH = h - top - bottom;
  let max = 0;
  for (const l of lines) for (const v of l.values) max = Math.max(max, v);
  max = niceMax(max);
  ctx.strokeStyle = cssColor("--line");
  ctx.fillStyle = cssColor("--muted");
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const f of [0, 0.5, 1]) {
    const y = Math.round(top + plotH * (1 - f)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(left, y);
    ctx.lineTo(left + plotW, y);
    ctx.stroke();
    ctx.fillText(human(max * f), left - 4, y);
  }
  ctx.textAlign = "left";
  ctx.textBaseline = "alphabetic";
  ctx.fillText(`${historyLength} s`, left, h - 3);
  ctx.textAlign = "right";
  ctx.fillText("now", left + plotW, h - 3);
  const step = plotW / (historyLength - 1);
  for (const l of lines) {
    const n = l.values.length;
    if (n === 0) continue;
    ctx.strokeStyle = cssColor(l.color);
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    l.values.forEach((v, i) => {
      const x = left + plotW - (n - 1 - i) * step;
      const y = top + plotH * (1 - v / max);
      if (i === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

/** Draws one bar per shard. */
function drawBars(canvas, values) {
  const { ctx, w, h } = prepare(canvas);
  const left = 44, top = 6, bottom = 16, plotW = w - left - 4, plotH = h - top - bottom;
  const max = niceMax(Math.max(0, ...values));
  ctx.fillStyle = cssColor("--muted");
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  ctx.fillText(human(max), left - 4, top);
  ctx.fillText("0", left - 4, top + plotH);
  ctx.textAlign = "left";
  ctx.textBaseline = "alphabetic";
  ctx.fillText(values.length ? `${values.length} shards` : "no data", left, h - 3);
  if (values.length === 0) return;
  const bw = plotW / values.length;
  ctx.fillStyle = cssColor("--in");
  values.forEach((v, i) => {
    const bh = plotH * (v / max);
    ctx.fillRect(left + i * bw, top + plotH - bh, Math.max(1, bw - (bw > 4 ? 1 : 0)), bh);
  });
}

// ---- the connection and the try-it panel ----

const log = (text, cls = "") => {
  const el = $("log");
  const line = document.createElement("div");
  line.textContent = text;
  if (cls) line.className = cls;
  el.append(line);
  while (el.childElementCount > 300) el.firstElementChild.remove();
  el.scrollTop = el.scrollHeight;
};

/**
 * Logs a message that arrived, up to a few lines a second: under a load test
 * every connection gets hundreds of broadcasts a second, which would bury
 * the panel's own lines. The rest is counted in one line a second.
 */
let incomingBudget = 0, incomingHidden = 0;
function logIncoming(text) {
  if (incomingBudget >= 3) {
    incomingHidden++;
    return;
  }
  incomingBudget++;
  log(text.length > 160 ? text.slice(0, 160) + "…" : text);
}
setInterval(() => {
  if (incomingHidden > 0) log(`(${incomingHidden} more messages in the last second not shown)`, "sys");
  incomingBudget = incomingHidden = 0;
}, 1000);

/** The data field as JSON when it parses, else as a string. */
function dataValue() {
  const raw = $("data").value;
  try {
    return JSON.parse(raw);
  } catch (_) {
    return raw;
  }
}

const token = new URLSearchParams(location.search).get("token") || undefined;
const hub = new Client("/ws", { token });
/** For scripts and tests: the page's client. */
window.shardhub = hub;

hub.on("state", (s) => { $("state").textContent = s; });
hub.on("connected", ({ conn }) => {
  $("conn").textContent = conn;
  log(`connected as ${conn}`, "sys");
});
hub.on("disconnected", ({ code, delay }) => {
  $("conn").textContent = "–";
  log(`disconnected (${code}); retrying in ${(delay / 1000).toFixed(1)} s`, "sys");
});
hub.on("private", (data, m) => logIncoming(`← private${m.from ? " from " + m.from : ""}: ${JSON.stringify(data)}`));
hub.on("broadcast", (data) => logIncoming(`← broadcast: ${JSON.stringify(data)}`));
hub.on("resync", (channel) => log(`${channel}: history lost, resync needed`, "err"));
hub.on("error", (err) => log(`error: ${err.code}: ${err.reason}`, "err"));

hub.subscribe(statsChannel, onStats).catch((err) => log(`cannot subscribe to ${statsChannel}: ${err.message}`, "err"));

/** Runs a panel action, logging what was sent and how the server answered. */
async function act(label, fn) {
  log(`→ ${label}`, "out");
  try {
    await fn();
    log(`✓ ${label}`, "sys");
  } catch (err) {
    log(`✗ ${label}: ${err.code || "error"}: ${err.reason || err.message}`, "err");
  }
}

$("subscribe").addEventListener("click", () => {
  const ch = $("channel").value.trim();
  act(`subscribe ${ch}`, () => hub.subscribe(ch, (data, m) => {
    logIncoming(`← ${m.channel}${m.offset ? " @" + m.offset : ""}: ${JSON.stringify(data)}`);
  }));
});
$("unsubscribe").addEventListener("click", () => {
  const ch = $("channel").value.trim();
  act(`unsubscribe ${ch}`, () => hub.unsubscribe(ch));
});
$("publish").addEventListener("click", () => {
  const ch = $("channel").value.trim(), data = dataValue();
  act(`publish ${ch} ${JSON.stringify(data)}`, () => hub.publish(ch, data));
});
$("send").addEventListener("click", () => {
  const to = $("to").value.trim(), data = dataValue();
  act(`send ${to} ${JSON.stringify(data)}`, () => hub.send(to, data));
});
$("conn").addEventListener("click", () => { if (hub.connId) $("to").value = hub.connId; });
$("conn").title = "click: use as the send target";

setInterval(tick, 1000);
window.addEventListener("resize", render);
render();
