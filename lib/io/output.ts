/**
 * The output policy: the one place that decides where the package may write. Every command and every
 * API function that writes (folders and single files alike) goes through planOutputs() and
 * StagedOutput, and nothing else in the package creates, replaces or removes a user's path.
 *
 * - Inputs and destinations are compared after resolving symbolic links (every file of an input
 *   folder is resolved too, so shards linked into a Hugging Face cache's blobs/ are covered).
 * - A destination that is, contains, or lies inside an input is refused, with or without force.
 * - An existing destination is replaced only with force; a folder is never replaced by a single file.
 * - Everything is written into a staging path beside the destination and renamed into place at the
 *   end; an error, an abort or a signal removes the staging path. A staging path left by a process
 *   that was killed is removed by the next run that writes to the same destination.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { SafetyArithmeticError } from '../errors';
import { io, ioError } from './files';

export interface OutputInput {
  /** A file or a folder the run reads. */
  path: string;
  /** What it is, for messages ("target", "ICV file"). */
  role: string;
}

export type OutputKind = 'folder' | 'file';

export interface OutputRequest {
  dest: string;
  kind: OutputKind;
  /** The option that named it ("out", "saveHarmVector"), for messages and err.field. */
  field: string;
}

export interface OutputPlan {
  force: boolean;
  inputs: OutputInput[];
}

/** The real path of the deepest existing ancestor, with the rest appended: works for paths not yet created. */
function realish(p: string): string {
  let head = path.resolve(p);
  const tail: string[] = [];
  for (;;) {
    try {
      return path.join(fs.realpathSync(head), ...tail);
    } catch {
      const up = path.dirname(head);
      if (up === head) return path.join(head, ...tail);
      tail.unshift(path.basename(head));
      head = up;
    }
  }
}

/** The path itself with only its parent resolved: a link at the destination is not followed. */
function realParentJoin(p: string): string {
  const abs = path.resolve(p);
  return path.join(realish(path.dirname(abs)), path.basename(abs));
}

function isInside(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel === '' || (!rel.startsWith('..' + path.sep) && rel !== '..' && !path.isAbsolute(rel));
}

interface ResolvedInput {
  real: string;
  shown: string;
  role: string;
}

/** Every input, resolved: a folder and each entry directly inside it (links into blobs/ included). */
function resolveInputs(inputs: OutputInput[]): ResolvedInput[] {
  const out: ResolvedInput[] = [];
  for (const input of inputs) {
    const abs = path.resolve(input.path);
    const isFolder = safeStat(abs)?.isDirectory() ?? false;
    out.push({ real: realish(abs), shown: input.path, role: isFolder ? `${input.role} folder` : input.role });
    let entries: string[] = [];
    try {
      if (isFolder) entries = fs.readdirSync(abs);
    } catch {
      entries = [];
    }
    for (const name of entries) {
      const entry = path.join(abs, name);
      const real = realish(entry);
      if (!isInside(real, out[out.length - 1]!.real)) out.push({ real, shown: `${entry} (-> ${real})`, role: `${input.role}'s file` });
    }
  }
  return out;
}

function refuse(req: OutputRequest, message: string, code: 'SA_OUTPUT_INSIDE_INPUT' | 'SA_OUTPUT_EXISTS' | 'SA_INVALID_ARGUMENT' | 'SA_IO' = 'SA_OUTPUT_INSIDE_INPUT'): SafetyArithmeticError {
  return new SafetyArithmeticError(code, `${req.field} ${req.dest}: ${message}`, { file: req.dest, field: req.field });
}

function checkAgainstInputs(req: OutputRequest, inputs: ResolvedInput[]): void {
  for (const where of new Set([realish(req.dest), realParentJoin(req.dest)])) {
    for (const input of inputs) {
      if (where === input.real)
        throw refuse(req, `is the ${input.role} ${input.shown}; inputs are never written to: write the output somewhere else`);
      if (isInside(where, input.real))
        throw refuse(req, `is inside the ${input.role} ${input.shown}; inputs are never written to: write the output somewhere else`);
      if (isInside(input.real, where))
        throw refuse(req, `contains the ${input.role} ${input.shown}; replacing it would destroy an input: write the output somewhere else`);
    }
  }
}

