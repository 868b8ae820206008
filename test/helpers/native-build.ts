/**
 * Builds and runs the stand-alone C++ check programs of the tests (test/native/, csrc/cuda/tests/):
 * one object per source, compiled a few at a time, then linked. The compiler is $CXX, else g++.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export const ROOT = path.join(__dirname, '..', '..', '..');
export const CXX = process.env.CXX || 'g++';

/** Why the C++ checks cannot be built here, or null when they can (Linux and a working $CXX). */
export function cannotBuildNative(): string | null {
  if (process.platform !== 'linux') return `needs Linux, this is ${process.platform}`;
  const probe = spawnSync(CXX, ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) return `needs a C++ compiler: ${CXX} did not run (set CXX to choose one)`;
  return null;
}

/** A source file (relative to the repository root) and the flags that only it takes. */
export interface Unit {
  source: string;
  flags?: string[];
}

export interface Finished {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs a program to its end (killed after timeoutMs), collecting its output. */
export function runProgram(file: string, args: string[], timeoutMs: number, env?: NodeJS.ProcessEnv): Promise<Finished> {
  const start = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { cwd: ROOT, env: env ?? process.env });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr, ms: Date.now() - start });
    });
  });
}

async function mustRun(file: string, args: string[], timeoutMs: number): Promise<void> {
  const r = await runProgram(file, args, timeoutMs);
  if (r.status !== 0)
    throw new Error(`${[file, ...args].join(' ')}\nfailed (${r.signal ? `signal ${r.signal}` : `status ${r.status}`}):\n${r.stdout}${r.stderr}`);
}

/**
 * Compiles each unit (flags, then the unit's own flags; a .cu file as C++) to an object in dir, at
 * most `jobs` at a time; returns the object paths in the order of the units.
 */
export async function compileObjects(dir: string, units: Unit[], flags: string[], jobs = 2): Promise<string[]> {
  const objects = units.map((u) => path.join(dir, `${u.source.replace(/[/\\]/g, '_')}.o`));
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < units.length) {
      const i = next++;
      const u = units[i]!;
      const lang = u.source.endsWith('.cu') ? ['-x', 'c++'] : [];
      await mustRun(CXX, ['-c', ...flags, ...(u.flags ?? []), ...lang, path.join(ROOT, u.source), '-o', objects[i]!], 10 * 60_000);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, jobs) }, worker));
  return objects;
}

/** Links objects into the program dir/name; returns its path. */
export async function linkProgram(dir: string, name: string, objects: string[], flags: string[]): Promise<string> {
  const exe = path.join(dir, name);
  await mustRun(CXX, [...objects, '-o', exe, ...flags], 5 * 60_000);
  return exe;
}

/**
 * The per-file compile options of CMakeLists.txt (set_source_files_properties(<files> PROPERTIES
 * COMPILE_OPTIONS "<a;b>")): the instruction-set flags of the CPU kernel variants.
 */
export function cmakeSourceFlags(): Map<string, string[]> {
  const text = fs.readFileSync(path.join(ROOT, 'CMakeLists.txt'), 'utf8');
  const out = new Map<string, string[]>();
  for (const m of text.matchAll(/set_source_files_properties\(([^)]*?)\s+PROPERTIES\s+COMPILE_OPTIONS\s+"([^"]*)"/g))
    for (const file of m[1]!.trim().split(/\s+/)) out.set(file, m[2]!.split(';').filter(Boolean));
  return out;
}
