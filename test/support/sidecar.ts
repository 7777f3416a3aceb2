import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { loadConfig, type Config } from '../../src/config';
import { startSidecar, type Sidecar } from '../../src/sidecar';
import { Metrics } from '../../src/telemetry';
import { registerListener } from './listeners';

/** Starts the sidecar in this process on free ports, with settings given as environment variables. */
export async function startTestSidecar(env: Record<string, string>, args: string[] = []): Promise<Sidecar & { config: Config }> {
  const config = loadConfig(
    {
      EXTPROC_ADDR: '127.0.0.1:0',
      ADMIN_ADDR: '127.0.0.1:0',
      LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
      WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true',
      ...env,
    },
    args,
  );
  const sidecar = await startSidecar(config, pino({ level: config.logLevel }), new Metrics({ defaultMetrics: false }));
  // Its admin answers are checked against openapi/openapi.yaml while it runs (test/support/openapi.ts).
  const unregister = registerListener(sidecar.adminPort, 'admin');
  const stop = sidecar.stop;
  return Object.assign(sidecar, {
    config,
    stop: async () => {
      unregister();
      await stop();
    },
  });
}

/** Polls `check` until it returns a value other than undefined. */
export async function eventually<T>(check: () => Promise<T | undefined> | T | undefined, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Writes a CONFIG_FILE (YAML text) to a temporary folder and returns its path. */
export function writeConfigFile(yaml: string): string {
  const path = join(mkdtempSync(join(tmpdir(), 'eas-config-')), 'config.yaml');
  writeFileSync(path, yaml);
  return path;
}
