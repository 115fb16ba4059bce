// Client publishing, against a server that opens it on chat:* topics.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import { RealtimeClient } from "../realtime-client.js";
import { messageQueue, mintToken, nextEvent, startServer } from "./server.js";

let server;
const clients = [];

before(async () => {
  server = await startServer({ env: { REALTIME_CLIENT_PUBLISH: "chat:*" } });
});

after(async () => {
  for (const c of clients) c.close();
  await server?.stop();
});

async function connect(sub) {
  const client = new RealtimeClient(server.wsUrl, { token: mintToken({ sub }) });
  clients.push(client);
  await nextEvent(client, "connected");
  return client;
}

test("publish resolves with delivered when the server opens client publishing", async () => {
  const alice = await connect("alice");
  const bob = await connect("bob");
  const aliceInbox = messageQueue();
  const bobInbox = messageQueue();
  await alice.subscribe("chat:lobby", aliceInbox);
  await bob.subscribe("chat:lobby", bobInbox);

  const reply = await alice.publish("chat:lobby", { type: "chat", text: "hi", topic: "spoofed" });
  assert.equal(reply.type, "published");
  assert.equal(reply.delivered, 2, "both subscribers, the publisher included");
  assert.equal(reply.relayed, false);
  for (const inbox of [aliceInbox, bobInbox]) {
    const message = await inbox.next();
    assert.equal(message.type, "chat");
    assert.equal(message.text, "hi");
    assert.equal(message.topic, "chat:lobby", "the server sets topic");
  }

  // Still refused outside chat:*, and a message without a string type is a bad_request.
  await assert.rejects(alice.publish("news", { type: "x" }), (e) => e.code === "forbidden");
  await assert.rejects(alice.publish("chat:lobby", { text: "no type" }), (e) => e.code === "bad_request");
});