function checkAgainstEachOther(requests: OutputRequest[]): void {
  for (let i = 0; i < requests.length; i++) {
    for (let j = 0; j < requests.length; j++) {
      if (i === j) continue;
      const a = requests[i]!, b = requests[j]!;
      const ra = realParentJoin(a.dest), rb = realParentJoin(b.dest);
      if (ra === rb) throw refuse(a, `is also given as ${b.field}; give each output its own path`, 'SA_INVALID_ARGUMENT');
      if (isInside(ra, rb)) throw refuse(a, `is inside ${b.field} ${b.dest}, which is written as a whole; put it beside that folder`, 'SA_INVALID_ARGUMENT');
    }
  }
}

function checkDestination(req: OutputRequest, force: boolean): void {
  const abs = path.resolve(req.dest);
  const parent = path.dirname(abs);
  let parentStat: fs.Stats;
  try {
    parentStat = fs.statSync(parent);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw refuse(req, `the folder ${parent} does not exist; create it or choose another path`, 'SA_IO');
    throw ioError(err, req.dest, `cannot use the folder ${parent} for ${req.field}`, req.field);
  }
  if (!parentStat.isDirectory()) throw refuse(req, `${parent} is not a folder; choose a path inside a folder`, 'SA_IO');
  let existing: fs.Stats | undefined;
  try {
    existing = fs.lstatSync(abs);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') throw ioError(err, req.dest, `cannot use ${req.field}`, req.field);
  }
  if (!existing) return;
  if (!force) throw refuse(req, `already exists; pass --force (force: true) to replace it, or choose another path`, 'SA_OUTPUT_EXISTS');
  const target = existing.isSymbolicLink() ? safeStat(abs) : existing;
  if (target === undefined) return; // a dangling link: the link itself is replaced
  if (req.kind === 'file' && target.isDirectory())
    throw refuse(req, `is a folder; this output is a single file: give a file path`, 'SA_INVALID_ARGUMENT');
  if (!target.isFile() && !target.isDirectory())
    throw refuse(req, `is not a regular file (a pipe, socket or device); give a file path`, 'SA_INVALID_ARGUMENT');
}

function safeStat(p: string): fs.Stats | undefined {
  try {
    return fs.statSync(p);
  } catch {
    return undefined;
  }
}

/**
 * Checks a run's outputs before any work: against its inputs, against each other, and at their
 * destinations. Throws the first problem found; writes nothing.
 */
export function planOutputs(requests: OutputRequest[], plan: OutputPlan): void {
  const inputs = resolveInputs(plan.inputs);
  for (const req of requests) {
    if (typeof req.dest !== 'string' || req.dest.length === 0)
      throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', `${req.field}: a path is required`, { field: req.field });
    checkAgainstInputs(req, inputs);
  }
  checkAgainstEachOther(requests);
  for (const req of requests) checkDestination(req, plan.force);
}

const STAGING = /^\.(.+)\.partial-(\d+)-[0-9a-f]{8}(\.old)?$/;

