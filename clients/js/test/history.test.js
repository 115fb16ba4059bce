// History and recovery against the real server with history namespaces: the
// position a subscription tracks, recovery after the link is cut (TCP reset, no
// close frame) while messages are published, a position past the window, `since`
// from an earlier visit, `history()`, and the `missed` notice after a reset. Every
// message carries a sequence number in its body: the tally is independent of the
// offsets the server assigns.

import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";

import { RealtimeClient } from "../realtime-client.js";
import { startLink } from "./link.js";
import { HISTORY_CONFIG, messageQueue, mintToken, nextEvent, recordEvents, startServer } from "./server.js";

let server;
let link;
const clients = [];

before(async () => {
  server = await startServer({ config: HISTORY_CONFIG });
  link = await startLink(server.port);
});

afterEach(() => {
  link.restore();
  for (const c of clients.splice(0)) c.close();
});

after(async () => {
  for (const c of clients.splice(0)) c.close();
  await link?.close();
  await server?.stop();
});

/** A client for `sub`, straight to the server or through the cuttable link. */
async function connect(sub, { viaLink = false, ...options } = {}) {
  const client = new RealtimeClient(viaLink ? link.wsUrl : server.wsUrl, {
    token: () => mintToken({ sub }),
    // A lost link is seen as soon as the socket resets; no heartbeat needed.
    heartbeatInterval: 0,
    ...options,
  });
  clients.push(client);
  const events = recordEvents(client);
  await nextEvent(client, "connected");
  return { client, events };
}

