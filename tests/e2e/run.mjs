// ccu browser test: a citizen, an operator and a supervisor in one headless
// Chromium (Debian's, driven by playwright-core), against a running server.
//
//   CCU_BASE_URL=http://127.0.0.1:8080 \
//   CCU_OPERATOR_USER=... CCU_OPERATOR_PASSWORD=... \
//   CCU_SUPERVISOR_USER=... CCU_SUPERVISOR_PASSWORD=... node run.mjs
//
// Optional: CCU_CHROMIUM (default /usr/bin/chromium), CCU_E2E_OUTPUT
// (screenshots, default ./output), CCU_E2E_TIMEOUT_MS (default 10000).
// The queue `urp` must be open (tests/e2e.rs sets it to h24) and the
// operator must have the `informazioni` skill and nothing in hand.
// Nothing here sleeps: every step waits for what it needs, with a timeout.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const base = env('CCU_BASE_URL').replace(/\/$/, '');
const operator = { user: env('CCU_OPERATOR_USER'), password: env('CCU_OPERATOR_PASSWORD') };
const supervisor = { user: env('CCU_SUPERVISOR_USER'), password: env('CCU_SUPERVISOR_PASSWORD') };
const operatorName = env('CCU_OPERATOR_NAME', '');
const output = env('CCU_E2E_OUTPUT', join(here, 'output'));
const timeout = Number(env('CCU_E2E_TIMEOUT_MS', '10000'));
mkdirSync(output, { recursive: true });

let step = 'start';
function log(text) { step = text; console.log(`e2e: ${text}`); }
function check(condition, message) { if (!condition) throw new Error(`assertion failed: ${message}`); }

/** Waits until fn(arg) is truthy in the page; fails with `what`. */
async function until(page, what, fn, arg) {
  try {
    return await page.waitForFunction(fn, arg, { timeout });
  } catch (e) {
    throw new Error(`timed out waiting for: ${what}`);
  }
}
const text = (page, selector) => page.locator(selector).first().textContent({ timeout });
const cellText = (sel) => (document.querySelector(sel) || {}).textContent;

// ---- plain HTTP checks: headers ----
async function headers() {
  log('security headers');
  const console_ = await fetch(`${base}/console`);
  check(console_.status === 200, '/console is served');
  const csp = console_.headers.get('content-security-policy') || '';
  check(csp.includes("frame-ancestors 'none'") && csp.includes("script-src 'self'"), `strict CSP on /console: ${csp}`);
  check(console_.headers.get('x-content-type-options') === 'nosniff', 'nosniff');
  check((console_.headers.get('content-type') || '').startsWith('text/html'), 'html content type');
  const widget = await fetch(`${base}/widget.js`);
  check((widget.headers.get('content-type') || '').startsWith('text/javascript'), 'widget.js is javascript');
  check(widget.headers.get('cross-origin-resource-policy') === 'cross-origin', 'widget.js may be loaded by other sites');
  const etag = widget.headers.get('etag');
  const again = await fetch(`${base}/widget.js`, { headers: { 'if-none-match': etag } });
  check(again.status === 304, 'widget.js revalidates with its ETag');
}

async function login(page, who, expectedPath) {
  await page.goto(`${base}/`);
  await page.fill('#username', who.user);
  await page.fill('#password', who.password);
  await page.click('#login-submit');
  await page.waitForURL(`${base}${expectedPath}`, { timeout });
}

