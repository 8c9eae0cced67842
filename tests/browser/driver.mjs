// A headless Chromium for the dashboard tests, driven line by line over stdin/stdout.
//
//   node tests/browser/driver.mjs USER_DATA_DIR WIDTH HEIGHT
//
// Each stdin line is a JSON command {"id", "op", ...}; each answer is one stdout line
// {"id", "ok", "result"} or {"id", "ok": false, "error"}. The browser comes from the npm
// package @sparticuz/chromium (its binary ships inside the package and is unpacked to
// /tmp on first use); JOBSTATUS_CHROMIUM names another Chromium to use instead.
import readline from 'node:readline';

import sparticuz from '@sparticuz/chromium';
import { chromium } from 'playwright-core';

const [userDataDir, width = '1280', height = '900'] = process.argv.slice(2);
const executablePath = process.env.JOBSTATUS_CHROMIUM || (await sparticuz.executablePath());
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true,
  viewport: { width: Number(width), height: Number(height) },
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--no-first-run',
    '--disable-component-update',
    '--disable-sync',
  ],
});
const page = context.pages()[0] || (await context.newPage());
const consoleMessages = [];
const dialogs = [];
page.on('console', (message) => consoleMessages.push({ type: message.type(), text: message.text() }));
page.on('pageerror', (error) => consoleMessages.push({ type: 'pageerror', text: String(error) }));
page.on('dialog', async (dialog) => {
  dialogs.push({ type: dialog.type(), message: dialog.message() });
  await dialog.dismiss();
});

const ops = {
  goto: ({ url }) => page.goto(url, { waitUntil: 'load' }).then((r) => r && r.status()),
  reload: () => page.reload({ waitUntil: 'load' }).then((r) => r && r.status()),
  evaluate: ({ expression }) => page.evaluate(expression),
  // Polled from here: page.waitForFunction evaluates with eval(), which the page's
  // Content-Security-Policy (rightly) forbids.
  waitFor: async ({ expression, ms }) => {
    const deadline = Date.now() + ms;
    let last;
    for (;;) {
      try {
        last = await page.evaluate(expression);
        if (last) return last;
      } catch (error) {
        last = String(error);
        if (!/context was destroyed|navigat/i.test(last)) throw error;
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${expression}; last value ${JSON.stringify(last)}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  },
  click: ({ selector }) => page.click(selector),
  fill: ({ selector, value }) => page.fill(selector, value),
  press: ({ selector, key }) => page.press(selector, key),
  screenshot: ({ path, fullPage }) => page.screenshot({ path, fullPage: Boolean(fullPage) }).then(() => path),
  console: () => consoleMessages,
  dialogs: () => dialogs,
  headers: async ({ url }) => {
    const response = await page.request.get(url);
    return response.headers();
  },
};

const input = readline.createInterface({ input: process.stdin });
for await (const line of input) {
  if (!line.trim()) continue;
  const command = JSON.parse(line);
  if (command.op === 'close') break;
  let answer;
  try {
    const result = await ops[command.op](command);
    answer = { id: command.id, ok: true, result: result === undefined ? null : result };
  } catch (error) {
    answer = { id: command.id, ok: false, error: String(error && error.stack ? error.stack : error) };
  }
  process.stdout.write(`${JSON.stringify(answer)}\n`);
}
await context.close();
process.exit(0);
