// Node `ws` peer for the permessage-deflate interop tests (see peer.py for
// the command line): `peer.js client URL MODE` or `peer.js server MODE`.
'use strict';
const WebSocket = require('ws');

const [role, a, b] = process.argv.slice(2);
const mode = role === 'client' ? b : a;
const nct = mode === 'no-takeover';
// `takeover` leaves the library's defaults (it accepts what the other side
// asks); `no-takeover` asks for none in either direction.
const deflate = nct
  ? { serverNoContextTakeover: true, clientNoContextTakeover: true, threshold: 0 }
  : { threshold: 0 };

function messages() {
  const rows = [];
  for (let i = 0; i < 3000; i++) rows.push({ id: i, room: 'lobby', text: `hello ${i % 17}` });
  const big = JSON.stringify(rows);
  return [big, 'short', Buffer.from(big), big.slice(0, 5000), big];
}

if (role === 'client') {
  const ws = new WebSocket(a, { perMessageDeflate: deflate });
  const queue = messages();
  let current;
  const next = () => {
    current = queue.shift();
    if (current === undefined) return ws.close(1000);
    ws.send(current);
  };
  ws.on('upgrade', (res) => console.log(res.headers['sec-websocket-extensions'] || ''));
  ws.on('open', next);
  ws.on('message', (data, isBinary) => {
    const same = isBinary ? Buffer.compare(data, current) === 0 : data.toString() === current;
    if (!same) { console.error(`echo mismatch for a message of ${current.length}`); process.exit(1); }
    next();
  });
  ws.on('close', () => process.exit(queue.length === 0 ? 0 : 1));
  ws.on('error', (e) => { console.error(e.message); process.exit(1); });
} else {
  const wss = new WebSocket.Server({ host: '127.0.0.1', port: 0, perMessageDeflate: deflate });
  wss.on('listening', () => console.log(wss.address().port));
  wss.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));
  setTimeout(() => process.exit(0), 120000);
}
