// A webhook receiver for test/scripts/webhook_security.sh: answers 200 to every POST and
// appends {host, headers, body} of each as one JSON line to the file given as argv[2].
// Listens on each address given after the port: node receiver.js FILE PORT ADDRESS...
"use strict";
const fs = require("fs");
const http = require("http");

const [file, port, ...addresses] = process.argv.slice(2);
const out = fs.openSync(file, "a");

// Records one request and answers it.
function receive(address, request, response) {
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", () => {
    const body = Buffer.concat(chunks).toString("utf8");
    fs.writeSync(out, JSON.stringify({ address, headers: request.headers, body }) + "\n");
    response.writeHead(200, { "content-type": "text/plain" });
    response.end("ok");
  });
}

for (const address of addresses) {
  http
    .createServer((request, response) => receive(address, request, response))
    .listen(Number(port), address, () => console.log(`listening on ${address}:${port}`));
}
