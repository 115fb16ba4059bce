// The client's own bookkeeping of positions against a scripted WebSocket server
// (test/scripted.js) that sends what the real server never does on purpose:
// duplicate and stale offsets, an `offset` field on a topic without history, a
// recovered reply whose top offset is ahead of the replay. The behaviour against
// the real server is in history.test.js.

import { after, test } from "node:test";
import assert from "node:assert/strict";

import { RealtimeClient } from "../realtime-client.js";
import { startScriptedServer } from "./scripted.js";
import { messageQueue, nextEvent } from "./server.js";

let scripted;
let client;

after(async () => {
  client?.close();
  await scripted?.close();
});

const stamp = () => new Date().toISOString();

function welcome(ws, n) {
  ws.send({ type: "welcome", connection_id: `00000000-0000-4000-8000-00000000000${n}`, user_id: "u", roles: [], timestamp: stamp() });
}

const tick = (topic, offset, epoch, seq) => ({ type: "tick", topic, offset, epoch, seq, timestamp: stamp() });

test("positions: duplicates dropped, other epochs kept, missed taken over, since sent on every resubscription", async () => {
  scripted = await startScriptedServer();
  client = new RealtimeClient(scripted.wsUrl, { token: "t", heartbeatInterval: 0, initialDelay: 10 });
  const feed = messageQueue();
  const plain = messageQueue();
  const everything = messageQueue();
  client.on("*", everything);

  let ws = await scripted.nextSocket();
  welcome(ws, 1);
  const feedSub = client.subscribe("feed:x", feed);
  let command = await ws.next();
  assert.deepEqual(command, { action: "subscribe", topic: "feed:x", ref: command.ref });
  ws.send({ type: "subscribed", topic: "feed:x", ref: command.ref, offset: 2, epoch: "e1" });
  assert.deepEqual(await feedSub, { topic: "feed:x", offset: 2, epoch: "e1" });

  const plainSub = client.subscribe("news:y", plain);
  command = await ws.next();
  ws.send({ type: "subscribed", topic: "news:y", ref: command.ref });
  assert.deepEqual(await plainSub, { topic: "news:y" });

  ws.send(tick("feed:x", 3, "e1", 1));
  ws.send(tick("feed:x", 3, "e1", 2)); // duplicate
  ws.send(tick("feed:x", 2, "e1", 3)); // at the subscribed position: delivered before
  ws.send(tick("feed:x", 4, "e1", 4));
  // On a topic without history an `offset` field is the application's own.
  ws.send(tick("news:y", 1, "mine", 5));
  ws.send(tick("news:y", 1, "mine", 6));
  // A missed notice: not a message; the position is taken over.
  const missed = nextEvent(client, "missed");
  ws.send({ type: "missed", topic: "feed:x", reason: "history_trimmed", offset: 10, epoch: "e1" });
  ws.send(tick("feed:x", 9, "e1", 7)); // below the notice's position
  ws.send(tick("feed:x", 11, "e1", 8));
  ws.send(tick("feed:x", 1, "e2", 9)); // a new epoch starts again at 1
  const plainMissed = nextEvent(client, "missed", { filter: (e) => e.topic === "news:y" });
  ws.send({ type: "missed", topic: "news:y", reason: "bus_reconnected" });

  assert.deepEqual(await missed, { type: "missed", topic: "feed:x", reason: "history_trimmed", offset: 10, epoch: "e1" });
  assert.deepEqual(await plainMissed, { type: "missed", topic: "news:y", reason: "bus_reconnected" });
  const seqs = [];
  for (let i = 0; i < 4; i++) seqs.push((await feed.next()).seq);
  assert.deepEqual(seqs, [1, 4, 8, 9]);
  assert.deepEqual([(await plain.next()).seq, (await plain.next()).seq], [5, 6]);
  assert.deepEqual(client.position("feed:x"), { offset: 1, epoch: "e2" });
  assert.equal(client.position("news:y"), null);
  assert.ok(everything.all.every((m) => m.type === "tick"), "missed notices reach no message handler");
  assert.deepEqual(everything.all.map((m) => m.seq), [1, 4, 5, 6, 8, 9]);

  // The link drops without a close frame; on the next connection both topics
  // are subscribed again, the history one with since.
  const resubscribed = [];
  client.addEventListener("resubscribed", (e) => resubscribed.push(e));
  ws.drop();
  ws = await scripted.nextSocket();
  welcome(ws, 2);
  const restores = [await ws.next(), await ws.next()];
  const feedRestore = restores.find((c) => c.topic === "feed:x");
  const plainRestore = restores.find((c) => c.topic === "news:y");
  assert.deepEqual(feedRestore, { action: "subscribe", topic: "feed:x", since: { offset: 1, epoch: "e2" }, ref: feedRestore.ref });
  assert.deepEqual(plainRestore, { action: "subscribe", topic: "news:y", ref: plainRestore.ref });
  // Recovered, with the top (3) in the reply: the replay of 2 and 3 still counts.
  ws.send({ type: "subscribed", topic: "feed:x", ref: feedRestore.ref, offset: 3, epoch: "e2", recovered: true });
  ws.send(tick("feed:x", 2, "e2", 10));
  ws.send(tick("feed:x", 3, "e2", 11));
  ws.send({ type: "subscribed", topic: "news:y", ref: plainRestore.ref });
  ws.send(tick("feed:x", 3, "e2", 12)); // a live copy of the replay's last one
  ws.send(tick("feed:x", 4, "e2", 13));
  assert.deepEqual([(await feed.next()).seq, (await feed.next()).seq, (await feed.next()).seq], [10, 11, 13]);
  assert.deepEqual(resubscribed, [
    { type: "resubscribed", topic: "feed:x", offset: 3, epoch: "e2", recovered: true },
    { type: "resubscribed", topic: "news:y", recovered: false, reason: "no_history" },
  ]);

  // Not recovered: delivery starts after the reply's position, whatever came before.
  ws.drop();
  ws = await scripted.nextSocket();
  welcome(ws, 3);
  const again = [await ws.next(), await ws.next()].find((c) => c.topic === "feed:x");
  assert.deepEqual(again.since, { offset: 4, epoch: "e2" });
  const notRecovered = nextEvent(client, "resubscribed", { filter: (e) => e.topic === "feed:x" });
  ws.send({ type: "subscribed", topic: "feed:x", ref: again.ref, offset: 7, epoch: "e3", recovered: false, reason: "other_epoch" });
  assert.deepEqual(await notRecovered, { type: "resubscribed", topic: "feed:x", offset: 7, epoch: "e3", recovered: false, reason: "other_epoch" });
  ws.send(tick("feed:x", 7, "e3", 14));
  ws.send(tick("feed:x", 8, "e3", 15));
  assert.equal((await feed.next()).seq, 15);
  // Frames are handled in order: 14 was dropped before 15 arrived.
  assert.deepEqual(feed.all.map((m) => m.seq), [1, 4, 8, 9, 10, 11, 13, 15]);
});
