// A GraphQL client over Server-Sent Events built on graphql-sse's own client (not ours),
// driven by the Rust integration tests: an independent check that Stepwise speaks the
// graphql-sse protocol, in distinct connections mode or (with --single) single connection
// mode.
//
//   node sse.mjs --url http://127.0.0.1:PORT/graphql/stream [--token JWT] [--single]
//                [--timeout-ms 60000] [--op '{"id":"a","query":"...","variables":{}}'] ...
//
// Each `--op` is subscribed at once. More commands may arrive on stdin, one JSON object
// per line:
//   {"subscribe": {"id": "b", "query": "...", "variables": {...}}}
//   {"unsubscribe": "b"}
//   {"exit": true}                      (stdin EOF does the same: dispose and exit 0)
//
// Every event is printed to stdout as one JSON line, in the shape tests/realtime/client.mjs
// uses, so the same Rust harness reads both:
//   {"event":"next","op":"a","payload":{"data":...,"errors":...}}
//   {"event":"error","op":"a","message":"...","status":429}   (status: a refused request)
//   {"event":"complete","op":"a"}
//   {"event":"timeout"}

import { createClient } from 'graphql-sse';
import readline from 'node:readline';

function parseArgs(argv) {
  const args = { url: undefined, token: undefined, single: false, timeoutMs: 60000, ops: [] };
  for (let i = 2; i < argv.length; i++) {
    const flag = argv[i];
    if (flag === '--single') {
      args.single = true;
      continue;
    }
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
  if (!args.url) throw new Error('--url is required');
  return args;
}

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

const args = parseArgs(process.argv);
let exiting = false;

const client = createClient({
  url: args.url,
  singleConnection: args.single,
  headers: args.token ? { authorization: `Bearer ${args.token}` } : {},
  // The tests want to see every failure, not the client's retries.
  retryAttempts: 0,
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
        emit({
          event: 'error',
          op: op.id,
          message: err instanceof Error ? err.message : String(err),
          status: err?.response?.status ?? null,
        });
      },
      complete: () => {
        active.delete(op.id);
        emit({ event: 'complete', op: op.id });
      },
    },
  );
  active.set(op.id, dispose);
}

function exit(code) {
  if (exiting) return;
  exiting = true;
  for (const dispose of active.values()) dispose();
  client.dispose();
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
