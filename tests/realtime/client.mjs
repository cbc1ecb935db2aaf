// A GraphQL subscriber built on graphql-ws's own client (not ours), driven by the Rust
// integration tests: an independent check that Stepwise speaks graphql-transport-ws.
//
//   node client.mjs --url ws://127.0.0.1:PORT/graphql/ws [--token JWT] [--timeout-ms 60000]
//                   [--op '{"id":"a","query":"subscription { ... }","variables":{}}'] ...
//
// Each `--op` is subscribed on the one connection the client opens. More commands may
// arrive on stdin, one JSON object per line:
//   {"subscribe": {"id": "b", "query": "...", "variables": {...}}}
//   {"unsubscribe": "b"}
//   {"exit": true}                      (stdin EOF does the same: dispose and exit 0)
//
// Every event is printed to stdout as one JSON line:
//   {"event":"connecting"} {"event":"opened"} {"event":"connected","payload":...}
//   {"event":"next","op":"a","payload":{"data":...,"errors":...}}
//   {"event":"error","op":"a","errors":[...]}            (the server's `error` message)
//   {"event":"error","op":"a","close":{"code":4403,"reason":"..."}}
//   {"event":"error","op":"a","message":"..."}            (any other failure)
//   {"event":"complete","op":"a"}
//   {"event":"closed","code":1000,"reason":"..."}
//   {"event":"timeout"}
// The process exits once stdin is closed, or after --timeout-ms (exit code 2).

import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import readline from 'node:readline';

function parseArgs(argv) {
  const args = { url: process.env.STEPWISE_WS_URL, token: process.env.STEPWISE_TOKEN, timeoutMs: 60000, ops: [] };
  for (let i = 2; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[++i];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    switch (flag) {
      case '--url': args.url = value; break;
      case '--token': args.token = value; break;
      case '--timeout-ms': args.timeoutMs = Number(value); break;
      case '--op': args.ops.push(JSON.parse(value)); break;
      default: throw new Error(`unknown argument ${flag}`);
    }
  }
  if (!args.url) throw new Error('--url (or STEPWISE_WS_URL) is required');
  return args;
}

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

function describeError(err) {
  if (Array.isArray(err)) return { errors: err };
  if (err && typeof err === 'object' && 'code' in err && 'reason' in err) {
    return { close: { code: err.code, reason: String(err.reason ?? '') } };
  }
  if (err && typeof err === 'object' && err.type === 'close') {
    return { close: { code: err.code, reason: String(err.reason ?? '') } };
  }
  return { message: err instanceof Error ? err.message : String(err) };
}

const args = parseArgs(process.argv);
let exiting = false;

const client = createClient({
  url: args.url,
  webSocketImpl: WebSocket,
  connectionParams: args.token ? { token: args.token } : {},
  lazy: false,
  retryAttempts: 0,
  shouldRetry: () => false,
  onNonLazyError: (err) => emit({ event: 'connection-error', ...describeError(err) }),
  on: {
    connecting: () => emit({ event: 'connecting' }),
    opened: () => emit({ event: 'opened' }),
    connected: (_socket, payload) => emit({ event: 'connected', payload: payload ?? null }),
    closed: (ev) => emit({ event: 'closed', code: ev?.code ?? null, reason: String(ev?.reason ?? '') }),
  },
});

const active = new Map();

function subscribe(op) {
  if (!op || typeof op.id !== 'string' || typeof op.query !== 'string') {
    emit({ event: 'bad-command', command: op ?? null });
    return;
  }
  const dispose = client.subscribe(
    { query: op.query, variables: op.variables ?? {}, operationName: op.operationName },
    {
      next: (payload) => emit({ event: 'next', op: op.id, payload }),
      error: (err) => {
        active.delete(op.id);
        emit({ event: 'error', op: op.id, ...describeError(err) });
      },
      complete: () => {
        active.delete(op.id);
        emit({ event: 'complete', op: op.id });
      },
    },
  );
  active.set(op.id, dispose);
}

async function exit(code) {
  if (exiting) return;
  exiting = true;
  try {
    await client.dispose();
  } catch (err) {
    emit({ event: 'dispose-error', message: String(err) });
  }
  // Let the close frame go out and stdout drain.
  setTimeout(() => process.exit(code), 100);
}

for (const op of args.ops) subscribe(op);

setTimeout(() => {
  emit({ event: 'timeout' });
  exit(2);
}, args.timeoutMs);

const input = readline.createInterface({ input: process.stdin });
input.on('line', (line) => {
  if (!line.trim()) return;
  let command;
  try {
    command = JSON.parse(line);
  } catch {
    emit({ event: 'bad-command', line });
    return;
  }
  if (command.subscribe) subscribe(command.subscribe);
  else if (command.unsubscribe !== undefined) {
    const dispose = active.get(command.unsubscribe);
    active.delete(command.unsubscribe);
    if (dispose) dispose();
    emit({ event: 'unsubscribed', id: command.unsubscribe });
  } else if (command.exit) exit(0);
  else emit({ event: 'bad-command', command });
});
input.on('close', () => exit(0));
