/**
 * Strict JSON for the files whose keys are names chosen by others (safetensors headers, checkpoint
 * indexes, harm-vector metadata): the standard grammar, objects without a prototype (so "__proto__"
 * or "constructor" is an ordinary key), and a key repeated in one object is an error naming it.
 *
 * JSON.parse does the parsing (it is native and fast on multi-MB headers); counting the keys in the
 * text against the keys it kept shows whether it silently dropped a repeated one, and only then is
 * the text scanned again to name that key.
 */

export class StrictJsonError extends Error {
  /** The repeated key, when that is the problem. */
  readonly duplicateKey?: string;
  /** The keys of the objects enclosing the problem, outermost first. */
  readonly path: string[];

  constructor(message: string, path: string[] = [], duplicateKey?: string) {
    super(message);
    this.name = 'StrictJsonError';
    this.path = path;
    if (duplicateKey !== undefined) this.duplicateKey = duplicateKey;
  }
}

const BACKSLASH = 0x5c, COLON = 0x3a;

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

/** The position of the quote that closes the string opening at `open`, in text that is valid JSON. */
function closingQuote(text: string, open: number): number {
  let q = open + 1;
  for (;;) {
    q = text.indexOf('"', q);
    let b = q - 1;
    while (text.charCodeAt(b) === BACKSLASH) b--;
    if ((q - 1 - b) % 2 === 0) return q;  // an even run of backslashes escapes only itself
    q++;
  }
}

/** For each string in valid JSON text, whether it is an object key, and where it ends. */
function forEachString(text: string, visit: (open: number, close: number, isKey: boolean) => void): void {
  for (let p = text.indexOf('"'); p !== -1; ) {
    const close = closingQuote(text, p);
    let after = close + 1;
    while (isSpace(text.charCodeAt(after))) after++;
    visit(p, close, text.charCodeAt(after) === COLON);
    p = text.indexOf('"', after);
  }
}

function countKeysInText(text: string): number {
  let keys = 0;
  forEachString(text, (_open, _close, isKey) => {
    if (isKey) keys++;
  });
  return keys;
}

/** Drops the prototype of every object in a parsed value; returns how many keys they hold together. */
function detachPrototypes(root: unknown): number {
  let keys = 0;
  const pending: unknown[] = [root];
  while (pending.length > 0) {
    const value = pending.pop();
    if (value === null || typeof value !== 'object') continue;
    if (Array.isArray(value)) {
      for (const item of value) if (item !== null && typeof item === 'object') pending.push(item);
      continue;
    }
    Object.setPrototypeOf(value, null);
    const obj = value as Record<string, unknown>;
    for (const key in obj) {
      keys++;
      const item = obj[key];
      if (item !== null && typeof item === 'object') pending.push(item);
    }
  }
  return keys;
}

/** Scans valid JSON text that repeats a key and throws the error naming the first repeat. */
function throwDuplicateKey(text: string): never {
  // One frame per open object (its keys so far, and the key whose value is being read) or array.
  const frames: { keys: Set<string> | null; current?: string }[] = [];
  let scanned = 0;
  const structure = (upTo: number) => {
    for (; scanned < upTo; scanned++) {
      const c = text.charCodeAt(scanned);
      if (c === 0x7b) frames.push({ keys: new Set() });
      else if (c === 0x5b) frames.push({ keys: null });
      else if (c === 0x7d || c === 0x5d) frames.pop();
    }
  };
  forEachString(text, (open, close, isKey) => {
    structure(open);
    scanned = close + 1;
    if (!isKey) return;
    const key = JSON.parse(text.slice(open, close + 1)) as string;
    const frame = frames[frames.length - 1]!;
    if (frame.keys!.has(key)) {
      const path = frames.slice(0, -1).flatMap((f) => (f.keys !== null && f.current !== undefined ? [f.current] : []));
      const where = path.length > 0 ? ` (inside ${path.map((k) => JSON.stringify(k)).join(' > ')})` : '';
      throw new StrictJsonError(`duplicate key ${JSON.stringify(key)} at character ${open}${where}`, path, key);
    }
    frame.keys!.add(key);
    frame.current = key;
  });
  throw new StrictJsonError('a key is repeated in an object');
}

/**
 * Parses JSON text strictly: objects come back without a prototype, and a key repeated in one
 * object throws a StrictJsonError whose duplicateKey names it.
 */
export function parseStrictJson(text: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new StrictJsonError((err as Error).message);
  }
  if (detachPrototypes(value) !== countKeysInText(text)) throwDuplicateKey(text);
  return value;
}

/** Decodes UTF-8 bytes, refusing invalid sequences instead of replacing them. */
export function decodeUtf8Strict(bytes: Uint8Array): string {
  return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
}
