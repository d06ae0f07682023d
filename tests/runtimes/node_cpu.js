// An HTTP server whose handler burns HANDLER_MS of CPU on Node's one event loop: while it
// burns, nothing else runs, neither accept() nor the reads of connections already accepted.
// Usage: node node_cpu.js PORT HANDLER_MS
'use strict';
const http = require('http');

const port = Number(process.argv[2]);
const handlerMs = Number(process.argv[3]);

function burn(ms) {
  // A busy loop, not a timer: the point is CPU work that holds the event loop.
  const end = process.hrtime.bigint() + BigInt(Math.round(ms * 1e6));
  let x = 0;
  while (process.hrtime.bigint() < end) {
    x += 1;
  }
  return x;
}

http
  .createServer((req, res) => {
    burn(handlerMs);
    res.writeHead(200, { 'Content-Type': 'text/plain', Connection: 'close' });
    res.end('ok\n');
  })
  .listen({ host: '127.0.0.1', port, backlog: 511 });
