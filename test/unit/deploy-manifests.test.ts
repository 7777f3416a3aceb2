/**
 * Deployment artefacts: docker-compose.yml, the Dockerfile, deploy/kubernetes (kustomize) and the
 * pod-local Envoy config. Docker and Kubernetes cannot run here, so this checks what can be checked
 * without them: everything parses, names/ports/env agree with each other, with envoy/envoy.yaml and
 * with the sidecar's defaults (src/config/settings.ts). When the tools are on the machine it also
 * runs `kubectl kustomize` (kustomize build) and `docker-compose config -q` (compose schema).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { loadConfig } from '../../src/config';
import { SETTINGS } from '../../src/config/settings';
import { backoffDelay } from '../../src/dispatch';
import { Metrics } from '../../src/telemetry';
import { scaledObject } from '../support/keda-api';
import { ensureBuilt } from '../support/process';

const ROOT = resolve(__dirname, '..', '..');
const K8S = join(ROOT, 'deploy', 'kubernetes');
const read = (p: string) => readFileSync(join(ROOT, p), 'utf8');
type Obj = any;
const yamlFile = (p: string): Obj => parse(read(p));
const yamlDocs = (abs: string): Obj[] =>
  parseAllDocuments(readFileSync(abs, 'utf8'))
    .map((d) => {
      if (d.errors.length) throw new Error(`${abs}: ${d.errors[0]!.message}`);
      return d.toJS();
    })
    .filter((d) => d != null);
const has = (cmd: string, args: string[]) => spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;
const portOf = (hostPort: string) => Number(hostPort.slice(hostPort.lastIndexOf(':') + 1));

const envoy: Obj = yamlFile('envoy/envoy.yaml');
const cluster = (cfg: Obj, name: string) => cfg.static_resources.clusters.find((c: Obj) => c.name === name);
const endpointOf = (c: Obj) => c.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address;
const listener = (cfg: Obj, name: string) => cfg.static_resources.listeners.find((l: Obj) => l.name === name);
const EXTPROC_PORT = portOf(SETTINGS.extprocAddr.default);
const ADMIN_PORT = portOf(SETTINGS.adminAddr.default);
const DISPATCH_PORT = Number(new URL(SETTINGS.dispatchUrl.default).port);

describe('envoy/envoy.yaml and the sidecar defaults', () => {
  it('has the listeners and clusters the deployments rely on', () => {
    expect(listener(envoy, 'ingress').address.socket_address.port_value).toBe(8080);
    expect(listener(envoy, 'dispatch').address.socket_address.port_value).toBe(DISPATCH_PORT);
    expect(envoy.admin.address.socket_address.port_value).toBe(9901);
    expect(endpointOf(cluster(envoy, 'app'))).toMatchObject({ address: 'app', port_value: 8000 });
    expect(endpointOf(cluster(envoy, 'async_sidecar'))).toMatchObject({ address: 'sidecar', port_value: EXTPROC_PORT });
  });
});

describe('Kubernetes pod-local Envoy config (deploy/kubernetes/base/envoy.yaml)', () => {
  const podLocal: Obj = yamlFile('deploy/kubernetes/base/envoy.yaml');

  it('differs from envoy/envoy.yaml only in the clusters app and async_sidecar (type, address) and the loopback dispatch listener', () => {
    expect(listener(podLocal, 'dispatch').address.socket_address.address).toBe('127.0.0.1');
    expect(podLocal.admin.address.socket_address.address).toBe('127.0.0.1');
    expect(listener(podLocal, 'ingress').address.socket_address.address).toBe('0.0.0.0');
    const normalise = (cfg: Obj) => {
      const copy = structuredClone(cfg);
      delete listener(copy, 'dispatch').address.socket_address.address;
      for (const c of copy.static_resources.clusters) {
        if (c.name !== 'app' && c.name !== 'async_sidecar') continue;
        delete c.type;
        for (const g of c.load_assignment.endpoints) for (const lb of g.lb_endpoints) delete lb.endpoint.address.socket_address.address;
      }
      return copy;
    };
    expect(normalise(podLocal)).toEqual(normalise(envoy));
  });

  it('points the clusters at localhost, STATIC, on the app port and EXTPROC_ADDR', () => {
    for (const [name, port] of [
      ['app', 8000],
      ['async_sidecar', EXTPROC_PORT],
    ] as const) {
      const c = cluster(podLocal, name);
      expect(c.type).toBe('STATIC');
      expect(endpointOf(c)).toEqual({ address: '127.0.0.1', port_value: port });
    }
  });

  it('is what scripts/sync-k8s-envoy.mjs generates (run it after editing envoy/envoy.yaml)', () => {
    const r = spawnSync(process.execPath, [join(ROOT, 'scripts', 'sync-k8s-envoy.mjs'), '--check'], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------
describe('docker-compose.yml', () => {
  const compose: Obj = yamlFile('docker-compose.yml');
  const svc = compose.services;

  it('has the five services and the token writer, with healthchecks, and start order by health', () => {
    expect(Object.keys(svc).sort()).toEqual(['app', 'envoy', 'extproc-token', 'redis', 'sidecar', 'webhooks']);
    for (const [name, s] of Object.entries<Obj>(svc)) {
      if (name === 'extproc-token') continue; // one-shot: its dependants wait for it to complete
      expect([name, Array.isArray(s.healthcheck?.test)]).toEqual([name, true]);
      for (const [dep, cond] of Object.entries<Obj>(s.depends_on ?? {})) {
        expect(svc[dep]).toBeDefined();
        expect(cond.condition).toBe(dep === 'extproc-token' ? 'service_completed_successfully' : 'service_healthy');
      }
    }
    expect(Object.keys(svc.envoy.depends_on).sort()).toEqual(['app', 'extproc-token', 'sidecar']);
    expect(Object.keys(svc.sidecar.depends_on).sort()).toEqual(['extproc-token', 'redis']);
  });

  it('gives Envoy and the sidecar one random ext_proc token per start (Envoy sends it, the sidecar checks it)', () => {
    expect(svc['extproc-token'].entrypoint.join(' ')).toMatch(/\/run\/extproc\/token.*randomBytes\(24\)/);
    expect(svc.sidecar.environment.EXTPROC_TOKEN_FILE).toBe('/run/extproc/token');
    expect(svc.sidecar.volumes).toContain('extproc-token:/run/extproc:ro');
    expect(svc.envoy.volumes).toContain('extproc-token:/run/extproc:ro');
    expect(svc.envoy.command.join(' ')).toMatch(
      /sed "s\|@EXTPROC_TOKEN@\|\$\$\(cat \/run\/extproc\/token\)\|" \/etc\/envoy\/envoy.yaml > \/tmp\/envoy.yaml && exec envoy -c \/tmp\/envoy.yaml/,
    );
    const ext = envoy.static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters.find(
      (f: Obj) => f.name === 'envoy.filters.http.ext_proc',
    );
    expect(ext.typed_config.grpc_service.initial_metadata).toEqual([{ key: 'x-async-sidecar-token', value: '@EXTPROC_TOKEN@' }]);
  });

  it('runs a pinned official Envoy with envoy/envoy.yaml, public 8080 only, admin on its loopback', () => {
    expect(svc.envoy.image).toMatch(/^envoyproxy\/envoy:v1\.40\.\d+$/);
    expect(svc.envoy.volumes).toContain('./envoy/envoy.yaml:/etc/envoy/envoy.yaml:ro');
    expect(existsSync(join(ROOT, 'envoy', 'envoy.yaml'))).toBe(true);
    expect(svc.envoy.ports).toEqual(['8080:8080']);
    expect(envoy.admin.address.socket_address.address).toBe('127.0.0.1');
    expect(svc.envoy.healthcheck.test.join(' ')).toContain('/dev/tcp/127.0.0.1/9901');
  });

  it("matches envoy.yaml's cluster addresses with service names and ports", () => {
    const app = endpointOf(cluster(envoy, 'app'));
    const side = endpointOf(cluster(envoy, 'async_sidecar'));
    expect(svc[app.address]).toBeDefined();
    expect(svc[app.address].environment.PORT).toBe(String(app.port_value));
    expect(svc[side.address]).toBeDefined();
    expect(portOf(svc[side.address].environment.EXTPROC_ADDR)).toBe(side.port_value);
  });

  it('configures the sidecar: Redis, dispatch listener, admin, webhook secret', () => {
    const env = svc.sidecar.environment;
    expect(svc.sidecar.build).toMatchObject({ context: '.', target: 'sidecar' });
    expect(env.REDIS_URL).toBe('redis://redis:6379');
    expect(env.DISPATCH_URL).toBe(`http://envoy:${listener(envoy, 'dispatch').address.socket_address.port_value}`);
    expect(env.EXTPROC_ADDR).toBe('0.0.0.0:50051');
    expect(env.ADMIN_ADDR).toBe(`0.0.0.0:${ADMIN_PORT}`);
    expect(svc.sidecar.ports).toEqual([`127.0.0.1:${ADMIN_PORT}:${ADMIN_PORT}`]);
    // Safe as shipped: the demo receiver by name, no private networks, the admin API behind a token.
    expect(env.WEBHOOK_ALLOW_PRIVATE_NETWORKS).toBeUndefined();
    expect(env.WEBHOOK_ALLOWED_HOSTS).toBe('webhooks');
    expect(svc.webhooks).toBeDefined();
    expect(env.ADMIN_TOKEN).toMatch(/^\$\{ADMIN_TOKEN:\?/);
    // Every variable the compose file sets is a setting the sidecar knows, and its value passes the schema.
    const byEnv = new Map(Object.values(SETTINGS).map((s) => [s.env, s]));
    for (const [k, v] of Object.entries<string>(env)) {
      const spec = byEnv.get(k);
      expect([k, spec !== undefined]).toEqual([k, true]);
      expect([k, spec!.schema.safeParse(v).success]).toEqual([k, true]);
    }
    expect(svc.webhooks.environment.WEBHOOK_SECRET).toBe(env.WEBHOOK_SECRET);
  });

  it('runs Redis 7 with AOF (appendonly, everysec) on a volume', () => {
    expect(svc.redis.image).toMatch(/^redis:7\.\d+\.\d+/);
    expect(svc.redis.command.join(' ')).toContain('--appendonly yes --appendfsync everysec');
    expect(svc.redis.volumes[0]).toMatch(/^redis-data:\/data$/);
    expect(compose.volumes).toHaveProperty('redis-data');
  });

  it('runs the demo app and the webhook receiver from examples/', () => {
    expect(svc.app.volumes).toContain('./examples/app:/srv/app:ro');
    expect(svc.app.command).toEqual(['node', '/srv/app/server.js']);
    expect(existsSync(join(ROOT, 'examples', 'app', 'server.js'))).toBe(true);
    expect(svc.webhooks.build).toMatchObject({ context: '.', target: 'examples' });
    expect(svc.webhooks.entrypoint).toEqual(['node', '/app/examples/webhook-receiver/server.js']);
    expect(svc.webhooks.environment.PORT).toBe('9000');
  });

  const dc = has('docker-compose', ['version']) ? it : it.skip;
  dc('passes `docker-compose config -q` (compose v1 schema; top-level `name` removed for it)', () => {
    // v1 does not know the top-level `name`; the copy sits in the repo root so that relative
    // paths (build context, bind mounts) resolve as for the real file.
    const file = join(ROOT, `.compose-check-${process.pid}.yml`);
    writeFileSync(file, read('docker-compose.yml').replace(/^name: .*$/m, ''));
    try {
      execFileSync('docker-compose', ['-f', file, 'config', '-q'], { cwd: ROOT, stdio: 'pipe' });
    } finally {
      rmSync(file, { force: true });
    }
  });
});

// ---------------------------------------------------------------------------------------------
describe('Dockerfile', () => {
  const df = read('Dockerfile');
  const stages = [...df.matchAll(/^FROM\s+(\S+)(?:\s+AS\s+(\S+))?/gim)].map((m) => ({ from: m[1], name: m[2] }));
  /** The text of one stage, from its FROM to the next. */
  const stage = (name: string) => {
    const parts = df.split(/^(?=FROM )/m);
    return parts.find((p) => new RegExp(`^FROM \\S+ AS ${name}$`, 'm').test(p)) ?? '';
  };
  const pkg = JSON.parse(read('package.json')) as {
    bin: Record<string, string>;
    files: string[];
    dependencies: Record<string, string>;
    devDependencies: Record<string, string>;
  };

  /**
   * Whether .dockerignore keeps a path out of the build context: the last pattern that matches it
   * wins, `!` re-includes, a pattern that names a folder takes everything under it. Enough of
   * Docker's rules (https://docs.docker.com/build/concepts/context/#dockerignore-files) for the
   * patterns this file uses (no `**`).
   */
  const dockerIgnored = (path: string): boolean => {
    let ignored = false;
    for (const line of read('.dockerignore').split('\n')) {
      const pattern = line.trim();
      if (!pattern || pattern.startsWith('#')) continue;
      const negate = pattern.startsWith('!');
      const glob = negate ? pattern.slice(1) : pattern;
      const re = new RegExp(
        `^${glob
          .split('*')
          .map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
          .join('[^/]*')}(/.*)?$`,
      );
      if (re.test(path)) ignored = !negate;
    }
    return ignored;
  };

  /** The files package.json's "files" takes from the sources (dist/ is built in the image), and README.md. */
  const packageSourceFiles = (): string[] => {
    const walk = (rel: string): string[] =>
      statSync(join(ROOT, rel)).isDirectory() ? readdirSync(join(ROOT, rel)).flatMap((e) => walk(`${rel}/${e}`)) : [rel];
    const out = ['README.md'];
    for (const entry of pkg.files) {
      if (entry.startsWith('!') || entry.startsWith('dist/')) continue;
      const m = /^([^*]+)\/\*(\.\w+)$/.exec(entry); // folder/*.ext
      if (m)
        out.push(
          ...readdirSync(join(ROOT, m[1]!))
            .filter((f) => f.endsWith(m[2]!))
            .map((f) => `${m[1]}/${f}`),
        );
      else out.push(...walk(entry.replace(/\/$/, '')));
    }
    expect(out.length).toBeGreaterThan(5);
    return out;
  };

  it('is multi-stage with a pinned Node 20 slim image, the sidecar as default (last) target', () => {
    expect(df).toMatch(/^ARG NODE_IMAGE=node:20\.\d+\.\d+-bookworm-slim$/m);
    expect(stages.map((s) => s.name)).toEqual(['build', 'runtime', 'examples', 'sidecar']);
    expect(stages.at(-1)!.from).toBe('runtime');
  });

  it('builds with dev deps, runs with production deps only and without install scripts', () => {
    expect(df).toMatch(/^RUN npm ci --no-audit --no-fund$/m);
    expect(df).toMatch(/^RUN npm ci --omit=dev --ignore-scripts/m);
    // What the build needs is in the context (.dockerignore keeps it).
    for (const p of ['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json', 'scripts', 'src', 'deploy/docker/healthcheck.js', 'examples'])
      expect(existsSync(join(ROOT, p))).toBe(true);
    for (const needed of ['src', 'scripts', 'examples', 'deploy/docker/healthcheck.js', 'package.json', 'package-lock.json'])
      expect([needed, dockerIgnored(needed)]).toEqual([needed, false]);
    for (const p of ['node_modules', 'dist', '.git', '.venv', 'test/unit/config.test.ts', 'bench', 'CHANGES.md', 'envoy-async-sidecar-0.1.0.tgz'])
      expect([p, dockerIgnored(p)]).toEqual([p, true]);
  });

  it('builds the npm package (npm pack) and runs that package as installed, with the lockfile, in the layout test/e2e/npm-pack.test.ts runs', () => {
    const build = stage('build');
    const runtime = stage('runtime');
    expect(build).toMatch(/^RUN npm pack .*\n && mkdir \/pkg \\\n && tar -xzf envoy-async-sidecar-\*\.tgz --strip-components=1 -C \/pkg/m);
    expect(runtime).toMatch(/^COPY --from=build \/pkg\/ \.\/$/m);
    expect(runtime).toMatch(/^COPY package-lock\.json \.\/\nRUN npm ci --omit=dev --ignore-scripts/m);
    expect(runtime).not.toMatch(/COPY --from=build \/src/);
    // Every file the package ships from the sources is copied into the build stage and kept by .dockerignore.
    const copied = [...build.matchAll(/^COPY (?!--)(.+) \S+$/gm)].flatMap((m) => m[1]!.split(' '));
    for (const file of packageSourceFiles()) {
      expect([file, dockerIgnored(file)]).toEqual([file, false]);
      expect([file, copied.some((c) => file === c || file.startsWith(`${c}/`))]).toEqual([file, true]);
    }
  });

  it('runs as a non-root numeric user, exposes 50051 and 9090, has a HEALTHCHECK', () => {
    expect(df).toMatch(/^USER 1000:1000$/m);
    expect(df).toMatch(new RegExp(`^EXPOSE ${EXTPROC_PORT} ${ADMIN_PORT}$`, 'm'));
    expect(df).toMatch(/^HEALTHCHECK .*\n\s+CMD \["node", "\/app\/healthcheck\.js"\]$/m);
    // The package's bin, in the package root /app.
    expect(df.split('\n')).toContain(`ENTRYPOINT ["node", "/app/${pkg.bin['envoy-async-sidecar']}"]`);
    expect(df).not.toMatch(/ENV ADMIN_ADDR/);
  });

  it('runs without @grpc/grpc-js-xds: the built sidecar loads the ext_proc service from its generated descriptor', () => {
    expect(pkg.dependencies['@grpc/grpc-js-xds']).toBeUndefined();
    expect(pkg.devDependencies['@grpc/grpc-js-xds']).toBeDefined(); // its .proto files, at build time only
    ensureBuilt();
    // Resolving the package at run time would throw here, as it would in the image (--omit=dev).
    const probe = [
      "const Module = require('module'); const resolve = Module._resolveFilename;",
      "Module._resolveFilename = function (req, ...rest) { if (String(req).includes('grpc-js-xds')) throw new Error('needs ' + req); return resolve.call(this, req, ...rest); };",
      "const p = require('./dist/src/extproc').loadExtProcProto();",
      'if (!p.envoy.service.ext_proc.v3.ExternalProcessor.service.Process) process.exit(3);',
    ].join('\n');
    const r = spawnSync(process.execPath, ['-e', probe], { cwd: ROOT, encoding: 'utf8' });
    expect([r.status, r.stderr]).toEqual([0, '']);
  });

  it('the production dependencies that have install scripts do not need them', () => {
    const lock = JSON.parse(read('package-lock.json'));
    const scripted = Object.entries<Obj>(lock.packages)
      .filter(([k, v]) => k !== '' && v.hasInstallScript && !v.dev)
      .map(([k]) => k);
    // protobufjs' postinstall only checks its optional CLI's dependencies.
    expect(scripted).toEqual(['node_modules/protobufjs']);
  });
});

