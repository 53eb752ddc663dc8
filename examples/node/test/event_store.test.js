'use strict';
// Tests of event_store.js against a real amebo database (direct or through pgbouncer),
// taken from the PG* environment variables. Run: npm ci && npm test
// With AMEBO_BOUNCER_ONE_DATABASE set (a pgbouncer pool of one server connection on the same
// PGHOST/PGPORT) it also shows why named (prepared) queries must not go through pgbouncer.

const test = require('node:test');
const assert = require('node:assert/strict');
const { randomUUID } = require('node:crypto');
const { Client, Pool } = require('pg');
const {
  ConcurrencyError, DuplicateEventError, appendEvent, appendEvents, readStream, appendWithRetry,
  consumeAll,
} = require('../event_store');

const pool = new Pool({ max: 4 });
test.after(() => pool.end());

// A new stream name in category "account".
function newStream() {
  return `account-${randomUUID()}`;
}

// The balance of an account stream: the sum of its deposits.
function balance(events) {
  return events
    .filter((e) => e.action === 'account.deposited')
    .reduce((sum, e) => sum + e.payload.amount, 0);
}

test('append and read a stream', async () => {
  const stream = newStream();
  assert.equal(await appendEvent(pool, stream,
    { action: 'account.opened', payload: { owner: 'ada' } }, 0), 1);
  const version = await appendEvents(pool, stream, [
    { action: 'account.deposited', payload: { amount: 10 }, metadata: { by: 'teller' } },
    { action: 'account.deposited', payload: { amount: 5 } },
  ], 1);
  assert.equal(version, 3);
  const events = await readStream(pool, stream);
  assert.deepEqual(events.map((e) => [e.version, e.action]),
    [[1, 'account.opened'], [2, 'account.deposited'], [3, 'account.deposited']]);
  assert.deepEqual(events[1].metadata, { by: 'teller' });
  assert.equal(balance(events), 15);
  assert.ok(events[0].position < events[1].position);
  assert.deepEqual((await readStream(pool, stream, 2)).map((e) => e.version), [3]);
});

test('a stale expected version raises ConcurrencyError (AM001)', async () => {
  const stream = newStream();
  await appendEvent(pool, stream, { action: 'account.opened', payload: {} }, 0);
  await assert.rejects(
    appendEvent(pool, stream, { action: 'account.opened', payload: {} }, 0),
    (error) => error instanceof ConcurrencyError && error.code === 'AM001'
      && error.stream === stream && /actual version 1/.test(error.message));
  await assert.rejects(
    appendEvents(pool, stream, [{ action: 'account.deposited', payload: { amount: 1 } }], 5),
    ConcurrencyError);
  assert.equal((await readStream(pool, stream)).length, 1);
});

test('appendWithRetry decides again with the fresh version after a conflict', async () => {
  const stream = newStream();
  await appendEvent(pool, stream, { action: 'account.opened', payload: {} }, 0);
  const other = new Client();
  await other.connect();
  try {
    let raced = false;
    // Decides a deposit of 7 unless the balance already reached 10; on its first call a
    // concurrent writer deposits 5 after the read, so the first append must conflict.
    const decide = async (events) => {
      if (!raced) {
        raced = true;
        const result = await appendWithRetry(other, stream,
          () => [{ action: 'account.deposited', payload: { amount: 5 } }]);
        assert.deepEqual(result, { version: 2, attempts: 1 });
      }
      return balance(events) >= 10 ? [] : [{ action: 'account.deposited', payload: { amount: 7 } }];
    };
    const result = await appendWithRetry(pool, stream, decide);
    assert.deepEqual(result, { version: 3, attempts: 2 });
    const events = await readStream(pool, stream);
    assert.deepEqual(events.map((e) => e.payload.amount ?? null), [null, 5, 7]);
    await assert.rejects(appendWithRetry(pool, stream, async () => {
      await appendEvent(other, stream, { action: 'account.deposited', payload: { amount: 1 } });
      return [{ action: 'account.deposited', payload: { amount: 1 } }];
    }, 3), ConcurrencyError);
    assert.equal((await readStream(pool, stream)).length, 6);
  } finally {
    await other.end();
  }
});

test('a retry with the same event_id returns the stored version and writes nothing', async () => {
  const stream = newStream();
  const opened = { action: 'account.opened', payload: { owner: 'bob' }, eventId: randomUUID() };
  assert.equal(await appendEvent(pool, stream, opened, 0), 1);
  assert.equal(await appendEvent(pool, stream, opened, 0), 1);
  const batch = [
    { action: 'account.deposited', payload: { amount: 3 }, eventId: randomUUID() },
    { action: 'account.deposited', payload: { amount: 4 }, eventId: randomUUID() },
  ];
  assert.equal(await appendEvents(pool, stream, batch, 1), 3);
  assert.equal(await appendEvents(pool, stream, batch, 1), 3);
  const events = await readStream(pool, stream);
  assert.deepEqual(events.map((e) => e.eventId), [opened.eventId, ...batch.map((e) => e.eventId)]);
  await assert.rejects(
    appendEvent(pool, stream, { ...opened, payload: { owner: 'eve' } }),
    (error) => error instanceof DuplicateEventError && error.code === 'AM002');
  assert.equal((await readStream(pool, stream)).length, 3);
});

test('through pgbouncer, named (prepared) queries of two clients collide',
  { skip: !process.env.AMEBO_BOUNCER_ONE_DATABASE && 'needs AMEBO_BOUNCER_ONE_DATABASE' },
  async () => {
    const database = process.env.AMEBO_BOUNCER_ONE_DATABASE;
    const clients = [new Client({ database }), new Client({ database })];
    await Promise.all(clients.map((c) => c.connect()));
    try {
      await clients[0].query('DEALLOCATE ALL');
      const named = (text) => ({ name: 'stream_version', text, values: [newStream()] });
      await clients[0].query(named('SELECT amebo.stream_version($1)'));
      await assert.rejects(clients[1].query(named('SELECT amebo.stream_version($1) + 0')),
        (error) => error.code === '42P05');
      const unnamed = await clients[1].query('SELECT amebo.stream_version($1) + 0 AS v',
        [newStream()]);
      assert.equal(unnamed.rows[0].v, '0');
      await clients[0].query('DEALLOCATE ALL');
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
  });

test('a pull consumer handles each event once, in its transaction', async () => {
  const consumer = `node-${randomUUID().slice(0, 8)}`;
  await pool.query("SELECT amebo.create_consumer($1, ARRAY['account.deposited'])", [consumer]);
  await pool.query('SELECT amebo.reset_consumer($1, (SELECT coalesce(max(position), 0) FROM amebo.events))',
    [consumer]);
  const stream = newStream();
  await appendEvents(pool, stream, [
    { action: 'account.opened', payload: {} },
    { action: 'account.deposited', payload: { amount: 10 } },
    { action: 'account.deposited', payload: { amount: 5 } },
  ], 0);
  const seen = [];
  // A failing handler rolls its batch back: the events are due again at once.
  await assert.rejects(consumeAll(pool, consumer, 0, () => { throw new Error('boom'); }), /boom/);
  assert.equal(await consumeAll(pool, consumer, 0, async (event, client) => {
    await client.query('SELECT 1');
    seen.push([event.stream, event.version, event.attempt]);
  }), 2);
  assert.deepEqual(seen, [[stream, 2, 1], [stream, 3, 1]]);
  assert.equal(await consumeAll(pool, consumer, 0, () => {}), 0);
  await pool.query('SELECT amebo.drop_consumer($1)', [consumer]);
});
