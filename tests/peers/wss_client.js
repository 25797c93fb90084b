// A Node `ws` client over wss:// for the peer test.
//
// Usage: node wss_client.js URL CA_FILE
// Trusts only CA_FILE (host name checked), sends a text and a binary
// message, expects both echoed unchanged, closes with 1000. Exits 0 on
// success, 1 with a message otherwise.
'use strict';
const fs = require('fs');
const WebSocket = require('ws');

const [url, caFile] = process.argv.slice(2);
const expected = ['hello from node', Buffer.alloc(16384, 7)];
const fail = (why) => {
  console.error(`node wss client failed: ${why}`);
  process.exit(1);
};
setTimeout(() => fail('timed out'), 20000).unref();

const ws = new WebSocket(url, { ca: fs.readFileSync(caFile) });
let next = 0;
ws.on('open', () => ws.send(expected[0]));
ws.on('message', (data, isBinary) => {
  const want = expected[next];
  const same = isBinary ? Buffer.compare(data, want) === 0 : data.toString() === want;
  if (!same) fail(`echo ${next} differs`);
  next += 1;
  if (next < expected.length) ws.send(expected[next]);
  else ws.close(1000);
});
ws.on('close', (code) => {
  if (next !== expected.length || code !== 1000) fail(`closed early: ${code}`);
  console.log('ok');
  process.exit(0);
});
ws.on('error', (e) => fail(e.message));
