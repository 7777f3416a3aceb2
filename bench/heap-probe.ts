/**
 * Preloaded (`--expose-gc --require heap-probe.js`) into a process whose memory a scenario
 * measures: on SIGUSR2 it runs a full GC and prints `HEAP <json>` (process.memoryUsage()) on
 * stdout. RSS alone moves by tens of MiB with when V8 last collected; the heap after a full GC
 * is what the process really keeps, so the scenario reports both.
 */
process.on('SIGUSR2', () => {
  (globalThis as { gc?: () => void }).gc?.();
  const { rss, heapTotal, heapUsed, external, arrayBuffers } = process.memoryUsage();
  process.stdout.write(`HEAP ${JSON.stringify({ rss, heapTotal, heapUsed, external, arrayBuffers })}\n`);
});
