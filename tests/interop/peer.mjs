#!/usr/bin/env node
// peer.mjs: the TypeScript side of the interop tests, as a plain-JS Node program.
//
// It speaks Redis through the very libraries a TypeScript service uses:
// ioredis, @graphql-yoga/redis-event-target (createRedisEventTarget) and
// @graphql-yoga/subscription (createPubSub). The Go tests run it as a
// subprocess; see README.md beside this file for the protocol.
//
//   node peer.mjs listen   --mode eventtarget --topic T [--prefix P] [--trace] --count N
//   node peer.mjs listen   --mode pubsub      --topic T [--id ID] [--prefix P] [--buffer B] --count N
//   node peer.mjs dispatch --mode eventtarget --topic T [--prefix P] [--detail JSON | --payload-hex HEX] [--trace] [--count N]
//   node peer.mjs dispatch --mode pubsub      --topic T [--id ID] [--prefix P] --payload JSON [--count N]
//   node peer.mjs raw      --channel C --body STRING
//
// The Redis server is taken from REDIS_URL (redis://127.0.0.1:PORT).
// stdout carries JSON lines only; diagnostics go to stderr.
// Exit codes: 0 done, 1 error (usage, Redis, uncaught exception), 2 timeout.
// listen also takes --timeout-ms MS (default 20000).
// --trace (eventtarget mode) continues or starts an OpenTelemetry trace
// through detail.metadata, W3C trace context, as a TypeScript service does
// with @opentelemetry/api, @opentelemetry/core and @opentelemetry/sdk-trace-base.

import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { createRedisEventTarget } from '@graphql-yoga/redis-event-target';
import { createPubSub } from '@graphql-yoga/subscription';
import { FixedBuffer } from '@repeaterjs/repeater';

const READY_POLL_MS = 10;
const READY_DEADLINE_MS = 10_000;
const DEFAULT_LISTEN_TIMEOUT_MS = 20_000;

const EXIT_OK = 0;
const EXIT_ERROR = 1;
const EXIT_TIMEOUT = 2;

class UsageError extends Error {}

function out(obj) {
  // stdout is synchronous for files and pipes on Linux, so a line written
  // here is not lost by a later process.exit.
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function fail(code, message) {
  process.stderr.write(`peer: ${message}\n`);
  process.exit(code);
}

// Anything thrown outside main's promise chain (for instance by the event
// target's JSON.parse inside ioredis's 'message' handler, or an un-awaited
// SUBSCRIBE that Redis refused) ends the process with a clear line on stderr.
process.on('uncaughtException', (err) => {
  fail(EXIT_ERROR, `uncaught exception: ${err && err.stack ? err.stack : err}`);
});
process.on('unhandledRejection', (err) => {
  fail(EXIT_ERROR, `unhandled rejection: ${err && err.stack ? err.stack : err}`);
});

function parseJSONArg(name, text) {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UsageError(`--${name} is not valid JSON: ${err.message}`);
  }
}

function parseCount(text, dflt) {
  if (text === undefined) {
    return dflt;
  }
  if (!/^\d+$/.test(text)) {
    throw new UsageError(`--count must be a non-negative integer, got ${JSON.stringify(text)}`);
  }
  return Number(text);
}

