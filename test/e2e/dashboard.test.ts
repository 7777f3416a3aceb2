/**
 * The runs dashboard in a real headless Chromium, against a sidecar dispatching real runs
 * to a real upstream: list, counts, chart, status filter, id search, detail view with the webhook
 * attempts, redelivery, cancel (the upstream sees its connection closed), the queues (a limited
 * queue full with runs waiting, a run backing off) with each run's queue and place in line, and
 * the admin token prompt. Writes docs/dashboard.png for the README.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { request } from 'undici';
import { RunStore, newRunId, queueTag, type RunStatus } from '../../src/runs';
import { RedisServer } from '../support/redis-server';
import { Upstream } from '../support/upstream';
import { eventually, startTestSidecar, writeConfigFile } from '../support/sidecar';

const CHROMIUM = '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
const run = haveChromium || process.env.CI ? describe : describe.skip;
if (!haveChromium && !process.env.CI) {
  console.warn(`dashboard browser test skipped: ${CHROMIUM} is missing (apt-get install -y chromium); it is required when CI is set.`);
}

const SCREENSHOT = join(__dirname, '..', '..', 'docs', 'dashboard.png');
const TOKEN = 'dash-test-token-0b7f';
/** A one-slot queue for the app's slow GPU path, and a queue whose app is busy. */
const QUEUES_CONFIG = `
queues:
  gpu: { max_concurrency: 1 }
  busy: {}
routes:
  - { prefix: /v1/gpu, queue: gpu }
  - { prefix: /v1/busy, queue: busy }
`;

