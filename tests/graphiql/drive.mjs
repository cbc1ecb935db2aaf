// Drives GraphiQL in Debian's Chromium for tests/graphiql.rs, as a person would: types into
// the editors, presses the run button, reads what the response pane shows.
//
// Reports one JSON object per line on stdout:
//   {"event":"rendered", query, headers}     the page is up; the editors' default contents
//   {"event":"queryResult", text}            the response pane after the typed query
//   {"event":"subscriptionResult", text}     every new content of the response pane while
//                                            the subscription runs
//   {"event":"done", screenshot, cspViolations, styles, pageErrors, consoleErrors, requests}
//                                            after a dialog opened (it adds a <style>);
//                                            styles: each <style> and its applied rules
//   {"event":"wsSent"|"wsReceived"|"wsClosed", payload}   WebSocket frames, for failures
// and reads one command line on stdin: "finish" (take the screenshot and stop).
//
// Usage: node drive.mjs --page URL --token TOKEN --query Q --subscription S --screenshot PNG
//        [--browser /usr/bin/chromium] [--timeout-ms N]

import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values: args } = parseArgs({
  options: {
    page: { type: 'string' },
    token: { type: 'string' },
    query: { type: 'string' },
    subscription: { type: 'string' },
    screenshot: { type: 'string' },
    browser: { type: 'string', default: '/usr/bin/chromium' },
    'timeout-ms': { type: 'string', default: '120000' },
  },
});

const emit = (event) => process.stdout.write(JSON.stringify(event) + '\n');
const fail = (message) => {
  emit({ event: 'error', message });
  process.exit(1);
};
// Never outlive the test, whatever happens.
setTimeout(() => fail('timed out'), Number(args['timeout-ms'])).unref();

const stdinLines = createInterface({ input: process.stdin });
const commands = stdinLines[Symbol.asyncIterator]();

const browser = await chromium.launch({
  executablePath: args.browser,
  // Playwright adds --headless and a fresh --user-data-dir itself.
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});

