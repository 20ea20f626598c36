// shardhub.js: the JavaScript client of shardhub (docs/client.md).
//
// An ES module with no dependencies and no build step. The server serves it at
// GET /shardhub.js; it runs in browsers and in Node (≥ 22 has a global
// WebSocket; on Node 20 pass the "ws" package as options.WebSocket).
//
//   import { Client } from "/shardhub.js";
//   const hub = new Client();                       // ws(s)://<this host>/ws
//   await hub.subscribe("news", (data) => console.log(data));
//   await hub.publish("news", { text: "hello" });
//
// What it does for an application: requests return promises settled by the
// server's replies; it reconnects with jittered exponential backoff; after a
// reconnect it subscribes again to every channel, with `since` = the last
// offset it saw on the channel, so channels with history lose nothing; when the
// server cannot recover a channel it emits "resync" so the application reloads
// that channel's state from its source of truth.
//
// The wire protocol is docs/protocol.md.

/**
 * Connection states, in the order a connection goes through them.
 * @readonly
 * @enum {string}
 */
export const State = Object.freeze({
  /** Opening a WebSocket, or waiting for the server's welcome. */
  CONNECTING: "connecting",
  /** The welcome arrived: requests flow; `client.connId` is set. */
  CONNECTED: "connected",
  /** The connection is lost; a reconnect is scheduled. */
  DISCONNECTED: "disconnected",
  /** close() was called; nothing more happens. */
  CLOSED: "closed",
});

/**
 * The error a request's promise is rejected with. `code` is the server's error
 * code (docs/protocol.md: "forbidden", "not_found", "rate_limited", …) or one of
 * the client's own: "timeout" (no reply in time), "disconnected" (the
 * connection dropped before the reply: the request may or may not have been
 * carried out), "closed" (close() was called), "queue_full" (too many requests
 * waiting for a connection).
 */
export class ShardhubError extends Error {
  /**
   * @param {string} code
   * @param {string} reason
   * @param {object} [reply] the server's error frame, when there was one
   */
  constructor(code, reason, reply) {
    super(`shardhub: ${code}: ${reason}`);
    this.name = "ShardhubError";
    /** @type {string} */
    this.code = code;
    /** @type {string} */
    this.reason = reason;
    /** @type {object|undefined} */
    this.reply = reply;
  }
}

/**
 * @typedef {object} ClientOptions
 * @property {string} [token] sent as ?token= on connect (`shardhub serve --token`)
 * @property {Function} [WebSocket] WebSocket constructor; default globalThis.WebSocket
 *   (in Node 20: `(await import("ws")).default`)
 * @property {number} [minReconnectDelay=500] first reconnect delay, ms
 * @property {number} [maxReconnectDelay=20000] cap of the exponential backoff, ms
 * @property {number} [requestTimeout=10000] how long a request waits for its
 *   reply, ms; a publish or send made while disconnected counts its wait too
 * @property {number} [connectTimeout=10000] how long to wait for the welcome
 *   before dropping the attempt and retrying, ms
 * @property {number} [maxQueued=1000] publish/send requests kept while
 *   disconnected; more are rejected with "queue_full"
 * @property {boolean} [autoConnect=true] connect in the constructor
 */

/**
 * @typedef {object} SubscribeOptions
 * @property {string} [since] recover the publications after this offset
 *   (channels with history only; see docs/protocol.md)
 */

/**
 * @callback MessageHandler
 * @param {*} data the publication's data, as published
 * @param {{type:string, channel:string, data:*, offset?:string}} msg the whole message
 */

const defaults = {
  minReconnectDelay: 500,
  maxReconnectDelay: 20000,
  requestTimeout: 10000,
  connectTimeout: 10000,
  maxQueued: 1000,
  autoConnect: true,
};

/**
 * One channel the client is subscribed to (or will be, once connected). It
 * survives reconnects: the client subscribes again on every new connection.
 */
