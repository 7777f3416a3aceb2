import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDeepStrictEqual, promisify } from 'node:util';
import { readOpenApiDocument } from '../src/api/openapi';
import { REPO_ROOT } from '../test/support/process';
import { RedisServer } from '../test/support/redis-server';
import { Upstream } from '../test/support/upstream';
import { WebhookReceiver } from '../test/support/webhook-receiver';
import { EnvoyFront, Inspector, Recorder, histogram, parseAnswer, spawnReplica, stopReplica, type Drill, type Replica } from './lib';

const run = promisify(execFile);
const ADMIN_TOKEN = 'api-fuzz-admin-token-0123456789';
const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';

/** What `st run --report json` writes (the fields read here). */
interface SchemathesisReport {
  exit_code: number;
  operations: { selected: number; tested: number; errored: number };
  phases: Record<string, { status: string }>;
  test_cases: { generated: number; with_failures: number; unique_failures: number; errored: number };
  failures: Array<Record<string, unknown>>;
  errors: Array<Record<string, unknown>>;
  warnings: Record<string, string[]>;
}

/**
 * Property-based fuzzing of the admin port from its own OpenAPI document: schemathesis
 * (scripts/schemathesis.sh, pinned) reads `GET /openapi.json` from the built sidecar and runs its
 * coverage, fuzzing and stateful phases (the document's links: list → get, cancel, result,
 * redeliver) with every check it has, against runs of each kind made through the real Envoy.
 */
