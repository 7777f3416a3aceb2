/**
 * Summarizes a V8 .cpuprofile (node --cpu-prof): self time by module group and by function.
 * Usage as a script: node dist-bench/bench/profile.js <file.cpuprofile> [top]
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
}

function group(url: string, fn: string): string {
  if (fn === '(garbage collector)') return '(gc)';
  if (fn === '(idle)' || fn === '(program)' || fn === '(root)') return fn;
  const nm = /node_modules\/((@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1]!;
  if (url.startsWith('node:')) return url.split('/')[0]!.replace(/^node:internal.*/, 'node:internal');
  if (url === '') return '(native)';
  const src = /\/(src|bench)\/(.*)$/.exec(url);
  return src ? `${src[1]}/${src[2]!.split('/')[0]}` : url;
}

/** Self time by module group, as shares of the busy samples (largest first): what the report's "what bounds it now" lines name. */
export function profileGroups(file: string, top = 5): Array<[string, number]> {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byGroup = new Map<string, number>();
  let busy = 0;
  for (const n of p.nodes) {
    const hits = n.hitCount ?? 0;
    const g = group(n.callFrame.url, n.callFrame.functionName);
    if (hits === 0 || g === '(idle)') continue;
    busy += hits;
    byGroup.set(g, (byGroup.get(g) ?? 0) + hits);
  }
  return [...byGroup]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([g, h]): [string, number] => [g, h / Math.max(1, busy)]);
}

export function summarizeProfile(file: string, top = 25): string {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const total = p.nodes.reduce((s, n) => s + (n.hitCount ?? 0), 0);
  const busy = p.nodes.filter((n) => n.callFrame.functionName !== '(idle)').reduce((s, n) => s + (n.hitCount ?? 0), 0);
  const byGroup = new Map<string, number>();
  const byFn = new Map<string, number>();
  for (const n of p.nodes) {
    const hits = n.hitCount ?? 0;
    if (hits === 0) continue;
    const { functionName, url, lineNumber } = n.callFrame;
    const g = group(url, functionName);
    byGroup.set(g, (byGroup.get(g) ?? 0) + hits);
    const short = url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*\/(dist|dist-bench)\//, '');
    const key = `${functionName || '(anonymous)'}  ${short}${url ? `:${lineNumber + 1}` : ''}`;
    byFn.set(key, (byFn.get(key) ?? 0) + hits);
  }
  const pctOf = (h: number) => `${((100 * h) / Math.max(1, busy)).toFixed(1).padStart(5)}%`;
  const lines = [
    `${((p.endTime - p.startTime) / 1e6).toFixed(1)} s profiled, ${((100 * busy) / Math.max(1, total)).toFixed(0)}% busy; shares of busy samples`,
    '',
    'self time by module:',
  ];
  for (const [g, h] of [...byGroup]
    .filter(([g]) => g !== '(idle)')
    .sort((a, b) => b[1] - a[1])
    .slice(0, 15))
    lines.push(`${pctOf(h)}  ${g}`);
  lines.push('', 'self time by function:');
  for (const [k, h] of [...byFn]
    .filter(([k]) => !k.startsWith('(idle)'))
    .sort((a, b) => b[1] - a[1])
    .slice(0, top))
    lines.push(`${pctOf(h)}  ${k}`);
  return lines.join('\n');
}

if (require.main === module) {
  process.stdout.write(`${summarizeProfile(process.argv[2]!, Number(process.argv[3] ?? 30))}\n`);
}