describe('deploy/docker/healthcheck.js', () => {
  const script = join(ROOT, 'deploy', 'docker', 'healthcheck.js');
  const run = (env: Record<string, string>, args: string[] = []) =>
    new Promise<number>((res) => {
      const p = spawn(process.execPath, [script, ...args], { env: { ...process.env, ...env }, stdio: 'ignore' });
      p.on('exit', (code) => res(code ?? -1));
    });

  it('exits 0 on 200 from /healthz, 1 on 503 or nothing listening; maps 0.0.0.0 to loopback', async () => {
    const http = await import('node:http');
    let status = 200;
    const paths: string[] = [];
    const server = http.createServer((req, res) => {
      paths.push(req.url!);
      res.writeHead(status).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as import('node:net').AddressInfo).port;
    try {
      expect(await run({ ADMIN_ADDR: `0.0.0.0:${port}` })).toBe(0);
      expect(await run({ ADMIN_ADDR: `127.0.0.1:${port}` })).toBe(0);
      status = 503;
      expect(await run({ ADMIN_ADDR: `127.0.0.1:${port}` })).toBe(1);
      expect(paths).toEqual(['/healthz', '/healthz', '/healthz']);
      status = 200;
      expect(await run({ ADMIN_ADDR: `127.0.0.1:${port}` }, ['/readyz'])).toBe(0); // the readiness probe
      expect(paths.at(-1)).toBe('/readyz');
      expect(await run({ ADMIN_ADDR: `127.0.0.1:${port}` }, ['/metrics'])).toBe(2);
    } finally {
      server.close();
    }
    expect(await run({ ADMIN_ADDR: `127.0.0.1:${port}` })).toBe(1);
  });
});

// ---------------------------------------------------------------------------------------------
const K8S_KINDS: Record<string, string[]> = {
  v1: ['ServiceAccount', 'Service', 'ConfigMap', 'Secret', 'Namespace'],
  'apps/v1': ['Deployment', 'StatefulSet'],
  'policy/v1': ['PodDisruptionBudget'],
  'networking.k8s.io/v1': ['NetworkPolicy'],
  'keda.sh/v1alpha1': ['ScaledObject'],
};

function kustomizations(): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d)) {
      const p = join(d, e);
      if (statSync(p).isDirectory()) walk(p);
      else if (e === 'kustomization.yaml') out.push(p);
    }
  };
  walk(K8S);
  return out.sort();
}

