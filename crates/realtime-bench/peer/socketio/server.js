'use strict';
// Socket.IO 4 peer for realtime-bench: a plain Node http server with Socket.IO
// attached, tuned for a fair comparison (WebSocket only, no compression).
//
//   PORT=0 node server.js   ->  prints `listening 127.0.0.1:<port>` once ready
//
// Clients connect to ws://HOST/socket.io/?EIO=4&transport=websocket[&room=NAME].
// POST /publish[?room=NAME] with a JSON body emits it as event `message` to
// every socket (or to the room) and answers {"delivered":N}.

const http = require('http');
const { Server } = require('socket.io');

const HOST = '127.0.0.1';
const PORT = Number.parseInt(process.env.PORT || '0', 10) || 0;

function reply(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

const httpServer = http.createServer();

const io = new Server(httpServer, {
  transports: ['websocket'],
  perMessageDeflate: false,
  httpCompression: false,
  serveClient: false,
  pingInterval: 25000,
  pingTimeout: 20000,
  maxHttpBufferSize: 1e6,
});

io.on('connection', (socket) => {
  const room = socket.handshake.query.room;
  if (typeof room === 'string' && room !== '') {
    socket.join(room);
  }
});

function publish(req, res, url) {
  const chunks = [];
  let size = 0;
  req.on('data', (chunk) => {
    chunks.push(chunk);
    size += chunk.length;
  });
  req.on('error', () => {
    if (!res.headersSent) reply(res, 400, { error: 'request body could not be read' });
  });
  req.on('end', () => {
    let message;
    try {
      const raw = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size);
      message = JSON.parse(raw.toString('utf8'));
    } catch (err) {
      reply(res, 400, { error: 'invalid JSON body' });
      return;
    }
    const room = url.searchParams.get('room');
    let delivered;
    if (room) {
      delivered = io.sockets.adapter.rooms.get(room)?.size ?? 0;
      io.to(room).emit('message', message);
    } else {
      delivered = io.engine.clientsCount;
      io.emit('message', message);
    }
    reply(res, 200, { delivered });
  });
}

// Socket.IO registers its own `request` listener for /socket.io/ first and
// handles those requests; everything else arrives here.
httpServer.on('request', (req, res) => {
  if (req.url.startsWith('/socket.io/')) return;
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname === '/publish') {
    if (req.method !== 'POST') {
      reply(res, 405, { error: 'method not allowed; use POST' });
      return;
    }
    publish(req, res, url);
    return;
  }
  reply(res, 404, { error: 'not found' });
});

httpServer.listen(PORT, HOST, () => {
  const { port } = httpServer.address();
  process.stdout.write(`listening ${HOST}:${port}\n`);
});

let stopping = false;
function shutdown() {
  if (stopping) return;
  stopping = true;
  // io.close() disconnects every socket and closes the http server.
  io.close(() => process.exit(0));
  // Do not wait on lingering keep-alive connections.
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
