// Presence against the real server with presence namespaces (PRESENCE_CONFIG):
// who is in a topic and its counts with several clients, every member exactly
// once across pages, join and leave notices reaching the other subscribers (and
// never a message handler), `forbidden`, `no_presence`, `invalid_topic` and
// `bad_request`. The expected members are the test's own tally of the
// connections it opened (their welcome ids), never read back from the client.
// The last test uses a scripted WebSocket server for what the real single node
// never answers: a `degraded` page, and a cursor handed back unchanged.

import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";

import { RealtimeClient } from "../realtime-client.js";
import { startScriptedServer } from "./scripted.js";
import { PRESENCE_CONFIG, messageQueue, mintToken, nextEvent, startServer } from "./server.js";

let server;
const clients = [];

before(async () => {
  server = await startServer({ config: PRESENCE_CONFIG });
});

afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

after(async () => {
  for (const c of clients.splice(0)) c.close();
  await server?.stop();
});

/** A connected client for `sub`; `claims` go into the token (its metadata: presence `info`). */
async function connect(sub, { roles = [], claims = {} } = {}) {
  const client = new RealtimeClient(server.wsUrl, {
    token: () => mintToken({ sub, roles, ...claims }),
    heartbeatInterval: 0,
  });
  clients.push(client);
  const connected = await nextEvent(client, "connected");
  return { client, connectionId: connected.connectionId };
}

/** Resolves once `check()` stops throwing; rethrows its last error after `timeout` ms
 *  (an upper bound: a presence answer can only be polled). */