/** A small kustomize: resources, components, generators, patches and images, enough to check the result. */
function build(dir: string): Obj[] {
  const k = yamlDocs(join(dir, 'kustomization.yaml'))[0];
  let objs: Obj[] = [];
  const apply = (sub: string) => {
    const p = resolve(dir, sub);
    if (statSync(p).isDirectory()) objs.push(...build(p));
    else objs.push(...yamlDocs(p));
  };
  for (const r of k.resources ?? []) apply(r);
  objs.push(...configMaps(k.configMapGenerator ?? [], dir));
  for (const comp of k.components ?? []) applyComponent(objs, resolve(dir, comp));
  mergeSecrets(objs, k.secretGenerator ?? [], dir);
  applyPatches(objs, k.patches ?? [], dir);
  for (const img of k.images ?? []) {
    for (const c of objs.flatMap(podContainers)) {
      if (c.image.split(':')[0] === img.name) c.image = `${img.newName ?? img.name}:${img.newTag ?? c.image.split(':')[1] ?? 'latest'}`;
    }
  }
  if (k.namespace) objs = objs.map((o) => (o.kind === 'Namespace' ? o : { ...o, metadata: { ...o.metadata, namespace: k.namespace } }));
  return objs;
}
/** A kustomize Component on what the including kustomization has built so far. */
function applyComponent(objs: Obj[], dir: string) {
  const ck = yamlDocs(join(dir, 'kustomization.yaml'))[0];
  for (const r of ck.resources ?? []) objs.push(...yamlDocs(resolve(dir, r)));
  objs.push(...configMaps(ck.configMapGenerator ?? [], dir));
  mergeSecrets(objs, ck.secretGenerator ?? [], dir);
  applyPatches(objs, ck.patches ?? [], dir);
}
function configMaps(gens: Obj[], dir: string): Obj[] {
  return gens.map((gen) => {
    const data: Record<string, string> = {};
    for (const f of gen.files ?? []) data[f.split('/').pop()] = readFileSync(resolve(dir, f), 'utf8');
    return { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: gen.name }, data };
  });
}
function applyPatches(objs: Obj[], patches: Obj[], dir: string) {
  for (const patch of patches) {
    const p = yamlDocs(resolve(dir, patch.path))[0];
    const target = objs.find((o) => o.kind === p.kind && o.metadata.name === p.metadata.name);
    if (!target) throw new Error(`patch ${patch.path}: no ${p.kind}/${p.metadata.name}`);
    strategicMerge(target, p);
  }
}
function mergeSecrets(objs: Obj[], gens: Obj[], dir: string) {
  for (const gen of gens) {
    const data: Record<string, string> = {};
    for (const f of gen.envs ?? []) {
      for (const line of readFileSync(resolve(dir, f), 'utf8').split('\n')) {
        if (!line.trim() || line.trim().startsWith('#')) continue;
        const i = line.indexOf('=');
        data[line.slice(0, i)] = line.slice(i + 1);
      }
    }
    for (const l of gen.literals ?? []) data[l.slice(0, l.indexOf('='))] = l.slice(l.indexOf('=') + 1);
    const existing = objs.find((o) => o.kind === 'Secret' && o.metadata.name === gen.name);
    if (gen.behavior === 'merge' || gen.behavior === 'replace') {
      if (!existing) throw new Error(`secretGenerator ${gen.name}: behavior ${gen.behavior} but no base Secret`);
      existing.stringData = gen.behavior === 'merge' ? { ...existing.stringData, ...data } : data;
    } else {
      objs.push({ apiVersion: 'v1', kind: 'Secret', metadata: { name: gen.name }, stringData: data });
    }
  }
}
function strategicMerge(target: Obj, patch: Obj) {
  for (const [key, value] of Object.entries<Obj>(patch)) {
    if (Array.isArray(value) && Array.isArray(target[key]) && value.every((v) => v && typeof v === 'object' && 'name' in v)) {
      for (const item of value) {
        const t = target[key].find((x: Obj) => x.name === item.name);
        if (t) strategicMerge(t, item);
        else target[key].push(item);
      }
    } else if (value && typeof value === 'object' && !Array.isArray(value) && target[key] && typeof target[key] === 'object') {
      strategicMerge(target[key], value);
    } else {
      target[key] = value;
    }
  }
}
function podSpec(o: Obj): Obj | null {
  return o.kind === 'Deployment' || o.kind === 'StatefulSet' ? o.spec.template.spec : null;
}
function podContainers(o: Obj): Obj[] {
  const s = podSpec(o);
  return s ? [...(s.initContainers ?? []), ...s.containers] : [];
}

