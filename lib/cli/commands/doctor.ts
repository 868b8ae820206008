/** safety-arithmetic doctor: the backends, the GPU, and why CUDA is not in use when it is not. */
import { parseCommandArgs } from '../args';
import { doctor } from '../../device';

export const DOCTOR_USAGE = `  doctor   Report the native backends, the GPU, and why CUDA is not in use when it is not
           safety-arithmetic doctor [--json]
`;

export function runDoctor(argv: string[]): number {
  const { values } = parseCommandArgs({ args: argv, options: { json: { type: 'boolean' } } });
  const r = doctor();
  if (values.json) {
    process.stdout.write(JSON.stringify(r) + '\n');
    return 0;
  }
  const lines = [`safety-arithmetic ${r.packageVersion} on Node ${r.node} (${r.platform})`, `addon: ${r.addon ?? 'unknown'}`];
  for (const b of r.backends) {
    const details = Object.entries(b.details).filter(([k]) => k !== 'name').map(([k, v]) => `${k}=${String(v)}`).join(' ');
    lines.push(`${b.name.padEnd(5)} ${b.available ? 'available' : 'unavailable'}${details ? '  ' + details : ''}${b.available ? '' : `\n      why: ${b.reason}`}`);
  }
  lines.push(r.selected.error ? `selected (${r.selected.requested}): error: ${r.selected.error}` : `selected (${r.selected.requested}): ${r.selected.backend}`);
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}