async function main() {
  await headers();
  const browser = await chromium.launch({
    executablePath: env('CCU_CHROMIUM', '/usr/bin/chromium'),
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync']
  });
  const dialogs = [];
  const pageErrors = [];
  const watch = (page, name) => {
    page.on('dialog', (d) => { dialogs.push(`${name}: ${d.type()} ${d.message()}`); d.dismiss().catch(() => {}); });
    page.on('pageerror', (e) => pageErrors.push(`${name}: ${e.message}`));
  };
  try {
    // ---- supervisor ----
    log('the supervisor signs in and sees the dashboard');
    const sup = await (await browser.newContext({ viewport: { width: 1600, height: 1000 } })).newPage();
    watch(sup, 'dashboard');
    await login(sup, supervisor, '/dashboard');
    await until(sup, 'the urp queue row', () => !!document.querySelector('tr[data-queue="urp"] [data-field="waiting"]')?.textContent);
    check((await text(sup, 'tr[data-queue="urp"] [data-field="waiting"]')) === '0', 'nobody waits on urp at first');

    // ---- operator ----
    log('the operator signs in, offline at first');
    const op = await (await browser.newContext({ viewport: { width: 1440, height: 960 } })).newPage();
    watch(op, 'console');
    await login(op, operator, '/console');
    await until(op, 'the hello frame (offline presence)', () => document.querySelector('#presence-badge')?.dataset.presence === 'offline');

    // ---- citizen ----
    log('a citizen opens the chat widget with the keyboard');
    const citizenContext = await browser.newContext({ viewport: { width: 1200, height: 900 } });
    const cit = await citizenContext.newPage();
    watch(cit, 'citizen');
    await cit.goto(`${base}/chat`);
    await cit.locator('#ccu-chat-launcher').focus();
    await cit.keyboard.press('Enter');
    await cit.locator('#ccu-chat-panel').waitFor({ state: 'visible', timeout });
    await until(cit, 'focus moves into the chat panel', () => document.getElementById('ccu-chat-panel').contains(document.activeElement));
    await until(cit, 'the topics from /widget/topics', () => !!document.querySelector('#ccu-chat-topic option[value="urp"]'));
    await cit.selectOption('#ccu-chat-language', 'en');
    await until(cit, 'the widget in English', () => document.getElementById('ccu-chat-start-button')?.textContent === 'Start chat');
    await cit.selectOption('#ccu-chat-language', 'it');
    await until(cit, 'the widget back in Italian', () => document.getElementById('ccu-chat-start-button')?.textContent === 'Inizia la chat');
    await cit.selectOption('#ccu-chat-topic', 'urp');
    await cit.fill('#ccu-chat-name', 'Maria Rossi');
    await cit.fill('#ccu-chat-email', 'maria.rossi@example.org');
    await cit.click('#ccu-chat-start-button');
    await until(cit, 'the conversation reference', () => /URP-\d{4}-\d+/.test(document.getElementById('ccu-chat-reference')?.textContent || ''));
    const reference = (await text(cit, '#ccu-chat-reference')).match(/URP-\d{4}-\d+/)[0];
    log(`conversation ${reference} is waiting`);
    await until(sup, 'the dashboard shows one waiting on urp', () => document.querySelector('tr[data-queue="urp"] [data-field="waiting"]').textContent === '1');

    log('the citizen writes before anyone answers; the message is acknowledged');
    await cit.fill('#ccu-chat-input', 'Buongiorno, vorrei sapere quando scade la TARI.');
    await cit.keyboard.press('Enter');
    await until(cit, 'the ack of the first message', () => {
      const li = document.querySelector('#ccu-chat-messages li.ccu-w-mine');
      return li && li.dataset.id && !li.classList.contains('ccu-w-pending');
    });

    // ---- the offer ----
    log('the operator becomes available and gets the offer');
    await op.selectOption('#presence-select', 'available');
    await op.click('#presence-submit');
    await until(sup, 'the operator available on the dashboard', (name) => [...document.querySelectorAll('#operators tbody tr')]
      .some((r) => (!name || r.querySelector('[data-field="name"]').textContent === name)
        && r.querySelector('[data-presence]')?.dataset.presence === 'available'), operatorName);
    const opId = await sup.evaluate((name) => [...document.querySelectorAll('#operators tbody tr')]
      .find((r) => !name || r.querySelector('[data-field="name"]').textContent === name).dataset.operator, operatorName);
    const handledBefore = Number(await sup.evaluate((id) => document.querySelector(`tr[data-operator="${id}"] [data-field="handled_today"]`).textContent, opId));
    const offer = op.locator('#offers article.offer');
    await offer.waitFor({ state: 'visible', timeout });
    const offerText = await offer.textContent();
    check(offerText.includes('Informazioni generali (URP)'), `the offer names the topic: ${offerText}`);
    check(offerText.includes('Maria Rossi'), 'the offer names the citizen');
    check(offerText.includes(reference), 'the offer shows the reference');
    await until(op, 'a running countdown', () => /\d+ s/.test(document.querySelector('#offers .countdown')?.textContent || ''));
    await offer.locator('.offer-accept').click();
    const panel = op.locator('[role=tabpanel]:not([hidden])');
    await panel.waitFor({ state: 'visible', timeout });
    await panel.locator('li.from-citizen').filter({ hasText: 'quando scade la TARI' }).waitFor({ timeout });
    await offer.waitFor({ state: 'detached', timeout });
    await until(sup, 'the dashboard: nobody waiting, the operator has one conversation',
      (id) => document.querySelector('tr[data-queue="urp"] [data-field="waiting"]').textContent === '0'
        && document.querySelector(`tr[data-operator="${id}"] [data-field="active"]`).textContent === '1', opId);
    await until(cit, 'the citizen is told an operator took the conversation', () => /preso in carico/.test(document.getElementById('ccu-chat-messages').textContent));
    const citizenPanel = await text(op, '#citizen-body');
    check(citizenPanel.includes('maria.rossi@example.org'), 'the citizen panel shows the e-mail');

    // ---- chat both ways ----
    log('the operator types (the citizen sees it) and replies');
    const reply = panel.locator('.composer textarea');
    await reply.fill('Buongiorno Maria, ');
    await until(cit, 'the typing indicator', () => (document.getElementById('ccu-chat-typing').textContent || '').length > 0);
    await op.fill('#canned-search', 'tari');
    await op.locator('#canned-list button').filter({ hasText: 'TARI' }).first().click();
    await until(op, 'the canned response in the reply box', () => /pagoPA/.test(document.querySelector('[role=tabpanel]:not([hidden]) .composer textarea').value));
    await reply.press('Enter');
    await cit.locator('#ccu-chat-messages li.ccu-w-theirs').filter({ hasText: 'pagoPA' }).waitFor({ timeout });
    await until(cit, 'the typing indicator is cleared', () => document.getElementById('ccu-chat-typing').textContent === '');
    await until(op, 'the ack of the reply', () => {
      const li = document.querySelector('[role=tabpanel]:not([hidden]) li.from-operator');
      return li && li.dataset.id && !li.classList.contains('pending');
    });

    log('markup from the citizen is shown as text, never run');
    const evil = '<img src=x onerror="window.__xss=1;alert(1)"> <b>grassetto</b>';
    await cit.fill('#ccu-chat-input', evil);
    await cit.keyboard.press('Enter');
    const evilLine = panel.locator('li.from-citizen .text').filter({ hasText: '<img src=x onerror=' });
    await evilLine.waitFor({ timeout });
    check((await evilLine.textContent()) === evil, 'the operator sees the exact text');
    check(await op.locator('[role=tabpanel] img, [role=tabpanel] b').count() === 0, 'no element was made from the text (console)');
    check(await cit.locator('#ccu-chat-messages img, #ccu-chat-messages b').count() === 0, 'no element was made from the text (widget)');
    check((await cit.locator('#ccu-chat-messages .ccu-w-text').filter({ hasText: '<b>grassetto</b>' }).count()) === 1, 'the citizen sees the text too');
    check(!(await op.evaluate(() => window.__xss)) && !(await cit.evaluate(() => window.__xss)), 'onerror never ran');
    await op.screenshot({ path: join(output, 'console.png'), fullPage: true });

    log('a reload of both pages loses nothing and duplicates nothing');
    const citizenLines = await cit.locator('#ccu-chat-messages li.ccu-w-msg').count();
    const operatorLines = await panel.locator('li.from-citizen, li.from-operator').count();
    await cit.reload();
    await until(cit, 'the widget resumes with every line', (n) => document.querySelectorAll('#ccu-chat-messages li.ccu-w-msg').length === n
      && !!document.querySelector('#ccu-chat-input'), citizenLines);
    await op.reload();
    await until(op, 'the console rebuilds the conversation', (n) => {
      const p = document.querySelector('[role=tabpanel]:not([hidden])');
      return p && p.querySelectorAll('li.from-citizen, li.from-operator').length === n;
    }, operatorLines);
    check((await text(op, '[role=tab][aria-selected=true]')).includes('Maria Rossi'), 'the tab is back');
    // Still connected both ways after the reloads.
    await cit.fill('#ccu-chat-input', 'Grazie, è tutto chiaro.');
    await cit.keyboard.press('Enter');
    await op.locator('[role=tabpanel]:not([hidden]) li.from-citizen').filter({ hasText: 'è tutto chiaro' }).waitFor({ timeout });
    check(await cit.locator('#ccu-chat-messages li.ccu-w-msg').count() === citizenLines + 1, 'no duplicate after resume');

    // ---- end and wrap-up ----
    log('the operator ends the conversation and wraps up');
    await op.click('[role=tabpanel]:not([hidden]) .end-conversation');
    const wrapup = op.locator('[role=tabpanel]:not([hidden]) form.wrapup');
    await wrapup.waitFor({ state: 'visible', timeout });
    await until(op, 'the wrap-up codes', () => !!document.querySelector('[role=tabpanel]:not([hidden]) form.wrapup option[value="informazioni_fornite"]'));
    await cit.locator('#ccu-chat-rating').waitFor({ state: 'visible', timeout });
    await wrapup.locator('select').selectOption('informazioni_fornite');
    await wrapup.locator('textarea').fill('Scadenze TARI comunicate.');
    await wrapup.locator('button[type=submit]').click();
    await op.locator('[role=tab]').first().waitFor({ state: 'detached', timeout });
    await until(sup, 'handled today goes up by one', ([id, before]) =>
      Number(document.querySelector(`tr[data-operator="${id}"] [data-field="handled_today"]`).textContent) === before + 1
      && document.querySelector(`tr[data-operator="${id}"] [data-field="active"]`).textContent === '0', [opId, handledBefore]);
    await until(sup, 'a service level for urp today', () => /%/.test(document.querySelector('tr[data-queue="urp"] [data-field="service_level"]').textContent));

    log('the citizen asks for the transcript and rates the conversation');
    await cit.fill('#ccu-chat-transcript input[type=email]', 'maria.rossi@example.org');
    await cit.click('#ccu-chat-transcript button');
    await cit.locator('#ccu-chat-rating label', { hasText: '5' }).click();
    await cit.fill('#ccu-chat-rating textarea', 'Gentilissimi');
    await cit.click('#ccu-chat-rating button[type=submit]');
    await until(cit, 'the thanks', () => /Grazie per la sua valutazione/.test(document.getElementById('ccu-chat-panel').textContent));

    log('the supervisor forces the operator on break');
    await sup.selectOption(`#force-${opId}`, 'break');
    await sup.click(`tr[data-operator="${opId}"] .force-form button`);
    await until(op, 'the console shows the forced break', () => document.querySelector('#presence-badge').dataset.presence === 'break');
    await until(sup, 'the dashboard shows the break', (id) => document.querySelector(`tr[data-operator="${id}"] [data-presence]`)?.dataset.presence === 'break', opId);
    await until(sup, 'the dashboard tells how long the break has lasted', (id) => /\d/.test(document.querySelector(`tr[data-operator="${id}"] [data-field="since"]`)?.textContent ?? ''), opId);

    log('the dashboard switches to English');
    await sup.selectOption('#lang', 'en');
    await until(sup, 'lang="en"', () => document.documentElement.lang === 'en' && document.getElementById('queues-title').textContent === 'Queues');
    await sup.screenshot({ path: join(output, 'dashboard.png'), fullPage: true });

    // ---- the web form without JavaScript ----
    log('the web form works without JavaScript');
    const noJs = await (await browser.newContext({ javaScriptEnabled: false })).newPage();
    watch(noJs, 'webform');
    await noJs.goto(`${base}/request?topic=urp`);
    check(await noJs.locator('#f-topic').inputValue() === 'urp', 'the topic from the link is chosen');
    await noJs.fill('#f-name', 'Giuseppe Verdi');
    await noJs.fill('#f-email', 'g.verdi@example.org');
    await noJs.fill('#f-subject', 'Buca in via Roma <script>alert(1)</script>');
    await noJs.fill('#f-text', 'Segnalo una buca profonda davanti al civico 12 di via Roma.');
    await noJs.check('#f-privacy_consent');
    await noJs.click('#request-submit');
    await noJs.waitForURL(/\/request\/thanks\?ref=/, { timeout });
    const shown = await text(noJs, '#reference');
    check(/^URP-\d{4}-\d+$/.test(shown), `the thanks page shows the reference: ${shown}`);
    check(new URL(noJs.url()).searchParams.get('ref') === shown, 'the reference is the one the server gave');
    await noJs.screenshot({ path: join(output, 'request-thanks.png'), fullPage: true });

    check(dialogs.length === 0, `no dialog was opened: ${dialogs.join('; ')}`);
    check(pageErrors.length === 0, `no script error in the pages: ${pageErrors.join('; ')}`);
    log('all passed');
  } finally {
    await browser.close();
  }
}

main().catch((err) => {
  console.error(`e2e FAILED at step "${step}": ${err.message}`);
  process.exit(1);
});
