// Verifies every request receiver.js recorded with the Standard Webhooks library, once with
// each secret alone, and prints per phase (the payload's "phase") how many requests there
// were, how many carried two signatures, and how many each secret verified, as JSON. A copy
// of each request with its body changed must fail with both (a negative control).
// Usage: node verify.js FILE OLD_SECRET NEW_SECRET
"use strict";
const fs = require("fs");
const { Webhook } = require("standardwebhooks");

const [file, oldSecret, newSecret] = process.argv.slice(2);
const verifiers = { old: new Webhook(oldSecret), new: new Webhook(newSecret) };

// True when verifier accepts body with headers.
function verifies(verifier, body, headers) {
  try {
    verifier.verify(body, headers);
    return true;
  } catch (error) {
    return false;
  }
}

const phases = {};
for (const line of fs.readFileSync(file, "utf8").split("\n")) {
  if (!line) continue;
  const { address, headers, body } = JSON.parse(line);
  const phase = `${JSON.parse(body).payload.phase}@${address}`;
  const counts = (phases[phase] ??= { requests: 0, two_signatures: 0, old: 0, new: 0, tampered: 0 });
  counts.requests++;
  if (headers["webhook-signature"].split(" ").length === 2) counts.two_signatures++;
  for (const name of ["old", "new"]) {
    if (verifies(verifiers[name], body, headers)) counts[name]++;
    if (verifies(verifiers[name], body.replace("phase", "phasE"), headers)) counts.tampered++;
  }
}
console.log(JSON.stringify(phases));
