/**
 * Reading the user's files: every file-system failure becomes an SA_IO error that names the path and
 * says what to do, and only regular files are opened (a FIFO, a device or a folder where a file is
 * expected is refused before it is opened, so nothing can block).
 */
import fs from 'node:fs';
import { SafetyArithmeticError } from '../errors';

const ERRNO_ADVICE: Record<string, string> = {
  ENOENT: 'it does not exist; check the path',
  EACCES: 'permission denied; check its permissions or run as a user who may use it',
  EPERM: 'the operation is not permitted there; choose another path',
  EISDIR: 'it is a folder where a file is expected; pass a file',
  ENOTDIR: 'a part of the path is a file, not a folder; check the path',
  ENOSPC: 'the disk is full; free some space or write somewhere else',
  EDQUOT: 'the disk quota is exhausted; free some space or write somewhere else',
  EROFS: 'the file system is read-only; write somewhere else',
  EEXIST: 'it already exists; choose another path',
  ELOOP: 'too many levels of symbolic links (a link loop?); check the path',
  ENAMETOOLONG: 'the path is too long; choose a shorter one',
  EMFILE: 'too many open files; raise the limit (ulimit -n)',
  ENFILE: 'too many open files in the system; retry later',
  EXDEV: 'it is on another file system; choose a path on the same one',
  EIO: 'the device reported an I/O error; check the disk',
  EBUSY: 'it is busy; retry when it is free',
  ENOTEMPTY: 'the folder is not empty; choose another path',
  EINVAL: 'the file system does not support this here; choose another path',
};

/** An SA_IO error for a failed file-system call on `file`; `action` says what was being done ("cannot read"). */
export function ioError(err: unknown, file: string, action: string, field?: string): SafetyArithmeticError {
  if (err instanceof SafetyArithmeticError) return err;
  const e = err as NodeJS.ErrnoException;
  const code = e?.code ?? '';
  const advice = ERRNO_ADVICE[code] ?? `${e?.message ?? String(err)}; check the path`;
  const details = field === undefined ? { file, cause: err } : { file, field, cause: err };
  return new SafetyArithmeticError('SA_IO', `${file}: ${action}: ${advice}${code ? ` (${code})` : ''}`, details);
}

/** Runs a file-system call, turning its failure into ioError(file, action). */
export function io<T>(file: string, action: string, fn: () => T, field?: string): T {
  try {
    return fn();
  } catch (err) {
    throw ioError(err, file, action, field);
  }
}

function kindOf(st: fs.Stats): string {
  if (st.isDirectory()) return 'a folder';
  if (st.isFIFO()) return 'a named pipe (FIFO)';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  return 'not a regular file';
}

/**
 * Checks that `file` (after following links) is a regular file and returns its stats; `role` says
 * what it is ("the ICV file", "config.json").
 */
export function statRegularFile(file: string, role: string, field?: string): fs.Stats {
  const st = io(file, `cannot open ${role}`, () => fs.statSync(file), field);
  if (!st.isFile()) {
    const details = field === undefined ? { file } : { file, field };
    throw new SafetyArithmeticError('SA_IO', `${file}: ${role} is ${kindOf(st)}, not a regular file; pass a regular file`, details);
  }
  return st;
}

/**
 * Opens a regular file for reading without ever blocking: O_NONBLOCK keeps a FIFO swapped in after
 * the check from waiting for a writer, and the open file is checked again.
 */
export function openRegularFile(file: string, role: string, field?: string): number {
  statRegularFile(file, role, field);
  const fd = io(file, `cannot open ${role}`, () => fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK), field);
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new SafetyArithmeticError('SA_IO', `${file}: ${role} is ${kindOf(st)}, not a regular file; pass a regular file`, { file });
  } catch (err) {
    fs.closeSync(fd);
    throw ioError(err, file, `cannot open ${role}`, field);
  }
  return fd;
}

/** Reads a whole regular file as UTF-8 text without a leading byte-order mark, refusing files over maxBytes (default 64 MiB). */
export function readTextFile(file: string, role: string, maxBytes = 64 * 1024 * 1024, field?: string): string {
  const fd = openRegularFile(file, role, field);
  try {
    const size = fs.fstatSync(fd).size;
    if (size > maxBytes)
      throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', `${file}: ${role} has ${size} bytes, over the ${maxBytes}-byte limit for it; pass the right file`, { file });
    const buf = Buffer.alloc(size);
    let done = 0;
    while (done < size) {
      const n = io(file, `cannot read ${role}`, () => fs.readSync(fd, buf, done, size - done, done), field);
      if (n === 0) break;
      done += n;
    }
    const text = buf.toString('utf8', 0, done);
    return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  } finally {
    fs.closeSync(fd);
  }
}

/** Whether a path exists (following links); a dangling link counts as absent. */
export function exists(file: string): boolean {
  return fs.existsSync(file);
}
