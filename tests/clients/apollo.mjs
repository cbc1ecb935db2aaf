// Apollo Client (not ours) with its automatic persisted queries link, driven by the Rust
// integration tests: an independent check that Stepwise speaks Apollo's persisted query
// protocol over POST and (with --get) GET.
//
//   node apollo.mjs --url http://127.0.0.1:PORT/graphql [--token JWT] [--get]
//                   --ops '[{"kind":"query","query":"...","variables":{}}, ...]'
//
// Runs the operations one after the other (each bypassing Apollo's own cache, so every one
// reaches the server) and prints one JSON line per HTTP request the link chain made and per
// result:
//   {"event":"request","method":"GET","hasQuery":false,"persistedQuery":{...},"status":200,"body":{...}}
//   {"event":"result","index":0,"data":{...},"errors":[...]}
//   {"event":"failure","index":0,"message":"...","errors":[...]}
//   {"event":"done"}

import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from '@apollo/client';
import { PersistedQueryLink } from '@apollo/client/link/persisted-queries';
import { createHash } from 'node:crypto';

function parseArgs(argv) {
  const args = { url: undefined, token: undefined, get: false, ops: [] };
  for (let i = 2; i < argv.length; i++) {
    const flag = argv[i];
    if (flag === '--get') {
      args.get = true;
      continue;
    }
    const value = argv[++i];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    switch (flag) {
      case '--url': args.url = value; break;
      case '--token': args.token = value; break;
      case '--ops': args.ops = JSON.parse(value); break;
      case '--timeout-ms': break;
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

// Records what went over the wire, as the server saw it.
async function recordingFetch(input, init = {}) {
  const url = new URL(typeof input === 'string' ? input : input.url);
  const method = (init.method ?? 'GET').toUpperCase();
  let sent;
  if (method === 'GET') {
    sent = {
      query: url.searchParams.get('query'),
      extensions: url.searchParams.get('extensions'),
    };
    sent.extensions = sent.extensions ? JSON.parse(sent.extensions) : null;
  } else {
    sent = JSON.parse(init.body);
  }
  const response = await fetch(input, init);
  const text = await response.clone().text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    body = { text };
  }
  emit({
    event: 'request',
    method,
    hasQuery: typeof sent.query === 'string' && sent.query.length > 0,
    persistedQuery: sent.extensions?.persistedQuery ?? null,
    status: response.status,
    body,
  });
  return response;
}

const persisted = new PersistedQueryLink({
  sha256: (text) => createHash('sha256').update(text).digest('hex'),
  useGETForHashedQueries: args.get,
});
const http = new HttpLink({
  uri: args.url,
  fetch: recordingFetch,
  headers: args.token ? { authorization: `Bearer ${args.token}` } : {},
});
const client = new ApolloClient({
  link: ApolloLink.from([persisted, http]),
  cache: new InMemoryCache(),
});

for (const [index, op] of args.ops.entries()) {
  try {
    const document = gql(op.query);
    const result =
      op.kind === 'mutation'
        ? await client.mutate({ mutation: document, variables: op.variables ?? {}, errorPolicy: 'all' })
        : await client.query({
            query: document,
            variables: op.variables ?? {},
            fetchPolicy: 'network-only',
            errorPolicy: 'all',
          });
    emit({
      event: 'result',
      index,
      data: result.data ?? null,
      errors: result.error?.errors ?? (result.error ? [{ message: result.error.message }] : null),
    });
  } catch (err) {
    emit({ event: 'failure', index, message: String(err?.message ?? err), errors: err?.errors ?? null });
  }
}
emit({ event: 'done' });
process.exit(0);
