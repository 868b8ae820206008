/**
 * Dataset matchers: how a prompt set says what a correct, compliant or refusing answer looks like.
 * exact and prefix compare text with surrounding whitespace trimmed and inner runs of whitespace
 * collapsed (case-sensitive); regex tests the answer as generated; number compares the last number in
 * the answer with the expected one.
 */
export const MATCHER_TYPES = ['exact', 'prefix', 'regex', 'number'] as const;
export type MatcherType = (typeof MATCHER_TYPES)[number];

export interface Matcher {
  type: MatcherType;
  value: string;
  /** regex only: RegExp flags ("i"). */
  flags?: string;
}

export function normalizeAnswer(s: string): string {
  return s.trim().replace(/\s+/g, ' ');
}

const NUMBER = /[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?/g;

function lastNumber(s: string): number | null {
  const all = s.match(NUMBER);
  return all ? Number(all[all.length - 1]!.replace(/,/g, '')) : null;
}

const compiled = new WeakMap<Matcher, RegExp>();

function regexOf(m: Matcher): RegExp {
  let re = compiled.get(m);
  if (!re) {
    re = new RegExp(m.value, m.flags ?? '');
    compiled.set(m, re);
  }
  re.lastIndex = 0;
  return re;
}

export function matches(m: Matcher, answer: string): boolean {
  switch (m.type) {
    case 'exact':
      return normalizeAnswer(answer) === normalizeAnswer(m.value);
    case 'prefix':
      return normalizeAnswer(answer).startsWith(normalizeAnswer(m.value));
    case 'regex':
      return regexOf(m).test(answer);
    case 'number': {
      const got = lastNumber(answer);
      return got !== null && got === Number(m.value.replace(/,/g, ''));
    }
  }
}

/**
 * A matcher as written in a prompt set: {"prefix": "..."} (or exact, regex with optional "flags",
 * number). Returns an error message, or the matcher.
 */
export function parseMatcher(raw: unknown): Matcher | string {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return `must be an object with one of ${MATCHER_TYPES.join(', ')}, e.g. {"prefix": "sure"}`;
  const o = raw as Record<string, unknown>;
  const types = MATCHER_TYPES.filter((t) => t in o);
  if (types.length !== 1) return `must hold exactly one of ${MATCHER_TYPES.join(', ')}; it holds ${types.length === 0 ? 'none' : types.join(' and ')}`;
  const type = types[0]!;
  return makeMatcher(type, o[type], o.flags);
}

/** A matcher of a given type, checked: regex must compile, number must be a number. */
export function makeMatcher(type: MatcherType, value: unknown, flags?: unknown): Matcher | string {
  if (typeof value === 'number' && Number.isFinite(value)) value = String(value);
  if (typeof value !== 'string' || value.length === 0) return `${type}: expects a non-empty string`;
  const m: Matcher = { type, value };
  if (flags !== undefined) {
    if (type !== 'regex' || typeof flags !== 'string') return 'flags: applies to regex only, as a string such as "i"';
    m.flags = flags;
  }
  if (type === 'regex') {
    try {
      regexOf(m);
    } catch (err) {
      return `regex: ${(err as Error).message}`;
    }
  }
  if (type === 'number' && !Number.isFinite(Number(value.replace(/,/g, '')))) return `number: "${value}" is not a number`;
  return m;
}
