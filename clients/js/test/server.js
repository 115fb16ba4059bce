// Test helper: starts, stops, restarts, freezes the real realtime-server binary,
// mints HS256 tokens and calls the HTTP API. Imported by the *.test.js files.
//
// `node --test test/` also runs this file on its own (every .js file under a
// `test` directory is a test file); it then checks itself: the binary is found,
// starts in production mode, answers /health and stops on SIGTERM.

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

export const JWT_SECRET = "client-js-test-secret-0123456789abcdef";
export const API_KEY = "client-js-test-api-key";

/** Upper bound on waiting for the server to listen or exit (never a fixed sleep). */
const PROCESS_TIMEOUT_MS = 15000;

/** The server binary: $REALTIME_SERVER_BIN, else ../../target/debug/realtime-server. */
export function serverBinary() {
  const fromEnv = process.env.REALTIME_SERVER_BIN;
  if (fromEnv) {
    if (!existsSync(fromEnv)) throw new Error(`REALTIME_SERVER_BIN=${fromEnv} does not exist`);
    return fromEnv;
  }
  const fallback = resolve(here, "../../../target/debug/realtime-server");
  if (existsSync(fallback)) return fallback;
  throw new Error(
    `realtime-server binary not found: set REALTIME_SERVER_BIN or build it with ` +
      `\`cargo build -p realtime-server\` (expected ${fallback})`,
  );
}

/** A free TCP port on 127.0.0.1 (bound to port 0, read, released). */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolvePort(port));
    });
  });
}

const b64url = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

/**
 * An HS256 JWT. `ttl` seconds from now unless `exp` is given.
 * @param {{sub: string, roles?: string[], ttl?: number, exp?: number, iat?: number}} claims
 */
export function mintToken({ sub, roles = [], ttl = 3600, exp, iat, ...rest }, secret = JWT_SECRET) {
  const nowS = Math.floor(Date.now() / 1000);
  const payload = { sub, roles, iat: iat ?? nowS, exp: exp ?? nowS + ttl, ...rest };
  const head = `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url(payload)}`;
  const sig = createHmac("sha256", secret).update(head).digest("base64url");
  return `${head}.${sig}`;
}

// Every process started here, killed when this test process exits however it exits.
const live = new Set();
function killAll() {
  for (const child of live) {
    try {
      child.kill("SIGCONT");
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
  live.clear();
}
process.once("exit", killAll);
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.once(signal, () => {
    killAll();
    process.exit(130);
  });
}

// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*m/g;

/** A process's scheduler state from /proc (`R`, `S`, `T`...), or null. */
function processState(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
  } catch {
    return null;
  }
}

/** A config file with history on every topic under `feed` (100 kept, 10 minutes)
 *  and under `tiny` (3 kept), subscribable by any authenticated connection, and
 *  on `inbox:<user>` for its owner only. Other topics keep no history. */
export const HISTORY_CONFIG = `
[[namespaces]]
pattern = "feed"
subscribe = "authenticated"
publish = "authenticated"
history_size = 100
history_ttl = "10m"

[[namespaces]]
pattern = "tiny"
subscribe = "authenticated"
publish = "authenticated"
history_size = 3
history_ttl = "10m"

[[namespaces]]
pattern = "inbox:{sub}"
subscribe = "owner"
publish = "nobody"
history_size = 10
history_ttl = "10m"
`;

/** A config file with presence on `room` topics (with join and leave notices)
 *  and on `counted` topics (without), both subscribable by any authenticated
 *  connection, and on `staff` topics (with notices) for the `staff` role only.
 *  Other topics keep no presence. */
export const PRESENCE_CONFIG = `
[[namespaces]]
pattern = "room"
subscribe = "authenticated"
publish = "nobody"
presence = true
join_leave = true

[[namespaces]]
pattern = "counted"
subscribe = "authenticated"
publish = "nobody"
presence = true

[[namespaces]]
pattern = "staff"
subscribe = { roles = ["staff"] }
publish = "nobody"
presence = true
join_leave = true
`;

// Config files written for servers started here, removed when this process exits.
const configDirs = new Set();
process.once("exit", () => {
  for (const dir of configDirs) rmSync(dir, { recursive: true, force: true });
});