/** Publishes `{type: "tick", seq}` on `topic` through the HTTP API. */
async function publish(topic, seq) {
  const sent = await server.api("POST", `/api/topics/${topic}/messages`, { type: "tick", seq });
  assert.equal(sent.status, 200, JSON.stringify(sent.body));
  return sent.body;
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** Takes the next `count` messages of `inbox` and returns their sequence numbers. */
async function take(inbox, count) {
  const seqs = [];
  for (let i = 0; i < count; i++) seqs.push((await inbox.next()).seq);
  return seqs;
}

test("subscribe on a history topic resolves with its position; topic messages carry offset and epoch", async () => {
  const { client } = await connect("ann");
  const inbox = messageQueue();
  const sub = await client.subscribe("feed:position", inbox);
  assert.equal(sub.topic, "feed:position");
  assert.equal(sub.offset, 0, "nothing published yet");
  assert.equal(typeof sub.epoch, "string");
  assert.ok(sub.epoch.length > 0);
  assert.equal("recovered" in sub, false, "a first subscribe without since recovers nothing");
  assert.deepEqual(client.position("feed:position"), { offset: 0, epoch: sub.epoch });

  for (const seq of range(1, 3)) {
    const sent = await publish("feed:position", seq);
    assert.equal(sent.offset, seq, `the HTTP answer carries the offset: ${JSON.stringify(sent)}`);
    assert.equal(sent.epoch, sub.epoch);
  }
  for (const seq of range(1, 3)) {
    const message = await inbox.next();
    assert.equal(message.seq, seq);
    assert.equal(message.offset, seq);
    assert.equal(message.epoch, sub.epoch);
    assert.equal(message.topic, "feed:position");
  }
  assert.deepEqual(client.position("feed:position"), { offset: 3, epoch: sub.epoch });
  // A second subscribe of a confirmed topic resolves at once, with the position.
  assert.deepEqual(await client.subscribe("feed:position", () => {}), { topic: "feed:position", offset: 3, epoch: sub.epoch });

  // A topic without history has no position.
  assert.deepEqual(await client.subscribe("news:plain", () => {}), { topic: "news:plain" });
  assert.equal(client.position("news:plain"), null);
});

test("after the link is cut, the client resubscribes with since and receives exactly the missed messages, then live ones", async () => {
  const { client, events } = await connect("bea", { viaLink: true });
  const inbox = messageQueue();
  const plain = messageQueue();
  const resubscribed = [];
  client.addEventListener("resubscribed", (e) => resubscribed.push(e));
  const sub = await client.subscribe("feed:cut", inbox);
  await client.subscribe("news:cut", plain);
  for (const seq of range(1, 5)) await publish("feed:cut", seq);
  assert.deepEqual(await take(inbox, 5), range(1, 5));

  // The network drops: both ends reset, no close frame; new connections wait.
  const disconnected = nextEvent(client, "disconnected");
  await link.cut();
  const lost = await disconnected;
  assert.equal(lost.code, 1006);
  assert.equal(lost.willReconnect, true);

  for (const seq of range(6, 15)) await publish("feed:cut", seq);
  const recovered = nextEvent(client, "resubscribed", { filter: (e) => e.topic === "feed:cut" });
  const plainRestored = nextEvent(client, "resubscribed", { filter: (e) => e.topic === "news:cut" });
  link.restore();
  const resumed = await recovered;
  assert.equal(resumed.recovered, true, JSON.stringify(resumed));
  assert.equal(resumed.epoch, sub.epoch);
  assert.equal("reason" in resumed, false);
  assert.ok(resumed.offset >= 5 && resumed.offset <= 15, `the position the server reports: ${resumed.offset}`);
  // A topic without history cannot be recovered, and the client says so.
  assert.deepEqual(await plainRestored, { type: "resubscribed", topic: "news:cut", recovered: false, reason: "no_history" });

  assert.deepEqual(await take(inbox, 10), range(6, 15), "the missed ones, in order");
  for (const seq of range(16, 20)) await publish("feed:cut", seq);
  assert.deepEqual(await take(inbox, 5), range(16, 20), "then live ones");

  assert.deepEqual(inbox.all.map((m) => m.seq), range(1, 20), "every message exactly once, in order");
  assert.deepEqual(inbox.all.map((m) => m.offset), range(1, 20));
  assert.ok(inbox.all.every((m) => m.epoch === sub.epoch));
  assert.deepEqual(client.position("feed:cut"), { offset: 20, epoch: sub.epoch });
  assert.equal(resubscribed.length, 2, "one resubscription per topic");
  assert.equal(events.filter((e) => e.type === "connected").length, 2);
  assert.equal(plain.all.length, 0);
});

test("past the history window the resubscription is not recovered: the app is told and history() refetches", async () => {
  const { client } = await connect("cid", { viaLink: true });
  const inbox = messageQueue();
  const sub = await client.subscribe("tiny:gone", inbox);
  await publish("tiny:gone", 1);
  assert.deepEqual(await take(inbox, 1), [1]);

  const disconnected = nextEvent(client, "disconnected");
  await link.cut();
  await disconnected;
  // Nine more: the topic keeps three (8, 9, 10), so 2..7 are gone.
  for (const seq of range(2, 10)) await publish("tiny:gone", seq);
  const resubscribed = nextEvent(client, "resubscribed", { filter: (e) => e.topic === "tiny:gone" });
  link.restore();
  assert.deepEqual(await resubscribed, {
    type: "resubscribed",
    topic: "tiny:gone",
    recovered: false,
    reason: "trimmed",
    offset: 10,
    epoch: sub.epoch,
  });
  assert.deepEqual(client.position("tiny:gone"), { offset: 10, epoch: sub.epoch });

  // No replay: the next message is the next live one.
  await publish("tiny:gone", 11);
  assert.deepEqual(await take(inbox, 1), [11]);
  assert.deepEqual(inbox.all.map((m) => m.seq), [1, 11]);

  // What a page does on recovered:false: read the state again.
  const page = await client.history("tiny:gone");
  assert.equal(page.type, "history");
  assert.equal(page.topic, "tiny:gone");
  assert.equal("ref" in page, false);
  assert.deepEqual(page.publications.map((m) => m.seq), [9, 10, 11]);
  assert.deepEqual(page.publications.map((m) => m.offset), [9, 10, 11]);
  assert.equal(page.offset, 11);
  assert.equal(page.epoch, sub.epoch);
});

test("subscribe with since resumes from a position kept from an earlier visit", async () => {
  const first = await connect("dan");
  const seen = messageQueue();
  await first.client.subscribe("feed:visit", seen);
  for (const seq of range(1, 3)) await publish("feed:visit", seq);
  assert.deepEqual(await take(seen, 3), range(1, 3));
  const kept = first.client.position("feed:visit");
  first.client.close();

  for (const seq of range(4, 6)) await publish("feed:visit", seq);
  const second = await connect("dan");
  const inbox = messageQueue();
  const sub = await second.client.subscribe("feed:visit", inbox, { since: kept });
  assert.equal(sub.recovered, true);
  assert.equal(sub.epoch, kept.epoch);
  assert.equal("reason" in sub, false);
  assert.deepEqual(await take(inbox, 3), range(4, 6));
  await publish("feed:visit", 7);
  assert.deepEqual(await take(inbox, 1), [7]);
  assert.deepEqual(inbox.all.map((m) => m.offset), range(4, 7));

  // A position from another epoch, and one on a topic without history.
  const other = await second.client.subscribe("feed:visit-other", () => {}, { since: { offset: 2, epoch: "not-this-epoch" } });
  assert.equal(other.recovered, false);
  assert.equal(other.reason, "other_epoch");
  assert.equal(other.offset, 0);
  const plain = await second.client.subscribe("news:visit", () => {}, { since: { offset: 2, epoch: "x" } });
  assert.deepEqual(plain, { topic: "news:visit", recovered: false, reason: "no_history" });

  await assert.rejects(second.client.subscribe("feed:bad", () => {}, { since: { offset: -1, epoch: "e" } }), TypeError);
});

test("history() reads publications after a position, with a limit, and is refused with stable codes", async () => {
  const { client } = await connect("eve");
  const sub = await client.subscribe("feed:read", () => {});
  for (const seq of range(1, 5)) await publish("feed:read", seq);

  const all = await client.history("feed:read");
  assert.deepEqual(all.publications.map((m) => m.seq), range(1, 5));
  assert.ok(all.publications.every((m) => m.topic === "feed:read" && m.epoch === sub.epoch && m.type === "tick"));
  assert.equal(all.offset, 5);
  assert.equal(all.epoch, sub.epoch);

  const after2 = await client.history("feed:read", { since: { offset: 2, epoch: sub.epoch }, limit: 2 });
  assert.deepEqual(after2.publications.map((m) => m.offset), [3, 4]);
  assert.equal(after2.recovered, true);
  assert.equal(after2.offset, 5);

  const otherEpoch = await client.history("feed:read", { since: { offset: 2, epoch: "old" } });
  assert.equal(otherEpoch.recovered, false);
  assert.deepEqual(otherEpoch.publications.map((m) => m.offset), range(1, 5), "from the oldest held");

  // Allowed to whoever may subscribe, even when not subscribed.
  const own = await client.history("inbox:eve");
  assert.deepEqual(own.publications, []);
  assert.equal(own.offset, 0);

  await assert.rejects(client.history("inbox:someone-else"), (e) => e.code === "forbidden");
  await assert.rejects(client.history("news:read"), (e) => e.code === "no_history");
  await assert.rejects(client.history("feed:read", { limit: -1 }), TypeError);
  await assert.rejects(client.history("feed:read", { since: { offset: 1 } }), TypeError);
  client.close();
  await assert.rejects(client.history("feed:read"), (e) => e.code === "not_connected");
});

test("a reset of the topic's history is a missed notice; delivery goes on in the new epoch", async () => {
  const { client } = await connect("fay");
  const inbox = messageQueue();
  const sub = await client.subscribe("feed:reset", inbox);
  for (const seq of range(1, 2)) await publish("feed:reset", seq);
  assert.deepEqual(await take(inbox, 2), [1, 2]);

  const missed = nextEvent(client, "missed");
  const reset = await server.api("DELETE", "/api/topics/feed:reset/history");
  assert.equal(reset.status, 200, JSON.stringify(reset.body));
  assert.notEqual(reset.body.epoch, sub.epoch);
  assert.deepEqual(await missed, { type: "missed", topic: "feed:reset", reason: "history_lost", offset: 0, epoch: reset.body.epoch });
  assert.deepEqual(client.position("feed:reset"), { offset: 0, epoch: reset.body.epoch });

  // Offset 1 again, in the new epoch: not taken for a duplicate of the old 1.
  await publish("feed:reset", 3);
  const message = await inbox.next();
  assert.equal(message.seq, 3);
  assert.equal(message.offset, 1);
  assert.equal(message.epoch, reset.body.epoch);
  assert.deepEqual(client.position("feed:reset"), { offset: 1, epoch: reset.body.epoch });
  assert.deepEqual(inbox.all.map((m) => m.seq), [1, 2, 3]);
});

test("close() keeps the position: connect() later resumes from it", async () => {
  const { client } = await connect("gil");
  const inbox = messageQueue();
  const sub = await client.subscribe("feed:closed", inbox);
  await publish("feed:closed", 1);
  assert.deepEqual(await take(inbox, 1), [1]);
  client.close();
  for (const seq of range(2, 4)) await publish("feed:closed", seq);

  const resubscribed = nextEvent(client, "resubscribed");
  client.connect();
  const event = await resubscribed;
  assert.equal(event.recovered, true, JSON.stringify(event));
  assert.equal(event.epoch, sub.epoch);
  assert.deepEqual(await take(inbox, 3), range(2, 4));
  assert.deepEqual(inbox.all.map((m) => m.offset), range(1, 4));
});

test("a client publish on a history topic answers its position; offset or epoch of its own is refused", async () => {
  const { client } = await connect("hal");
  const inbox = messageQueue();
  const sub = await client.subscribe("feed:talk", inbox);
  const reply = await client.publish("feed:talk", { type: "chat", seq: 1 });
  assert.equal(reply.offset, 1, JSON.stringify(reply));
  assert.equal(reply.epoch, sub.epoch);
  const message = await inbox.next();
  assert.equal(message.seq, 1);
  assert.equal(message.offset, 1);
  await assert.rejects(client.publish("feed:talk", { type: "chat", offset: 7 }), (e) => e.code === "invalid_message");
  await assert.rejects(client.publish("feed:talk", { type: "chat", epoch: "mine" }), (e) => e.code === "invalid_message");
});