describe('deploy/kubernetes (kustomize)', () => {
  const dirs = kustomizations();

  it('has base, the keda and redis components and the try-it overlay', () => {
    expect(dirs.map((d) => d.slice(K8S.length + 1))).toEqual([
      'base/kustomization.yaml',
      'components/keda/kustomization.yaml',
      'components/redis/kustomization.yaml',
      'overlays/try-it/kustomization.yaml',
    ]);
  });

  it.each(dirs.map((d) => [d.slice(K8S.length + 1), d]))('%s: every referenced file exists and every manifest is a known kind', (_n, file) => {
    const dir = dirname(file);
    const k = yamlDocs(file)[0];
    expect(k.apiVersion).toMatch(/^kustomize\.config\.k8s\.io\/(v1beta1|v1alpha1)$/);
    expect(k.kind).toBe(k.apiVersion.endsWith('v1alpha1') ? 'Component' : 'Kustomization');
    const generated = [...(k.configMapGenerator ?? []), ...(k.secretGenerator ?? [])].flatMap((g: Obj) => [...(g.files ?? []), ...(g.envs ?? [])]);
    const refs = [...(k.resources ?? []), ...(k.components ?? []), ...(k.patches ?? []).map((p: Obj) => p.path), ...generated];
    for (const r of refs) {
      expect([r, existsSync(resolve(dir, r))]).toEqual([r, true]);
      const p = resolve(dir, r);
      // Files a generator reads are data (envoy.yaml, CONFIG_FILE), not manifests.
      if (statSync(p).isFile() && /\.ya?ml$/.test(p) && !generated.includes(r)) {
        for (const o of yamlDocs(p)) {
          if (o.kind === 'Kustomization') continue;
          expect([r, K8S_KINDS[o.apiVersion]?.includes(o.kind) ?? false]).toEqual([r, true]);
          expect(o.metadata?.name).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
        }
      }
    }
  });

  describe.each([['base'], ['overlays/try-it']])('%s', (which) => {
    const objs = build(join(K8S, which));
    const find = (kind: string, name: string) => objs.find((o) => o.kind === kind && o.metadata.name === name);
    const dep = find('Deployment', 'async-app');
    const pod = podSpec(dep);
    const sidecar = pod.initContainers.find((c: Obj) => c.name === 'async-sidecar');
    const envoyC = pod.initContainers.find((c: Obj) => c.name === 'envoy');
    const app = pod.containers.find((c: Obj) => c.name === 'app');
    const env = (c: Obj, name: string) => c.env?.find((e: Obj) => e.name === name);

    it('runs Envoy and the sidecar as native sidecars (restartPolicy: Always), sidecar first', () => {
      expect(pod.initContainers.map((c: Obj) => c.name)).toEqual(['extproc-token', 'async-sidecar', 'envoy']);
      expect(pod.initContainers[0].restartPolicy).toBeUndefined(); // runs once, before the sidecars
      for (const c of pod.initContainers.slice(1)) expect(c.restartPolicy).toBe('Always');
      expect(app).toBeDefined();
    });

    it('admits traffic from outside the pod to the public Envoy listener only (NetworkPolicy)', () => {
      const np = find('NetworkPolicy', 'async-app');
      expect(np.spec.policyTypes).toEqual(['Ingress']);
      expect(np.spec.podSelector.matchLabels).toEqual(find('Deployment', 'async-app').spec.selector.matchLabels);
      expect(np.spec.ingress).toEqual([{ ports: [{ port: 'envoy-http', protocol: 'TCP' }] }]);
      const envoyPorts = find('Deployment', 'async-app').spec.template.spec.initContainers.find((c: { name: string }) => c.name === 'envoy').ports;
      expect(envoyPorts.find((p: { name: string }) => p.name === 'envoy-http').containerPort).toBe(8080);
    });

    it('sidecar env, ports and probes agree with the sidecar defaults and the Envoy config', () => {
      const podEnvoy = parse(find('ConfigMap', 'async-app-envoy').data['envoy.yaml']);
      expect(portOf(env(sidecar, 'EXTPROC_ADDR').value)).toBe(endpointOf(cluster(podEnvoy, 'async_sidecar')).port_value);
      expect(env(sidecar, 'EXTPROC_ADDR').value).toBe(SETTINGS.extprocAddr.default);
      expect(env(sidecar, 'ADMIN_ADDR').value).toBe(SETTINGS.adminAddr.default); // loopback: see the liveness probe
      expect(env(sidecar, 'DISPATCH_URL').value).toBe(SETTINGS.dispatchUrl.default);
      expect(new URL(env(sidecar, 'DISPATCH_URL').value).port).toBe(String(listener(podEnvoy, 'dispatch').address.socket_address.port_value));
      // Nothing of the sidecar is reachable from outside the pod; probes run inside the container.
      expect(sidecar.ports).toBeUndefined();
      expect(env(sidecar, 'EXTPROC_ADDR').value).toMatch(/^127\.0\.0\.1:/);
      expect(sidecar.startupProbe.exec.command).toEqual(['node', '/app/healthcheck.js', '/readyz']);
      expect(sidecar.readinessProbe.exec.command).toEqual(['node', '/app/healthcheck.js', '/readyz']);
      expect(sidecar.livenessProbe.exec.command).toEqual(['node', '/app/healthcheck.js']);
      // Every plain env value is a known setting that passes its schema.
      const byEnv = new Map(Object.values(SETTINGS).map((s) => [s.env, s]));
      for (const e of sidecar.env) {
        expect([e.name, byEnv.has(e.name)]).toEqual([e.name, true]);
        if (e.value !== undefined) expect([e.name, byEnv.get(e.name)!.schema.safeParse(e.value).success]).toEqual([e.name, true]);
      }
    });

    it('REDIS_URL and WEBHOOK_SECRET come from the generated Secret, and pass the schema', () => {
      const secret = find('Secret', 'async-sidecar');
      expect(env(sidecar, 'REDIS_URL').valueFrom.secretKeyRef).toEqual({ name: 'async-sidecar', key: 'REDIS_URL' });
      expect(env(sidecar, 'WEBHOOK_SECRET').valueFrom.secretKeyRef).toMatchObject({ name: 'async-sidecar', key: 'WEBHOOK_SECRET', optional: true });
      expect(SETTINGS.redisUrl.schema.safeParse(secret.stringData.REDIS_URL).success).toBe(true);
      expect(SETTINGS.webhookSecret.schema.safeParse(secret.stringData.WEBHOOK_SECRET).success).toBe(true);
    });

    it('Envoy: config from the ConfigMap, ports match its listeners, readiness on admin /ready', () => {
      const podEnvoy = parse(find('ConfigMap', 'async-app-envoy').data['envoy.yaml']);
      expect(envoyC.image).toMatch(/^envoyproxy\/envoy:v1\.40\.\d+$/);
      // The ConfigMap's file with this pod's token filled in, then Envoy on the result.
      expect(envoyC.command).toEqual(['/bin/sh', '-c']);
      expect(envoyC.args[0]).toMatch(
        /sed "s\|@EXTPROC_TOKEN@\|\$\(cat \/run\/extproc\/token\)\|" \/etc\/envoy\/envoy.yaml > \/run\/envoy\/envoy.yaml\s+&& exec envoy -c \/run\/envoy\/envoy.yaml/,
      );
      expect(envoyC.volumeMounts).toEqual([
        { name: 'envoy-config', mountPath: '/etc/envoy', readOnly: true },
        { name: 'extproc-token', mountPath: '/run/extproc', readOnly: true },
        { name: 'envoy-run', mountPath: '/run/envoy' },
      ]);
      expect(pod.volumes.map((v: Obj) => v.name)).toEqual(['envoy-config', 'extproc-token', 'envoy-run']);
      expect(pod.volumes[0].configMap).toEqual({ name: 'async-app-envoy' });
      const token = pod.initContainers[0];
      expect(token.volumeMounts).toEqual([{ name: 'extproc-token', mountPath: '/run/extproc' }]);
      expect(env(sidecar, 'EXTPROC_TOKEN_FILE').value).toBe('/run/extproc/token');
      expect(sidecar.volumeMounts).toEqual([{ name: 'extproc-token', mountPath: '/run/extproc', readOnly: true }]);
      const ports = Object.fromEntries(envoyC.ports.map((p: Obj) => [p.name, p.containerPort]));
      expect(ports).toEqual({ 'envoy-http': listener(podEnvoy, 'ingress').address.socket_address.port_value });
      // Admin and dispatch bind the pod's loopback; the probes ask /ready from inside the container.
      expect(podEnvoy.admin.address.socket_address.address).toBe('127.0.0.1');
      expect(listener(podEnvoy, 'dispatch').address.socket_address.address).toBe('127.0.0.1');
      for (const probe of [envoyC.readinessProbe, envoyC.startupProbe]) {
        expect(probe.exec.command.join(' ')).toContain(`/dev/tcp/127.0.0.1/${podEnvoy.admin.address.socket_address.port_value}`);
      }
      expect(app.ports[0].containerPort).toBe(endpointOf(cluster(podEnvoy, 'app')).port_value);
    });

    it('Service exposes Envoy 8080; PDB and Service select the pod', () => {
      const svc = find('Service', 'async-app');
      expect(svc.spec.ports).toEqual([{ name: 'http', port: 8080, targetPort: 'envoy-http', protocol: 'TCP' }]);
      const labels = dep.spec.template.metadata.labels;
      const selects = (sel: Record<string, string>) => Object.entries(sel).every(([k, v]) => labels[k] === v);
      expect(selects(svc.spec.selector)).toBe(true);
      expect(selects(find('PodDisruptionBudget', 'async-app').spec.selector.matchLabels)).toBe(true);
      expect(selects(dep.spec.selector.matchLabels)).toBe(true);
    });

    it('security: own ServiceAccount without token, non-root, read-only root fs, resources set', () => {
      expect(find('ServiceAccount', pod.serviceAccountName).automountServiceAccountToken).toBe(false);
      expect(pod.automountServiceAccountToken).toBe(false);
      expect(pod.securityContext.runAsNonRoot).toBe(true);
      for (const o of objs) {
        for (const c of podContainers(o)) {
          expect([c.name, c.securityContext?.readOnlyRootFilesystem, c.securityContext?.allowPrivilegeEscalation]).toEqual([c.name, true, false]);
          expect([c.name, typeof c.securityContext?.runAsUser]).toEqual([c.name, 'number']);
          expect([c.name, Boolean(c.resources?.requests?.cpu && c.resources?.requests?.memory && c.resources?.limits?.memory)]).toEqual([c.name, true]);
        }
      }
      // Shared termination budget covers the sidecar's SHUTDOWN_GRACE.
      expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(Number(env(sidecar, 'SHUTDOWN_GRACE').value));
    });

    if (which === 'overlays/try-it') {
      it('try-it: single-node Redis with AOF, REDIS_URL pointing at it, demo app and webhook receiver', () => {
        const redisSvc = find('Service', 'async-sidecar-redis');
        const redis = find('StatefulSet', 'async-sidecar-redis');
        expect(redis.spec.template.spec.containers[0].args.join(' ')).toContain('--appendonly yes --appendfsync everysec');
        const url = new URL(find('Secret', 'async-sidecar').stringData.REDIS_URL);
        expect([url.hostname, Number(url.port)]).toEqual([redisSvc.metadata.name, redisSvc.spec.ports[0].port]);
        expect(app.command).toEqual(['node', '/app/examples/app/server.js']);
        expect(app.image).toBe('envoy-async-sidecar-examples:dev');
        expect(sidecar.image).toBe('envoy-async-sidecar:dev');
        expect(sidecar.env.find((e: { name: string }) => e.name === 'WEBHOOK_ALLOW_PRIVATE_NETWORKS')).toBeUndefined();
        expect(env(sidecar, 'WEBHOOK_ALLOWED_HOSTS').value.split(',')).toContain('webhooks');
        const wh = find('Deployment', 'webhooks');
        expect(wh.spec.template.spec.containers[0].command).toEqual(['node', '/app/examples/webhook-receiver/server.js']);
        expect(find('Service', 'webhooks').spec.ports[0].port).toBe(9000);
        for (const o of objs) if (o.kind !== 'Namespace') expect(o.metadata.namespace).toBe('async-sidecar-demo');
      });
    }
  });

  const kubectl = has('kubectl', ['version', '--client']) ? it : it.skip;
  kubectl.each([['base'], ['overlays/try-it']])('`kubectl kustomize %s` builds, with the generated names wired in', (which) => {
    const out = execFileSync('kubectl', ['kustomize', join(K8S, which)], { encoding: 'utf8' });
    const objs = parseAllDocuments(out).map((d) => d.toJS());
    const secret = objs.find((o) => o.kind === 'Secret');
    const cm = objs.find((o) => o.kind === 'ConfigMap');
    expect(secret.metadata.name).toMatch(/^async-sidecar-[a-z0-9]{10}$/);
    expect(cm.metadata.name).toMatch(/^async-app-envoy-[a-z0-9]{10}$/);
    const dep = objs.find((o) => o.kind === 'Deployment' && o.metadata.name === 'async-app');
    expect(JSON.stringify(dep)).toContain(`"name":"${secret.metadata.name}"`);
    expect(dep.spec.template.spec.volumes[0].configMap.name).toBe(cm.metadata.name);
    const decoded = Buffer.from(secret.data.REDIS_URL, 'base64').toString();
    expect(decoded).toBe(which === 'base' ? 'redis://redis.example.internal:6379' : 'redis://async-sidecar-redis:6379');
  });
});

