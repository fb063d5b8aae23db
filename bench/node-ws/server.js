// A per-room WebSocket broadcast server on the `ws` package: the Node peer bench/fanout.sh
// compares liveshard with. It speaks the benchmark's minimal protocol:
//   GET /ws?room=R[&token=T] upgrades (the token is accepted and not checked);
//   {"type":"danmaku","text":...} is parsed, stamped and re-encoded ONCE, then sent to every
//   client in the room, the sender included; {"type":"ping"} gets {"type":"pong"}.
// Node runs JavaScript on one thread: this is the usual single-process deployment (rooms
// cannot span `cluster` workers without an external broker).
// Usage: node server.js [--addr 127.0.0.1:0]; prints "node-ws ready http=ADDR" when listening.
'use strict';
const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

let addr = '127.0.0.1:0';
for (let i = 2; i < process.argv.length; i++) {
  if (process.argv[i] === '--addr') addr = process.argv[++i];
}
const [host, port] = [addr.slice(0, addr.lastIndexOf(':')), Number(addr.slice(addr.lastIndexOf(':') + 1))];

const rooms = new Map(); // room id -> Set of sockets
let nextId = 1;

const server = http.createServer((req, res) => {
  res.writeHead(404);
  res.end();
});
// perMessageDeflate off: compression would be a different benchmark (and ws's default is off).
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });

server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://x');
  const room = url.searchParams.get('room');
  if (url.pathname !== '/ws' || !room || room.length > 64) {
    socket.destroy();
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    socket.setNoDelay(true);
    const uid = 'u' + nextId++;
    let set = rooms.get(room);
    if (!set) rooms.set(room, (set = new Set()));
    set.add(ws);
    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      let v;
      try {
        v = JSON.parse(data.toString());
      } catch (e) {
        return;
      }
      if (v.type === 'danmaku') {
        const out = JSON.stringify({ type: 'danmaku', room, uid, text: v.text, ts: Date.now() });
        for (const c of set) {
          if (c.readyState === WebSocket.OPEN) c.send(out);
        }
      } else if (v.type === 'ping') {
        ws.send('{"type":"pong"}');
      }
    });
    ws.on('close', () => {
      set.delete(ws);
      if (set.size === 0) rooms.delete(room);
    });
    ws.on('error', () => {});
  });
});

server.listen(port, host, () => {
  const a = server.address();
  console.log(`node-ws ready http=${a.address}:${a.port}`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