export class Subscription {
  /** @param {Client} client @param {string} channel @param {string|undefined} since */
  constructor(client, channel, since) {
    /** @type {string} */
    this.channel = channel;
    /**
     * The offset of the last publication seen on the channel (channels with
     * history), sent as `since` when the client subscribes again.
     * @type {string|undefined}
     */
    this.offset = since;
    /** True while the server has confirmed the subscription on the current connection. */
    this.active = false;
    /** @type {Set<MessageHandler>} */
    this.handlers = new Set();
    /** @private */
    this._client = client;
    /** @private */
    this._waiters = []; // {resolve, reject} of subscribe() calls until the first reply
    /** @private */
    this._confirmed = false; // the server confirmed it once: later subscribes are resubscriptions
  }

  /**
   * Adds a handler for this channel's publications.
   * @param {MessageHandler} fn
   * @returns {() => void} a function that removes the handler
   */
  on(fn) {
    this.handlers.add(fn);
    return () => this.handlers.delete(fn);
  }

  /** Unsubscribes the channel (same as client.unsubscribe(channel)). */
  unsubscribe() {
    return this._client.unsubscribe(this.channel);
  }
}

/**
 * A connection to a shardhub server that comes back by itself.
 *
 * Events (client.on(name, fn)):
 * - "state" (state, previous): every change of {@link State}
 * - "connected" ({conn}): the welcome arrived; conn is this connection's id
 * - "disconnected" ({code, reason, delay}): the connection is lost; the next
 *   attempt is in `delay` ms
 * - "subscribed" (channel, {recovered, offset, resubscribed}): the server
 *   confirmed a subscription; `resubscribed` after a reconnect
 * - "resync" (channel, reply): the server could not recover what the channel
 *   missed (`recovered: false`): reload its state from your source of truth
 * - "message" (channel, data, msg): every publication, after the channel's handlers
 * - "broadcast" (data, msg): a message to every connection
 * - "private" (data, msg): a private message; msg.from is the sender's conn id
 * - "error" (ShardhubError): an error no request is waiting for (a failed
 *   resubscription, a rate limit)
 */
export class Client {
  /**
   * @param {string} [url] ws:// or wss:// URL; in a browser a path such as
   *   "/ws" is resolved against the page; default "/ws"
   * @param {ClientOptions} [options]
   */
  constructor(url = "/ws", options = {}) {
    /** @type {Required<Omit<ClientOptions,"token"|"WebSocket">> & ClientOptions} */
    this.options = { ...defaults, ...options };
    /** The WebSocket URL, resolved. */
    this.url = resolveURL(url, this.options.token);
    /** @type {string} */
    this.state = State.DISCONNECTED;
    /** The current connection's id (the `to` of a private message), or "" while not connected. */
    this.connId = "";
    /** @type {Map<string, Subscription>} */
    this.subscriptions = new Map();

    /** @private */ this._WS = this.options.WebSocket || globalThis.WebSocket;
    /** @private */ this._ws = null;
    /** @private */ this._listeners = new Map(); // event → Set of functions
    /** @private */ this._pending = new Map(); // request id → {kind, resolve, reject, timer, sub}
    /** @private */ this._queue = []; // publish/send requests waiting for a connection
    /** @private */ this._nextId = 1;
    /** @private */ this._attempt = 0; // reconnect attempts since the last welcome
    /** @private */ this._timer = null; // reconnect or connect timeout
    if (typeof this._WS !== "function") {
      throw new Error("shardhub: no WebSocket implementation: pass options.WebSocket (in Node 20: the \"ws\" package)");
    }
    if (this.options.autoConnect) this.connect();
  }

