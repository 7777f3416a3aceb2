/**
 * The floor: a bare grpc-js ext_proc server with the sidecar's proto loading and server options
 * that stores nothing. An async request gets the same answers as from the sidecar (CONTINUE +
 * mode_override BUFFERED when it has a body, then a 202 immediate response); any other request
 * gets CONTINUE with every later phase switched off. Usage: node floor-server.js <port>
 */
import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { ProcessingRequest__Output } from '../src/generated/envoy/service/ext_proc/v3/ProcessingRequest';
import type { ProcessingResponse } from '../src/generated/envoy/service/ext_proc/v3/ProcessingResponse';
import { loadExtProcProto } from '../src/extproc/proto';
import { CONTINUE_AND_STOP, CONTINUE_WITH_BUFFERED_BODY, immediateResponse } from '../src/extproc/messages';

/** BENCH_END_EARLY=1: end the call (OK trailers) right after the final answer, without waiting for the half-close. */
const END_EARLY = process.env.BENCH_END_EARLY === '1';
const MAX_BODY_BYTES = 10 * 1024 * 1024;
const limit = MAX_BODY_BYTES + 1024 * 1024;

function accepted(): ProcessingResponse {
  const id = randomUUID();
  return immediateResponse({
    status: 202,
    headers: [
      ['content-type', 'application/json'],
      ['x-request-id', id],
      ['location', `/v1/runs/${id}`],
    ],
    body: `{"run_id":"${id}"}\n`,
    details: 'async_run_accepted',
  });
}

function isAsync(msg: ProcessingRequest__Output): boolean {
  for (const h of msg.request_headers?.headers?.headers ?? []) {
    if (h.key === ':path') return /[?&]async=(true|1)(&|$)/.test(h.raw_value?.toString('latin1') ?? '');
  }
  return false;
}

function main(): void {
  const port = Number(process.argv[2] ?? 0);
  const server = new grpc.Server({
    'grpc.max_receive_message_length': limit,
    'grpc.max_send_message_length': limit,
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.http2.min_ping_interval_without_data_ms': 10_000,
  });
  const proto = loadExtProcProto();
  server.addService(proto.envoy.service.ext_proc.v3.ExternalProcessor.service, {
    Process: (call: grpc.ServerDuplexStream<ProcessingRequest__Output, ProcessingResponse>) => {
      let done = false;
      let ended = false;
      const finish = () => {
        if (END_EARLY && done && !ended) {
          ended = true;
          call.end();
        }
      };
      call.on('data', (msg: ProcessingRequest__Output) => {
        if (done) return;
        if (msg.request === 'request_headers') {
          if (!isAsync(msg)) {
            done = true;
            call.write(CONTINUE_AND_STOP);
          } else if (msg.request_headers?.end_of_stream) {
            done = true;
            call.write(accepted());
          } else {
            call.write(CONTINUE_WITH_BUFFERED_BODY);
          }
        } else if (msg.request === 'request_body' && msg.request_body?.end_of_stream) {
          done = true;
          call.write(accepted());
        }
        finish();
      });
      call.on('end', () => {
        if (!ended) {
          ended = true;
          call.end();
        }
      });
      call.on('error', () => undefined);
    },
  });
  server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, bound) => {
    if (err) throw err;
    process.stdout.write(`READY ${bound}\n`);
  });
  process.on('SIGTERM', () => {
    server.forceShutdown();
    process.exit(0);
  });
}

main();
