// Many subscriptions against a server with a low command rate: queued and
// restored subscribes are paced, so none is refused with rate_limited and the
// connection is not closed with 3013.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import { RealtimeClient } from "../realtime-client.js";
import { mintToken, nextEvent, recordEvents, startServer } from "./server.js";

let server;
let client;

before(async () => {
  // 20 commands/s, bursts of 40.
  server = await startServer({ env: { REALTIME_COMMAND_RATE: "20" } });
});

after(async () => {
  client?.close();
  await server?.stop();
});

test("queued and restored subscribes are paced under the server's rate limit", async () => {
  let calls = 0;
  client = new RealtimeClient(server.wsUrl, {
    autoConnect: false,
    refresh: false,
    restoreBatch: 20,
    restoreRate: 16,
    token: () => {
      calls += 1;
      // The first connection ends with 3005 after the queued subscribes are done.
      const nowS = Math.ceil(Date.now() / 1000);
      return calls === 1 ? mintToken({ sub: "pat", exp: nowS + 3 }) : mintToken({ sub: "pat", ttl: 3600 });
    },
  });
  const events = recordEvents(client);
  const topics = Array.from({ length: 50 }, (_, i) => `pace:${i}`);
  const subscribed = topics.map((t) => client.subscribe(t, () => {}));
  client.connect();
  await Promise.all(subscribed); // a single rate_limited rejection fails here
  const first = await server.api("GET", `/api/connections/${client.connectionId}`);
  assert.equal(first.body.topics.length, 50);

  // Reconnect (3005) and restore all 50; a subscribe made meanwhile waits its turn.
  await nextEvent(client, "disconnected", { filter: (e) => e.code === 3005, timeout: 6000 });
  await nextEvent(client, "connected");
  await client.subscribe("pace:last", () => {});
  await client.ping(); // replies come in order: every restore was answered
  const second = await server.api("GET", `/api/connections/${client.connectionId}`);
  assert.equal(second.body.topics.length, 51);
  assert.deepEqual(
    events.filter((e) => e.type === "error"),
    [],
  );
  assert.deepEqual(
    events.filter((e) => e.type === "disconnected").map((e) => e.code),
    [3005],
  );
});