function stagingName(dest: string): string {
  return path.join(path.dirname(dest), `.${path.basename(dest)}.partial-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
}

function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes staging paths for `dest` left by processes that no longer run. A replaced output that
 * was moved aside (".old") when its process died is put back when the destination is missing.
 */
export function removeStaleStaging(dest: string): string[] {
  const abs = path.resolve(dest);
  const dir = path.dirname(abs);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const m = STAGING.exec(name);
    if (!m || m[1] !== path.basename(abs) || processAlive(Number(m[2]))) continue;
    const stale = path.join(dir, name);
    try {
      if (m[3] && !fs.existsSync(abs)) fs.renameSync(stale, abs);
      else fs.rmSync(stale, { recursive: true, force: true });
      removed.push(stale);
    } catch {
      // Left for a later run; it is ours by its name only, so it is never worth failing for.
    }
  }
  return removed;
}

/** Staging paths of this process, removed if it exits before they are committed or discarded. */
const pending = new Set<string>();
let exitHookInstalled = false;
function track(p: string): void {
  pending.add(p);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const q of pending) {
      try {
        fs.rmSync(q, { recursive: true, force: true });
      } catch {
        // exiting: nothing more can be done
      }
    }
  });
}

/** One output under construction: fill `temp`, then commit() renames it to `dest`, or discard() removes it. */
export class StagedOutput {
  readonly dest: string;
  readonly temp: string;
  readonly field: string;
  private readonly force: boolean;
  private done = false;

  private constructor(req: OutputRequest, force: boolean) {
    this.dest = path.resolve(req.dest);
    this.field = req.field;
    this.force = force;
    removeStaleStaging(this.dest);
    this.temp = stagingName(this.dest);
    track(this.temp);
    if (req.kind === 'folder') io(this.temp, `cannot create the staging folder for ${req.field}`, () => fs.mkdirSync(this.temp), req.field);
  }

  /** Stages outputs that planOutputs() accepted; the caller must commit or discard each. */
  static begin(requests: OutputRequest[], plan: OutputPlan): StagedOutput[] {
    planOutputs(requests, plan);
    const staged: StagedOutput[] = [];
    try {
      for (const req of requests) staged.push(new StagedOutput(req, plan.force));
    } catch (err) {
      for (const s of staged) s.discard();
      throw err;
    }
    return staged;
  }

  commit(): void {
    if (this.done) return;
    let existing = false;
    try {
      fs.lstatSync(this.dest);
      existing = true;
    } catch {
      existing = false;
    }
    if (existing && !this.force)
      throw new SafetyArithmeticError('SA_OUTPUT_EXISTS', `${this.field} ${this.dest} appeared while the job ran; it was not replaced, and the new output was removed`, { file: this.dest, field: this.field });
    io(this.dest, `cannot move the finished output into place`, () => {
      if (existing && fs.lstatSync(this.temp).isDirectory()) {
        const old = this.temp + '.old';
        fs.renameSync(this.dest, old);
        fs.renameSync(this.temp, this.dest);
        fs.rmSync(old, { recursive: true, force: true });
      } else {
        fs.renameSync(this.temp, this.dest);
      }
    }, this.field);
    this.done = true;
    pending.delete(this.temp);
  }

  discard(): void {
    if (this.done) return;
    this.done = true;
    pending.delete(this.temp);
    try {
      fs.rmSync(this.temp, { recursive: true, force: true });
    } catch {
      // nothing more can be done; a later run removes it as stale
    }
  }
}

/** Runs fn with the staged outputs, committing all on success and discarding all on failure. */
export async function withStagedOutputs<T>(requests: OutputRequest[], plan: OutputPlan, fn: (staged: StagedOutput[]) => Promise<T> | T): Promise<T> {
  const staged = StagedOutput.begin(requests, plan);
  try {
    const result = await fn(staged);
    for (const s of staged) s.commit();
    return result;
  } catch (err) {
    for (const s of staged) s.discard();
    throw restateStagingError(err, staged);
  }
}

export interface FileOutputOptions {
  /** Replace an existing file. */
  force?: boolean;
  /** Files and folders the output must stay out of. */
  inputs?: OutputInput[];
  /** The option that named the path, for messages (default "out"). */
  field?: string;
}

/** Writes a small output file (an ICV, a control vector, logits) under the output policy. */
export function writeOutputFile(dest: string, bytes: Buffer | Buffer[], options: FileOutputOptions = {}): string {
  const req: OutputRequest = { dest, kind: 'file', field: options.field ?? 'out' };
  const [staged] = StagedOutput.begin([req], { force: options.force ?? false, inputs: options.inputs ?? [] });
  try {
    const parts = Array.isArray(bytes) ? bytes : [bytes];
    io(dest, 'cannot write', () => {
      const fd = fs.openSync(staged!.temp, 'wx', 0o644);
      try {
        for (const p of parts) {
          let done = 0;
          while (done < p.length) done += fs.writeSync(fd, p, done, p.length - done);
        }
      } finally {
        fs.closeSync(fd);
      }
    }, options.field ?? 'out');
    staged!.commit();
    return staged!.dest;
  } catch (err) {
    staged!.discard();
    throw err;
  }
}

const SYSTEM_ADVICE: [RegExp, string][] = [
  [/No space left on device|Disk quota exceeded/i, 'the disk is full: free some space or write somewhere else'],
  [/Read-only file system/i, 'the file system is read-only: write somewhere else'],
  [/Permission denied|Operation not permitted/i, 'check the permissions of the destination folder or write somewhere else'],
];

/**
 * An SA_IO error raised while writing into a staging path, restated for the user: it names the
 * destination they gave rather than the staging path, and says what to do.
 */
export function restateStagingError(err: unknown, staged: readonly StagedOutput[]): unknown {
  if (!(err instanceof SafetyArithmeticError) || err.code !== 'SA_IO') return err;
  const s = staged.find((x) => err.message.includes(x.temp) || (err.file ?? '').startsWith(x.temp));
  if (!s) return err;
  const message = err.message.split(s.temp).join(s.dest);
  const advice = SYSTEM_ADVICE.find(([re]) => re.test(message))?.[1];
  return new SafetyArithmeticError('SA_IO', advice ? `${message}; ${advice}` : message, { file: s.dest, field: s.field, cause: err, ...(err.tensor !== undefined ? { tensor: err.tensor } : {}) });
}
