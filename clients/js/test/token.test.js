// Token lifetime: refresh before expiry, refresh refused, close 3005.

import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";

import { RealtimeClient } from "../realtime-client.js";
import { mintToken, nextEvent, quietPeriod, recordEvents, startServer } from "./server.js";

let server;
const clients = [];

before(async () => {
  server = await startServer();
});

afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

after(async () => {
  await server?.stop();
});

/** exp about `seconds` from now, at least `seconds` whole seconds ahead. */
const expIn = (seconds) => Math.ceil(Date.now() / 1000) + seconds;

test("a token function: the client refreshes before expiry on the same connection", async () => {
  const calls = [];
  const client = new RealtimeClient(server.wsUrl, {
    token: async (info) => {
      calls.push(info.reason);
      // First a token that expires 2 s ahead, then long-lived ones.
      return calls.length === 1 ? mintToken({ sub: "tom", exp: expIn(2) }) : mintToken({ sub: "tom", ttl: 3600 });
    },
  });
  clients.push(client);
  const events = recordEvents(client);
  const connected = await nextEvent(client, "connected");
  const shortExpiry = connected.expiresAt;
  assert.ok(shortExpiry * 1000 - Date.now() < 3100, "the first token is short-lived");

  const refreshed = await nextEvent(client, "refreshed", { timeout: 5000 });
  assert.deepEqual(calls, ["connect", "refresh"], "the token function was called a second time, to refresh");
  assert.ok(refreshed.expiresAt > shortExpiry + 3000);
  assert.equal(client.expiresAt, refreshed.expiresAt);
  assert.ok(Date.now() < shortExpiry * 1000, "refreshed before the old expiry");
  assert.equal(client.connectionId, connected.connectionId);

  // Past the old expiry the same connection still works: no 3005.
  await quietPeriod(shortExpiry * 1000 - Date.now() + 500);
  await client.ping();
  assert.equal(client.connectionId, connected.connectionId);
  assert.deepEqual(
    events.map((e) => e.type),
    ["connecting", "connected", "refreshed"],
  );
});

test("a static short-lived token: close 3005 leads to a reconnect attempt", async () => {
  const client = new RealtimeClient(server.wsUrl, { token: mintToken({ sub: "sam", exp: expIn(1) }) });
  clients.push(client);
  const events = recordEvents(client);
  await nextEvent(client, "connected");
  const expired = await nextEvent(client, "disconnected", { timeout: 5000 });
  assert.equal(expired.code, 3005);
  assert.equal(expired.reason, "token expired");
  assert.equal(expired.willReconnect, true);
  assert.equal(expired.delay, 0, "at once");
  await nextEvent(client, "connecting");
  // The same, now expired, string is refused at the handshake: backoff from here.
  const refused = await nextEvent(client, "disconnected");
  assert.equal(refused.code, 1006);
  assert.equal(refused.willReconnect, true);
  assert.ok(refused.delay > 0);
  assert.ok(!events.some((e) => e.type === "refreshed"), "no refresh with a string token");
});

test("close 3005 with a token function (refresh off): reconnects at once with a fresh token", async () => {
  let calls = 0;
  const client = new RealtimeClient(server.wsUrl, {
    refresh: false,
    token: () => {
      calls += 1;
      return calls === 1 ? mintToken({ sub: "una", exp: expIn(1) }) : mintToken({ sub: "una", ttl: 3600 });
    },
  });
  clients.push(client);
  const first = await nextEvent(client, "connected");
  const expired = await nextEvent(client, "disconnected", { timeout: 5000 });
  assert.equal(expired.code, 3005);
  const again = await nextEvent(client, "connected");
  assert.equal(calls, 2);
  assert.notEqual(again.connectionId, first.connectionId);
  assert.ok(again.expiresAt > first.expiresAt + 3000);
});

test("a refresh refused (token_mismatch) is reported and the client reconnects with the new token", async () => {
  let calls = 0;
  const client = new RealtimeClient(server.wsUrl, {
    token: async () => {
      calls += 1;
      // The refresh token names other roles: the server refuses it; reconnecting applies it.
      return calls === 1 ? mintToken({ sub: "vic", exp: expIn(2) }) : mintToken({ sub: "vic", roles: ["admin"], ttl: 3600 });
    },
  });
  clients.push(client);
  const errors = [];
  client.addEventListener("error", (e) => errors.push(e.error));
  const first = await nextEvent(client, "connected");
  assert.deepEqual(first.roles, []);
  const dropped = await nextEvent(client, "disconnected", { timeout: 5000 });
  assert.equal(dropped.code, 4000);
  assert.equal(dropped.willReconnect, true);
  assert.equal(dropped.delay, 0);
  assert.deepEqual(errors.map((e) => e.code), ["token_mismatch"]);
  const again = await nextEvent(client, "connected");
  assert.deepEqual(again.roles, ["admin"]);
  assert.notEqual(again.connectionId, first.connectionId);
  assert.equal(calls, 3);
});

test("a subscription refused when restored is reported with an error event and dropped", async () => {
  let calls = 0;
  const client = new RealtimeClient(server.wsUrl, {
    refresh: false,
    token: () => {
      calls += 1;
      // The first connection holds role staff; after the 3005 reconnect it no longer does.
      return calls === 1 ? mintToken({ sub: "wes", roles: ["staff"], exp: expIn(1) }) : mintToken({ sub: "wes", ttl: 3600 });
    },
  });
  clients.push(client);
  await nextEvent(client, "connected");
  await client.subscribe("role:staff", () => {});
  await client.subscribe("news:wes", () => {});
  const errorP = nextEvent(client, "error", { timeout: 6000 });
  const again = await nextEvent(client, "connected", { timeout: 6000 });
  assert.deepEqual(again.roles, []);
  const { error, topic } = await errorP;
  assert.equal(topic, "role:staff");
  assert.equal(error.code, "forbidden");
  assert.equal(error.topic, "role:staff");
  assert.deepEqual(client.topics, ["news:wes"]);
});
