/** The sweep's part of the report: the recommendation and its rule, the grid, and the Pareto front. */
import { escapeHtml, rateText, scatter } from './svg';
import type { SweepSummary } from './sweep';

export function sweepSection(s: SweepSummary): string {
  const rec = s.recommended
    ? `<p>Recommended: <b>${escapeHtml(s.recommended.label)}</b></p><code class="cmd">${escapeHtml(s.recommended.command)}</code>`
    : '<p>No setting lowered the attack success rate within the tolerances: nothing is recommended.</p>';
  const pts = (key: 'overSafety' | 'utility') =>
    s.points.filter((p) => p.headline.attackSuccess && p.headline[key]).map((p) => ({ label: p.label, x: p.headline.attackSuccess!, y: p.headline[key]!, front: p.front, recommended: p.label === s.recommended?.label }));
  const plots = [pts('overSafety').length ? scatter(pts('overSafety'), 'attack success', 'over-safety') : '', pts('utility').length ? scatter(pts('utility'), 'attack success', 'utility accuracy') : ''].join('');
  const rows = s.points
    .map((p) => `<tr${p.label === s.recommended?.label ? ' class="recommended"' : ''}><td>${p.lambda}</td><td>${p.topK ?? '–'}</td><td>${p.alpha}</td>${(['attackSuccess', 'harmfulRefused', 'harmfulBroken', 'overSafety', 'utility'] as const).map((k) => `<td class="num">${rateText(p.headline[k])}</td>`).join('')}<td>${p.front ? 'yes' : ''}</td><td>${p.label === s.baseline ? 'target' : p.label === s.recommended?.label ? 'recommended' : ''}</td></tr>`)
    .join('');
  return `<h2>Recommendation</h2><div class="rule">${rec}<p>Rule: ${escapeHtml(s.rule)}</p></div>
<h2>Pareto front</h2><p>Each point is a setting (whiskers: 95% intervals); red points are on the front of attack success, over-safety and utility (no other setting is at least as good on all three and better on one); green is the recommendation.</p>
<div class="charts">${plots}</div>
<h2>Grid</h2><table id="grid"><thead><tr><th>lambda</th><th>top-k %</th><th>alpha</th><th>attack success</th><th>harmful refused</th><th>harmful broken</th><th>over-safety</th><th>utility</th><th>front</th><th></th></tr></thead><tbody>${rows}</tbody></table>`;
}