function parseCLI(argv) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      mode: { type: 'string' },
      topic: { type: 'string' },
      id: { type: 'string' },
      prefix: { type: 'string', default: '' },
      count: { type: 'string' },
      detail: { type: 'string' },
      payload: { type: 'string' },
      'payload-hex': { type: 'string' },
      channel: { type: 'string' },
      body: { type: 'string' },
      'timeout-ms': { type: 'string' },
      buffer: { type: 'string' },
      trace: { type: 'boolean', default: false },
    },
  });
  if (positionals.length !== 1) {
    throw new UsageError('expected exactly one command: listen, dispatch or raw');
  }
  const cmd = positionals[0];
  const opts = { cmd, ...values };
  if (cmd === 'raw') {
    if (opts.channel === undefined || opts.body === undefined) {
      throw new UsageError('raw needs --channel and --body');
    }
    return opts;
  }
  if (cmd !== 'listen' && cmd !== 'dispatch') {
    throw new UsageError(`unknown command ${JSON.stringify(cmd)}`);
  }
  if (opts.mode !== 'eventtarget' && opts.mode !== 'pubsub') {
    throw new UsageError('--mode must be eventtarget or pubsub');
  }
  if (opts.topic === undefined || opts.topic === '') {
    throw new UsageError('--topic is required');
  }
  if (opts.trace && opts.mode !== 'eventtarget') {
    throw new UsageError('--trace is for --mode eventtarget');
  }
  if (opts.mode === 'eventtarget' && opts.id !== undefined) {
    throw new UsageError('--id is for --mode pubsub; in eventtarget mode put it in --topic (type:id)');
  }
  if (cmd === 'listen') {
    if (opts.count === undefined) {
      throw new UsageError('listen needs --count');
    }
    opts.count = parseCount(opts.count);
    opts.timeoutMs = opts['timeout-ms'] === undefined
      ? DEFAULT_LISTEN_TIMEOUT_MS
      : parseCount(opts['timeout-ms']);
    if (opts.buffer !== undefined) {
      if (opts.mode !== 'pubsub') {
        throw new UsageError('--buffer is for listen --mode pubsub');
      }
      opts.buffer = parseCount(opts.buffer);
    }
  } else {
    opts.count = parseCount(opts.count, 1);
    if (opts.mode === 'eventtarget') {
      const hex = opts['payload-hex'];
      if (hex !== undefined) {
        if (opts.detail !== undefined) {
          throw new UsageError('--detail and --payload-hex exclude each other');
        }
        if (!/^([0-9a-f]{2})*$/.test(hex)) {
          throw new UsageError(`--payload-hex must be lowercase hex bytes, got ${JSON.stringify(hex)}`);
        }
        opts.detail = binaryDetail(opts.topic, Buffer.from(hex, 'hex'));
      } else if (opts.detail !== undefined) {
        opts.detail = parseJSONArg('detail', opts.detail);
      }
      opts.hasDetail = opts.detail !== undefined;
    } else {
      if (opts.payload === undefined) {
        throw new UsageError('dispatch --mode pubsub needs --payload');
      }
      opts.payload = parseJSONArg('payload', opts.payload);
    }
  }
  return opts;
}

// binaryDetail is the detail a TypeScript service dispatches to send bytes
// that are not JSON in the Go envelope: the payload as base64, marked by
// payload_encoding. type and id are the topic split at its first ':'.
function binaryDetail(topic, bytes) {
  const colon = topic.indexOf(':');
  return {
    type: colon < 0 ? topic : topic.slice(0, colon),
    id: colon < 0 ? undefined : topic.slice(colon + 1),
    payload: bytes.toString('base64'),
    payload_encoding: 'base64',
  };
}

// eventLine is what listen --mode eventtarget prints for an event: its type
// and detail and, when the detail carries a base64 payload, the bytes it
// decodes to as hex (payloadHex).
function eventLine(event) {
  const line = { type: event.type, detail: event.detail };
  const detail = event.detail;
  if (detail && detail.payload_encoding === 'base64' && typeof detail.payload === 'string') {
    line.payloadHex = Buffer.from(detail.payload, 'base64').toString('hex');
  }
  return line;
}

// startTracing loads OpenTelemetry (only for --trace, so that the other
// commands run without it) and returns what a TypeScript service does to
// carry a trace through the envelope's metadata: a tracer of an SDK
// TracerProvider (which makes real trace and span ids; no exporter is
// needed here) and the W3C trace context propagator.
async function startTracing() {
  const api = await import('@opentelemetry/api');
  const { W3CTraceContextPropagator } = await import('@opentelemetry/core');
  const { BasicTracerProvider } = await import('@opentelemetry/sdk-trace-base');
  const tracer = new BasicTracerProvider().getTracer('interop-peer');
  const propagator = new W3CTraceContextPropagator();
  return {
    // send starts a producer span and returns detail with the span's
    // context in detail.metadata (other metadata kept), and the span.
    send(channel, detail) {
      const span = tracer.startSpan(`send ${channel}`, { kind: api.SpanKind.PRODUCER });
      const metadata = { ...(detail && detail.metadata) };
      propagator.inject(api.trace.setSpan(api.ROOT_CONTEXT, span), metadata, api.defaultTextMapSetter);
      return { detail: { ...detail, metadata }, span };
    },
    // process continues the trace of a received detail: a consumer span
    // whose parent is the context in detail.metadata (none: a new trace).
    // It returns what the line reports: the span's trace id, its parent's
    // span id (null for a new trace) and its own span id.
    process(channel, detail) {
      const metadata = (detail && detail.metadata) || {};
      const parent = propagator.extract(api.ROOT_CONTEXT, metadata, api.defaultTextMapGetter);
      const span = tracer.startSpan(`process ${channel}`, { kind: api.SpanKind.CONSUMER }, parent);
      span.end();
      const remote = api.trace.getSpanContext(parent);
      return {
        traceId: span.spanContext().traceId,
        parentSpanId: remote ? remote.spanId : null,
        spanId: span.spanContext().spanId,
      };
    },
  };
}

