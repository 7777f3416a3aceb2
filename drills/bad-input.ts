import { freePort } from '../test/support/ports';
import { RedisServer } from '../test/support/redis-server';
import { eventually, startTestSidecar } from '../test/support/sidecar';
import { Upstream } from '../test/support/upstream';
import { EnvoyFront, Recorder, parseAnswer, type Drill } from './lib';

interface Case {
  group: string;
  input: string;
  send: () => Promise<{ status: number; code?: string; note?: string }>;
}

const MAX_BODY = 1024 * 1024;
const esc = (s: string) => s.replace(/\|/g, '\\|');

/** Sends every input a client controls and records what it gets: the "Bad input table". */
export const badInputDrill: Drill = {
  id: 'bad-input',
  title: 'Bad input table: every input a client controls',
  async run() {
    const rec = new Recorder(this.id, this.title);
    const redis = await RedisServer.start();
    const app = await Upstream.start(Upstream.json(200, { app: true }));
    const extprocPort = await freePort();
    const envoy = await EnvoyFront.start({ clusters: { async_sidecar: `127.0.0.1:${extprocPort}`, app: `127.0.0.1:${app.port}` } });
    const sidecar = await startTestSidecar({
      EXTPROC_ADDR: `127.0.0.1:${extprocPort}`,
      REDIS_URL: redis.url,
      DISPATCH_URL: app.url,
      WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'false',
      ADMIN_TOKEN: 'drill-token',
      MAX_BODY_BYTES: String(MAX_BODY),
    });
    try {
      rec.setup.push(
        `in-process sidecar behind the real Envoy (shipped envoy.yaml); MAX_BODY_BYTES=${MAX_BODY}, ADMIN_TOKEN set, WEBHOOK_ALLOW_PRIVATE_NETWORKS=false; every input actually sent, status and error code as received by the client`,
      );
      await eventually(
        async () => ((await envoy.process({ method: 'GET', path: '/v1/runs/00000000-0000-4000-8000-000000000000' })).status === 404 ? true : undefined),
        10_000,
        'serving',
      );
      const send = async (method: string, path: string, headers: Array<[string, string]> = [], body?: Buffer | string) => {
        const before = app.requests.length;
        const r = await envoy.process({ method, path, headers, body });
        const p = parseAnswer(r.status, r.body);
        // A run answered with the app's response (Prefer: wait) carries x-async-run-id; a pass-through does not.
        const sync = r.headers['x-async-run-id'] !== undefined;
        const note = sync
          ? "the app's own answer (Prefer: wait)"
          : r.status === 200 && app.requests.length > before && !path.startsWith('/v1/runs')
            ? 'passed through to the app'
            : r.headers['idempotent-replayed'] === 'true'
              ? 'idempotent-replayed: the run the key created'
              : undefined;
        return { ...p, note };
      };
      const post = (path: string, headers: Array<[string, string]> = [], body: Buffer | string = '{}') =>
        send('POST', path, [['content-type', 'application/json'], ...headers], body);
      const hook = (u: string) => post(`/x?async=true&webhookEndpoint=${encodeURIComponent(u)}`);
      const hookWith = (u: string, headers: Array<[string, string]>) => post(`/x?async=true&webhookEndpoint=${encodeURIComponent(u)}`, headers);
      const hookRaw = (q: string) => post(`/x?async=true&webhookEndpoint=${q}`);
      const owned = await post('/x?async=true', [['authorization', 'Bearer alice']]);
      const id = owned.id!;
      const cases: Case[] = [
        ...['true', 'TRUE', 'True', '1', 'yes', 'false', '0', '', '%74rue', 'true%00'].map((v) => ({
          group: 'trigger',
          input: `?async=${v}`,
          send: () => post(`/x?async=${v}`),
        })),
        { group: 'trigger', input: '?async=true&async=false', send: () => post('/x?async=true&async=false') },
        { group: 'trigger', input: '?async=false&async=true', send: () => post('/x?async=false&async=true') },
        { group: 'trigger', input: 'Prefer: respond-async', send: () => post('/x', [['prefer', 'respond-async']]) },
        { group: 'trigger', input: 'Prefer: RESPOND-ASYNC, wait=5', send: () => post('/x', [['prefer', 'RESPOND-ASYNC, wait=5']]) },
        { group: 'trigger', input: 'Prefer: respond-asyncx', send: () => post('/x', [['prefer', 'respond-asyncx']]) },
        ...['wait=abc', 'wait=1.5', 'wait=600', 'wait'].map((v) => ({
          group: 'trigger',
          input: `Prefer: respond-async, ${v}`,
          send: () => post('/x', [['prefer', `respond-async, ${v}`]]),
        })),
        ...['started,completed', 'started', 'logs,completed', ''].map((v) => ({
          group: 'webhookEvents',
          input: `webhookEvents=${v}`,
          send: () => post(`/x?async=true&webhookEvents=${v}&webhookEndpoint=${encodeURIComponent('https://example.com/hook')}`),
        })),
        { group: 'webhookEvents', input: 'webhookEvents without webhookEndpoint', send: () => post('/x?async=true&webhookEvents=started,completed') },
        {
          group: 'X-Webhook-Secret',
          input: 'X-Webhook-Secret: s3cret (no WEBHOOK_SECRET_ENCRYPTION_KEY)',
          send: () => hookWith('https://example.com/hook', [['x-webhook-secret', 's3cret']]),
        },
        { group: 'webhookEndpoint', input: 'https://example.com/hook', send: () => hook('https://example.com/hook') },
        ...[
          'ftp://example.com/h',
          'javascript:alert(1)',
          'file:///etc/passwd',
          '/relative/hook',
          '',
          'http://',
          'http://user:pass@example.com/h',
          'http://user@example.com/h',
          'http://127.0.0.1/h',
          'http://10.0.0.1/h',
          'http://192.168.1.1/h',
          'http://169.254.169.254/latest/meta-data',
          'http://[::1]/h',
          'http://[::ffff:127.0.0.1]/h',
          'http://[fe80::1]/h',
          'http://0x7f000001/h',
          'http://2130706433/h',
          'http://127.1/h',
          'http://0.0.0.0/h',
          'http://localhost/h',
          'http://224.0.0.1/h',
        ].map((u) => ({ group: 'webhookEndpoint', input: u === '' ? '(empty)' : u, send: () => hook(u) })),
        { group: 'webhookEndpoint', input: 'broken percent-encoding (%E0%A4%A)', send: () => hookRaw('%E0%A4%A') },
        { group: 'webhookEndpoint', input: 'broken percent-encoding (%zz)', send: () => hookRaw('http%3A%2F%2Fexample.com%2F%zz') },
        { group: 'webhookEndpoint', input: 'over-long: 8 KiB URL', send: () => hook(`https://example.com/${'a'.repeat(8192)}`) },
        { group: 'webhookEndpoint', input: 'over-long: 100 KiB URL', send: () => hook(`https://example.com/${'a'.repeat(100 * 1024)}`) },
        { group: 'body', input: 'empty POST body', send: () => post('/x?async=true', [], '') },
        {
          group: 'body',
          input: 'binary body (all 256 byte values)',
          send: () => post('/x?async=true', [['content-type', 'application/octet-stream']], Buffer.from(Array.from({ length: 256 }, (_, i) => i))),
        },
        { group: 'body', input: `body = MAX_BODY_BYTES (${MAX_BODY})`, send: () => post('/x?async=true', [], Buffer.alloc(MAX_BODY, 1)) },
        { group: 'body', input: 'body = MAX_BODY_BYTES + 1', send: () => post('/x?async=true', [], Buffer.alloc(MAX_BODY + 1, 1)) },
        { group: 'body', input: 'content-length: 999999999 (lie, 2-byte body)', send: () => post('/x?async=true', [['content-length', '999999999']], '{}') },
        { group: 'body', input: 'content-length: 1 (lie, 2-byte body)', send: () => post('/x?async=true', [['content-length', '1']], '{}') },
        { group: 'body', input: 'content-length: abc', send: () => post('/x?async=true', [['content-length', 'abc']], '{}') },
        { group: 'body', input: 'content-length: -5', send: () => post('/x?async=true', [['content-length', '-5']], '{}') },
        { group: 'headers', input: 'non-UTF-8 header value (0xff 0xfe 0x80)', send: () => post('/x?async=true', [['x-bytes', '\xff\xfe\x80']]) },
        {
          group: 'headers',
          input: 'non-UTF-8 owner header, then GET with the same bytes',
          send: async () => {
            const a = await post('/x?async=true', [['authorization', 'Bearer \xff\xfe']]);
            const g = await send('GET', `/v1/runs/${a.id}`, [['authorization', 'Bearer \xff\xfe']]);
            return { status: a.status, code: a.code, note: `GET back: ${g.status}` };
          },
        },
        { group: 'headers', input: '64 KiB header value', send: () => post('/x?async=true', [['x-big', 'v'.repeat(64 * 1024)]]) },
        { group: 'headers', input: '1 MiB header value', send: () => post('/x?async=true', [['x-big', 'v'.repeat(1024 * 1024)]]) },
        {
          group: 'headers',
          input: '2000 headers',
          send: () =>
            post(
              '/x?async=true',
              Array.from({ length: 2000 }, (_, i): [string, string] => [`x-h${i}`, 'v']),
            ),
        },
        { group: 'headers', input: 'x-async-run-id: forged', send: () => post('/x?async=true', [['x-async-run-id', 'forged']]) },
        ...['"drill-key-1"', 'drill-key-1', '""', '"unterminated', '"key";p=1', 'two,keys', 'has space', 'k'.repeat(256), '"\u00e9"'].map((v) => ({
          group: 'Idempotency-Key',
          input: `Idempotency-Key: ${v.length > 60 ? `${v.slice(0, 8)}…(${v.length} chars)` : v}`,
          send: () => post('/x?async=true', [['idempotency-key', v]]),
        })),
        {
          group: 'Idempotency-Key',
          input: 'Idempotency-Key sent twice',
          send: () =>
            post('/x?async=true', [
              ['idempotency-key', 'a'],
              ['idempotency-key', 'b'],
            ]),
        },
        {
          group: 'Idempotency-Key',
          input: 'the same key, another body',
          send: () => post('/x?async=true', [['idempotency-key', 'drill-key-1']], '{"other":1}'),
        },
        ...[
          'not-a-uuid',
          '00000000-0000-0000-0000-000000000000',
          id.toUpperCase(),
          `${id}/unknown`,
          `${id}/result/extra`,
          '..%2F..%2Fadmin',
          `${id}%00`,
          'x'.repeat(10000),
        ].map((rid) => ({
          group: 'run id',
          input: `GET /v1/runs/${rid.length > 60 ? `${rid.slice(0, 12)}…(${rid.length} chars)` : rid}`,
          send: () => send('GET', `/v1/runs/${rid}`, [['authorization', 'Bearer alice']]),
        })),
        ...['-1', '61', '60', '0', '0.5', '60.5', 'abc', '1e3', '', '%31'].map((w) => ({
          group: '?wait',
          input: `?wait=${w}`,
          send: () => send('GET', `/v1/runs/${id}?wait=${w}`, [['authorization', 'Bearer alice']]),
        })),
        ...(
          [
            ['POST', ''],
            ['PUT', ''],
            ['PATCH', ''],
            ['HEAD', ''],
            ['GET', '/webhook'],
            ['DELETE', '/result'],
            ['POST', '/result'],
            ['PUT', '/webhook'],
          ] as const
        ).map(([m, s]) => ({
          group: 'method',
          input: `${m} /v1/runs/{id}${s}`,
          send: () => send(m, `/v1/runs/${id}${s}`, [['authorization', 'Bearer alice']]),
        })),
        { group: 'method', input: 'GET /v1/runs (list, through Envoy)', send: () => send('GET', '/v1/runs', [['authorization', 'Bearer alice']]) },
        { group: 'method', input: 'GET /v1/runs/{id}/retry', send: () => send('GET', `/v1/runs/${id}/retry`, [['authorization', 'Bearer alice']]) },
        {
          group: 'method',
          input: 'POST /v1/runs/{id}/retry (succeeded run)',
          send: () => send('POST', `/v1/runs/${id}/retry`, [['authorization', 'Bearer alice']]),
        },
        { group: 'owner', input: 'GET /v1/runs/{id}, right owner', send: () => send('GET', `/v1/runs/${id}`, [['authorization', 'Bearer alice']]) },
        ...(['GET:', 'GET:/result', 'DELETE:', 'POST:/webhook', 'POST:/retry'] as const).flatMap((ms) => {
          const [m, s] = ms.split(':') as [string, string];
          return [
            { group: 'owner', input: `${m} /v1/runs/{id}${s}, other owner`, send: () => send(m, `/v1/runs/${id}${s}`, [['authorization', 'Bearer mallory']]) },
            { group: 'owner', input: `${m} /v1/runs/{id}${s}, no owner header`, send: () => send(m, `/v1/runs/${id}${s}`) },
          ];
        }),
      ];
      const admin = `http://127.0.0.1:${sidecar.adminPort}`;
      const adminGet = async (path: string, auth?: string, method = 'GET') => {
        const r = await fetch(admin + path, { method, headers: auth ? { authorization: auth } : {} });
        const body = Buffer.from(await r.arrayBuffer());
        return parseAnswer(r.status, body);
      };
      cases.push(
        { group: 'admin', input: 'GET /v1/runs/{id} without token', send: () => adminGet(`/v1/runs/${id}`) },
        { group: 'admin', input: 'GET /v1/runs/{id} wrong token', send: () => adminGet(`/v1/runs/${id}`, 'Bearer nope') },
        { group: 'admin', input: 'GET /v1/runs/{id} token without "Bearer"', send: () => adminGet(`/v1/runs/${id}`, 'drill-token') },
        { group: 'admin', input: 'GET /v1/runs/{id} right token', send: () => adminGet(`/v1/runs/${id}`, 'Bearer drill-token') },
        { group: 'admin', input: 'GET /v1/runs (list) without token', send: () => adminGet('/v1/runs') },
        { group: 'admin', input: 'DELETE /v1/runs/{id} without token', send: () => adminGet(`/v1/runs/${id}`, undefined, 'DELETE') },
        {
          group: 'admin',
          input: 'GET /healthz, /metrics without token',
          send: async () => {
            const h = await adminGet('/healthz');
            const m = await fetch(`${admin}/metrics`).then((r) => r.status);
            return { status: h.status, note: `/metrics: ${m}` };
          },
        },
      );
      const rows: string[] = ['| input | what the client got | error code | note |', '| --- | --- | --- | --- |'];
      let lastGroup = '';
      let crashed = 0;
      for (const c of cases) {
        let r: { status: number; code?: string; note?: string };
        try {
          r = await c.send();
        } catch (err) {
          crashed++;
          r = { status: -1, note: `client error: ${(err as Error).message}` };
        }
        if (c.group !== lastGroup) rows.push(`| **${c.group}** | | | |`);
        lastGroup = c.group;
        rows.push(
          `| \`${esc(c.input.length > 80 ? `${c.input.slice(0, 77)}…` : c.input)}\` | ${r.note === 'passed through to the app' ? '200 (app)' : r.status} | ${r.code ?? ''} | ${esc(r.note ?? '')} |`,
        );
      }
      const still = await send('GET', `/v1/runs/${id}`, [['authorization', 'Bearer alice']]);
      rec.count('inputs sent', cases.length);
      rec.count('inputs that crashed the client call', crashed);
      rec.check('the sidecar still answers after every bad input', still.status === 200);
      rec.check('every input got an HTTP answer', crashed === 0);
      rec.extra = [
        '### Bad input table',
        '',
        'Through the real Envoy on the shipped `envoy/envoy.yaml` unless marked admin, each request written byte for byte on its own HTTP/1.1 connection. "200 (app)" means the request was not async and passed through to the app untouched. A status without an error code is Envoy\'s own answer, before the sidecar: 431 for request headers over its 60 KiB default (`max_request_headers_kb`) or more than 100 of them (`max_headers_count`), 400 for a malformed content-length. A content-length over the body limit is refused by the sidecar from the headers alone (413 `body_too_large`); one shorter than the body sends the first bytes only.',
        '',
        ...rows,
      ].join('\n');
    } finally {
      await sidecar.stop();
      await envoy.close();
      await app.close();
      await redis.destroy();
    }
    return rec.result();
  },
};
