// ws-hub browser client: one dependency-free ES module.
//
// The same semantics as the Rust client (`ws_hub::client`): connection
// states with events, full-jitter exponential backoff, resume through the
// URL (`?session=&last_seq=`), rooms joined again after a lost session with
// one `gap` event, duplicates ignored, delivery acks on request, and every
// publish/send/broadcast retried with the same id until acked or nacked, so
// the server's de-dup window makes it exactly-once. Wire protocol:
// docs/PROTOCOL.md.
//
//   import { HubClient } from "/client/ws-hub-client.js";
//   const hub = new HubClient(`ws://${location.host}/ws`);
//   hub.addEventListener("message", (e) => console.log(e.detail.from, e.detail.data));
//   hub.addEventListener("state", (e) => console.log(e.detail.to, e.detail.code, e.detail.reason));
//   hub.connect();
//   await hub.join("lobby");
//   await hub.publish("lobby", { text: "hi" });   // resolves to the ack, rejects on nack
//
// Events (CustomEvent, payload in `detail`):
//   state    {from, to, code, reason}   to: "disconnected" | "connecting" | "connected" | "closed"
//   message  the server's `message` object (new to this client)
//   gap      {reason, last_seq[, count]}  messages were lost: resync
//   rejoin_failed {room, reason}
//   token_expiring {expires_in_ms}  the server's warning; with `getToken` the
//                  client asks it for a new token and sends `refresh`
//   token_refreshed {}              the server accepted the new token
//   refresh_failed {reason}         refused (`forbidden`, `invalid_token`, ...) or
//                  `no_token` (getToken had nothing new); the server closes with
//                  4001 at expiry and the client reconnects with getToken's next
//                  token and resumes
//   server_error  the server's `error` object
//   online / offline   the browser's network status (reconnects at once when back online)
//
// Browsers hide WebSocket pings and HTTP statuses from scripts, so the
// watchdog sends `{"type":"ping"}` after `pingInterval` of silence and
// reconnects after `pingInterval + pingGrace`, and a refused upgrade looks
// like any failed attempt (retried with backoff; `getToken` is asked again
// on every attempt).

const CLOSE_NORMAL = 1000;
const CLOSE_POLICY = 1008;
/**
 * Close code used when the client abandons a connection it will replace
 * (watchdog, connect timeout, offline): not 1000, which ends the session.
 */
export const CLOSE_WATCHDOG = 4000;

/** A request refused by the server (`nack`), or abandoned by `close()`. */
export class HubError extends Error {
  constructor(op, id, reason) {
    super(`${op} ${id}: ${reason}`);
    this.name = "HubError";
    this.op = op;
    this.id = id;
    /** The nack reason (`not_member`, `rate_limited`, ...) or `"closed"`. */
    this.reason = reason;
  }
}

/** `bufferFull`: the bounded buffer of unanswered requests is full. */
export class BufferFullError extends Error {
  constructor(limit) {
    super(`pending buffer full (${limit} unanswered requests)`);
    this.name = "BufferFullError";
    this.limit = limit;
  }
}

/**
 * Full-jitter backoff: attempt n waits min(max, min + U[0, min(max, min*2^n)]).
 * Exported for tests.
 */
export function backoffDelay(attempt, min, max, random = Math.random) {
  const window = Math.min(max, min * 2 ** Math.min(attempt, 31));
  return Math.min(max, min + Math.floor(random() * (window + 1)));
}

const encoder = new TextEncoder();
function byteLength(s) { return encoder.encode(s).length; }

function randomPrefix() {
  const c = globalThis.crypto;
  if (c && c.randomUUID) return c.randomUUID();
  return Math.random().toString(36).slice(2) + Date.now().toString(36);
}