function connect() {
  const url = process.env.REDIS_URL;
  if (!url) {
    throw new UsageError('REDIS_URL is not set (e.g. redis://127.0.0.1:6379)');
  }
  const options = {
    // A test peer fails fast instead of reconnecting forever.
    retryStrategy: () => null,
    maxRetriesPerRequest: 0,
    connectTimeout: 5000,
  };
  const publishClient = new Redis(url, options);
  const subscribeClient = new Redis(url, options);
  for (const [name, client] of [['publish', publishClient], ['subscribe', subscribeClient]]) {
    client.on('error', (err) => fail(EXIT_ERROR, `redis ${name} client: ${err.message}`));
  }
  return { publishClient, subscribeClient };
}

async function shutdown(clients, code) {
  const quitAll = Promise.allSettled([clients.publishClient.quit(), clients.subscribeClient.quit()]);
  await Promise.race([quitAll, new Promise((r) => setTimeout(r, 1000))]);
  process.exit(code);
}

// withPrefix maps every event type to prefix+type on the way to and from the
// wrapped event target. Neither createRedisEventTarget (3.0.4: options are
// publishClient, subscribeClient, serializer) nor createPubSub has a prefix
// option, so a TypeScript service that wants one wraps its event target
// like this. Received events keep the full channel as their type;
// createPubSub reads only event.detail.
function withPrefix(target, prefix) {
  if (!prefix) {
    return target;
  }
  return {
    addEventListener(type, listener, options) {
      target.addEventListener(prefix + type, listener, options);
    },
    removeEventListener(type, listener, options) {
      target.removeEventListener(prefix + type, listener, options);
    },
    dispatchEvent(event) {
      return target.dispatchEvent(new CustomEvent(prefix + event.type, { detail: event.detail }));
    },
  };
}

// waitSubscribed returns once Redis has processed the SUBSCRIBE that the
// event target sent (lazily, without exposing its promise) for channel.
//  1. PING on the subscribe connection: Redis answers commands of one
//     connection in order, so the PONG comes after the SUBSCRIBE's reply.
//  2. PUBSUB NUMSUB channel on the publish connection, polled every 10 ms,
//     must report at least one subscriber (10 s deadline).
async function waitSubscribed(clients, channel) {
  await clients.subscribeClient.ping();
  const deadline = Date.now() + READY_DEADLINE_MS;
  for (;;) {
    const reply = await clients.publishClient.pubsub('NUMSUB', channel);
    if (Number(reply[1]) >= 1) {
      return;
    }
    if (Date.now() >= deadline) {
      throw new Error(`PUBSUB NUMSUB ${channel} still 0 after ${READY_DEADLINE_MS} ms`);
    }
    await new Promise((r) => setTimeout(r, READY_POLL_MS));
  }
}

function armTimeout(opts, clients, received) {
  const timer = setTimeout(() => {
    process.stderr.write(
      `peer: timeout: received ${received()} of ${opts.count} events on ${opts.prefix}${opts.topic}` +
        `${opts.id !== undefined ? ':' + opts.id : ''} within ${opts.timeoutMs} ms\n`,
    );
    shutdown(clients, EXIT_TIMEOUT);
  }, opts.timeoutMs);
  timer.unref?.();
  return timer;
}

async function listenEventTarget(opts, clients) {
  const tracing = opts.trace ? await startTracing() : undefined;
  const eventTarget = createRedisEventTarget(clients);
  const channel = opts.prefix + opts.topic;
  let ready = false;
  let received = 0;
  const early = []; // events that beat the ready line are printed after it
  const timer = armTimeout(opts, clients, () => received);

  const emit = (line) => {
    if (received >= opts.count) {
      return; // extra events while shutting down are not printed
    }
    out(line);
    received++;
    if (received === opts.count) {
      clearTimeout(timer);
      shutdown(clients, EXIT_OK);
    }
  };
  eventTarget.addEventListener(channel, (event) => {
    const line = eventLine(event);
    if (tracing) {
      line.trace = tracing.process(channel, event.detail);
    }
    if (ready) {
      emit(line);
    } else {
      early.push(line);
    }
  });
  await waitSubscribed(clients, channel);
  out({ ready: true });
  ready = true;
  if (opts.count === 0) {
    clearTimeout(timer);
    return shutdown(clients, EXIT_OK);
  }
  for (const line of early.splice(0)) {
    emit(line);
  }
}