const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
const pageErrors = [];
const consoleErrors = [];
const requests = [];
try {
  page.on('pageerror', (e) => pageErrors.push(String(e.message)));
  page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));
  page.on('request', (r) => requests.push(r.url()));
  page.on('requestfailed', (r) => consoleErrors.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  // Every blocked load, inline script or style, as the browser reports it to the page.
  await page.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) =>
      window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
  });

  const editor = (selector) =>
    page.$eval(selector, (el) => el.querySelector('.CodeMirror').CodeMirror.getValue());
  const QUERY = '.graphiql-query-editor';
  const HEADERS = '.graphiql-editor-tool .graphiql-editor:not(.hidden)';
  const RESPONSE = '.graphiql-response';

  // Replaces an editor's text by typing: focus, select all, insert (insertText sends the
  // text as one input event, so the editor's bracket auto-closing does not double braces).
  const type = async (selector, text) => {
    await page.click(`${selector} .CodeMirror-lines`);
    await page.keyboard.press('ControlOrMeta+A');
    await page.keyboard.press('Backspace');
    await page.keyboard.insertText(text);
  };
  // GraphiQL copies the editors into its state after a debounce and runs what its state
  // holds, so a click right after typing can run the previous text (or nothing, for the
  // default document of three operations). A person looks and presses again; so does this,
  // until the browser has sent what was typed (`sent` resolves).
  const run = async (sent, what) => {
    for (let attempt = 0; attempt < 10; attempt++) {
      await page.waitForTimeout(500);
      await page.click('[aria-label="Execute query (Ctrl-Enter)"]');
      const ok = await Promise.race([
        sent.then(() => true),
        new Promise((r) => setTimeout(() => r(false), 2500)),
      ]);
      if (ok) return;
    }
    throw new Error(`GraphiQL never sent ${what}`);
  };
  // Frames the page sends over its WebSockets (graphql-transport-ws messages).
  const sentFrames = [];
  const frameWaiters = [];
  page.on('websocket', (ws) => {
    ws.on('framesent', ({ payload }) => {
      sentFrames.push(String(payload));
      frameWaiters.forEach((w) => w());
      emit({ event: 'wsSent', payload: String(payload) });
    });
    ws.on('framereceived', ({ payload }) => emit({ event: 'wsReceived', payload: String(payload) }));
    ws.on('close', () => emit({ event: 'wsClosed' }));
  });
  const frameSent = (predicate) =>
    new Promise((resolve) => {
      const check = () => sentFrames.some(predicate) && resolve();
      frameWaiters.push(check);
      check();
    });

  // GraphiQL fetches the schema first; a query run before it arrives can be dropped.
  const schemaLoaded = page.waitForResponse(
    (r) => r.request().method() === 'POST' && (r.request().postData() ?? '').includes('IntrospectionQuery'),
    { timeout: 60000 },
  );
  await page.goto(args.page);
  await schemaLoaded;
  await page.waitForSelector(`${QUERY} .CodeMirror`, { timeout: 60000 });
  await page.waitForSelector(`${HEADERS} .CodeMirror`, { timeout: 60000 });
  emit({ event: 'rendered', query: await editor(QUERY), headers: await editor(HEADERS) });

  await type(HEADERS, JSON.stringify({ Authorization: `Bearer ${args.token}` }));
  await type(QUERY, args.query);
  await run(
    page.waitForRequest(
      (r) => r.method() === 'POST' && (r.postData() ?? '').includes(JSON.stringify(args.query)),
      { timeout: 0 },
    ),
    'the typed query',
  );
  await page.waitForFunction(
    (sel) => document.querySelector(sel)?.querySelector('.CodeMirror')?.CodeMirror.getValue().includes('"data"'),
    RESPONSE,
    { timeout: 60000 },
  );
  emit({ event: 'queryResult', text: await editor(RESPONSE) });

  // What the pane shows before the subscription: the first payload can arrive before the
  // loop below starts.
  let last = await editor(RESPONSE);
  await type(QUERY, args.subscription);
  await run(
    frameSent((f) => f.includes('"subscribe"') && f.includes(JSON.stringify(args.subscription))),
    'the typed subscription',
  );
  // Report every new content of the response pane until told to finish.
  let finished = false;
  const finish = commands.next().then(() => { finished = true; });
  while (!finished) {
    const text = await editor(RESPONSE);
    if (text !== last) {
      last = text;
      emit({ event: 'subscriptionResult', text });
    }
    await Promise.race([finish, new Promise((r) => setTimeout(r, 50))]);
  }

  await page.screenshot({ path: args.screenshot });
  // A dialog injects a <style> element at run time: the CSP nonce must cover it.
  await page.click('[aria-label="Open settings dialog"]');
  await page.waitForSelector('[role="dialog"]');
  // Violation reports are queued tasks: let them arrive.
  await page.waitForTimeout(300);
  const styles = await page.$$eval('style', (els) =>
    els.map((el) => ({ text: el.textContent.trim().slice(0, 40), rules: el.sheet?.cssRules.length ?? 0 })));
  emit({
    event: 'done',
    screenshot: args.screenshot,
    cspViolations: await page.evaluate(() => window.__cspViolations),
    styles,
    pageErrors,
    consoleErrors,
    requests,
  });
} catch (e) {
  // What the page showed when it went wrong, for the failure message.
  const failed = args.screenshot.replace(/\.png$/, '.failed.png');
  await page.screenshot({ path: failed }).catch(() => {});
  const panes = await page
    .$$eval('.CodeMirror', (els) => els.map((el) => el.CodeMirror.getValue()))
    .catch(() => []);
  emit({
    event: 'error',
    message: String(e?.stack ?? e),
    screenshot: failed,
    panes,
    pageErrors,
    consoleErrors,
    requests,
  });
  await browser.close();
  process.exit(1);
} finally {
  await browser.close();
  stdinLines.close();
}
