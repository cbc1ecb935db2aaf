// Runs graphql-http's GraphQL-over-HTTP audit suite (serverAudits) against a live server
// and prints one JSON line per audit: {"id","name","status":"ok"|"notice"|"warn"|"error",
// "reason","response"}. MUST failures are "error", SHOULD failures "warn", MAY "notice".
// tests/http_spec.rs decides what fails the build; this script only reports.
//
// usage: node audit.mjs --url http://127.0.0.1:PORT/graphql [--token JWT]
//
// Every audit request carries `Authorization: Bearer <token>` when a token is given, so
// the audits run as a signed-in user would.
import { serverAudits } from 'graphql-http';

function arg(name) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const url = arg('url');
const token = arg('token');
if (!url) {
  console.error('--url is required');
  process.exit(2);
}

// Nothing here may hang a test run.
const deadline = setTimeout(() => {
  console.error('audit timed out');
  process.exit(3);
}, 120_000);

function fetchFn(input, init = {}) {
  const headers = new Headers(init.headers ?? {});
  if (token) headers.set('authorization', `Bearer ${token}`);
  return fetch(input, { ...init, headers, signal: AbortSignal.timeout(30_000) });
}

async function describe(response) {
  if (!response) return undefined;
  let body;
  try {
    body = await response.clone().text();
  } catch {
    body = undefined;
  }
  return {
    status: response.status,
    contentType: response.headers.get('content-type'),
    body,
  };
}

const audits = serverAudits({ url, fetchFn });
for (const { fn } of audits) {
  const result = await fn();
  console.log(
    JSON.stringify({
      id: result.id,
      name: result.name,
      status: result.status,
      reason: result.reason,
      response: await describe(result.response),
    }),
  );
}
clearTimeout(deadline);
