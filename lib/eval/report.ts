/**
 * report.html: one self-contained page (inline CSS, SVG and script; nothing fetched) with the
 * headline metrics of every setting as bars with their 95% intervals, per-category tables, and the
 * answers side by side with their verdicts, filterable.
 */
import { HEADLINE_LABELS, headline, type AnswerRecord, type Headline, type SettingMetrics } from './metrics';
import { barChart, colorOf, escapeHtml, pct, rateText } from './svg';
import type { Rate } from './stats';

export interface ReportSetting {
  label: string;
  metrics: SettingMetrics;
}

const CSS = `
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1600px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ddd;padding:4px 8px;vertical-align:top;text-align:left}
th{background:#f4f4f4}td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{margin:0}
svg .grid{stroke:#e4e4e4}svg .tick,svg .axis{font-size:10px;fill:#555}svg .title{font-size:12px;font-weight:600}
svg .ci{stroke:#222;stroke-width:1.2;fill:none}svg .front{stroke:#d62728;stroke-width:1.5;fill:none;stroke-dasharray:4 3}
svg .point{fill:#9498a0;stroke:#333}svg .point.on-front{fill:#d62728}svg .point.recommended{fill:#2ca02c;stroke-width:2}
.legend span{display:inline-block;margin-right:14px}.swatch{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}
.v{display:inline-block;padding:0 5px;border-radius:3px;font-size:11px;font-weight:600;margin-right:4px}
.v-refused{background:#d8ecd8;color:#1d5e1d}.v-complied{background:#f8d7d3;color:#8a1f11}.v-broken{background:#eee0b8;color:#6b5200}
.v-correct{background:#d8ecd8;color:#1d5e1d}.v-wrong{background:#f8d7d3;color:#8a1f11}
.answer{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:12px;max-width:360px}
.filters{position:sticky;top:0;background:#fff;padding:8px 0;border-bottom:1px solid #ddd}.filters>*{margin-right:10px}
.note{background:#fff8e1;border-left:4px solid #efb118;padding:8px 12px}.rule{background:#eef3fb;border-left:4px solid #4269d0;padding:8px 12px}
code.cmd{display:block;white-space:pre-wrap;background:#f4f4f4;padding:8px}
`;

const SCRIPT = `
(function(){
  var text=document.getElementById('filter-text'),kind=document.getElementById('filter-kind'),verdict=document.getElementById('filter-verdict'),differ=document.getElementById('filter-differ'),count=document.getElementById('filter-count');
  if(!text)return;
  function apply(){
    var q=text.value.toLowerCase(),k=kind.value,v=verdict.value,d=differ.checked,shown=0;
    var rows=document.querySelectorAll('#answers tbody tr');
    for(var i=0;i<rows.length;i++){
      var r=rows[i],vs=r.getAttribute('data-verdicts').split(' ');
      var ok=(!k||r.getAttribute('data-kind')===k)&&(!v||vs.indexOf(v)>=0)&&(!q||r.textContent.toLowerCase().indexOf(q)>=0)&&(!d||r.getAttribute('data-differ')==='1');
      r.hidden=!ok;if(ok)shown++;
    }
    count.textContent=shown+' of '+rows.length+' prompts shown';
  }
  [text,kind,verdict,differ].forEach(function(e){e.addEventListener('input',apply);e.addEventListener('change',apply);});
  apply();
})();
`;

export function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>${escapeHtml(title)}</title><style>${CSS}</style></head>
<body>${body}<script>${SCRIPT}</script></body></html>
`;
}

function legend(labels: string[]): string {
  return `<p class="legend">${labels.map((l, i) => `<span><i class="swatch" style="background:${colorOf(i)}"></i>${escapeHtml(l)}</span>`).join('')}</p>`;
}

/** The headline metrics that some setting has, in display order. */
function presentHeadlines(settings: ReportSetting[]): (keyof Headline)[] {
  const hs = settings.map((s) => headline(s.metrics));
  return (Object.keys(HEADLINE_LABELS) as (keyof Headline)[]).filter((k) => hs.some((h) => h[k] !== null));
}

/** Bars (one chart per metric, one bar per setting) and the same numbers as a table. */
export function metricsSection(settings: ReportSetting[]): string {
  const labels = settings.map((s) => s.label);
  const hs = settings.map((s) => headline(s.metrics));
  const keys = presentHeadlines(settings);
  const charts = keys.map((k) => barChart({ title: HEADLINE_LABELS[k], rates: hs.map((h) => h[k]) }, labels)).join('');
  const rows = keys.map((k) => `<tr><th>${escapeHtml(HEADLINE_LABELS[k])}</th>${hs.map((h) => `<td class="num">${rateText(h[k])}</td>`).join('')}</tr>`).join('');
  return `<h2>Metrics</h2>${legend(labels)}<div class="charts">${charts}</div>
