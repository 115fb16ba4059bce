// A page of another origin reads `/sse` in a real browser: Chromium's `fetch`
// with the token in an `Authorization` header (which makes Chromium send an
// `OPTIONS` preflight first) and an `EventSource` with `withCredentials`, from a
// page served by a plain HTTP server of this test on another port. The
// server allows that origin only: a page of a third origin reads nothing.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { launchChromium } from "./chromium.js";
import { TestServer, mintToken } from "../../clients/js/test/server.js";


let browser;
const cleanups = [];

before(async () => {
  browser = await launchChromium();
});

after(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await browser?.close();
});

/** A plain HTTP server of an empty page, its origin, and how many requests it saw. */
async function pageOrigin() {
  const server = createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html" });
    res.end("<!doctype html><title>another origin</title>");
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  cleanups.push(() => new Promise((r) => server.close(r)));
  return `http://127.0.0.1:${server.address().port}`;
}

/** In the page: fetch `url` with `Authorization: Bearer token` and read until the welcome event. */
function fetchWelcome(page, url, token) {
  return page.evaluate(
    async ({ url, token }) => {
      try {
        const response = await fetch(url, { headers: { Authorization: `Bearer ${token}` } });
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let text = "";
        while (!text.includes('"welcome"')) {
          const { value, done } = await reader.read();
          if (done) break;
          text += decoder.decode(value, { stream: true });
        }
        await reader.cancel();
        const line = text.split("\n").find((l) => l.startsWith("data: ") && l.includes('"welcome"'));
        return { status: response.status, welcome: line ? JSON.parse(line.slice(6)) : null };
      } catch (e) {
        return { failed: String(e) };
      }
    },
    { url, token },
  );
}

/** In the page: an EventSource with credentials on `url`; resolves with its first message or its first error. */
function eventSourceFirst(page, url) {
  return page.evaluate(
    (url) =>
      new Promise((resolve) => {
        const es = new EventSource(url, { withCredentials: true });
        es.onmessage = (e) => {
          es.close();
          resolve({ frame: JSON.parse(e.data) });
        };
        es.onerror = () => {
          es.close();
          resolve({ failed: "error event" });
        };
      }),
    url,
  );
}

test("a page of an allowed origin reads /sse with its token in a header (after a preflight) and with an EventSource", async () => {
  const allowed = await pageOrigin();
  const other = await pageOrigin();
  const node = new TestServer({ env: { REALTIME_ALLOWED_ORIGINS: allowed } });
  cleanups.push(() => node.stop());
  await node.start();
  const token = mintToken({ sub: "cross-origin-user" });

  const page = await browser.newPage();
  cleanups.push(() => page.close());
  await page.goto(`${allowed}/`);
  const read = await fetchWelcome(page, `${node.httpUrl}/sse?topic=news`, token);
  assert.equal(read.status, 200, JSON.stringify(read));
  assert.equal(read.welcome?.user_id, "cross-origin-user", JSON.stringify(read));
  const es = await eventSourceFirst(page, `${node.httpUrl}/sse?topic=news&token=${encodeURIComponent(token)}`);
  assert.equal(es.frame?.type, "welcome", JSON.stringify(es));

  // A page of an origin the server does not allow: the browser hides every answer.
  const stranger = await browser.newPage();
  cleanups.push(() => stranger.close());
  await stranger.goto(`${other}/`);
  const refused = await fetchWelcome(stranger, `${node.httpUrl}/sse?topic=news`, token);
  assert.match(refused.failed ?? "", /TypeError/, JSON.stringify(refused));
  const refusedEs = await eventSourceFirst(stranger, `${node.httpUrl}/sse?topic=news&token=${encodeURIComponent(token)}`);
  assert.equal(refusedEs.failed, "error event", JSON.stringify(refusedEs));
});