export const apiFuzzDrill: Drill = {
  id: 'api-fuzz',
  title: 'Fuzz the admin API from its OpenAPI document (schemathesis)',
  async run(ctx) {
    const rec = new Recorder(this.id, this.title);
    let st: string;
    try {
      st = execFileSync('bash', [join(REPO_ROOT, 'scripts', 'schemathesis.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
    } catch (err) {
      rec.check('schemathesis is available (scripts/schemathesis.sh)', false, String((err as { stderr?: string }).stderr ?? err));
      return rec.result();
    }
    const maxExamples = ctx.mode === 'full' ? 200 : 40;
    const redis = await RedisServer.start();
    const app = await Upstream.start((req, res) => {
      if (req.url.startsWith('/hang')) return; // stays running until cancelled
      if (req.url.startsWith('/fail')) return void res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":"boom"}');
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
    });
    const hooks = await WebhookReceiver.start();
    const inspector = new Inspector(redis.url);
    const dir = mkdtempSync(join(tmpdir(), 'eas-api-fuzz-'));
    let replica: Replica | undefined;
    let front: EnvoyFront | undefined;
    try {
      replica = await spawnReplica('A', {
        REDIS_URL: redis.url,
        DISPATCH_URL: app.url,
        ADMIN_TOKEN,
        WEBHOOK_SECRET: SECRET,
        WEBHOOK_RETRY_SCHEDULE: '0,100ms',
        RESPONSE_GRACE_PERIOD: '60',
      });
      front = await EnvoyFront.start({ clusters: { async_sidecar: `127.0.0.1:${replica.extprocPort}`, app: `127.0.0.1:${app.port}` } });
      const admin = `http://127.0.0.1:${replica.adminPort}`;

      // Runs of each kind for the fuzzer to find (through the list's links) and act on.
      const hook = encodeURIComponent(hooks.url);
      const made: Record<string, string> = {};
      for (const [name, path] of [
        ['succeeded, with a webhook', `/ok?async=true&webhookEndpoint=${hook}`],
        ['succeeded', '/ok?async=true'],
        ['failed, with a webhook', `/fail?async=true&webhookEndpoint=${hook}`],
        ['running', '/hang/1?async=true'],
        ['running, with a webhook', `/hang/2?async=true&webhookEndpoint=${hook}`],
      ] as const) {
        const res = await front.process({ method: 'POST', path, headers: { 'content-type': 'application/json' }, body: '{}' });
        const a = parseAnswer(res.status, res.body);
        if (a.status !== 202 || !a.id) throw new Error(`could not make a ${name} run: ${a.status} ${a.code ?? ''}`);
        made[name] = a.id;
      }
      await inspector.waitFinal([made['succeeded, with a webhook']!, made.succeeded!, made['failed, with a webhook']!], 15_000);
      // Parsed here, not by fetch's json(): its objects come from another realm than jest's.
      const served = JSON.parse(await (await fetch(`${admin}/openapi.json`)).text()) as unknown;
      rec.check('the built sidecar serves the checked-in document at /openapi.json', isDeepStrictEqual(served, readOpenApiDocument()));

      // A run id for the operations' `id` in the coverage and fuzzing phases (the stateful phase
      // takes ids from the list); the config file names no secret (the token comes by -H).
      writeFileSync(join(dir, 'schemathesis.toml'), `[parameters]\n"path.id" = "${made['succeeded, with a webhook']}"\n`);
      const report = join(dir, 'report.json');
      const args = [
        '--config-file',
        join(dir, 'schemathesis.toml'),
        'run',
        `${admin}/openapi.json`,
        '--url',
        admin,
        '--include-tag',
        'admin',
        '-H',
        `Authorization: Bearer ${ADMIN_TOKEN}`,
        '--phases',
        'examples,coverage,fuzzing,stateful',
        '--checks',
        'all',
        '--max-examples',
        String(maxExamples),
        '--seed',
        '20261202',
        '--workers',
        '1',
        '--request-timeout',
        '10',
        '--report',
        'json',
        '--report-json-path',
        report,
      ];
      rec.setup.push(
        `the built sidecar (ADMIN_TOKEN set) behind the real Envoy; runs made through Envoy: ${Object.keys(made).join('; ')}`,
        `schemathesis ${execFileSync(st, ['--version'], { encoding: 'utf8' })
          .trim()
          .replace(
            /^st, version /,
            '',
          )} reads GET /openapi.json from the admin port and runs on the operations tagged \`admin\`: phases examples, coverage, fuzzing, stateful (the document's links); every check; up to ${maxExamples} cases per operation; one worker; a fixed seed`,
      );
      const t0 = Date.now();
      const out = await run(st, args, { cwd: dir, maxBuffer: 64 * 1024 * 1024, timeout: 12 * 60 * 1000 }).then(
        (r) => ({ code: 0, stdout: r.stdout }),
        (e: { code?: number; stdout?: string }) => ({ code: e.code ?? -1, stdout: e.stdout ?? '' }),
      );
      const r = JSON.parse(readFileSync(report, 'utf8')) as SchemathesisReport;
      ctx.log(`schemathesis exited ${out.code} after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      rec.count('operations selected / tested / errored', `${r.operations.selected} / ${r.operations.tested} / ${r.operations.errored}`);
      rec.count(
        'phases',
        Object.entries(r.phases)
          .map(([p, v]) => `${p} ${v.status}`)
          .join(', '),
      );
      rec.count(
        'test cases generated / with failures / unique failures',
        `${r.test_cases.generated} / ${r.test_cases.with_failures} / ${r.test_cases.unique_failures}`,
      );
      const stateful = /Scenarios:\s+(\d+)[\s\S]*?API Links:\s+([^\n]+)/.exec(out.stdout);
      if (stateful) rec.count('stateful scenarios / links', `${stateful[1]} / ${stateful[2]!.trim()}`);
      const warned = Object.entries(r.warnings).filter(([, v]) => v.length > 0);
      if (warned.length > 0) rec.count('schemathesis warnings', warned.map(([k, v]) => `${k}: ${v.join(', ')}`).join('; '));
      const failures = r.failures.map((f) => `${String(f.title ?? f.check ?? 'failure')} (${String(f.operation ?? f.label ?? '')})`);
      if (failures.length > 0) rec.count('failures', histogram(failures));
      rec.count('webhooks received while fuzzing (redeliveries)', hooks.requests.length);
      rec.check('every admin operation was tested', r.operations.tested === r.operations.selected && r.operations.errored === 0);
      rec.check(
        'no failure of any check (5xx, status, content type, headers, schema, auth, methods)',
        r.test_cases.with_failures === 0 && out.code === 0,
        out.stdout.slice(-4000),
      );
      rec.check('no errors', r.errors.length === 0 && r.test_cases.errored === 0, JSON.stringify(r.errors).slice(0, 2000));
      rec.check('every webhook sent while fuzzing matches the document', hooks.contractViolations.length === 0, hooks.contractViolations.join('\n'));
      rec.notes.push(
        "The document is the fuzzer's only input: every status, header and body it saw had to be described there, and every input it generated outside the schemas had to be refused with a 4xx.",
      );
    } finally {
      await front?.close();
      await stopReplica(replica);
      await inspector.close();
      await hooks.close().catch(() => undefined);
      await app.close();
      await redis.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
    return rec.result();
  },
};
