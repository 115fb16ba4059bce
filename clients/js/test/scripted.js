// Test helper: a minimal WebSocket server (RFC 6455, text frames only) whose
// frames the test writes itself, for what the real server never sends on
// purpose: duplicate offsets, a reply whose top offset is ahead of the replay.
// Imported by scripted.test.js; run alone it only loads.

import { createHash } from "node:crypto";
import { createServer } from "node:http";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** One accepted WebSocket: `send(object)`, `commands` (parsed, in order), `next()`, `drop()`. */
class ScriptedSocket {
  constructor(socket) {
    this.socket = socket;
    this.commands = [];
    this._waiting = [];
    this._buffer = Buffer.alloc(0);
    socket.on("data", (chunk) => this._read(chunk));
    socket.on("error", () => {});
  }

  send(frame) {
    const payload = Buffer.from(JSON.stringify(frame));
    let head;
    if (payload.length < 126) {
      head = Buffer.from([0x81, payload.length]);
    } else {
      head = Buffer.alloc(4);
      head[0] = 0x81;
      head[1] = 126;
      head.writeUInt16BE(payload.length, 2);
    }
    this.socket.write(Buffer.concat([head, payload]));
  }

  /** The next command the client sends (upper bound `timeout`). */
  next(timeout = 5000) {
    if (this.commands.length > 0) return Promise.resolve(this.commands.shift());
    return new Promise((resolve, reject) => {
      const w = { resolve, timer: setTimeout(() => reject(new Error(`no command within ${timeout} ms`)), timeout) };
      this._waiting.push(w);
    });
  }

  /** Ends the TCP connection without a close frame. */
  drop() {
    this.socket.resetAndDestroy();
  }

  _read(chunk) {
    this._buffer = Buffer.concat([this._buffer, chunk]);
    for (;;) {
      const b = this._buffer;
      if (b.length < 2) return;
      const opcode = b[0] & 0x0f;
      let length = b[1] & 0x7f;
      let at = 2;
      if (length === 126) {
        if (b.length < 4) return;
        length = b.readUInt16BE(2);
        at = 4;
      } else if (length === 127) {
        if (b.length < 10) return;
        length = Number(b.readBigUInt64BE(2));
        at = 10;
      }
      // Client frames are always masked.
      if (b.length < at + 4 + length) return;
      const mask = b.subarray(at, at + 4);
      const payload = Buffer.from(b.subarray(at + 4, at + 4 + length));
      for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
      this._buffer = b.subarray(at + 4 + length);
      if (opcode === 0x1) this._command(JSON.parse(String(payload)));
      if (opcode === 0x8) this.socket.end();
    }
  }

  _command(command) {
    const w = this._waiting.shift();
    if (w) {
      clearTimeout(w.timer);
      w.resolve(command);
    } else {
      this.commands.push(command);
    }
  }
}

/** A listening scripted server; `nextSocket()` resolves with each accepted WebSocket. */
export async function startScriptedServer() {
  const accepted = [];
  const waiting = [];
  const sockets = new Set();
  const server = createServer((_req, res) => res.writeHead(404).end());
  server.on("upgrade", (req, socket) => {
    const accept = createHash("sha1").update(req.headers["sec-websocket-key"] + GUID).digest("base64");
    socket.write(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
    );
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    const ws = new ScriptedSocket(socket);
    const w = waiting.shift();
    if (w) w(ws);
    else accepted.push(ws);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    wsUrl: `ws://127.0.0.1:${server.address().port}/ws`,
    /** The next accepted WebSocket (upper bound `timeout`). */
    nextSocket: (timeout = 10000) =>
      accepted.length > 0
        ? Promise.resolve(accepted.shift())
        : new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`no WebSocket within ${timeout} ms`)), timeout);
            waiting.push((ws) => {
              clearTimeout(timer);
              resolve(ws);
            });
          }),
    close: () =>
      new Promise((r) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => r());
      }),
  };
}
