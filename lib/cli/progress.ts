/** A one-line progress bar with bytes (or items) and ETA, drawn on stderr when it is a terminal. */
export interface ProgressBar {
  update(phase: string, done: number, total: number): void;
  finish(): void;
}

function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '--';
  if (s < 60) return `${Math.round(s)}s`;
  return `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
}

export function progressBar(stream: NodeJS.WriteStream = process.stderr, unit: 'bytes' | 'items' = 'bytes'): ProgressBar {
  const amount = unit === 'bytes' ? formatBytes : String;
  if (!stream.isTTY) return { update() {}, finish() {} };
  const start = Date.now();
  let drawn = false;
  return {
    update(phase, done, total) {
      const frac = total > 0 ? Math.min(1, done / total) : 0;
      const width = 30;
      const fill = Math.round(frac * width);
      const elapsed = (Date.now() - start) / 1000;
      const eta = frac > 0 ? (elapsed * (1 - frac)) / frac : Infinity;
      const line = `${phase.padEnd(9)} [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${(frac * 100).toFixed(0).padStart(3)}% ${amount(done)} / ${amount(total)}  ETA ${formatSeconds(eta)}`;
      stream.write(`\r${line.slice(0, (stream.columns || 100) - 1)}\x1b[K`);
      drawn = true;
    },
    finish() {
      if (drawn) stream.write('\r\x1b[K');
    },
  };
}
