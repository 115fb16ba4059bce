// A client further behind than the server's outbound queue holds: the recovery
// replay overflows the queue and the server closes the connection as a slow
// consumer (3008); on the next connection the client catches up in `history`
// pages before it subscribes again, and ends with every message exactly once, in
// order. A small queue (REALTIME_OUTBOUND_QUEUE=200) keeps the backlog short.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import { RealtimeClient } from "../realtime-client.js";
import { startLink } from "./link.js";
import { messageQueue, mintToken, nextEvent, recordEvents, startServer } from "./server.js";

const QUEUE = 200;
const BACKLOG = 700;

let server;
let link;
let client;

before(async () => {
  server = await startServer({
    env: { REALTIME_OUTBOUND_QUEUE: String(QUEUE) },
    config: `
[[namespaces]]
pattern = "deep"
subscribe = "authenticated"
publish = "nobody"
history_size = 1000
history_ttl = "10m"
`,
  });
  link = await startLink(server.port);
});

after(async () => {
  client?.close();
  await link?.close();
  await server?.stop();
});

test("a backlog larger than the outbound queue: closed as a slow consumer once, then caught up in pages, nothing lost or doubled", async () => {
  client = new RealtimeClient(link.wsUrl, { token: () => mintToken({ sub: "gus" }), heartbeatInterval: 0 });
  const events = recordEvents(client, ["connected", "disconnected", "resubscribed", "error"]);
  await nextEvent(client, "connected");
  const inbox = messageQueue();
  const sub = await client.subscribe("deep:backlog", inbox);
  const publish = async (seq) => {
    const sent = await server.api("POST", "/api/topics/deep:backlog/messages", { type: "tick", seq });
    assert.equal(sent.status, 200, JSON.stringify(sent.body));
  };
  await publish(1);
  assert.equal((await inbox.next()).seq, 1);

  await link.cut();
  for (let seq = 2; seq <= BACKLOG + 1; seq++) await publish(seq);
  const recovered = nextEvent(client, "resubscribed", { timeout: 30000 });
  link.restore();
  const resubscribed = await recovered;
  assert.equal(resubscribed.recovered, true, JSON.stringify(resubscribed));
  for (let i = 0; i < BACKLOG; i++) await inbox.next();
  await publish(BACKLOG + 2);
  assert.equal((await inbox.next()).seq, BACKLOG + 2);

  const expected = Array.from({ length: BACKLOG + 2 }, (_, i) => i + 1);
  assert.deepEqual(inbox.all.map((m) => m.seq), expected, "every message exactly once, in order");
  assert.deepEqual(inbox.all.map((m) => m.offset), expected);
  assert.ok(inbox.all.every((m) => m.epoch === sub.epoch));
  const closes = events.filter((e) => e.type === "disconnected").map((e) => e.code);
  assert.deepEqual(closes, [1006, 3008], "the cut, then one slow-consumer close; the catch-up needs no other");
  assert.deepEqual(events.filter((e) => e.type === "error"), []);
});