async function listenPubSub(opts, clients) {
  // Without a repeaterBuffer (graphql-yoga's default), more than 1024 events
  // that arrive before the consumer runs again (one burst read from the
  // socket) make the Repeater throw RepeaterOverflowError inside ioredis's
  // 'message' handler, which ends the process: that is what a TypeScript
  // service does too. --buffer B sets repeaterBuffer: new FixedBuffer(B).
  const pubsub = createPubSub({
    eventTarget: withPrefix(createRedisEventTarget(clients), opts.prefix),
    ...(opts.buffer ? { repeaterBuffer: new FixedBuffer(opts.buffer) } : {}),
  });
  // createPubSub forms the channel as `${topic}:${id}` when an id is given.
  const channel = opts.prefix + (opts.id === undefined ? opts.topic : `${opts.topic}:${opts.id}`);
  const iterable = opts.id === undefined ? pubsub.subscribe(opts.topic) : pubsub.subscribe(opts.topic, opts.id);
  const iterator = iterable[Symbol.asyncIterator]();
  let received = 0;
  const timer = armTimeout(opts, clients, () => received);

  // The Repeater behind subscribe() runs its executor (addEventListener, and
  // so the SUBSCRIBE) only on the first next(): start it before waiting.
  let pending = iterator.next();
  await waitSubscribed(clients, channel);
  out({ ready: true });
  while (received < opts.count) {
    const { value, done } = await pending;
    if (done) {
      throw new Error('pubsub iterator ended early');
    }
    out({ payload: value });
    received++;
    if (received < opts.count) {
      pending = iterator.next();
    }
  }
  clearTimeout(timer);
  await iterator.return?.();
  return shutdown(clients, EXIT_OK);
}

async function dispatchEventTarget(opts, clients) {
  const tracing = opts.trace ? await startTracing() : undefined;
  const eventTarget = createRedisEventTarget(clients);
  const channel = opts.prefix + opts.topic;
  for (let i = 0; i < opts.count; i++) {
    if (tracing) {
      const { detail, span } = tracing.send(channel, opts.hasDetail ? opts.detail : {});
      eventTarget.dispatchEvent(new CustomEvent(channel, { detail }));
      span.end();
      out({ trace: { traceId: span.spanContext().traceId, spanId: span.spanContext().spanId } });
      continue;
    }
    eventTarget.dispatchEvent(
      opts.hasDetail ? new CustomEvent(channel, { detail: opts.detail }) : new CustomEvent(channel),
    );
  }
  // The event target does not return PUBLISH's promise; a PING on the same
  // connection is answered after every PUBLISH before it.
  await clients.publishClient.ping();
  return shutdown(clients, EXIT_OK);
}

async function dispatchPubSub(opts, clients) {
  const pubsub = createPubSub({ eventTarget: withPrefix(createRedisEventTarget(clients), opts.prefix) });
  for (let i = 0; i < opts.count; i++) {
    if (opts.id === undefined) {
      pubsub.publish(opts.topic, opts.payload);
    } else {
      pubsub.publish(opts.topic, opts.id, opts.payload);
    }
  }
  await clients.publishClient.ping();
  return shutdown(clients, EXIT_OK);
}

async function raw(opts, clients) {
  const receivers = await clients.publishClient.publish(opts.channel, opts.body);
  out({ receivers });
  return shutdown(clients, EXIT_OK);
}

async function main() {
  let opts;
  try {
    opts = parseCLI(process.argv.slice(2));
  } catch (err) {
    fail(EXIT_ERROR, `usage: ${err.message}`);
  }
  const clients = connect();
  switch (`${opts.cmd}/${opts.mode ?? ''}`) {
    case 'listen/eventtarget':
      return listenEventTarget(opts, clients);
    case 'listen/pubsub':
      return listenPubSub(opts, clients);
    case 'dispatch/eventtarget':
      return dispatchEventTarget(opts, clients);
    case 'dispatch/pubsub':
      return dispatchPubSub(opts, clients);
    default:
      return raw(opts, clients);
  }
}

main().catch((err) => {
  if (err instanceof UsageError) {
    fail(EXIT_ERROR, `usage: ${err.message}`);
  }
  fail(EXIT_ERROR, err && err.stack ? err.stack : String(err));
});