export class HubClient extends EventTarget {
  /**
   * @param {string} url  the hub's WebSocket URL, e.g. `wss://host/ws`
   * @param {object} [options]
   * @param {string} [options.token]            fixed token (`?token=`)
   * @param {() => (string|null|Promise<string|null>)} [options.getToken]  asked before every attempt,
   *   and on `token_expiring` (the answer is sent as `refresh`)
   * @param {number} [options.minDelay=500]     backoff bounds, ms
   * @param {number} [options.maxDelay=20000]
   * @param {number} [options.stableAfter=10000] a connection up this long resets the backoff
   * @param {number} [options.connectTimeout=10000]
   * @param {number} [options.pingGrace=10000]  watchdog grace over the server's ping interval
   * @param {boolean} [options.deliveryAcks=false]
   * @param {number} [options.maxPending=1024]  unanswered requests kept (offline too)
   * @param {typeof WebSocket} [options.WebSocket] implementation (default: the global one)
   */
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = {
      minDelay: 500, maxDelay: 20000, stableAfter: 10000, connectTimeout: 10000,
      pingGrace: 10000, deliveryAcks: false, maxPending: 1024, ...options,
    };
    this.state = "disconnected";
    this.session = null;
    this.user = null;
    this.lastSeq = 0;
    this.rooms = new Set();          // joined by the application (acked)
    this.duplicates = 0;             // redeliveries ignored
    this._pending = [];              // {id, op, room, frame, resolve, reject}
    this._rejoins = new Map();       // id -> room, joins made by the client itself
    this._ws = null;
    this._timer = null;
    this._attempt = 0;
    this._since = 0;
    this._lastRx = 0;
    this._pingInterval = 30000;
    this._resuming = null;           // {session, lastSeq} asked by the current attempt
    this._prefix = randomPrefix();
    this._n = 0;
    this._pinged = false;
    this._maxMessage = 0;            // the server's max_message_size, from welcome
    this._token = null;              // the token of the current connection
    this._renewal = null;            // null, "asking" (getToken), or the id of the refresh sent
    this._onOnline = () => { this._emit("online", {}); if (this.state === "disconnected" && this._timer) { this._attempt = 0; this._clearTimer(); this._open(); } };
    this._onOffline = () => { this._emit("offline", {}); if (this._ws) this._lost(null, "offline"); };
  }

  /** Starts connecting (from "disconnected" or "closed"). */
  connect() {
    if (this.state !== "disconnected" && this.state !== "closed") return;
    if (typeof globalThis.addEventListener === "function") {
      globalThis.addEventListener("online", this._onOnline);
      globalThis.addEventListener("offline", this._onOffline);
    }
    this._clearTimer();
    this._open();
  }

  /** Closes with 1000 and stops reconnecting; unanswered requests reject with reason "closed". */
  close() {
    this._terminate(CLOSE_NORMAL, "client closed", true);
  }

  /** Unanswered requests (queued or in flight). */
  get pending() { return this._pending.length; }

  join(room) { return this._submit("join", { room }, null, room); }
  leave(room) { return this._submit("leave", { room }, null, room); }
  /** Publishes; `id` defaults to a generated unique one. Resolves to {id, duplicate}. */
  publish(room, data, { id } = {}) { return this._submit("publish", { room, data }, id); }
  send(user, data, { id } = {}) { return this._submit("send", { user, data }, id); }
  broadcast(data, { id } = {}) { return this._submit("broadcast", { data }, id); }

  // ---- internals ----------------------------------------------------------

  _emit(type, detail) {
    const ev = typeof CustomEvent === "function"
      ? new CustomEvent(type, { detail })
      : Object.assign(new Event(type), { detail });   // older Node
    this.dispatchEvent(ev);
  }

  _setState(to, code, reason) {
    const from = this.state;
    if (from === to) return;
    this.state = to;
    this._emit("state", { from, to, code, reason });
  }

  _clearTimer() { if (this._timer) { clearTimeout(this._timer); this._timer = null; } }

  _freshId() { return `${this._prefix}-${++this._n}`; }

  _submit(op, fields, id, room) {
    if (this.state === "closed") return Promise.reject(new HubError(op, id, "closed"));
    if (this._pending.length >= this.options.maxPending) {
      return Promise.reject(new BufferFullError(this.options.maxPending));
    }
    if (id != null && this._pending.some((p) => p.id === id)) {
      return Promise.reject(new HubError(op, id, "duplicate_id"));
    }
    id = id == null ? this._freshId() : String(id);
    const frame = JSON.stringify({ type: op, ...fields, id });
    if (this._maxMessage && byteLength(frame) > this._maxMessage) {
      return Promise.reject(new HubError(op, id, "too_large"));
    }
    return new Promise((resolve, reject) => {
      this._pending.push({ id, op, room, frame, resolve, reject });
      if (this.state === "connected") this._ws.send(frame);
    });
  }

  async _open() {
    this._setState("connecting", null, "connecting");
    const attempt = {};
    this._attemptToken = attempt;
    this._timer = setTimeout(() => this._lost(null, "connect timeout"), this.options.connectTimeout);
    let token = this.options.token;
    if (this.options.getToken) {
      try { token = await this.options.getToken(); } catch { token = null; }
      if (this._attemptToken !== attempt || this.state !== "connecting") return;
    }
    this._resuming = this.session ? { session: this.session, lastSeq: this.lastSeq } : null;
    this._token = token || null;
    this._renewal = null;
    const q = [];
    if (token) q.push(`token=${encodeURIComponent(token)}`);
    if (this._resuming) q.push(`session=${encodeURIComponent(this.session)}`, `last_seq=${this.lastSeq}`);
    const url = q.length ? this.url + (this.url.includes("?") ? "&" : "?") + q.join("&") : this.url;
    const WS = this.options.WebSocket || globalThis.WebSocket;
    let ws;
    try { ws = new WS(url); } catch (e) { this._lost(null, `connect failed: ${e.message}`); return; }
    this._ws = ws;
    ws.onmessage = (ev) => { if (this._ws === ws) this._onText(ev.data); };
    ws.onclose = (ev) => { if (this._ws === ws) this._onClose(ev.code, ev.reason); };
    ws.onerror = () => {};
  }

  _onClose(code, reason) {
    const terminal = code === CLOSE_POLICY || (code === CLOSE_NORMAL && reason === "session resumed elsewhere");
    if (terminal) this._terminate(code, reason, false);
    else this._lost(code || 1006, reason || "connection lost");
  }

  /** Drops the connection or attempt and schedules the next one. */
  _lost(code, reason) {
    this._clearTimer();
    const ws = this._ws;
    this._ws = null;
    this._attemptToken = null;
    // Never 1000 here: a client close with 1000 ends the session on the server.
    if (ws) { try { ws.close(CLOSE_WATCHDOG, reason.slice(0, 100)); } catch { /* already closed */ } }
    if (this.state === "connected" && Date.now() - this._since >= this.options.stableAfter) this._attempt = 0;
    const delay = backoffDelay(this._attempt++, this.options.minDelay, this.options.maxDelay);
    this._rejoins.clear();
    this._setState("disconnected", code, reason);
    this._timer = setTimeout(() => { this._timer = null; this._open(); }, delay);
  }

  _terminate(code, reason, sendClose) {
    if (this.state === "closed") return;
    this._clearTimer();
    const ws = this._ws;
    this._ws = null;
    this._attemptToken = null;
    if (ws && sendClose) { try { ws.close(CLOSE_NORMAL, "client closed"); } catch { /* gone */ } }
    if (typeof globalThis.removeEventListener === "function") {
      globalThis.removeEventListener("online", this._onOnline);
      globalThis.removeEventListener("offline", this._onOffline);
    }
    this._rejoins.clear();
    this._setState("closed", code, reason);
    const pending = this._pending;
    this._pending = [];
    for (const p of pending) p.reject(new HubError(p.op, p.id, "closed"));
  }

  _watchdog() {
    this._clearTimer();
    const idle = Date.now() - this._lastRx;
    const ping = this._pingInterval;
    if (idle >= ping + this.options.pingGrace) { this._lost(CLOSE_WATCHDOG, "watchdog timeout"); return; }
    let wait;
    if (idle >= ping) {
      if (!this._pinged) { this._pinged = true; this._ws.send('{"type":"ping"}'); }
      wait = ping + this.options.pingGrace - idle;
    } else {
      wait = ping - idle;
    }
    this._timer = setTimeout(() => this._watchdog(), Math.max(1, wait));
  }

  _onText(text) {
    let m;
    try { m = JSON.parse(text); } catch { return; }
    if (!m || typeof m !== "object") return;
    this._lastRx = Date.now();
    this._pinged = false;
    switch (m.type) {
      case "welcome": if (this.state === "connecting") this._onWelcome(m); break;
      case "resume_failed": {
        const lastSeq = m.reason === "overflow" || !this._resuming ? this.lastSeq : this._resuming.lastSeq;
        this._emit("gap", { reason: m.reason, last_seq: lastSeq });
        break;
      }
      case "dropped": this._emit("gap", { reason: "dropped", last_seq: this.lastSeq, count: m.count }); break;
      case "token_expiring": this._onTokenExpiring(m); break;
      case "ack": case "nack":
        if (m.op === "refresh") this._onRefreshReply(m);
        else this._onReply(m);
        break;
      case "message":
        if (typeof m.seq !== "number") return;
        if (this.options.deliveryAcks) this._ws.send(`{"type":"ack","seq":${m.seq}}`);
        if (m.seq <= this.lastSeq) { this.duplicates++; return; }
        this.lastSeq = m.seq;
        this._emit("message", m);
        break;
      case "error": this._emit("server_error", m); break;
      default: break;
    }
  }

  _onWelcome(m) {
    this._clearTimer();
    if (m.ping_interval_ms > 0) this._pingInterval = m.ping_interval_ms;
    if (m.max_message_size > 0) {
      // Never resend what the server refuses (over its WebSocket limit it
      // would even close the connection, again and again).
      this._maxMessage = m.max_message_size;
      const tooLarge = this._pending.filter((p) => byteLength(p.frame) > this._maxMessage);
      this._pending = this._pending.filter((p) => byteLength(p.frame) <= this._maxMessage);
      for (const p of tooLarge) p.reject(new HubError(p.op, p.id, "too_large"));
    }
    const resumed = this._resuming !== null && this._resuming.session === m.session;
    this.session = m.session;
    this.user = m.user;
    this._since = Date.now();
    this._setState("connected", null, resumed ? "resumed" : "welcome");
    const ws = this._ws;
    if (!resumed) {
      this.lastSeq = 0;
      if (this.options.deliveryAcks) ws.send('{"type":"configure","delivery_acks":true}');
      for (const room of this.rooms) {
        const id = this._freshId();
        this._rejoins.set(id, room);
        ws.send(JSON.stringify({ type: "join", room, id }));
      }
    }
    for (const p of this._pending) ws.send(p.frame);
    this._watchdog();
  }

  /** `token_expiring`: ask getToken (once per warning) and send `refresh`. */
  async _onTokenExpiring(m) {
    this._emit("token_expiring", { expires_in_ms: m.expires_in_ms });
    if (!this.options.getToken || this._renewal !== null) return;
    const ws = this._ws;
    this._renewal = "asking";
    let token;
    try { token = await this.options.getToken(); } catch { token = null; }
    if (this._ws !== ws || this.state !== "connected") return;   // that connection is gone
    if (!token || token === this._token) {
      // Nothing new to renew with: the 4001 close at expiry leads to a
      // reconnection, which asks getToken again.
      this._renewal = null;
      this._emit("refresh_failed", { reason: "no_token" });
      return;
    }
    const id = this._freshId();
    this._token = token;
    this._renewal = id;
    ws.send(JSON.stringify({ type: "refresh", token, id }));
  }

  _onRefreshReply(m) {
    if (this._renewal === null || m.id !== this._renewal) return;
    this._renewal = null;
    if (m.type === "ack") this._emit("token_refreshed", {});
    else this._emit("refresh_failed", { reason: m.reason });
  }

  _onReply(m) {
    const ok = m.type === "ack";
    if (this._rejoins.has(m.id)) {
      const room = this._rejoins.get(m.id);
      this._rejoins.delete(m.id);
      if (!ok) { this.rooms.delete(room); this._emit("rejoin_failed", { room, reason: m.reason }); }
      return;
    }
    const i = this._pending.findIndex((p) => p.id === m.id && p.op === m.op);
    if (i < 0) return;
    const [p] = this._pending.splice(i, 1);
    // A retried leave the server had already processed: the goal is reached.
    const success = ok || (p.op === "leave" && m.reason === "not_member");
    if (success) {
      if (p.op === "join") this.rooms.add(p.room);
      if (p.op === "leave") this.rooms.delete(p.room);
      p.resolve({ id: p.id, duplicate: !!m.duplicate });
    } else {
      p.reject(new HubError(p.op, p.id, m.reason));
    }
  }
}
