/**
 * The npm package as a user gets it: `npm pack` (which builds, see package.json's prepack), the
 * tarball installed into an empty folder with production dependencies only, and its
 * `envoy-async-sidecar` bin run from there against a real Redis, behind Envoy on the packed
 * envoy/envoy.yaml. Also the image's layout (Dockerfile, runtime stage): the tarball unpacked,
 * installed with the repository's package-lock.json.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { request } from 'undici';
import { EnvoyStandIn } from '../support/envoy';
import { freePort } from '../support/ports';
import { REPO_ROOT, spawnSidecar, type SidecarProcess, type SpawnOptions } from '../support/process';
import { RealEnvoy, describeWithEnvoy } from '../support/real-envoy';
import { RedisServer } from '../support/redis-server';
import { eventually } from '../support/sidecar';
import { Upstream } from '../support/upstream';

type PackageJson = {
  name: string;
  version: string;
  bin: Record<string, string>;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};
type Lock = { packages: Record<string, { version?: string; dev?: boolean }> };

const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as PackageJson;
const repoLock = JSON.parse(readFileSync(join(REPO_ROOT, 'package-lock.json'), 'utf8')) as Lock;
/**
 * npm's environment without what an enclosing `npm test` says about this repository (its package,
 * script and folder): the installs happen in other folders. Its configuration (cache, registry) stays.
 */
const npmEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_(package_|lifecycle_|config_local_prefix$)/i.test(k)));
const npm = (args: string[], cwd: string) => execFileSync('npm', [...args, '--no-audit', '--no-fund'], { cwd, env: npmEnv, encoding: 'utf8', stdio: 'pipe' });

let work: string;
let tarball: string;
let packedFiles: string[];
/** The empty folder the tarball was installed into, and its bin. */
let installDir: string;
let bin: string;
let redis: RedisServer;
let app: Upstream;
const started: SidecarProcess[] = [];

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'eas-npm-pack-'));
  // As a user packs: the prepack script builds from an empty dist/.
  const packed = JSON.parse(npm(['pack', '--json', '--pack-destination', work], REPO_ROOT)) as { filename: string; files: { path: string }[] }[];
  tarball = join(work, packed[0]!.filename);
  packedFiles = packed[0]!.files.map((f) => f.path).sort();
  installDir = join(work, 'empty');
  mkdirSync(installDir);
  // --prefix: this folder is the project, whatever lies above it. Versions come from the
  // dependency ranges (a tarball carries no lockfile), packages from the npm cache where it has them.
  npm(['install', '--prefix', installDir, '--omit=dev', '--prefer-offline', tarball], installDir);
  bin = join(installDir, 'node_modules', '.bin', 'envoy-async-sidecar');
  redis = await RedisServer.start();
  app = await Upstream.start(Upstream.json(200, { answer: 42 }));
}, 180_000);

afterAll(async () => {
  for (const p of started) if (p.child.exitCode === null) p.kill('SIGKILL');
  await app?.close();
  await redis?.destroy();
  if (work) rmSync(work, { recursive: true, force: true });
});

/** The installed bin, run from the install folder (or `options`). */
function start(env: Record<string, string>, args: string[] = [], options: SpawnOptions = {}): SidecarProcess {
  const p = spawnSidecar(env, args, { command: [bin], cwd: installDir, ...options });
  started.push(p);
  return p;
}

async function sidecarEnv(extra: Record<string, string> = {}): Promise<Record<string, string>> {
  return {
    EXTPROC_ADDR: `127.0.0.1:${await freePort()}`,
    ADMIN_ADDR: `127.0.0.1:${await freePort()}`,
    REDIS_URL: redis.url,
    DISPATCH_URL: app.url,
    SHUTDOWN_GRACE: '5',
    LOG_LEVEL: 'info',
    ...extra,
  };
}

function grpcHealth(addr: string): Promise<string> {
  const Client = grpc.makeGenericClientConstructor(healthService as grpc.ServiceDefinition, 'Health');
  const client = new Client(addr, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
    check: (req: { service: string }, cb: (err: Error | null, res?: { status: string }) => void) => void;
  };
  return new Promise((resolve, reject) =>
    client.check({ service: '' }, (err, res) => {
      client.close();
      if (err) reject(err);
      else resolve(String(res!.status));
    }),
  );
}

/** SERVING once the sidecar's first Redis ping answers (src/sidecar.ts): until then NOT_SERVING. */
async function servingSoon(addr: string): Promise<void> {
  await eventually(async () => ((await grpcHealth(addr)) === 'SERVING' ? true : undefined), 10_000, `grpc.health.v1 SERVING on ${addr}`);
}

async function get(url: string): Promise<{ status: number; type: string; body: string }> {
  const res = await request(url);
  return { status: res.statusCode, type: String(res.headers['content-type'] ?? ''), body: await res.body.text() };
}

/** Names of the packages a package-lock.json says are installed (`node_modules/a/node_modules/b` → b). */
function lockedNames(lock: Lock): string[] {
  return Object.keys(lock.packages)
    .filter((k) => k.startsWith('node_modules/'))
    .map((k) => k.slice(k.lastIndexOf('node_modules/') + 'node_modules/'.length));
}