/** Polls `read` until its value is `expected` (or satisfies it), for what the page shows after a refresh. */
async function until<T>(read: () => Promise<T>, expected: T | ((v: T) => boolean), timeoutMs = 10_000): Promise<void> {
  const ok = (v: T) => (typeof expected === 'function' ? (expected as (v: T) => boolean)(v) : v === expected);
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  for (;;) {
    last = await read().catch(() => undefined);
    if (last !== undefined && ok(last)) return;
    if (Date.now() > deadline)
      throw new Error(`timed out: last value ${JSON.stringify(last)}, expected ${typeof expected === 'function' ? 'a match' : JSON.stringify(expected)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

type Sidecar = Awaited<ReturnType<typeof startTestSidecar>>;

run('runs dashboard in headless Chromium', () => {
  let redisServer: RedisServer;
  let redis: Redis;
  let store: RunStore;
  let app: Upstream;
  let hooks: Upstream;
  let sidecar: Sidecar;
  let context: BrowserContext;
  let page: Page;
  let userDataDir: string;
  const configFile = writeConfigFile(QUEUES_CONFIG);
  const pageErrors: string[] = [];
  const ids = { ok: [] as string[], fail: [] as string[], slow: [] as string[], timeout: [] as string[], queued: [] as string[] };

  async function create(path: string, opts: { webhook?: boolean; graceMs?: number; queue?: string } = {}): Promise<string> {
    const id = newRunId(queueTag(opts.queue ?? 'default'));
    await store.create({
      id,
      trigger: 'query',
      method: 'POST',
      path,
      target: path,
      headers: [
        ['host', 'app'],
        ['content-type', 'application/json'],
      ],
      body: Buffer.from('{"input":1}'),
      requestId: randomUUID(),
      owner: '',
      webhookUrl: opts.webhook ? `${hooks.url}/hook` : null,
      gracePeriodMs: opts.graceMs ?? 120_000,
      queue: opts.queue,
    });
    return id;
  }

  async function statusOf(id: string): Promise<RunStatus | undefined> {
    return (await store.get(id))?.view.status;
  }

  async function waitStatus(id: string, status: RunStatus): Promise<void> {
    await eventually(async () => ((await statusOf(id)) === status ? true : undefined), 15_000, `run ${id} ${status}`);
  }

  beforeAll(async () => {
    redisServer = await RedisServer.start();
    redis = new Redis(redisServer.url, { lazyConnect: false, maxRetriesPerRequest: 1 });
    app = await Upstream.start((req, res) => {
      if (req.url.startsWith('/v1/slow') || req.url.startsWith('/v1/gpu')) return; // hangs until the sidecar gives up or cancels
      if (req.url.startsWith('/v1/busy')) {
        res.writeHead(503, { 'retry-after': '60' }).end();
        return;
      }
      if (req.url.startsWith('/v1/fail')) {
        res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":"model crashed"}');
        return;
      }
      setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{"prediction":[0.12,0.88]}'), 40);
    });
    // The first webhook attempt fails, the retry is delivered: the detail view shows both.
    hooks = await Upstream.start((_req, res) => {
      const n = hooks.requests.length;
      res.writeHead(n === 1 ? 503 : 204).end();
    });
    sidecar = await startTestSidecar({
      REDIS_URL: redisServer.url,
      DISPATCH_URL: app.url,
      WEBHOOK_RETRY_SCHEDULE: '0,300ms,300ms',
      WEBHOOK_TIMEOUT: '5',
      CONFIG_FILE: configFile,
    });
    store = new RunStore(redis, {
      keyPrefix: 'eas',
      runTtlMs: 86_400_000,
      leaseTimeoutMs: 30_000,
      maxDispatchAttempts: 3,
      redispatchInterrupted: 'idempotent',
      queues: sidecar.config.queues,
    });

    ids.ok.push(await create('/v1/predict', { webhook: true }));
    ids.fail.push(await create('/v1/fail'));
    ids.ok.push(await create('/v1/predict'));
    ids.timeout.push(await create('/v1/slow/batch', { graceMs: 400 }));
    ids.fail.push(await create('/v1/fail'));
    ids.ok.push(await create('/v1/embeddings'));
    ids.slow.push(await create('/v1/slow/generate'));
    for (const id of ids.ok) await waitStatus(id, 'succeeded');
    for (const id of ids.fail) await waitStatus(id, 'failed');
    await waitStatus(ids.timeout[0]!, 'timed_out');
    await waitStatus(ids.slow[0]!, 'running');
    await eventually(async () => ((await store.get(ids.ok[0]!))?.view.webhook.status === 'delivered' ? true : undefined), 15_000, 'webhook delivered');

    userDataDir = mkdtempSync(join(tmpdir(), 'eas-chromium-'));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
      viewport: { width: 1440, height: 900 },
      deviceScaleFactor: 1,
      timezoneId: 'UTC',
      locale: 'en-US',
    });
    context.setDefaultTimeout(5_000);
    page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (err) => pageErrors.push(`pageerror: ${err.message}`));
    page.on('console', (msg) => {
      if (msg.type() === 'error') pageErrors.push(`console: ${msg.text()}`);
    });
  }, 120_000);

  afterAll(async () => {
    await context?.close().catch(() => undefined);
    if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
    await sidecar?.stop();
    redis?.disconnect();
    await app?.close();
    await hooks?.close();
    await redisServer?.destroy();
  }, 60_000);

  const rows = () => page.locator('#runs-body tr');
  const row = (id: string) => page.locator(`#runs-body tr[data-id="${id}"]`);
  const allIds = () => [...ids.ok, ...ids.fail, ...ids.slow, ...ids.timeout, ...ids.queued];

  test('serves the page with a strict CSP and its assets', async () => {
    const res = await request(`http://127.0.0.1:${sidecar.adminPort}/`);
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/html/);
    expect(String(res.headers['content-security-policy'])).toContain("default-src 'self'");
    expect(String(res.headers['content-security-policy'])).not.toContain('unsafe-inline');
    const html = await res.body.text();
    expect(html).toContain('content="/v1/runs"');
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/); // no inline script
    expect(html).not.toMatch(/\sstyle=/); // no inline style
    for (const asset of ['app.js', 'style.css']) {
      const a = await request(`http://127.0.0.1:${sidecar.adminPort}/dashboard/${asset}`);
      expect(a.statusCode).toBe(200);
      await a.body.dump();
    }
    const missing = await request(`http://127.0.0.1:${sidecar.adminPort}/dashboard/..%2Fserver.ts`);
    expect(missing.statusCode).toBe(404);
    await missing.body.dump();
  });

  test('lists the runs with their status, request, upstream status and webhook', async () => {
    await page.goto(`http://127.0.0.1:${sidecar.adminPort}/`);
    await until(() => rows().count(), allIds().length);
    for (const id of allIds()) expect(await row(id).count()).toBe(1);

    const ok = row(ids.ok[0]!);
    expect(await ok.locator('.badge').innerText()).toBe('Succeeded');
    expect(await ok.innerText()).toContain('POST');
    expect(await ok.innerText()).toContain('/v1/predict');
    expect(await ok.locator('.run-id').innerText()).toBe(ids.ok[0]!.slice(0, 8));
    expect(await ok.locator('.run-id').getAttribute('title')).toBe(ids.ok[0]);
    expect(await ok.locator('td').nth(2).innerText()).toBe('default');
    expect(await ok.locator('td').nth(5).innerText()).toBe('200');
    expect(await ok.locator('td').nth(6).innerText()).toBe('Delivered · 2 attempts');
    expect(await row(ids.fail[0]!).locator('td').nth(5).innerText()).toBe('500');
    expect(await row(ids.slow[0]!).locator('.badge').innerText()).toBe('Running');
    expect(await row(ids.timeout[0]!).locator('.badge').innerText()).toBe('Timed out');

    // Counts by status and the per-minute chart, computed from the listed runs.
    const count = (s: string) => page.locator(`#counts button[data-status="${s}"] .count-n`).innerText();
    expect(await count('')).toBe('7');
    expect(await count('succeeded')).toBe('3');
    expect(await count('failed')).toBe('2');
    expect(await count('running')).toBe('1');
    expect(await count('timed_out')).toBe('1');
    expect(await page.locator('#chart rect.series-succeeded').count()).toBeGreaterThan(0);
    expect(await page.locator('#chart-summary').textContent()).toContain(
      '7 runs created in the last 30 minutes: 3 succeeded, 2 failed, 1 timed out, 0 cancelled, 0 expired, 1 in progress',
    );
  });

  test('filters by status', async () => {
    await page.getByLabel('Status').selectOption('failed');
    await until(() => rows().count(), 2);
    for (const id of ids.fail) expect(await row(id).count()).toBe(1);
    expect(await page.locator('#runs-body .badge').allInnerTexts()).toEqual(['Failed', 'Failed']);

    await page.getByLabel('Status').selectOption('');
    await until(() => rows().count(), allIds().length);
  });

  test('searches by run id', async () => {
    const id = ids.ok[1]!;
    await page.getByLabel('Run ID').fill(id.slice(0, 13));
    await until(() => rows().count(), 1);
    expect(await rows().first().getAttribute('data-id')).toBe(id);

    await page.getByLabel('Run ID').fill('ffffffff-0000');
    await until(() => page.locator('#empty').isVisible(), true);
    expect(await page.locator('#empty').innerText()).toContain('No runs match');

    await page.getByLabel('Run ID').fill('');
    await until(() => rows().count(), allIds().length);
  });

  test('opens the detail view from the keyboard: timestamps, webhook attempts, redelivery', async () => {
    const id = ids.ok[0]!;
    await row(id).focus();
    await page.keyboard.press('Enter');
    const detail = page.locator('#detail');
    await until(() => detail.isVisible(), true);
    await until(() => page.locator('#detail-run-id').textContent(), id);
    const timeline = await page.locator('#detail-timeline').innerText();
    for (const label of ['Created', 'Started', 'Finished']) expect(timeline).toContain(label);
    expect(timeline).toMatch(/\d\d:\d\d:\d\d\.\d{3}/);
    expect(await page.locator('#detail-timeline time').count()).toBe(3);
    expect(await page.locator('#detail-webhook-status').innerText()).toBe('Delivered');
    const history = page.locator('#webhook-history tbody tr');
    expect(await history.count()).toBe(2);
    expect(await history.nth(0).innerText()).toMatch(/retry[\s\S]*503/);
    expect(await history.nth(1).innerText()).toMatch(/delivered[\s\S]*204/);
    expect(await page.getByRole('button', { name: 'Cancel run' }).isDisabled()).toBe(true);

    // Redeliver: a real button, reached and pressed from the keyboard.
    const before = hooks.requests.length;
    await page.getByRole('button', { name: 'Redeliver webhook' }).focus();
    await page.keyboard.press('Enter');
    await until(
      () => page.locator('#toast').innerText(),
      (v) => v.includes('redelivery queued'),
    );
    await hooks.waitForRequests(before + 1);

    // Escape closes the detail and gives the focus back to the row.
    await page.keyboard.press('Escape');
    await until(() => detail.isVisible(), false);
    expect(await page.locator('#runs-body tr:focus').getAttribute('data-id')).toBe(id);
  });

  test('cancels a running run: the status becomes cancelled and the upstream call is aborted', async () => {
    const id = ids.slow[0]!;
    const abortedBefore = app.aborted.length;
    await row(id).click();
    await until(() => page.locator('#detail-run-id').textContent(), id);
    expect(await page.locator('#detail .badge').first().innerText()).toBe('Running');
    page.once('dialog', (d) => void d.accept());
    await page.getByRole('button', { name: 'Cancel run' }).click();
    await until(() => page.locator('#detail .badge').first().innerText(), 'Cancelled');
    await until(() => row(id).locator('.badge').innerText(), 'Cancelled');
    expect(await statusOf(id)).toBe('cancelled');
    await app.waitForAborted(abortedBefore + 1);
    expect(await page.locator('#counts button[data-status="cancelled"] .count-n').innerText()).toBe('1');
    await page.keyboard.press('Escape');
  });

  test('shows the queues (depth, backing off, in flight / limit, oldest wait) and where each run stands', async () => {
    // The one-slot gpu queue: the app holds the first run, two wait behind it.
    const gpu = [];
    for (const name of ['generate', 'upscale', 'caption']) gpu.push(await create(`/v1/gpu/${name}`, { queue: 'gpu' }));
    ids.queued.push(...gpu);
    await waitStatus(gpu[0]!, 'running');
    // The busy queue: the app answers 503 with Retry-After, so the run backs off for a minute.
    const busy = await create('/v1/busy/classify', { queue: 'busy' });
    ids.queued.push(busy);
    await eventually(async () => ((await store.get(busy))?.view.next_attempt_at ? true : undefined), 15_000, 'the busy run backing off');
    expect((await statusOf(gpu[1]!)) === 'queued' && (await statusOf(gpu[2]!)) === 'queued').toBe(true);

    const queueRow = (name: string) => page.locator(`#queues-body tr[data-queue="${name}"]`);
    const cells = (name: string) => queueRow(name).locator('td').allInnerTexts();
    await until(
      () => cells('gpu'),
      (v) => v[1] === '2' && v[3] === '1 / 1',
    );
    const [, , gpuBackingOff, , gpuOldest] = await cells('gpu');
    expect(gpuBackingOff).toBe('0');
    expect(gpuOldest).toMatch(/^\d+(\.\d+)? (ms|s)$/);
    // The slot bar is full, and says so by its class (its width is set through the CSSOM).
    const fill = queueRow('gpu').locator('.slots-fill');
    expect(await fill.getAttribute('class')).toContain('slots-fill-full');
    expect(await fill.evaluate((el) => (el as unknown as { style: { width: string } }).style.width)).toBe('100%');
    await until(
      () => cells('busy'),
      (v) => v[1] === '1' && v[2] === '1',
    );
    expect((await cells('busy'))[3]).toBe('0 / no limit');
    expect((await cells('default')).slice(1, 4)).toEqual(['0', '0', '0 / no limit']);
    expect(await page.locator('#queues-body tr').evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-queue')))).toEqual(['default', 'gpu', 'busy']);
    expect(await queueRow('gpu').getAttribute('aria-label')).toMatch(/^Queue gpu: 2 queued, 0 backing off, 1 in flight of 1, oldest queued /);

    // The oldest wait grows with each refresh, like the rest of the page.
    const ageMs = (text: string) => (text.endsWith(' ms') ? Number(text.slice(0, -3)) : Number(text.slice(0, -2)) * 1000);
    const first = ageMs((await cells('gpu'))[4]!);
    await until(
      async () => ageMs((await cells('gpu'))[4]!),
      (v) => v >= first + 1000,
      8_000,
    );

    // Each run shows its queue and, while queued, its place in line or that it is backing off.
    const queueCell = (id: string) => row(id).locator('td').nth(2).innerText();
    await until(() => rows().count(), allIds().length);
    expect(await queueCell(gpu[0]!)).toBe('gpu');
    expect(await queueCell(gpu[1]!)).toBe('gpu\nnext in line');
    expect(await queueCell(gpu[2]!)).toBe('gpu\n1 ahead');
    expect(await queueCell(busy)).toBe('busy\nbacking off');

    await row(gpu[2]!).click();
    await until(() => page.locator('#detail-run-id').textContent(), gpu[2]!);
    expect(await page.locator('#detail-queue').innerText()).toBe('gpu');
    expect(await page.locator('#detail-standing').innerText()).toBe('1 ahead');
    await row(busy).click();
    await until(() => page.locator('#detail-run-id').textContent(), busy);
    const detail = await page.locator('#detail-body').innerText();
    expect(detail).toContain('The app answered 503 or refused the connection');
    expect(detail).toMatch(/Next attempt\s+\d\d:\d\d:\d\d\.\d{3}/);
    const turnedAway = page.locator('#dispatch-history tbody tr');
    expect(await turnedAway.count()).toBe(1);
    expect(await turnedAway.first().innerText()).toMatch(/^1\s+\d\d:\d\d:\d\d\.\d{3}\s+503\s+1m 00s$/);

    // Cancelled, the busy run leaves its queue, and the card follows on the next refresh.
    page.once('dialog', (d) => void d.accept());
    await page.getByRole('button', { name: 'Cancel run' }).click();
    await until(() => row(busy).locator('.badge').innerText(), 'Cancelled');
    await until(
      async () => (await cells('busy')).slice(1, 3),
      (v) => v[0] === '0' && v[1] === '0',
    );
    await page.keyboard.press('Escape');
  }, 60_000);

  test('writes the screenshot for the README', async () => {
    // The showcase: a fresh running run beside the delivered-webhook detail.
    ids.slow.push(await create('/v1/slow/generate'));
    await waitStatus(ids.slow[1]!, 'running');
    await page.getByLabel('Status').selectOption('');
    await row(ids.ok[0]!).click();
    await until(() => rows().count(), allIds().length);
    await until(
      () => page.locator('#webhook-history tbody tr').count(),
      (v) => v >= 2,
    );
    await page.mouse.move(0, 0);
    await until(() => page.locator('#toast').isHidden(), true);
    mkdirSync(join(SCREENSHOT, '..'), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    expect(existsSync(SCREENSHOT)).toBe(true);
    // The slow and gpu runs are cancelled so that they do not hold the sidecar at shutdown.
    for (const id of [ids.slow[1]!, ...ids.queued]) await store.cancel(id);
  });

  test('the page produced no script errors or CSP violations', () => {
    expect(pageErrors).toEqual([]);
  });

  test('with ADMIN_TOKEN set, the page asks for the token and then works', async () => {
    const locked = await startTestSidecar({
      REDIS_URL: redisServer.url,
      DISPATCH_URL: app.url,
      ADMIN_TOKEN: TOKEN,
      DISPATCH_CONCURRENCY: '1',
      CONFIG_FILE: configFile,
    });
    const p = await context.newPage();
    try {
      const seen: Array<string | undefined> = [];
      const queuesSeen: Array<string | undefined> = [];
      p.on('request', (r) => {
        if (r.url().includes('/v1/runs')) seen.push(r.headers().authorization);
        if (new URL(r.url()).pathname === '/queues') queuesSeen.push(r.headers().authorization);
      });
      await p.goto(`http://127.0.0.1:${locked.adminPort}/`);
      const dialog = p.getByRole('dialog', { name: 'Admin token required' });
      await until(() => dialog.isVisible(), true);
      expect(await p.locator('#runs-body tr').count()).toBe(0);

      await p.getByLabel('Admin token', { exact: true }).fill('wrong-token');
      await p.keyboard.press('Enter');
      await until(() => p.locator('#token-error').innerText(), 'That token was refused.');
      expect(await dialog.isVisible()).toBe(true);

      await p.getByLabel('Admin token', { exact: true }).fill(TOKEN);
      await p.getByRole('button', { name: 'Continue' }).click();
      await until(() => dialog.isVisible(), false);
      await until(
        () => p.locator('#runs-body tr').count(),
        (v) => v >= allIds().length,
      );
      expect(seen.at(-1)).toBe(`Bearer ${TOKEN}`);
      // The queues are behind the same token, and shown once it is given.
      await until(() => p.locator('#queues-body tr[data-queue="gpu"]').count(), 1);
      expect(queuesSeen.at(-1)).toBe(`Bearer ${TOKEN}`);

      // The token survives a reload of the tab (sessionStorage), so no prompt the second time.
      await p.reload();
      await until(
        () => p.locator('#runs-body tr').count(),
        (v) => v >= allIds().length,
      );
      expect(await dialog.isVisible()).toBe(false);
    } finally {
      await p.close();
      await locked.stop();
    }
  });
});