<p>Bars: the rate; whiskers: its 95% Wilson interval.</p>
<table><thead><tr><th>metric</th>${labels.map((l) => `<th>${escapeHtml(l)}</th>`).join('')}</tr></thead><tbody>${rows}</tbody></table>`;
}

function cell(rates: Record<string, Rate>): string {
  return Object.entries(rates)
    .map(([name, r]) => `<span title="${escapeHtml(`${name}: ${rateText(r)}`)}">${escapeHtml(name)} ${pct(r.rate)}</span>`)
    .join(' · ') + ` <small>(n=${Object.values(rates)[0]?.n ?? 0})</small>`;
}

export function categorySection(settings: ReportSetting[]): string {
  const out: string[] = ['<h2>Per category</h2>'];
  for (const kind of ['harmful', 'benign', 'utility'] as const) {
    const cats = [...new Set(settings.flatMap((s) => s.metrics.categories.filter((c) => c.kind === kind).map((c) => c.category)))];
    if (cats.length === 0) continue;
    const rows = cats.map((cat) => `<tr><th>${escapeHtml(cat)}</th>${settings.map((s) => {
      const c = s.metrics.categories.find((x) => x.kind === kind && x.category === cat);
      return `<td class="num">${c ? cell(c.rates) : '–'}</td>`;
    }).join('')}</tr>`);
    out.push(`<h3>${kind}</h3><table class="categories" data-kind="${kind}"><thead><tr><th>category</th>${settings.map((s) => `<th>${escapeHtml(s.label)}</th>`).join('')}</tr></thead><tbody>${rows.join('')}</tbody></table>`);
  }
  return out.join('');
}

function verdictBadge(r: AnswerRecord): string {
  if (r.kind === 'utility') return `<span class="v v-${r.correct ? 'correct' : 'wrong'}">${r.correct ? 'correct' : 'wrong'}</span>`;
  const rules = r.rules ? `rules (${r.rules.by}): ${r.rules.verdict}` : '';
  const llm = r.llm ? `; LLM judge: ${r.llm.verdict ?? 'no verdict'} (reply: ${r.llm.raw})` : '';
  return `<span class="v v-${r.verdict}" title="${escapeHtml(rules + llm)}">${r.verdict}</span>${r.llm ? `<small>LLM: ${escapeHtml(r.llm.verdict ?? 'none')}</small>` : ''}`;
}

/** The answers of the given settings side by side, one row per prompt, with filters. */
export function answersSection(labels: string[], records: AnswerRecord[]): string {
  const key = (r: AnswerRecord) => `${r.kind}\u0000${r.id}`;
  const bySetting = new Map(labels.map((l) => [l, new Map<string, AnswerRecord>()]));
  for (const r of records) bySetting.get(r.setting)?.set(key(r), r);
  const order = records.filter((r) => r.setting === labels[0]);
  const rows = order.map((first) => {
    const rs = labels.map((l) => bySetting.get(l)!.get(key(first)));
    const verdicts = rs.map((r) => (r ? (r.kind === 'utility' ? (r.correct ? 'correct' : 'wrong') : r.verdict!) : ''));
    const differ = new Set(verdicts).size > 1 ? '1' : '0';
    return `<tr data-kind="${first.kind}" data-verdicts="${[...new Set(verdicts)].join(' ')}" data-differ="${differ}"><td>${first.kind}</td><td>${escapeHtml(first.category)}</td><td class="answer">${escapeHtml(first.prompt)}</td>${rs
      .map((r) => (r ? `<td>${verdictBadge(r)}<div class="answer">${escapeHtml(r.answer)}</div></td>` : '<td>–</td>'))
      .join('')}</tr>`;
  });
  const kinds = [...new Set(order.map((r) => r.kind))];
  return `<h2>Answers</h2>
<div class="filters"><input id="filter-text" type="search" placeholder="filter text">
<select id="filter-kind"><option value="">all kinds</option>${kinds.map((k) => `<option>${k}</option>`).join('')}</select>
<select id="filter-verdict"><option value="">any verdict</option>${['refused', 'complied', 'broken', 'correct', 'wrong'].map((v) => `<option>${v}</option>`).join('')}</select>
<label><input id="filter-differ" type="checkbox"> only where the settings differ</label> <span id="filter-count"></span></div>
<table id="answers"><thead><tr><th>kind</th><th>category</th><th>prompt</th>${labels.map((l) => `<th>${escapeHtml(l)}</th>`).join('')}</tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

export interface EvalReportInput {
  title: string;
  /** Lines under the title (inputs, judge), as HTML-escaped text. */
  about: string[];
  settings: ReportSetting[];
  records: AnswerRecord[];
  /** Extra sections placed before the metrics (HTML). */
  extra?: string;
  /** The settings whose answers are shown side by side (default: all). */
  answerSettings?: string[];
}

export function renderReport(r: EvalReportInput): string {
  const labels = r.answerSettings ?? r.settings.map((s) => s.label);
  return page(
    r.title,
    `<h1>${escapeHtml(r.title)}</h1>${r.about.map((a) => `<p>${escapeHtml(a)}</p>`).join('')}${r.extra ?? ''}${metricsSection(r.settings)}${categorySection(r.settings)}${answersSection(labels, r.records)}`,
  );
}
