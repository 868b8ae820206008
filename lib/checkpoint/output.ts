/**
 * Atomic outputs: everything is written into a temporary folder (or file) beside the destination and
 * renamed into place at the end, so that an error or Ctrl-C leaves nothing behind. Existing outputs
 * are replaced only when asked, and nothing is ever written into an input folder.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { SafetyArithmeticError } from '../errors';

function realish(p: string): string {
  // The real path of the deepest existing ancestor, with the rest appended: works for paths not yet created.
  const abs = path.resolve(p);
  let head = abs;
  const tail: string[] = [];
  while (!fs.existsSync(head)) {
    tail.unshift(path.basename(head));
    const up = path.dirname(head);
    if (up === head) break;
    head = up;
  }
  return path.join(fs.realpathSync(head), ...tail);
}

function isInside(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** Refuses an output that is, or lies inside, an input folder, or that contains an input. */
export function checkOutputAgainstInputs(out: string, inputs: { path: string; role: string }[], field: string): void {
  const o = realish(out);
  for (const input of inputs) {
    const i = realish(input.path);
    if (isInside(o, i))
      throw new SafetyArithmeticError('SA_OUTPUT_INSIDE_INPUT', `${field} ${out} is inside the ${input.role} folder ${input.path}; write the output somewhere else (inputs are never written to)`, { file: out, field });
    if (isInside(i, o))
      throw new SafetyArithmeticError('SA_OUTPUT_INSIDE_INPUT', `${field} ${out} contains the ${input.role} ${input.path}; replacing it would destroy an input`, { file: out, field });
  }
}

function checkDestination(dest: string, force: boolean, field: string): void {
  if (fs.existsSync(dest) && !force)
    throw new SafetyArithmeticError('SA_OUTPUT_EXISTS', `${field} ${dest} already exists; pass --force (force: true) to replace it, or choose another path`, { file: dest, field });
  const parent = path.dirname(path.resolve(dest));
  if (!fs.existsSync(parent)) throw new SafetyArithmeticError('SA_IO', `${field} ${dest}: the folder ${parent} does not exist; create it or choose another path`, { file: dest, field });
}

function tempName(dest: string): string {
  const abs = path.resolve(dest);
  return path.join(path.dirname(abs), `.${path.basename(abs)}.partial-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
}

/** Removes partial outputs if the process is interrupted before they are committed or discarded. */
const pending = new Set<string>();
let exitHookInstalled = false;
function track(p: string): void {
  pending.add(p);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const q of pending) fs.rmSync(q, { recursive: true, force: true });
    });
  }
}

export class StagedOutput {
  readonly dest: string;
  readonly temp: string;
  private readonly force: boolean;
  private done = false;

  private constructor(dest: string, temp: string, force: boolean) {
    this.dest = path.resolve(dest);
    this.temp = temp;
    this.force = force;
  }

  /** A folder to fill, renamed to dest by commit(). */
  static folder(dest: string, force: boolean, field: string): StagedOutput {
    checkDestination(dest, force, field);
    const temp = tempName(dest);
    fs.mkdirSync(temp);
    track(temp);
    return new StagedOutput(dest, temp, force);
  }

  /** A file path to write, renamed to dest by commit(). The file is not created here. */
  static file(dest: string, force: boolean, field: string): StagedOutput {
    checkDestination(dest, force, field);
    const temp = tempName(dest);
    track(temp);
    return new StagedOutput(dest, temp, force);
  }

  commit(): void {
    if (this.done) return;
    if (fs.existsSync(this.dest)) {
      if (!this.force) throw new SafetyArithmeticError('SA_OUTPUT_EXISTS', `${this.dest} appeared while the job ran; it was not replaced`, { file: this.dest });
      const old = tempName(this.dest) + '.old';
      fs.renameSync(this.dest, old);
      fs.renameSync(this.temp, this.dest);
      fs.rmSync(old, { recursive: true, force: true });
    } else {
      fs.renameSync(this.temp, this.dest);
    }
    this.done = true;
    pending.delete(this.temp);
  }

  discard(): void {
    if (this.done) return;
    fs.rmSync(this.temp, { recursive: true, force: true });
    this.done = true;
    pending.delete(this.temp);
  }
}
