/** safety-arithmetic doctor: the backends, the GPU, and why CUDA is not in use when it is not. */
import { parseCommandArgs } from '../args';
import { doctor } from '../../device';

export const DOCTOR_USAGE = `  doctor   Report the native backends, the GPU, and why CUDA is not in use when it is not
           safety-arithmetic doctor [--json]
`;

// Shown on their own lines (cpu kernel, cpu features) rather than as key=value.
const CPU_KERNEL_FIELDS = new Set(['name', 'kernel', 'kernelError', 'kernels', 'bf16Products', 'cpuFeatures']);

export function runDoctor(argv: string[]): number {
  const { values } = parseCommandArgs({ args: argv, options: { json: { type: 'boolean' } } });
  const r = doctor();
  if (values.json) {
    process.stdout.write(JSON.stringify(r) + '\n');
    return 0;
  }
  const lines = [`safety-arithmetic ${r.packageVersion} on Node ${r.node} (${r.platform})`, `addon: ${r.addon ?? 'unknown'}`];
  for (const b of r.backends) {
    const details = Object.entries(b.details).filter(([k]) => !CPU_KERNEL_FIELDS.has(k)).map(([k, v]) => `${k}=${String(v)}`).join(' ');
    lines.push(`${b.name.padEnd(5)} ${b.available ? 'available' : 'unavailable'}${details ? '  ' + details : ''}${b.available ? '' : `\n      why: ${b.reason}`}`);
  }
  const k = r.cpuKernel;
  const variants = k.variants.map((v) => `${v.name} ${v.supported ? 'runs' : `no (lacks ${v.missing ?? '?'})`}`).join(', ');
  lines.push(`cpu kernel: ${k.chosen ?? `error: ${k.error ?? 'unknown'}`}${variants ? `  (variants: ${variants})` : ''}`);
  lines.push(`bf16 products (--matmul-precision bf16): ${k.bf16Products ? 'yes' : 'no'}`);
  if (k.cpuFeatures.length > 0) lines.push(`cpu features: ${k.cpuFeatures.join(' ')}`);
  lines.push(r.selected.error ? `selected (${r.selected.requested}): error: ${r.selected.error}` : `selected (${r.selected.requested}): ${r.selected.backend}`);
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}