  /**
   * Adds an event listener (see the class documentation for the events).
   * @param {string} event
   * @param {Function} fn
   * @returns {() => void} a function that removes the listener
   */
  on(event, fn) {
    let set = this._listeners.get(event);
    if (!set) this._listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  /**
   * Removes an event listener.
   * @param {string} event
   * @param {Function} fn
   */
  off(event, fn) {
    this._listeners.get(event)?.delete(fn);
  }

  /**
   * Resolves once the client is connected (at once when it is), with the
   * connection id.
   * @returns {Promise<string>}
   */
  ready() {
    if (this.state === State.CONNECTED) return Promise.resolve(this.connId);
    if (this.state === State.CLOSED) return Promise.reject(new ShardhubError("closed", "the client is closed"));
    return new Promise((resolve, reject) => {
      const offConnected = this.on("connected", ({ conn }) => { done(); resolve(conn); });
      const offState = this.on("state", (s) => {
        if (s === State.CLOSED) { done(); reject(new ShardhubError("closed", "the client is closed")); }
      });
      const done = () => { offConnected(); offState(); };
    });
  }

  /**
   * Opens the connection (the constructor does unless autoConnect is false).
   * Also cancels a scheduled reconnect and tries at once.
   */
  connect() {
    if (this.state === State.CONNECTED || this.state === State.CONNECTING) return;
    clearTimeout(this._timer);
    this._setState(State.CONNECTING);
    let ws;
    try {
      ws = new this._WS(this.url);
    } catch (err) {
      this._lost(1006, String(err && err.message || err));
      return;
    }
    this._ws = ws;
    ws.binaryType = "arraybuffer";
    this._timer = setTimeout(() => {
      if (this._ws === ws && this.state === State.CONNECTING) {
        this._ws = null;
        closeQuietly(ws, 4000, "no welcome");
        this._lost(1006, "no welcome from the server in time");
      }
    }, this.options.connectTimeout);
    ws.onmessage = (ev) => { if (this._ws === ws) this._onFrame(ev.data); };
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._lost(ev.code, ev.reason);
    };
    ws.onerror = () => {}; // a close event follows, with what is known
  }

  /**
   * Closes the connection for good: no reconnect; pending requests are
   * rejected with "closed". Subscriptions are kept: connect() brings them back.
   */
  close() {
    clearTimeout(this._timer);
    const ws = this._ws;
    this._ws = null;
    if (ws) closeQuietly(ws, 1000, "client closed");
    this._failInFlight("closed", "the client was closed", true);
    this._setState(State.CLOSED);
  }

  /**
   * Subscribes to channel. The promise resolves with the Subscription once the
   * server confirms it (which may be after a reconnect), and rejects with a
   * ShardhubError when the server refuses it (e.g. "forbidden"). Subscribing
   * to a channel again adds the handler and resolves at once.
   * @param {string} channel
   * @param {MessageHandler} [handler]
   * @param {SubscribeOptions} [options]
   * @returns {Promise<Subscription>}
   */
  subscribe(channel, handler, options = {}) {
    let sub = this.subscriptions.get(channel);
    const fresh = !sub;
    if (fresh) {
      sub = new Subscription(this, channel, options.since);
      this.subscriptions.set(channel, sub);
    }
    if (handler) sub.handlers.add(handler);
    if (sub.active) return Promise.resolve(sub);
    const p = new Promise((resolve, reject) => sub._waiters.push({ resolve, reject }));
    if (fresh && this.state === State.CONNECTED) this._subscribe(sub, false);
    return p;
  }

  /**
   * Unsubscribes from channel and drops its handlers. Resolves when the
   * server confirms, or at once while disconnected.
   * @param {string} channel
   * @returns {Promise<void>}
   */
  unsubscribe(channel) {
    const sub = this.subscriptions.get(channel);
    if (sub) {
      this.subscriptions.delete(channel);
      sub.active = false;
      for (const w of sub._waiters.splice(0)) w.reject(new ShardhubError("unsubscribed", "unsubscribed before the server confirmed"));
    }
    if (this.state !== State.CONNECTED) return Promise.resolve();
    return this._request({ type: "unsubscribe", channel }, "unsubscribe").then(() => undefined);
  }

  /**
   * Publishes data (any JSON value) on channel. Resolves when the server has
   * accepted it for delivery; rejects with a ShardhubError otherwise. While
   * disconnected the request waits (up to requestTimeout) for the next
   * connection.
   * @param {string} channel
   * @param {*} data
   * @returns {Promise<void>}
   */
  publish(channel, data) {
    return this._request({ type: "publish", channel, data }, "publish").then(() => undefined);
  }

  /**
   * Sends data as a private message to the connection `to` (its id). The
   * server must allow it (`shardhub serve --allow-client-send`); otherwise the
   * promise rejects with the server's error ("forbidden").
   * @param {string} to
   * @param {*} data
   * @returns {Promise<void>}
   */
  send(to, data) {
    return this._request({ type: "send", to, data }, "send").then(() => undefined);
  }

