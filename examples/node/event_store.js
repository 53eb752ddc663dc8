'use strict';
// Appending to and reading amebo event streams from Node.js with pg. Every function takes a
// pg Client or Pool (anything with query()). Queries are unnamed, so nothing is prepared on
// the server and the code works through pgbouncer in transaction mode.

const { randomUUID } = require('node:crypto');

// The stream was not at the expected version (amebo's SQLSTATE AM001).
class ConcurrencyError extends Error {
  constructor(stream, expectedVersion, cause) {
    super(`${cause.message} (${cause.detail})`);
    this.name = 'ConcurrencyError';
    this.code = cause.code;
    this.stream = stream;
    this.expectedVersion = expectedVersion;
  }
}

// An event_id stored already with other content, or a batch partly stored (AM002).
class DuplicateEventError extends Error {
  constructor(cause) {
    super(cause.message);
    this.name = 'DuplicateEventError';
    this.code = cause.code;
  }
}

// Turns amebo's SQLSTATEs into this module's errors; returns other errors as they are.
function translateError(error, stream, expectedVersion) {
  if (error.code === 'AM001') return new ConcurrencyError(stream, expectedVersion, error);
  if (error.code === 'AM002') return new DuplicateEventError(error);
  return error;
}

// Versions and positions are bigint; pg returns them as strings. Streams stay far below
// 2^53 events, so numbers are safe here.
function toNumber(value) {
  return value === null ? null : Number(value);
}

// Appends one event ({action, payload, metadata?, eventId?}) at expectedVersion (null: any)
// and returns the stream's new version. Re-sending an event with the same eventId returns
// the version it was stored at and writes nothing.
async function appendEvent(db, stream, event, expectedVersion = null) {
  try {
    const result = await db.query(
      'SELECT amebo.append_event($1, $2, $3, $4, $5, $6) AS version',
      [stream, event.action, event.payload, expectedVersion, event.metadata ?? null,
        event.eventId ?? null]);
    return toNumber(result.rows[0].version);
  } catch (error) {
    throw translateError(error, stream, expectedVersion);
  }
}

// Appends several events atomically at consecutive versions; returns the last one's version.
async function appendEvents(db, stream, events, expectedVersion = null) {
  const batch = events.map((e) => ({
    action: e.action,
    payload: e.payload,
    ...(e.metadata ? { metadata: e.metadata } : {}),
    ...(e.eventId ? { event_id: e.eventId } : {}),
  }));
  try {
    const result = await db.query('SELECT amebo.append_events($1, $2::jsonb, $3) AS version',
      [stream, JSON.stringify(batch), expectedVersion]);
    return toNumber(result.rows[0].version);
  } catch (error) {
    throw translateError(error, stream, expectedVersion);
  }
}

// The stream's events after afterVersion, in version order.
async function readStream(db, stream, afterVersion = 0) {
  const result = await db.query(
    'SELECT position, event_id, stream, version, action, payload, metadata, recorded_at'
    + ' FROM amebo.read_stream($1, $2)', [stream, afterVersion]);
  return result.rows.map((row) => ({
    position: toNumber(row.position),
    eventId: row.event_id,
    stream: row.stream,
    version: toNumber(row.version),
    action: row.action,
    payload: row.payload,
    metadata: row.metadata,
    recordedAt: row.recorded_at,
  }));
}

// Runs a command on a stream with optimistic concurrency: reads the stream, asks
// decide(events, version) for the new events, and appends them at that version; on a
// version conflict it reads again and decides again, up to maxAttempts times. The events'
// ids are fixed per attempt. Returns {version, attempts}.
async function appendWithRetry(db, stream, decide, maxAttempts = 5) {
  for (let attempt = 1; ; attempt++) {
    const events = await readStream(db, stream);
    const version = events.length ? events[events.length - 1].version : 0;
    const decided = (await decide(events, version))
      .map((e) => ({ eventId: randomUUID(), ...e }));
    try {
      return { version: await appendEvents(db, stream, decided, version), attempts: attempt };
    } catch (error) {
      if (!(error instanceof ConcurrencyError) || attempt >= maxAttempts) throw error;
    }
  }
}

// One batch of a pull consumer in one transaction on a pool client: leases up to maxCount
// events of the member (amebo.poll), awaits handle(event, client) for each in order, and
// acknowledges them (amebo.ack), so that the handler's writes on client commit with the
// ack or roll back with it. Returns how many events it handled (0: nothing due).
async function consumeBatch(pool, consumer, member, handle, maxCount = 100) {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await client.query(
      'SELECT event_id, stream, version, action, payload, attempt FROM amebo.poll($1, $2, $3)',
      [consumer, member, maxCount]);
    for (const row of result.rows) {
      await handle({ ...row, version: toNumber(row.version) }, client);
    }
    if (result.rows.length > 0) {
      await client.query('SELECT amebo.ack($1, $2, $3::uuid[])',
        [consumer, member, result.rows.map((row) => row.event_id)]);
    }
    await client.query('COMMIT');
    return result.rows.length;
  } catch (error) {
    await client.query('ROLLBACK');
    throw error;
  } finally {
    client.release();
  }
}

// Handles batches until nothing is due: the short loop a worker runs when woken (by a
// LISTEN amebo_consumer notification on a connection of its own, or a timer).
async function consumeAll(pool, consumer, member, handle) {
  let total = 0;
  for (let handled; (handled = await consumeBatch(pool, consumer, member, handle)) > 0;) {
    total += handled;
  }
  return total;
}

module.exports = {
  ConcurrencyError,
  DuplicateEventError,
  appendEvent,
  appendEvents,
  readStream,
  appendWithRetry,
  consumeBatch,
  consumeAll,
};