// ---------------------------------------------------------------------------------------------
describe('KEDA autoscaling (components/keda, examples/keda-scale-to-zero.yaml)', () => {
  const COMPONENT = join(K8S, 'components', 'keda');
  /** base/ with the component, as an overlay would have it: by `kubectl kustomize` when installed. */
  const { objs, renderedBy } = (() => {
    if (!has('kubectl', ['version', '--client'])) {
      const built = build(join(K8S, 'base'));
      applyComponent(built, COMPONENT);
      return { objs: built, renderedBy: 'the small renderer' };
    }
    // kustomize refuses absolute paths, so the overlay reaches the layout through a link.
    const dir = mkdtempSync(join(tmpdir(), 'eas-keda-'));
    try {
      symlinkSync(K8S, join(dir, 'k8s'));
      writeFileSync(
        join(dir, 'kustomization.yaml'),
        'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [k8s/base]\ncomponents: [k8s/components/keda]\n',
      );
      const out = execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8' });
      return { objs: parseAllDocuments(out).map((d) => d.toJS() as Obj), renderedBy: 'kubectl' };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  })();
  const so = objs.find((o) => o.kind === 'ScaledObject');
  const dep = objs.find((o) => o.kind === 'Deployment' && o.metadata.name === so?.spec.scaleTargetRef.name);
  const pod = podSpec(dep);
  const sidecar = pod.initContainers.find((c: Obj) => c.name === 'async-sidecar');
  const env = (name: string) => sidecar.env.find((e: Obj) => e.name === name);
  const configMap = (name: string) => objs.find((o) => o.kind === 'ConfigMap' && (o.metadata.name === name || o.metadata.name.startsWith(`${name}-`)));
  const queuesFile = configMap('async-sidecar-queues').data['queues.yaml'];
  const example = yamlDocs(join(K8S, 'examples', 'keda-scale-to-zero.yaml'));

  /** The sidecar's configuration from the pod's env and its mounted CONFIG_FILE, parsed as the sidecar does at start. */
  const sidecarConfig = (() => {
    const dir = mkdtempSync(join(tmpdir(), 'eas-keda-config-'));
    const mount = sidecar.volumeMounts.find((m: Obj) => env('CONFIG_FILE').value.startsWith(`${m.mountPath}/`));
    writeFileSync(join(dir, env('CONFIG_FILE').value.slice(mount.mountPath.length + 1)), queuesFile);
    // The token the pod's init container writes.
    writeFileSync(join(dir, 'token'), 'a'.repeat(48));
    const plain = Object.fromEntries(sidecar.env.filter((e: Obj) => e.value !== undefined).map((e: Obj) => [e.name, e.value]));
    try {
      return loadConfig(
        {
          ...plain,
          CONFIG_FILE: join(dir, 'queues.yaml'),
          EXTPROC_TOKEN_FILE: join(dir, 'token'),
          ADMIN_TOKEN: 'from-the-secret',
          REDIS_URL: 'redis://redis:6379',
        },
        [],
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  })();

  /** The one query shape that counts a queue right: each gauge's max() over the pods that report it. */
  const QUERY = /^max\(eas_queue_depth\{queue="([a-z0-9_-]+)"\}\) \+ max\(eas_queue_in_flight\{queue="\1"\}\)$/;
  const metadataOf = (o: Obj) => o.spec.triggers[0].metadata;

  it(`builds with base (rendered by ${renderedBy}); base alone has no KEDA object, so it builds without the CRD`, () => {
    expect(objs.filter((o) => o.kind === 'ScaledObject')).toHaveLength(1);
    expect(build(join(K8S, 'base')).filter((o) => o.apiVersion.startsWith('keda.sh/'))).toEqual([]);
  });

  it.each([
    ['components/keda/scaledobject.yaml', () => so],
    ['examples/keda-scale-to-zero.yaml', () => example[0]],
  ])("%s is a ScaledObject as KEDA v2.20.2's CRD and Prometheus scaler define it", (_name, get) => {
    expect(example).toHaveLength(1);
    const r = scaledObject.safeParse(get());
    expect(r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`)).toEqual([]);
  });

  it('counts queued (waiting or backing off) plus in-flight runs of a queue the sidecar serves, with max() across the pods', () => {
    for (const o of [so, example[0]]) {
      const { query } = metadataOf(o);
      expect(query).toMatch(QUERY);
      expect(query).not.toMatch(/sum/);
      expect(sidecarConfig.queues.has(QUERY.exec(query)![1]!)).toBe(true);
      expect(o.spec.triggers).toHaveLength(1);
      // No series is an error (KEDA keeps its replicas), not a 0 that scales in.
      expect(metadataOf(o).ignoreNullValues).toBe('false');
      expect(o.spec.triggers[0].metricType ?? 'AverageValue').toBe('AverageValue');
    }
    const registry = new Metrics({ defaultMetrics: false }).registry;
    for (const name of ['eas_queue_depth', 'eas_queue_in_flight']) expect(registry.getSingleMetric(name)).toBeDefined();
  });

  it('scales the pod that carries the sidecar, one run per pod: minReplicaCount 1, threshold = DISPATCH_CONCURRENCY', () => {
    expect(so.spec.scaleTargetRef.kind ?? 'Deployment').toBe('Deployment');
    expect(dep.kind).toBe('Deployment');
    // At 0 pods nothing would accept runs or report the queue: the sidecar shares the app's pod.
    expect(sidecar).toBeDefined();
    expect(so.spec.minReplicaCount).toBeGreaterThanOrEqual(1);
    expect(Number(metadataOf(so).threshold)).toBe(sidecarConfig.dispatchConcurrency);
    expect(so.spec.maxReplicaCount).toBeGreaterThan(so.spec.minReplicaCount);
  });

  it('cools down no sooner than a run may take, and gives a pod taken away mid-run that long to finish', () => {
    const graceS = Math.max(
      sidecarConfig.gracePeriodMs / 1000,
      ...[...sidecarConfig.queues.values()].map((q) => (q.gracePeriodMs ?? 0) / 1000),
      ...sidecarConfig.routes.map((r) => (r.gracePeriodMs ?? 0) / 1000),
    );
    expect(graceS).toBe(900);
    expect(so.spec.cooldownPeriod).toBeGreaterThanOrEqual(graceS);
    expect(example[0].spec.cooldownPeriod).toBeGreaterThanOrEqual(graceS);
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(graceS);
  });

  it("gives runs turned away by a starting app (backpressure) at least 390 s of tries, against the default's 151 s", () => {
    const guaranteed = (retries: number, maxDelayMs: number) =>
      Array.from({ length: retries }, (_, k) => backoffDelay(k, null, maxDelayMs, () => 0)).reduce((a, b) => a + b, 0);
    const queue = sidecarConfig.queues.get(QUERY.exec(metadataOf(so).query)![1]!)!;
    expect(guaranteed(queue.maxBackpressureRetries, queue.backpressureMaxDelayMs)).toBeGreaterThanOrEqual(390_000);
    expect(Math.floor(guaranteed(10, 60_000) / 1000)).toBe(151); // max_backpressure_retries and backpressure_max_delay defaults
    // Every path of the app is in that queue.
    expect(sidecarConfig.routes.map((r) => [r.prefix, r.queue])).toEqual([['/', queue.name]]);
  });

  it('lets Prometheus scrape the sidecars: admin port off loopback with ADMIN_TOKEN from the Secret, the port named and admitted', () => {
    const adminPort = sidecarConfig.adminAddr.port;
    expect(sidecarConfig.adminAddr.host).toBe('0.0.0.0');
    expect(env('ADMIN_TOKEN').valueFrom.secretKeyRef).toMatchObject({ key: 'ADMIN_TOKEN' });
    expect(env('ADMIN_TOKEN').valueFrom.secretKeyRef.name).toMatch(/^async-sidecar(-[a-z0-9]{10})?$/);
    expect(sidecar.ports).toEqual([{ name: 'metrics', containerPort: adminPort, protocol: 'TCP' }]);
    expect(dep.spec.template.metadata.annotations).toMatchObject({ 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(adminPort) });
    const np = objs.find((o) => o.kind === 'NetworkPolicy' && o.metadata.name === 'async-app-metrics');
    expect(np.spec.podSelector.matchLabels).toEqual(dep.spec.selector.matchLabels);
    expect(np.spec.ingress).toEqual([
      { from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } }], ports: [{ port: 'metrics', protocol: 'TCP' }] },
    ]);
    // The Prometheus KEDA asks is in the namespace the policy admits.
    expect(new URL(metadataOf(so).serverAddress).hostname).toMatch(/\.monitoring\.svc$/);
    // Every plain env value is a known setting that passes its schema.
    const byEnv = new Map(Object.values(SETTINGS).map((x) => [x.env, x]));
    for (const e of sidecar.env) if (e.value !== undefined) expect([e.name, byEnv.get(e.name)?.schema.safeParse(e.value).success]).toEqual([e.name, true]);
    // The CONFIG_FILE is the generated ConfigMap, mounted read-only.
    const volume = pod.volumes.find((v: Obj) => v.name === sidecar.volumeMounts.find((m: Obj) => m.mountPath === '/etc/async-sidecar').name);
    expect(volume.configMap.name).toBe(configMap('async-sidecar-queues').metadata.name);
  });

  it("the scale-to-zero example scales an app of its own Deployment, the one deploy/envoy-gateway's sidecar replays to", () => {
    const o = example[0];
    expect(o.spec.minReplicaCount).toBe(0);
    const egSidecar = yamlDocs(join(ROOT, 'deploy', 'envoy-gateway', 'sidecar.yaml'))[0].spec.template.spec.containers[0];
    const egEnv = (name: string) => egSidecar.env.find((e: Obj) => e.name === name).value;
    expect(new URL(egEnv('DISPATCH_URL')).hostname).toBe(o.spec.scaleTargetRef.name);
    expect(o.spec.cooldownPeriod).toBeGreaterThanOrEqual(Number(egEnv('RESPONSE_GRACE_PERIOD')));
  });
});