  // ---- internals ----

  /** @private */
  _emit(event, ...args) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (err) {
        rethrow(err);
      }
    }
  }

  /** @private */
  _setState(s) {
    if (this.state === s) return;
    const prev = this.state;
    this.state = s;
    this._emit("state", s, prev);
  }

  /**
   * Sends a request with an id and returns the promise its reply settles.
   * publish and send wait in the queue while disconnected.
   * @private
   */
  _request(msg, kind, sub) {
    if (this.state === State.CLOSED) return Promise.reject(new ShardhubError("closed", "the client is closed"));
    return new Promise((resolve, reject) => {
      const id = this._nextId++;
      const entry = { kind, resolve, reject, timer: null, sub, msg: { ...msg, id } };
      entry.timer = setTimeout(() => {
        this._pending.delete(id);
        const i = this._queue.indexOf(entry);
        if (i >= 0) this._queue.splice(i, 1);
        reject(new ShardhubError("timeout", `no reply to ${kind} within ${this.options.requestTimeout} ms`));
      }, this.options.requestTimeout);
      if (this.state === State.CONNECTED) {
        this._pending.set(id, entry);
        this._write(entry.msg);
      } else if (this._queue.length >= this.options.maxQueued) {
        clearTimeout(entry.timer);
        reject(new ShardhubError("queue_full", `${this.options.maxQueued} requests already wait for a connection`));
      } else {
        this._queue.push(entry);
      }
    });
  }

  /** @private */
  _write(msg) {
    try {
      this._ws.send(JSON.stringify(msg));
    } catch (_) {
      // The socket is closing; its close event rejects what is in flight.
    }
  }

  /**
   * Sends the subscribe request of sub on the current connection, with `since`
   * when an offset is known. Subscribe requests are not timed out while the
   * connection lives: a recovery may take a while, and a lost connection sends
   * them again.
   * @private
   */
  _subscribe(sub, resubscribed) {
    const id = this._nextId++;
    const msg = { type: "subscribe", channel: sub.channel, id };
    if (sub.offset !== undefined) msg.since = sub.offset;
    this._pending.set(id, { kind: "subscribe", sub, resubscribed, resolve() {}, reject() {}, timer: null });
    this._write(msg);
  }

  /** @private */
  _onFrame(raw) {
    if (typeof raw !== "string") raw = new TextDecoder().decode(raw);
    let m;
    try {
      m = JSON.parse(raw);
    } catch (_) {
      return; // not our protocol; nothing sensible to do with it
    }
    switch (m.type) {
      case "welcome":
        return this._onWelcome(m);
      case "message":
        if (m.channel === undefined) return this._emit("broadcast", m.data, m);
        return this._onPublication(m);
      case "private":
        return this._emit("private", m.data, m);
      case "subscribed":
      case "unsubscribed":
      case "ack":
      case "error":
        return this._onReply(m);
    }
  }

  /** @private */
  _onWelcome(m) {
    clearTimeout(this._timer);
    this._attempt = 0;
    this.connId = m.conn;
    this._setState(State.CONNECTED);
    this._emit("connected", { conn: m.conn });
    // Subscriptions first, so that publications the queued requests cause
    // reach this client's own subscriptions; the server handles one
    // connection's requests in order.
    for (const sub of this.subscriptions.values()) this._subscribe(sub, sub._confirmed);
    for (const entry of this._queue.splice(0)) {
      this._pending.set(entry.msg.id, entry);
      this._write(entry.msg);
    }
  }

  /** @private */
  _onPublication(m) {
    const sub = this.subscriptions.get(m.channel);
    if (sub) {
      if (m.offset !== undefined) sub.offset = m.offset;
      for (const fn of [...sub.handlers]) {
        try {
          fn(m.data, m);
        } catch (err) {
          rethrow(err);
        }
      }
    }
    this._emit("message", m.channel, m.data, m);
  }

  /** @private */
  _onReply(m) {
    const entry = m.id === undefined ? undefined : this._pending.get(m.id);
    if (!entry) {
      if (m.type === "error") this._emit("error", new ShardhubError(m.code, m.reason, m));
      return;
    }
    this._pending.delete(m.id);
    clearTimeout(entry.timer);
    if (entry.kind === "subscribe") return this._onSubscribeReply(entry, m);
    if (m.type === "error") entry.reject(new ShardhubError(m.code, m.reason, m));
    else entry.resolve(m);
  }

  /** @private */
  _onSubscribeReply(entry, m) {
    const sub = entry.sub;
    if (this.subscriptions.get(sub.channel) !== sub) return; // unsubscribed meanwhile
    if (m.type === "error") {
      const err = new ShardhubError(m.code, m.reason, m);
      err.channel = sub.channel;
      this.subscriptions.delete(sub.channel);
      const waiters = sub._waiters.splice(0);
      for (const w of waiters) w.reject(err);
      if (waiters.length === 0) this._emit("error", err);
      return;
    }
    sub.active = true;
    sub._confirmed = true;
    if (m.recovered === false) {
      // What the channel missed is gone: forget the old offset, so the next
      // reconnect does not ask for it again.
      sub.offset = m.offset;
    } else if (m.recovered === undefined && m.offset !== undefined && sub.offset === undefined) {
      sub.offset = m.offset; // a history channel's current offset: recover from here next time
    }
    for (const w of sub._waiters.splice(0)) w.resolve(sub);
    this._emit("subscribed", sub.channel, { recovered: m.recovered, offset: m.offset, resubscribed: entry.resubscribed });
    if (m.recovered === false) this._emit("resync", sub.channel, m);
  }

  /**
   * Rejects the requests sent on a lost connection (their fate is unknown)
   * and, when closing for good, those still queued.
   * @private
   */
  _failInFlight(code, reason, queuedToo) {
    for (const [id, entry] of this._pending) {
      this._pending.delete(id);
      if (entry.kind === "subscribe") continue; // sent again on the next connection
      clearTimeout(entry.timer);
      entry.reject(new ShardhubError(code, reason));
    }
    if (queuedToo) {
      for (const entry of this._queue.splice(0)) {
        clearTimeout(entry.timer);
        entry.reject(new ShardhubError(code, reason));
      }
    }
    for (const sub of this.subscriptions.values()) sub.active = false;
  }

  /** @private */
  _lost(code, reason) {
    clearTimeout(this._timer);
    this.connId = "";
    this._failInFlight("disconnected", `the connection was lost (${code}) before the reply`, false);
    if (this.state === State.CLOSED) return;
    const delay = this._backoff();
    this._setState(State.DISCONNECTED);
    this._emit("disconnected", { code, reason, delay });
    this._timer = setTimeout(() => this.connect(), delay);
  }

  /**
   * The wait before the next attempt: exponential from minReconnectDelay to
   * maxReconnectDelay, then a random point in its upper half, so that
   * thousands of clients dropped together do not come back together.
   * @private
   */
  _backoff() {
    const { minReconnectDelay: lo, maxReconnectDelay: hi } = this.options;
    const base = Math.min(hi, lo * 2 ** Math.min(this._attempt, 30));
    this._attempt++;
    return Math.round(base / 2 + Math.random() * (base / 2));
  }
}

/**
 * Resolves url against the page in a browser ("/ws" → ws://host/ws) and adds
 * the token.
 * @param {string} url
 * @param {string} [token]
 */
function resolveURL(url, token) {
  let u;
  if (/^wss?:\/\//.test(url)) {
    u = new URL(url);
  } else if (globalThis.location && globalThis.location.host) {
    u = new URL(url, globalThis.location.href);
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  } else {
    throw new Error(`shardhub: ${JSON.stringify(url)} is not a ws:// or wss:// URL`);
  }
  if (token) u.searchParams.set("token", token);
  return u.toString();
}

function closeQuietly(ws, code, reason) {
  try {
    ws.close(code, reason);
  } catch (_) {
    // already closed
  }
}

/** Reports an exception thrown by an application callback without breaking the client. */
function rethrow(err) {
  setTimeout(() => { throw err; });
}