export class TestServer {
  /**
   * @param {{port?: number, env?: Record<string, string>, config?: string}} [options]
   *   `config`: the text of a TOML config file, passed with REALTIME_CONFIG
   */
  constructor({ port, env = {}, config } = {}) {
    this.port = port;
    this.env = { ...env };
    if (config !== undefined) {
      const dir = mkdtempSync(join(tmpdir(), "realtime-client-js-"));
      configDirs.add(dir);
      const path = join(dir, "realtime.toml");
      writeFileSync(path, config);
      this.env.REALTIME_CONFIG = path;
    }
    this.child = null;
    this.log = "";
    this.frozen = false;
    this.apiKey = API_KEY;
  }

  get httpUrl() {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  get pid() {
    return this.child?.pid;
  }

  /** Starts the process and resolves once it logs ` addr=127.0.0.1:PORT`. */
  async start() {
    if (this.child) throw new Error("server already running");
    if (!this.port) this.port = await freePort();
    const binary = serverBinary();
    const child = spawn(binary, [], {
      env: {
        PATH: process.env.PATH,
        REALTIME_LISTEN: `127.0.0.1:${this.port}`,
        REALTIME_JWT_SECRET: JWT_SECRET,
        REALTIME_API_KEY: API_KEY,
        REALTIME_LOG: "info",
        REALTIME_SHUTDOWN_TIMEOUT: "2s",
        REALTIME_WORKER_THREADS: "2",
        NO_COLOR: "1",
        ...this.env,
      },
      stdio: ["ignore", "ignore", "pipe"],
    });
    this.child = child;
    live.add(child);
    this.exited = new Promise((resolveExit) => {
      child.once("exit", (code, signal) => {
        live.delete(child);
        resolveExit({ code, signal });
      });
    });
    child.stderr.setEncoding("utf8");
    const marker = ` addr=127.0.0.1:${this.port}`;
    await new Promise((resolveReady, reject) => {
      let buffer = "";
      const timer = setTimeout(() => fail(new Error(`server did not listen within ${PROCESS_TIMEOUT_MS} ms`)), PROCESS_TIMEOUT_MS);
      const onData = (chunk) => {
        this.log = (this.log + chunk).slice(-20000);
        buffer += chunk.replace(ANSI, "");
        if (buffer.includes(marker)) {
          cleanup();
          resolveReady();
        }
        buffer = buffer.slice(-500);
      };
      const onExit = (code, signal) => fail(new Error(`server exited before listening (code ${code}, signal ${signal})`));
      const onError = (err) => fail(err);
      const cleanup = () => {
        clearTimeout(timer);
        child.off("exit", onExit);
        child.off("error", onError);
        child.stderr.off("data", onData);
        // Keep draining stderr so the pipe never fills.
        child.stderr.on("data", (c) => {
          this.log = (this.log + c).slice(-20000);
        });
      };
      const fail = (err) => {
        cleanup();
        child.kill("SIGKILL");
        err.message += `\n--- server stderr ---\n${this.log}`;
        reject(err);
      };
      child.stderr.on("data", onData);
      child.once("exit", onExit);
      child.once("error", onError);
    });
    if (this.env.REALTIME_API_KEY === undefined && "REALTIME_API_KEY" in this.env) {
      // Development mode generates the API key; /dev/token hands it out.
      const res = await fetch(`${this.httpUrl}/dev/token`);
      if (!res.ok) throw new Error(`/dev/token answered ${res.status}`);
      this.apiKey = (await res.json()).api_key;
    }
    return this;
  }

  /** SIGTERM (graceful shutdown) and wait for the exit; SIGKILL past the upper bound. */
  async stop() {
    const child = this.child;
    if (!child) return null;
    this.thaw();
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), PROCESS_TIMEOUT_MS);
    const result = await this.exited;
    clearTimeout(timer);
    this.child = null;
    return result;
  }

  /** SIGKILL (a crash: no shutdown, no close frames) and wait for the exit. */
  async kill() {
    const child = this.child;
    if (!child) return null;
    this.thaw();
    child.kill("SIGKILL");
    const result = await this.exited;
    this.child = null;
    return result;
  }

  /** Stops and starts again on the same port. */
  async restart() {
    await this.stop();
    return this.start();
  }

  /** SIGSTOP, resolved once the process is really stopped (signals are delivered
   *  asynchronously: until then it may still answer). */
  async freeze() {
    if (!this.child || this.frozen) return;
    process.kill(this.child.pid, "SIGSTOP");
    this.frozen = true;
    const deadline = Date.now() + PROCESS_TIMEOUT_MS;
    // Linux: the third field of /proc/<pid>/stat is the state, `T` once stopped.
    while (processState(this.child.pid) !== "T") {
      if (Date.now() > deadline) throw new Error("the server did not stop on SIGSTOP");
      await new Promise((r) => setImmediate(r));
    }
  }

  /** SIGCONT after freeze(). */
  thaw() {
    if (this.child && this.frozen) {
      process.kill(this.child.pid, "SIGCONT");
      this.frozen = false;
    }
  }

  /** Calls the HTTP API; resolves with {status, body}. */
  async api(method, path, body) {
    const res = await fetch(`${this.httpUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${this.apiKey}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = text;
    }
    return { status: res.status, body: parsed };
  }
}

/** Starts a server (on a free port unless given). */
export function startServer(options) {
  return new TestServer(options).start();
}

// ------------------------------------------------------------ event helpers

/**
 * Resolves with the next client event of `type` that passes `filter`; rejects
 * after `timeout` ms (an upper bound, never a sleep).
 */
export function nextEvent(client, type, { filter = () => true, timeout = 10000 } = {}) {
  return new Promise((resolveEvent, reject) => {
    const listener = (event) => {
      if (!filter(event)) return;
      clearTimeout(timer);
      client.removeEventListener(type, listener);
      resolveEvent(event);
    };
    const timer = setTimeout(() => {
      client.removeEventListener(type, listener);
      reject(new Error(`no "${type}" event within ${timeout} ms`));
    }, timeout);
    client.addEventListener(type, listener);
  });
}

/** Records the connection's client events in order: [{type, ...}] (`types` to
 *  record others, e.g. "resubscribed" and "missed"). */
export function recordEvents(client, types = ["connecting", "connected", "disconnected", "error", "refreshed"]) {
  const events = [];
  for (const type of types) {
    client.addEventListener(type, (event) => events.push(event));
  }
  return events;
}

/** A handler whose `next()` resolves with the next message it receives (upper bound `timeout`). */
export function messageQueue() {
  const received = [];
  const waiting = [];
  const handler = (message) => {
    const w = waiting.shift();
    if (w) {
      clearTimeout(w.timer);
      w.resolve(message);
    } else {
      received.push(message);
    }
  };
  const wrapped = (message) => {
    wrapped.all.push(message);
    handler(message);
  };
  wrapped.all = [];
  wrapped.next = (timeout = 5000) =>
    received.length > 0
      ? Promise.resolve(received.shift())
      : new Promise((resolveMessage, reject) => {
          const w = {
            resolve: resolveMessage,
            timer: setTimeout(() => {
              waiting.splice(waiting.indexOf(w), 1);
              reject(new Error(`no message within ${timeout} ms`));
            }, timeout),
          };
          waiting.push(w);
        });
  return wrapped;
}

/** Resolves after `ms`: only for asserting that something did NOT happen within a window. */
export function quietPeriod(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// ------------------------------------------------------- self-check when run alone

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const { test } = await import("node:test");
  const assert = await import("node:assert/strict");
  test("helper: the real server starts in production mode, answers and stops on SIGTERM", async () => {
    const server = await startServer();
    try {
      const health = await fetch(`${server.httpUrl}/health`);
      assert.equal(health.status, 200);
      const unauthorized = await fetch(`${server.httpUrl}/api/connections`);
      assert.equal(unauthorized.status, 401, "production mode: the API needs the key");
      const listed = await server.api("GET", "/api/connections");
      assert.equal(listed.status, 200);
    } finally {
      const exit = await server.stop();
      assert.ok(exit.code === 0 || exit.signal === "SIGTERM", `exit ${JSON.stringify(exit)}`);
    }
  });
}
