/** Inline SVG charts for the reports: rates as bars with their intervals, and scatter plots of two rates. */
import type { Rate } from './stats';

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

const PALETTE = ['#4269d0', '#efb118', '#ff725c', '#6cc5b0', '#3ca951', '#ff8ab7', '#a463f2', '#97bbf5', '#9c6b4e', '#9498a0'];
export const colorOf = (i: number): string => PALETTE[i % PALETTE.length]!;

export const pct = (x: number | null): string => (x === null ? '–' : `${(100 * x).toFixed(1)}%`);

export function rateText(r: Rate | null): string {
  if (!r || r.rate === null) return '–';
  return `${pct(r.rate)} [${pct(r.low)}, ${pct(r.high)}] (${r.k}/${r.n})`;
}

export interface BarGroup {
  title: string;
  /** One per series (setting), in series order; a null rate draws no bar. */
  rates: (Rate | null)[];
}

/** One chart per group: a bar per series, 0-100%, with its 95% interval as a whisker. */
export function barChart(group: BarGroup, series: string[]): string {
  const barW = 26, gap = 10, left = 36, top = 24, h = 140;
  const width = Math.max(240, left + series.length * (barW + gap) + gap);
  const y = (v: number) => top + h - v * h;
  const parts: string[] = [];
  for (const t of [0, 0.25, 0.5, 0.75, 1])
    parts.push(`<line x1="${left}" x2="${width}" y1="${y(t)}" y2="${y(t)}" class="grid"/><text x="${left - 4}" y="${y(t) + 4}" class="tick" text-anchor="end">${t * 100}</text>`);
  group.rates.forEach((r, i) => {
    if (!r || r.rate === null) return;
    const x = left + gap + i * (barW + gap);
    const tip = escapeHtml(`${series[i]}: ${rateText(r)}`);
    parts.push(`<rect class="bar" x="${x}" y="${y(r.rate)}" width="${barW}" height="${Math.max(0, h - (y(r.rate) - top))}" fill="${colorOf(i)}"><title>${tip}</title></rect>`);
    const cx = x + barW / 2;
    parts.push(`<path class="ci" d="M${cx},${y(r.high!)}V${y(r.low!)}M${cx - 5},${y(r.high!)}h10M${cx - 5},${y(r.low!)}h10"/>`);
  });
  return `<figure class="chart"><svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${top + h + 8}" role="img" aria-label="${escapeHtml(group.title)}"><text x="4" y="14" class="title">${escapeHtml(group.title)} (%)</text>${parts.join('')}</svg></figure>`;
}

export interface ScatterPoint {
  label: string;
  x: Rate;
  y: Rate;
  front: boolean;
  recommended: boolean;
}

/** A scatter plot of two rates in [0, 1] with both intervals; the front's points joined by a line. */
export function scatter(points: ScatterPoint[], xLabel: string, yLabel: string): string {
  const left = 44, top = 16, w = 280, h = 220;
  const X = (v: number) => left + v * w, Y = (v: number) => top + h - v * h;
  const parts: string[] = [];
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    parts.push(`<line x1="${left}" x2="${left + w}" y1="${Y(t)}" y2="${Y(t)}" class="grid"/><text x="${left - 4}" y="${Y(t) + 4}" class="tick" text-anchor="end">${t * 100}</text>`);
    parts.push(`<text x="${X(t)}" y="${top + h + 14}" class="tick" text-anchor="middle">${t * 100}</text>`);
  }
  const front = points.filter((p) => p.front && p.x.rate !== null && p.y.rate !== null).sort((a, b) => a.x.rate! - b.x.rate! || a.y.rate! - b.y.rate!);
  if (front.length > 1) parts.push(`<polyline class="front" points="${front.map((p) => `${X(p.x.rate!)},${Y(p.y.rate!)}`).join(' ')}"/>`);
  for (const p of [...points].sort((a, b) => Number(a.recommended) - Number(b.recommended))) {
    if (p.x.rate === null || p.y.rate === null) continue;
    const cx = X(p.x.rate), cy = Y(p.y.rate);
    parts.push(`<path class="ci" d="M${X(p.x.low!)},${cy}H${X(p.x.high!)}M${cx},${Y(p.y.low!)}V${Y(p.y.high!)}"/>`);
    const cls = `point${p.front ? ' on-front' : ''}${p.recommended ? ' recommended' : ''}`;
    parts.push(`<circle class="${cls}" cx="${cx}" cy="${cy}" r="${p.recommended ? 7 : 5}"><title>${escapeHtml(`${p.label}: ${xLabel} ${rateText(p.x)}; ${yLabel} ${rateText(p.y)}`)}</title></circle>`);
  }
  return `<figure class="chart"><svg xmlns="http://www.w3.org/2000/svg" width="${left + w + 16}" height="${top + h + 34}" role="img" aria-label="${escapeHtml(`${yLabel} against ${xLabel}`)}">${parts.join('')}<text x="${left + w / 2}" y="${top + h + 30}" class="axis" text-anchor="middle">${escapeHtml(xLabel)} (%)</text><text transform="translate(12,${top + h / 2}) rotate(-90)" class="axis" text-anchor="middle">${escapeHtml(yLabel)} (%)</text></svg></figure>`;
}
