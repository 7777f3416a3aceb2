#!/usr/bin/env node
import { ConfigError, HelpRequested, VersionRequested, helpText, loadConfig, packageVersion, type Config } from './config';
import { startSidecar } from './sidecar';
import { createLogger } from './telemetry';

/**
 * Entry point, and the package's `envoy-async-sidecar` bin: parse the configuration, start the
 * role's parts, stop cleanly on signals.
 */
async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig(process.env, process.argv.slice(2));
  } catch (err) {
    if (err instanceof HelpRequested) {
      process.stdout.write(helpText());
      return;
    }
    if (err instanceof VersionRequested) {
      process.stdout.write(`${packageVersion()}\n`);
      return;
    }
    if (err instanceof ConfigError) {
      process.stderr.write(`envoy-async-sidecar: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const logger = createLogger(config.logLevel);
  const sidecar = await startSidecar(config, logger);
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    if (++signals > 1) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    logger.info({ signal }, 'signal received');
    sidecar.stop().then(
      () => process.exit(0),
      (err: Error) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

main().catch((err: Error) => {
  process.stderr.write(`envoy-async-sidecar: failed to start: ${err.message}\n`);
  process.exit(1);
});
