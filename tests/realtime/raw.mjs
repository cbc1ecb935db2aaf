// A frame-level WebSocket client (the `ws` package) for protocol tests: it sends exactly
// the frames it is told to and reports exactly what comes back, close codes included.
//
//   node raw.mjs --url ws://127.0.0.1:PORT/graphql/ws [--protocols '["graphql-transport-ws"]']
//                [--timeout-ms 60000]
//
// `--protocols` is a JSON array of subprotocols to offer; `[]` (the default) offers none.
// Commands arrive on stdin, one JSON object per line, and run in order:
//   {"send": {...}}            the value serialised as a JSON text frame
//   {"send": "raw text"}       a text frame with exactly this text
//   {"sendBinary": "aGk="}     a binary frame (base64)
//   {"close": {"code": 1000, "reason": "bye"}}
//   {"pauseReading": true}     stop reading from the TCP socket (a client that cannot keep up)
//   {"pauseReading": false}    read again
//   {"exit": true}             (stdin EOF does the same: close with 1000 if open, then exit)
// Everything observed is printed to stdout as one JSON line:
//   {"event":"upgrade","status":101,"protocol":"graphql-transport-ws"|null}
//   {"event":"unexpected-response","status":400,"body":"..."}
//   {"event":"open","protocol":"..."}
//   {"event":"message","json":{...}}    or {"event":"message","text":"..."} when not JSON
//                                        or {"event":"message","binary":"<base64>"}
//   {"event":"close","code":4400,"reason":"..."}
//   {"event":"error","message":"..."}
//   {"event":"timeout"}
// The process exits after the close event, or after --timeout-ms (exit code 2).

import WebSocket from 'ws';
import readline from 'node:readline';

function parseArgs(argv) {
  const args = { url: process.env.STEPWISE_WS_URL, protocols: [], timeoutMs: 60000 };
  for (let i = 2; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[++i];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    switch (flag) {
      case '--url': args.url = value; break;
      case '--protocols': args.protocols = JSON.parse(value); break;
      case '--timeout-ms': args.timeoutMs = Number(value); break;
      default: throw new Error(`unknown argument ${flag}`);
    }
  }
  if (!args.url) throw new Error('--url (or STEPWISE_WS_URL) is required');
  return args;
}

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

function finish(code) {
  // Let stdout drain before leaving.
  setTimeout(() => process.exit(code), 50);
}

const args = parseArgs(process.argv);
const socket = args.protocols.length
  ? new WebSocket(args.url, args.protocols, { maxPayload: 64 * 1024 * 1024 })
  : new WebSocket(args.url, { maxPayload: 64 * 1024 * 1024 });
let closed = false;
const pending = [];

socket.on('upgrade', (res) => {
  emit({ event: 'upgrade', status: res.statusCode, protocol: res.headers['sec-websocket-protocol'] ?? null });
});
socket.on('unexpected-response', (_req, res) => {
  let body = '';
  res.on('data', (chunk) => { body += chunk; });
  res.on('end', () => {
    emit({ event: 'unexpected-response', status: res.statusCode, body });
    closed = true;
    finish(0);
  });
});
socket.on('open', () => {
  emit({ event: 'open', protocol: socket.protocol || null });
  while (pending.length) run(pending.shift());
});
socket.on('message', (data, isBinary) => {
  if (isBinary) {
    emit({ event: 'message', binary: Buffer.from(data).toString('base64') });
    return;
  }
  const text = data.toString('utf8');
  try {
    emit({ event: 'message', json: JSON.parse(text) });
  } catch {
    emit({ event: 'message', text });
  }
});
socket.on('close', (code, reason) => {
  emit({ event: 'close', code, reason: reason.toString('utf8') });
  closed = true;
  finish(0);
});
socket.on('error', (err) => {
  emit({ event: 'error', message: err.message });
  // A failed handshake never emits `close` with a code from the server.
  if (socket.readyState !== WebSocket.OPEN && socket.readyState !== WebSocket.CLOSING) {
    setTimeout(() => {
      if (!closed) {
        closed = true;
        finish(0);
      }
    }, 200);
  }
});

function run(command) {
  if (closed) return;
  if (socket.readyState === WebSocket.CONNECTING) {
    pending.push(command);
    return;
  }
  if ('send' in command) {
    const frame = typeof command.send === 'string' ? command.send : JSON.stringify(command.send);
    socket.send(frame, { binary: false }, (err) => {
      if (err) emit({ event: 'send-error', message: err.message });
    });
  } else if ('sendBinary' in command) {
    socket.send(Buffer.from(command.sendBinary, 'base64'), { binary: true }, (err) => {
      if (err) emit({ event: 'send-error', message: err.message });
    });
  } else if ('pauseReading' in command) {
    // ws keeps the net.Socket private; pausing it stops reading, so the server's writes
    // back up exactly as with a client on a congested link.
    if (command.pauseReading) socket._socket.pause();
    else socket._socket.resume();
  } else if ('close' in command) {
    const { code = 1000, reason = '' } = command.close ?? {};
    socket.close(code, reason);
  } else if ('exit' in command) {
    leave();
  } else {
    emit({ event: 'bad-command', command });
  }
}

function leave() {
  if (closed) return;
  if (socket.readyState === WebSocket.OPEN) {
    socket.close(1000, 'client done');
    // If the server never answers the close frame, give up after a moment.
    setTimeout(() => finish(0), 2000);
  } else {
    finish(0);
  }
}

setTimeout(() => {
  emit({ event: 'timeout' });
  finish(2);
}, args.timeoutMs);

const input = readline.createInterface({ input: process.stdin });
input.on('line', (line) => {
  if (!line.trim()) return;
  try {
    run(JSON.parse(line));
  } catch (err) {
    emit({ event: 'bad-command', line, message: String(err) });
  }
});
input.on('close', leave);
