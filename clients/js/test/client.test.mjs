// Unit tests of the browser client against a scripted fake WebSocket
// (node --test clients/js/test/). Small backoff delays; the assertions are
// about behaviour (frames, events, promises), never about timing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { HubClient, HubError, BufferFullError, backoffDelay, CLOSE_WATCHDOG } from "../ws-hub-client.js";

class FakeWS {
  static all = [];
  constructor(url) { this.url = url; this.sent = []; this.closed = null; FakeWS.all.push(this); }
  send(s) { this.sent.push(JSON.parse(s)); }
  close(code, reason) { this.closed = { code, reason }; }
  recv(obj) { this.onmessage({ data: JSON.stringify(obj) }); }
  drop(code = 1006, reason = "") { this.onclose({ code, reason }); }
  welcome(session) { this.recv({ type: "welcome", session, user: "u", ping_interval_ms: 30000 }); }
}

async function until(cond) {
  for (let i = 0; i < 2000 && !cond(); i++) await new Promise((r) => setTimeout(r, 1));
  assert.ok(cond(), "condition never became true");
}

function client(extra = {}) {
  FakeWS.all = [];
  const c = new HubClient("ws://hub/ws", { WebSocket: FakeWS, minDelay: 1, maxDelay: 4, ...extra });
  const events = [];
  for (const t of ["state", "message", "gap", "rejoin_failed"]) c.addEventListener(t, (e) => events.push([t, e.detail]));
  return { c, events };
}

const last = () => FakeWS.all[FakeWS.all.length - 1];

test("backoff stays in [min, max] inside a doubling window, with jitter", () => {
  for (let n = 0; n < 40; n++) {
    for (const r of [0, 0.5, 0.999999]) {
      const d = backoffDelay(n, 500, 20000, () => r);
      assert.ok(d >= 500 && d <= 20000 && d <= 500 + 500 * 2 ** n, `${n} ${r} ${d}`);
    }
  }
  assert.notEqual(backoffDelay(3, 500, 20000, () => 0.1), backoffDelay(3, 500, 20000, () => 0.9));
});

test("publish resolves on ack, is retried with the same id after a drop, resumes through the URL", async () => {
  const { c, events } = client();
  c.connect();
  await until(() => FakeWS.all.length === 1);
  assert.equal(last().url, "ws://hub/ws");
  last().welcome("S");
  assert.equal(c.state, "connected");
  const join = c.join("r");
  const j = last().sent[0];
  assert.deepEqual([j.type, j.room], ["join", "r"]);
  last().recv({ type: "ack", op: "join", room: "r", id: j.id });
  await join;
  assert.deepEqual([...c.rooms], ["r"]);
  last().recv({ type: "message", seq: 1, room: "r", id: "x", from: "v", data: 1 });
  const p = c.publish("r", { a: 1 }, { id: "mine" });
  assert.deepEqual(last().sent[1], { type: "publish", room: "r", data: { a: 1 }, id: "mine" });
  last().drop();
  assert.equal(c.state, "disconnected");
  await until(() => FakeWS.all.length === 2);
  assert.equal(last().url, "ws://hub/ws?session=S&last_seq=1");
  last().welcome("S");
  assert.deepEqual(last().sent, [{ type: "publish", room: "r", data: { a: 1 }, id: "mine" }]);
  last().recv({ type: "resumed", session: "S", last_seq: 1, replayed: 1 });
  last().recv({ type: "message", seq: 1, room: "r", id: "x", from: "v", data: 1 });   // already seen
  last().recv({ type: "message", seq: 2, room: "r", id: "y", from: "v", data: 2 });
  last().recv({ type: "ack", op: "publish", id: "mine", duplicate: true });
  assert.deepEqual(await p, { id: "mine", duplicate: true });
  assert.deepEqual(events.filter((e) => e[0] === "message").map((e) => e[1].id), ["x", "y"]);
  assert.equal(c.duplicates, 1);
  assert.deepEqual(events.filter((e) => e[0] === "state").map((e) => e[1].to),
    ["connecting", "connected", "disconnected", "connecting", "connected"]);
  c.close();
});

test("a lost session rejoins every room before retrying, and reports one gap", async () => {
  const { c, events } = client({ deliveryAcks: true });
  c.connect();
  await until(() => FakeWS.all.length === 1);
  last().welcome("S1");
  assert.deepEqual(last().sent[0], { type: "configure", delivery_acks: true });
  const join = c.join("r");
  last().recv({ type: "ack", op: "join", room: "r", id: last().sent[1].id });
  await join;
  last().recv({ type: "message", seq: 5, room: "r", id: "x", from: "v", data: 1 });
  assert.deepEqual(last().sent[2], { type: "ack", seq: 5 });
  last().drop(1001, "server shutting down");
  const p = c.publish("r", "later");
  await until(() => FakeWS.all.length === 2);
  assert.equal(last().url, "ws://hub/ws?session=S1&last_seq=5");
  last().welcome("S2");
  const sent = last().sent;
  assert.deepEqual(sent.map((f) => f.type), ["configure", "join", "publish"]);
  last().recv({ type: "resume_failed", reason: "expired", session: "S2" });
  assert.deepEqual(events.filter((e) => e[0] === "gap").map((e) => e[1]), [{ reason: "expired", last_seq: 5 }]);
  last().recv({ type: "ack", op: "join", room: "r", id: sent[1].id });
  last().recv({ type: "nack", op: "publish", id: sent[2].id, reason: "rate_limited" });
  await assert.rejects(p, (e) => e instanceof HubError && e.reason === "rate_limited");
  assert.equal(c.lastSeq, 0);
  c.close();
});