describe('the npm package (npm pack)', () => {
  it('holds the built sidecar, the ext_proc descriptor, the Lua scripts, the dashboard and the Envoy configs; no tests, benchmarks, TypeScript or maps', () => {
    expect(pkg.bin['envoy-async-sidecar']).toBe('dist/src/main.js');
    expect(packedFiles).toEqual(expect.arrayContaining(['package.json', 'README.md', 'dist/src/main.js', 'dist/src/generated/ext_proc.descriptor.json']));
    const lua = readdirSync(join(REPO_ROOT, 'src', 'runs', 'scripts')).filter((f) => f.endsWith('.lua'));
    const dashboard = readdirSync(join(REPO_ROOT, 'src', 'admin', 'dashboard'));
    expect(lua.length).toBeGreaterThan(5);
    expect(dashboard).toContain('index.html');
    for (const f of [...lua.map((n) => `dist/src/runs/scripts/${n}`), ...dashboard.map((n) => `dist/src/admin/dashboard/${n}`), 'envoy/envoy.yaml'])
      expect(packedFiles).toContain(f);
    // Every compiled module of src/ (the generated types compile to nothing and are left out).
    const modules = (dir: string): string[] =>
      readdirSync(join(REPO_ROOT, dir), { withFileTypes: true }).flatMap((e) =>
        e.isDirectory()
          ? e.name === 'generated'
            ? []
            : modules(`${dir}/${e.name}`)
          : e.name.endsWith('.ts')
            ? [`dist/${dir}/${e.name.replace(/\.ts$/, '.js')}`]
            : [],
      );
    for (const m of modules('src')) expect(packedFiles).toContain(m);
    const unwanted = packedFiles.filter(
      (f) => /^(src|test|bench|drills|scripts|examples|deploy|dist\/(test|bench|scripts))\//.test(f) || /\.(ts|map)$/.test(f),
    );
    expect(unwanted).toEqual([]);
    expect(packedFiles.filter((f) => !/^(dist\/src|envoy|docs)\//.test(f))).toEqual(['README.md', 'dist/openapi/openapi.yaml', 'package.json']);
  });

  it('installs into an empty folder with the production dependencies only: no dev dependency, no @grpc/grpc-js-xds', () => {
    const installed = lockedNames(JSON.parse(readFileSync(join(installDir, 'package-lock.json'), 'utf8')) as Lock);
    expect(installed).toContain('envoy-async-sidecar');
    for (const dep of Object.keys(pkg.dependencies)) expect(installed).toContain(dep);
    // (@types/node is a devDependency here and a dependency of protobufjs: the lockfile says which are dev only.)
    const devOnly = Object.keys(pkg.devDependencies).filter((d) => repoLock.packages[`node_modules/${d}`]?.dev);
    expect(devOnly).toEqual(expect.arrayContaining(['@grpc/grpc-js-xds', 'typescript', 'jest']));
    for (const dev of devOnly) expect(installed).not.toContain(dev);
    // Every installed package is one the repository's lockfile has as a production package.
    const production = new Set(lockedNames({ packages: Object.fromEntries(Object.entries(repoLock.packages).filter(([, v]) => !v.dev)) }));
    expect(installed.filter((n) => n !== 'envoy-async-sidecar' && !production.has(n))).toEqual([]);
    expect(existsSync(join(installDir, 'node_modules', '@grpc', 'grpc-js-xds'))).toBe(false);
  });

  it('answers --help (roles and every setting with its default), --version, and a wrong argument with exit code 2 and one line', async () => {
    const help = spawnSync(bin, ['--help'], { cwd: installDir, encoding: 'utf8' });
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('Usage: envoy-async-sidecar [--role all|extproc|worker]');
    for (const role of ['--role all', '--role extproc', '--role worker', '--version']) expect(help.stdout).toContain(role);
    expect(help.stdout).toMatch(/REDIS_URL\s+Redis holding runs[^\n]*\n\s+default: redis:\/\/127\.0\.0\.1:6379/);
    expect(help.stdout).toMatch(/RESPONSE_GRACE_PERIOD[^\n]*\n\s+default: 900/);

    const version = spawnSync(bin, ['--version'], { cwd: installDir, encoding: 'utf8' });
    expect([version.status, version.stdout]).toEqual([0, `${pkg.version}\n`]);

    for (const [args, message] of [
      [['--verbose'], /^envoy-async-sidecar: unknown argument "--verbose": allowed are --role all\|extproc\|worker, --help and --version$/],
      [['serve'], /unexpected argument "serve"/],
      [['--role', 'boss'], /invalid --role "boss": must be one of all, extproc, worker/],
    ] as const) {
      const r = spawnSync(bin, args, { cwd: installDir, encoding: 'utf8', env: { PATH: process.env.PATH ?? '' } });
      expect([args, r.status, r.stdout]).toEqual([args, 2, '']);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr.trim()).toMatch(message);
    }
  });

  it('starts from the install folder against a real Redis: gRPC health SERVING, /healthz, /readyz, the dashboard; stops cleanly on SIGTERM', async () => {
    const env = await sidecarEnv();
    const p = start(env, ['--role', 'all']);
    await p.waitForLog('envoy-async-sidecar started');
    await servingSoon(env.EXTPROC_ADDR!);
    expect((await get(`http://${env.ADMIN_ADDR}/healthz`)).status).toBe(200);
    await eventually(async () => ((await get(`http://${env.ADMIN_ADDR}/readyz`)).status === 200 ? true : undefined), 10_000, '/readyz 200');
    const dashboard = await get(`http://${env.ADMIN_ADDR}/`);
    expect([dashboard.status, dashboard.type]).toEqual([200, expect.stringContaining('text/html')]);
    p.kill('SIGTERM');
    expect(await p.exited).toEqual({ code: 0, signal: null });
    await p.waitForLog('stopped');
  });

  /** One async request through Envoy on the packed envoy/envoy.yaml, accepted, replayed to the app and finished by the installed sidecar. */
  async function runThrough(envoyFor: (extproc: string) => Promise<{ url: string; dispatchUrl: string; close(): Promise<void> }>): Promise<void> {
    const env = await sidecarEnv();
    const envoy = await envoyFor(env.EXTPROC_ADDR!);
    const p = start({ ...env, DISPATCH_URL: envoy.dispatchUrl });
    try {
      await p.waitForLog('envoy-async-sidecar started');
      const res = await request(`${envoy.url}/v1/packed/run?async=true`, { method: 'POST', body: '{"x":1}', headers: { 'content-type': 'application/json' } });
      expect(res.statusCode).toBe(202);
      const runId = ((await res.body.json()) as { run_id: string }).run_id;
      const run = await eventually(
        async () => {
          const r = await request(`${envoy.url}/v1/runs/${runId}?wait=5`);
          const body = (await r.body.json()) as { status: string };
          return body.status === 'succeeded' ? body : undefined;
        },
        20_000,
        'the run to succeed',
      );
      expect(run).toMatchObject({ status: 'succeeded' });
      expect(app.requests.some((r) => r.url === '/v1/packed/run' && Object.fromEntries(r.headers)['x-async-run-id'] === runId)).toBe(true);
    } finally {
      await envoy.close();
    }
    p.kill('SIGTERM');
    expect((await p.exited).code).toBe(0);
  }

  const packedEnvoyYaml = () => join(installDir, 'node_modules', 'envoy-async-sidecar', 'envoy', 'envoy.yaml');

  describeWithEnvoy('behind the real Envoy', () => {
    it('completes an async run: accepted through Envoy, replayed through its dispatch listener', async () => {
      await runThrough((extproc) => RealEnvoy.start({ configPath: packedEnvoyYaml(), clusters: { async_sidecar: extproc, app: `127.0.0.1:${app.port}` } }));
    });
  });

  it('completes an async run behind the Envoy stand-in (no Envoy binary needed)', async () => {
    await runThrough((extproc) => EnvoyStandIn.start({ configPath: packedEnvoyYaml(), clusters: { async_sidecar: extproc, app: `127.0.0.1:${app.port}` } }));
  });
});

describe("the image's layout (Dockerfile runtime stage): the tarball unpacked, npm ci --omit=dev --ignore-scripts with package-lock.json", () => {
  let appDir: string;

  beforeAll(() => {
    appDir = join(work, 'app');
    mkdirSync(appDir);
    execFileSync('tar', ['-xzf', tarball, '--strip-components=1', '-C', appDir]);
    execFileSync('cp', [join(REPO_ROOT, 'package-lock.json'), appDir]);
    npm(['ci', '--omit=dev', '--ignore-scripts', '--prefer-offline'], appDir);
  }, 120_000);

  it("installs exactly the lockfile's production versions", () => {
    const installed = readdirSync(join(appDir, 'node_modules'), { withFileTypes: true }).flatMap((e) =>
      e.name.startsWith('@') ? readdirSync(join(appDir, 'node_modules', e.name)).map((n) => `${e.name}/${n}`) : e.name.startsWith('.') ? [] : [e.name],
    );
    for (const name of installed) {
      const version = (JSON.parse(readFileSync(join(appDir, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
      const locked = repoLock.packages[`node_modules/${name}`];
      expect([name, version, locked?.dev ?? false]).toEqual([name, locked?.version, false]);
    }
    expect(installed).not.toContain('@grpc/grpc-js-xds');
  });

  it('runs the bin target with node (the ENTRYPOINT) and serves', async () => {
    const env = await sidecarEnv();
    const p = start(env, [], { command: [process.execPath, join(appDir, pkg.bin['envoy-async-sidecar']!)], cwd: appDir });
    await p.waitForLog('envoy-async-sidecar started');
    await servingSoon(env.EXTPROC_ADDR!);
    expect((await get(`http://${env.ADMIN_ADDR}/healthz`)).status).toBe(200);
    p.kill('SIGTERM');
    expect(await p.exited).toEqual({ code: 0, signal: null });
  });
});