async function eventually(check, timeout = 10000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** The expected `users` of a presence answer from a tally `{user: [connectionId, ...]}`:
 *  sorted by user id, each user's connection ids sorted. */
function expectedUsers(tally) {
  return Object.keys(tally)
    .filter((user) => tally[user].length > 0)
    .sort()
    .map((user) => ({ user_id: user, connections: [...tally[user]].sort() }));
}

/** A presence answer's users reduced to ids, in the order given. */
const ids = (users) => users.map((u) => ({ user_id: u.user_id, connections: u.connections.map((c) => c.connection_id) }));

/** Every `join`/`leave` client event, in order. */
function recordPresence(client) {
  const events = [];
  for (const type of ["join", "leave"]) client.addEventListener(type, (e) => events.push(e));
  return events;
}

test("presence lists every subscribed connection grouped by user, with info from the token; stats count them", async () => {
  const started = Date.now();
  const ann1 = await connect("ann", { claims: { name: "Ann", team: "blue" } });
  const ann2 = await connect("ann", { claims: { name: "Ann" } });
  const bob = await connect("bob");
  const carl = await connect("carl"); // reads presence without subscribing
  const topic = "counted:hall";
  for (const c of [ann1, ann2, bob]) await c.client.subscribe(topic, () => {});
  const tally = { ann: [ann1.connectionId, ann2.connectionId], bob: [bob.connectionId] };

  const page = await eventually(async () => {
    const answer = await carl.client.presence(topic);
    assert.deepEqual(ids(answer.users), expectedUsers(tally));
    return answer;
  });
  assert.equal(page.topic, topic);
  assert.equal(page.cursor, null, "one page holds them all");
  assert.equal(page.degraded, false);
  const byId = new Map(page.users.flatMap((u) => u.connections.map((c) => [c.connection_id, c])));
  assert.deepEqual(byId.get(ann1.connectionId).info, { name: "Ann", team: "blue" });
  assert.deepEqual(byId.get(ann2.connectionId).info, { name: "Ann" });
  assert.deepEqual(byId.get(bob.connectionId).info, {});
  for (const c of byId.values()) {
    const at = Date.parse(c.connected_at);
    assert.ok(at >= started - 1000 && at <= Date.now() + 1000, `connected_at ${c.connected_at} is when the test connected`);
  }
  assert.deepEqual(await carl.client.presenceStats(topic), { topic, connections: 3, users: 2, degraded: false });

  // Unsubscribing, and closing a connection, take members out.
  await bob.client.unsubscribe(topic);
  tally.bob = [];
  ann2.client.close();
  tally.ann = [ann1.connectionId];
  await eventually(async () => {
    assert.deepEqual(ids((await carl.client.presence(topic)).users), expectedUsers(tally));
    assert.deepEqual(await carl.client.presenceStats(topic), { topic, connections: 1, users: 1, degraded: false });
  });

  // A topic nobody is in.
  assert.deepEqual(await carl.client.presence("counted:empty"), { topic: "counted:empty", users: [], cursor: null, degraded: false });
  assert.deepEqual(await carl.client.presenceStats("counted:empty"), { topic: "counted:empty", connections: 0, users: 0, degraded: false });
});

test("paging returns every member exactly once, in order; presenceAll joins a user split across pages", async () => {
  const topic = "counted:paged";
  // u2 has three connections, so with pages of two it spans a page boundary.
  const plan = ["u1", "u2", "u2", "u2", "u3", "u4", "u5"];
  const tally = {};
  const joined = [];
  for (const user of plan) {
    const c = await connect(user);
    await c.client.subscribe(topic, () => {});
    (tally[user] ??= []).push(c.connectionId);
    joined.push(c);
  }
  const reader = joined[0].client;
  const expected = expectedUsers(tally);
  await eventually(async () => assert.equal((await reader.presenceStats(topic)).connections, plan.length));

  const pages = [];
  let cursor = null;
  do {
    const page = await reader.presence(topic, { limit: 2, cursor });
    pages.push(page);
    cursor = page.cursor;
    assert.ok(pages.length <= plan.length, "the pages end");
  } while (cursor !== null);
  const perPage = pages.map((p) => p.users.reduce((n, u) => n + u.connections.length, 0));
  assert.deepEqual(perPage, [2, 2, 2, 1], "pages of `limit` connections");
  // Flattened in order: every connection once, sorted by user then connection id.
  const flat = pages.flatMap((p) => p.users.flatMap((u) => u.connections.map((c) => `${u.user_id}/${c.connection_id}`)));
  assert.deepEqual(
    flat,
    expected.flatMap((u) => u.connections.map((c) => `${u.user_id}/${c}`)),
  );
  assert.ok(
    pages.some((p, i) => i > 0 && p.users[0].user_id === pages[i - 1].users.at(-1).user_id),
    "a user continues on the next page",
  );

  const all = await reader.presenceAll(topic, { limit: 2 });
  assert.deepEqual(ids(all.users), expected, "one entry per user");
  assert.equal(all.degraded, false);
  assert.deepEqual(ids((await reader.presenceAll(topic)).users), expected, "default pages of 1000");

  // Limits and cursors the server refuses.
  await assert.rejects(reader.presence(topic, { limit: 1001 }), { code: "bad_request" });
  await assert.rejects(reader.presence(topic, { cursor: "not-a-cursor-the-server-gave" }), { code: "bad_request" });
  await assert.rejects(reader.presence(topic, { limit: 0 }), TypeError);
  await assert.rejects(reader.presence(topic, { cursor: 7 }), TypeError);
});

test("join and leave reach the other subscribers, never the joiner itself nor a message handler", async () => {
  const topic = "room:lobby";
  const watcher = await connect("watcher");
  const inbox = messageQueue();
  const everything = messageQueue();
  watcher.client.on("*", everything);
  const joins = [];
  const leaves = [];
  const clientEvents = recordPresence(watcher.client);
  await watcher.client.subscribe(topic, inbox, { onJoin: (e) => joins.push(e), onLeave: (e) => leaves.push(e) });

  const dave = await connect("dave");
  const daveEvents = recordPresence(dave.client);
  const daveJoined = nextEvent(watcher.client, "join", { filter: (e) => e.connectionId === dave.connectionId });
  await dave.client.subscribe(topic, () => {});
  assert.deepEqual(await daveJoined, { type: "join", topic, userId: "dave", connectionId: dave.connectionId });

  const eve = await connect("eve");
  const eveJoinedForDave = nextEvent(dave.client, "join", { filter: (e) => e.connectionId === eve.connectionId });
  const eveJoined = nextEvent(watcher.client, "join", { filter: (e) => e.connectionId === eve.connectionId });
  await eve.client.subscribe(topic, () => {});
  await eveJoined;
  await eveJoinedForDave;
  // Dave's own join would have reached him before eve's: he got only hers.
  assert.deepEqual(daveEvents.map((e) => `${e.type} ${e.userId}`), ["join eve"]);

  const daveLeft = nextEvent(watcher.client, "leave", { filter: (e) => e.connectionId === dave.connectionId });
  await dave.client.unsubscribe(topic);
  assert.deepEqual(await daveLeft, { type: "leave", topic, userId: "dave", connectionId: dave.connectionId });
  // A connection that closes leaves too.
  const eveLeft = nextEvent(watcher.client, "leave", { filter: (e) => e.connectionId === eve.connectionId });
  eve.client.close();
  await eveLeft;

  // The subscription's callbacks got what the client events got, in the same order.
  const seen = (list) => list.map((e) => `${e.type} ${e.userId} ${e.connectionId}`);
  assert.deepEqual(seen(joins), seen(clientEvents.filter((e) => e.type === "join")));
  assert.deepEqual(seen(leaves), seen(clientEvents.filter((e) => e.type === "leave")));
  assert.deepEqual(seen(clientEvents), [
    `join dave ${dave.connectionId}`,
    `join eve ${eve.connectionId}`,
    `leave dave ${dave.connectionId}`,
    `leave eve ${eve.connectionId}`,
  ]);

  // A backend message typed "join" is a message (it has a timestamp), not a notice.
  const sent = await server.api("POST", `/api/topics/${topic}/messages`, { type: "join", text: "a message" });
  assert.equal(sent.status, 200, JSON.stringify(sent.body));
  const message = await inbox.next();
  assert.equal(message.type, "join");
  assert.equal(message.text, "a message");
  assert.equal(clientEvents.length, 4, "no notice made of the message");
  assert.deepEqual(inbox.all.map((m) => m.text), ["a message"], "no notice reached the message handler");
  assert.deepEqual(everything.all.map((m) => m.text), ["a message"], "nor the '*' handler");
});

test("without join_leave no notices are sent; unsubscribing a handler drops its callbacks", async () => {
  const watcher = await connect("watcher");
  const events = recordPresence(watcher.client);
  const inbox = messageQueue();
  await watcher.client.subscribe("counted:quiet", inbox, { onJoin: () => assert.fail("no join on counted:") });
  const other = await connect("other");
  await other.client.subscribe("counted:quiet", () => {});
  await eventually(async () => assert.equal((await watcher.client.presenceStats("counted:quiet")).connections, 2));
  // A message published after the join comes after any notice it would have caused.
  await server.api("POST", "/api/topics/counted:quiet/messages", { type: "after", text: "after the join" });
  assert.equal((await inbox.next()).text, "after the join");
  assert.deepEqual(events, []);

  // Two handlers on a join/leave topic; the one removed keeps no callback.
  const kept = [];
  const dropped = [];
  const keptHandler = () => {};
  const droppedHandler = () => {};
  await watcher.client.subscribe("room:callbacks", keptHandler, { onJoin: (e) => kept.push(e.userId) });
  await watcher.client.subscribe("room:callbacks", droppedHandler, { onJoin: (e) => dropped.push(e.userId) });
  await watcher.client.unsubscribe("room:callbacks", droppedHandler);
  const joined = nextEvent(watcher.client, "join", { filter: (e) => e.topic === "room:callbacks" });
  await other.client.subscribe("room:callbacks", () => {});
  await joined;
  assert.deepEqual(kept, ["other"]);
  assert.deepEqual(dropped, []);

  await assert.rejects(watcher.client.subscribe("room:bad", () => {}, { onLeave: "nope" }), TypeError);
});

test("presence is refused to a connection that may not subscribe, and absent where the namespace keeps none", async () => {
  const outsider = await connect("outsider");
  const staffer = await connect("staffer", { roles: ["staff"] });
  await staffer.client.subscribe("staff:ops", () => {});

  await assert.rejects(outsider.client.presence("staff:ops"), (e) => e.code === "forbidden" && e.frame?.type === "error");
  await assert.rejects(outsider.client.presenceStats("staff:ops"), { code: "forbidden" });
  await assert.rejects(outsider.client.presenceAll("staff:ops"), { code: "forbidden" });
  // The staffer may, and sees itself.
  const page = await eventually(async () => {
    const answer = await staffer.client.presence("staff:ops");
    assert.equal(answer.users.length, 1);
    return answer;
  });
  assert.deepEqual(ids(page.users), [{ user_id: "staffer", connections: [staffer.connectionId] }]);

  await assert.rejects(outsider.client.presence("plain:topic"), { code: "no_presence" });
  await assert.rejects(outsider.client.presenceStats("plain:topic"), { code: "no_presence" });
  await assert.rejects(outsider.client.presence("bad topic"), { code: "invalid_topic" });
  await assert.rejects(outsider.client.presence(""), TypeError);

  // Not connected: rejected at once, like other commands.
  outsider.client.close();
  await assert.rejects(outsider.client.presence("room:lobby"), { code: "not_connected" });
  await assert.rejects(outsider.client.presenceStats("room:lobby"), { code: "not_connected" });
});

test("scripted server: the frames sent, a degraded answer, and a cursor handed back unchanged", async () => {
  const scripted = await startScriptedServer();
  const client = new RealtimeClient(scripted.wsUrl, { token: "t", heartbeatInterval: 0 });
  try {
    const ws = await scripted.nextSocket();
    ws.send({ type: "welcome", connection_id: "00000000-0000-4000-8000-000000000001", user_id: "u", roles: [], timestamp: new Date().toISOString() });
    await nextEvent(client, "connected");
    const connection = (id, info = {}) => ({ connection_id: id, connected_at: "2026-01-01T00:00:00.000Z", info });

    const stats = client.presenceStats("room:x");
    let command = await ws.next();
    assert.deepEqual(command, { action: "presence_stats", topic: "room:x", ref: command.ref });
    ws.send({ type: "presence_stats", topic: "room:x", ref: command.ref, connections: 3, users: 2, degraded: true });
    assert.deepEqual(await stats, { topic: "room:x", connections: 3, users: 2, degraded: true });

    // presenceAll: the second page is degraded, and user "b" spans both pages.
    const all = client.presenceAll("room:x", { limit: 2 });
    command = await ws.next();
    assert.deepEqual(command, { action: "presence", topic: "room:x", limit: 2, ref: command.ref });
    ws.send({
      type: "presence",
      topic: "room:x",
      ref: command.ref,
      users: [
        { user_id: "a", connections: [connection("c1", { n: 1 })] },
        { user_id: "b", connections: [connection("c2")] },
      ],
      cursor: "k1",
    });
    command = await ws.next();
    assert.deepEqual(command, { action: "presence", topic: "room:x", limit: 2, cursor: "k1", ref: command.ref });
    ws.send({ type: "presence", topic: "room:x", ref: command.ref, users: [{ user_id: "b", connections: [connection("c3")] }], degraded: true });
    assert.deepEqual(await all, {
      topic: "room:x",
      users: [
        { user_id: "a", connections: [connection("c1", { n: 1 })] },
        { user_id: "b", connections: [connection("c2"), connection("c3")] },
      ],
      degraded: true,
    });

    // A server that hands the same cursor back would loop forever: presenceAll stops.
    const looping = client.presenceAll("room:x");
    command = await ws.next();
    ws.send({ type: "presence", topic: "room:x", ref: command.ref, users: [], cursor: "same" });
    command = await ws.next();
    assert.equal(command.cursor, "same");
    ws.send({ type: "presence", topic: "room:x", ref: command.ref, users: [], cursor: "same" });
    await assert.rejects(looping, { code: "bad_frame" });
  } finally {
    client.close();
    await scripted.close();
  }
});