test("1008 is terminal and rejects what is pending; the buffer is bounded", async () => {
  const { c } = client({ maxPending: 2 });
  const a = c.publish("r", 1);
  const b = c.broadcast(2);
  await assert.rejects(c.send("bob", 3), BufferFullError);
  c.connect();
  await until(() => FakeWS.all.length === 1);
  last().welcome("S");
  assert.equal(last().sent.length, 2);
  last().drop(1008, "too many protocol violations");
  assert.equal(c.state, "closed");
  await assert.rejects(a, (e) => e.reason === "closed");
  await assert.rejects(b, (e) => e.reason === "closed");
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(FakeWS.all.length, 1, "no reconnect after 1008");
});

test("the watchdog pings a silent connection, then replaces it", async () => {
  const { c } = client({ pingGrace: 20 });
  c.connect();
  await until(() => FakeWS.all.length === 1);
  last().recv({ type: "welcome", session: "S", user: "u", ping_interval_ms: 20 });
  await until(() => last().sent.some((f) => f.type === "ping"));
  await until(() => FakeWS.all.length === 2);
  assert.equal(FakeWS.all[0].closed.code, CLOSE_WATCHDOG);
  c.close();
});

test("requests over the server's max_message_size are refused, never resent", async () => {
  const { c } = client();
  const big = c.publish("r", "x".repeat(200));
  const small = c.publish("r", "y");
  c.connect();
  await until(() => FakeWS.all.length === 1);
  last().recv({ type: "welcome", session: "S", user: "u", ping_interval_ms: 30000, max_message_size: 100 });
  await assert.rejects(big, (e) => e.reason === "too_large");
  assert.deepEqual(last().sent.map((f) => f.data), ["y"]);
  await assert.rejects(c.publish("r", "z".repeat(200)), (e) => e.reason === "too_large");
  last().recv({ type: "ack", op: "publish", id: last().sent[0].id });
  await small;
  c.close();
});

test("token_expiring asks getToken and sends refresh; 4001 reconnects with a fresh token and resumes", async () => {
  let n = 0;
  const tokens = ["t1", "t2", "t2", "t3", "t4"];
  const { c, events } = client({ getToken: async () => tokens[n++] });
  for (const t of ["token_expiring", "token_refreshed", "refresh_failed"]) c.addEventListener(t, (e) => events.push([t, e.detail]));
  const renewals = () => events.filter((e) => e[0] !== "state").map((e) => [e[0], e[1].reason ?? e[1].expires_in_ms ?? null]);
  c.connect();
  await until(() => FakeWS.all.length === 1);
  assert.equal(last().url, "ws://hub/ws?token=t1");
  last().welcome("S");
  last().recv({ type: "token_expiring", expires_in_ms: 60000 });
  await until(() => last().sent.length === 1);
  const r = last().sent[0];
  assert.deepEqual([r.type, r.token], ["refresh", "t2"]);
  last().recv({ type: "ack", op: "refresh", id: "someone-else" });
  last().recv({ type: "ack", op: "refresh", id: r.id });
  assert.deepEqual(renewals(), [["token_expiring", 60000], ["token_refreshed", null]]);
  // getToken has nothing new: nothing sent, reported.
  last().recv({ type: "token_expiring", expires_in_ms: 1000 });
  await until(() => renewals().length === 4);
  assert.equal(last().sent.length, 1);
  assert.deepEqual(renewals()[3], ["refresh_failed", "no_token"]);
  // Refused.
  last().recv({ type: "token_expiring", expires_in_ms: 900 });
  await until(() => last().sent.length === 2);
  assert.equal(last().sent[1].token, "t3");
  last().recv({ type: "nack", op: "refresh", id: last().sent[1].id, reason: "forbidden" });
  assert.deepEqual(renewals().slice(4), [["token_expiring", 900], ["refresh_failed", "forbidden"]]);
  // Expired: not terminal; the next attempt asks getToken and resumes.
  last().drop(4001, "token expired");
  assert.equal(c.state, "disconnected");
  await until(() => FakeWS.all.length === 2);
  assert.equal(last().url, "ws://hub/ws?token=t4&session=S&last_seq=0");
  last().welcome("S");
  assert.equal(c.state, "connected");
  assert.deepEqual(events.filter((e) => e[0] === "state").map((e) => e[1].reason).slice(-1), ["resumed"]);
  c.close();
});

test("without getToken, token_expiring is only reported", async () => {
  const { c, events } = client({ token: "fixed" });
  c.addEventListener("token_expiring", (e) => events.push(["token_expiring", e.detail]));
  c.connect();
  await until(() => FakeWS.all.length === 1);
  last().welcome("S");
  last().recv({ type: "token_expiring", expires_in_ms: 5000 });
  await new Promise((res) => setTimeout(res, 5));
  assert.deepEqual(last().sent, []);
  assert.deepEqual(events.filter((e) => e[0] === "token_expiring").map((e) => e[1]), [{ expires_in_ms: 5000 }]);
  c.close();
});
