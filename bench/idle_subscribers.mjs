// Idle-subscriber footprint and GraphQL resolutions per event (issue 16, S1), against a
// running server: N graphql-transport-ws subscribers of one company's `runsUpdated` (the
// same operation text, one token), then K runs started.
//
//   node bench/idle_subscribers.mjs --url http://127.0.0.1:8080 --pid <server pid> [--subscribers 2000] [--events 10] [--distinct]
//
// --distinct gives each subscriber its own `workflowId` variable (no sharing possible).
// Reports the server's RSS (VmRSS) before and with the subscribers idle, and the change of
// `stepwise_subscription_resolutions_total` (absent on servers without it: then
// `stepwise_events_delivered_total`, counted once per subscriber and event there) per event.
// Uses the `ws` package of tests/realtime (run `npm ci` there first).
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';

const require = createRequire(new URL('../tests/realtime/package.json', import.meta.url));
const WebSocket = require('ws');

const args = process.argv.slice(2);
const arg = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const base = arg('url', 'http://127.0.0.1:8080');
const pid = arg('pid');
const subscribers = Number(arg('subscribers', '2000'));
const events = Number(arg('events', '10'));
const distinct = args.includes('--distinct');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const rss = () => {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]) * 1024;
};

async function gql(query, variables, token) {
  const res = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  const body = await res.json();
  if (body.errors) throw new Error(JSON.stringify(body.errors));
  return body.data;
}

async function metric(name) {
  const text = await (await fetch(`${base}/metrics`)).text();
  let sum = null;
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || !line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (!(rest.startsWith(' ') || rest.startsWith('{'))) continue;
    sum = (sum ?? 0) + Number(line.split(' ').pop());
  }
  return sum;
}

const stamp = Date.now();
const signup = await gql(
  'mutation($c: String!, $e: String!) { signup(companyName: $c, name: "Bench", email: $e, password: "correct horse battery") { token } }',
  { c: `Bench ${stamp}`, e: `bench${stamp}@bench.test` },
);
const token = signup.signup.token;
const create = await gql(
  'mutation($input: CreateWorkflowInput!) { createWorkflow(input: $input) { id } }',
  { input: { name: 'Watched', status: 'ACTIVE', steps: [{ actionType: 'click', selectors: { css: '#a' }, fieldLabel: 'a' }] } },
  token,
);
const workflow = create.createWorkflow.id;
const startRun = () => gql('mutation($id: ID!) { startRun(workflowId: $id) { id } }', { id: workflow }, token);

await sleep(1000);
const rssBefore = rss();
const query = 'subscription($w: ID) { runsUpdated(workflowId: $w) { run { id stepsCompleted status } healthLog { id } } }';
const wsUrl = base.replace(/^http/, 'ws') + '/graphql/ws';
let received = 0;
const sockets = [];
for (let i = 0; i < subscribers; i++) {
  const ws = new WebSocket(wsUrl, 'graphql-transport-ws');
  ws.counted = 0;
  ws.on('open', () => ws.send(JSON.stringify({ type: 'connection_init', payload: { token } })));
  ws.on('message', (raw) => {
    const message = JSON.parse(raw.toString());
    if (message.type === 'connection_ack') {
      // --distinct: a workflow id nobody runs, except subscriber 0's; all different.
      const w = distinct && i > 0 ? `${workflow}-${i}` : workflow;
      ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query, variables: { w } } }));
    } else if (message.type === 'next') {
      ws.counted++;
      received++;
    } else {
      console.error('unexpected', message);
    }
  });
  ws.on('error', (e) => console.error('socket error', e.message));
  sockets.push(ws);
  if (i % 100 === 99) await sleep(50);
}
// Warm up until every subscriber (the one that can, with --distinct) heard of a run.
const listening = distinct ? [sockets[0]] : sockets;
for (let i = 0; i < 60 && !listening.every((ws) => ws.counted > 0); i++) {
  await startRun();
  await sleep(1000);
}
const warm = listening.filter((ws) => ws.counted > 0).length;
await sleep(3000);
const rssIdle = rss();

const resolvedName = (await metric('stepwise_subscription_resolutions_total')) === null
  ? 'stepwise_events_delivered_total'
  : 'stepwise_subscription_resolutions_total';
const resolvedBefore = await metric(resolvedName);
const receivedBefore = received;
for (let i = 0; i < events; i++) await startRun();
const expected = receivedBefore + events * listening.length;
for (let i = 0; i < 100 && received < expected; i++) await sleep(200);
await sleep(500);
const resolved = (await metric(resolvedName)) - resolvedBefore;
const eventsSeen = (received - receivedBefore) / listening.length;

console.log(JSON.stringify({
  subscribers,
  distinct,
  warm_subscribers: warm,
  rss_before_bytes: rssBefore,
  rss_idle_bytes: rssIdle,
  rss_per_idle_subscriber_bytes: Math.round((rssIdle - rssBefore) / subscribers),
  events,
  deliveries: received - receivedBefore,
  expected_deliveries: events * listening.length,
  counter: resolvedName,
  events_per_subscriber: eventsSeen,
  resolutions: resolved,
  resolutions_per_event: resolved / eventsSeen,
}, null, 1));
for (const ws of sockets) ws.terminate();
process.exit(0);
