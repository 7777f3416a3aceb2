/**
 * Baseline for the completion path: a minimal BullMQ worker that does what the sidecar's worker
 * does per run, with undici: replay the request to the upstream, read the response, POST a JSON
 * webhook with the result, return the result (BullMQ stores it with the job).
 *
 * Usage (child process with IPC): node bullmq-baseline.js <redisPort> <queue> <concurrency> <upstreamBase> <hookUrl>
 * Sends {ready:true} once connected, starts consuming on {cmd:'go'}.
 */
import { Worker, type Job } from 'bullmq';
import { Agent, request } from 'undici';

export interface BenchJob {
  method: string;
  target: string;
  headers: Array<[string, string]>;
  body: string;
}

async function main(): Promise<void> {
  const [redisPort, queue, concurrency, upstreamBase, hookUrl] = process.argv.slice(2);
  const agent = new Agent({ connections: null, keepAliveTimeout: 10_000, headersTimeout: 0, bodyTimeout: 0 });
  const processor = async (job: Job<BenchJob>) => {
    const d = job.data;
    const res = await request(upstreamBase + d.target, {
      dispatcher: agent,
      method: d.method as 'POST',
      headers: d.headers.flat(),
      body: d.body,
    });
    const body = Buffer.from(await res.body.arrayBuffer());
    const hook = await request(hookUrl!, {
      dispatcher: agent,
      method: 'POST',
      headers: { 'content-type': 'application/json', 'webhook-id': `msg_${job.id}` },
      body: JSON.stringify({
        type: 'run.completed',
        data: { run_id: job.id, status: 'succeeded', response: { status_code: res.statusCode, body: body.toString('base64') } },
      }),
    });
    await hook.body.dump();
    if (hook.statusCode >= 300) throw new Error(`webhook answered ${hook.statusCode}`);
    return { status: res.statusCode, body: body.toString() };
  };
  const worker = new Worker<BenchJob>(queue!, processor, {
    connection: { host: '127.0.0.1', port: Number(redisPort) },
    concurrency: Number(concurrency),
    autorun: false,
  });
  worker.on('error', (err) => process.stderr.write(`bullmq worker error: ${err.message}\n`));
  await worker.waitUntilReady();
  process.on('message', (m: { cmd: string }) => {
    if (m.cmd === 'go') void worker.run();
  });
  process.on('SIGTERM', () => {
    void worker.close(true).finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 3000).unref();
  });
  process.send!({ ready: true });
}

main().catch((err: Error) => {
  process.stderr.write(`bullmq-baseline: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
