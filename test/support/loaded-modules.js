// Preloaded into a sidecar process with `node --require` (NODE_OPTIONS) by the tracing test: when
// the process exits it writes, as one line on stderr, the paths of every module it loaded that
// match LOADED_MODULES_MATCH (a regular expression).
'use strict';
const match = new RegExp(process.env.LOADED_MODULES_MATCH || '.');
process.on('exit', () => {
  const loaded = Object.keys(require.cache).filter((p) => match.test(p));
  process.stderr.write(`LOADED_MODULES ${JSON.stringify(loaded)}\n`);
});
