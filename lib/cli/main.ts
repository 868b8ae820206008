/** The command line: a thin shell over the public API. */
import { SafetyArithmeticError } from '../errors';
import { ioError } from '../io/files';
import { UsageError } from './args';
import { handleInterrupts } from './interrupt';
interface Command {
  usage: string;
  run: (argv: string[]) => Promise<number> | number;
}

// Each command's module is loaded when it runs (or for --help), so that a command starts without
// the others' dependencies (hdr does not load the server, the tokenizer or the evaluator).
const COMMANDS: Record<string, () => Promise<Command>> = {
  align: async () => { const m = await import('./commands/align'); return { usage: m.ALIGN_USAGE, run: m.runAlign }; },
  hdr: async () => { const m = await import('./commands/hdr'); return { usage: m.HDR_USAGE, run: m.runHdr }; },
  icv: async () => { const m = await import('./commands/icv'); return { usage: m.ICV_USAGE, run: m.runIcv }; },
  eval: async () => { const m = await import('./commands/eval'); return { usage: m.EVAL_USAGE, run: m.runEval }; },
  sweep: async () => { const m = await import('./commands/sweep'); return { usage: m.SWEEP_USAGE, run: m.runSweep }; },
  forward: async () => { const m = await import('./commands/forward'); return { usage: m.FORWARD_USAGE, run: m.runForward }; },
  generate: async () => { const m = await import('./commands/generate'); return { usage: m.GENERATE_USAGE, run: m.runGenerate }; },
  serve: async () => { const m = await import('./commands/serve'); return { usage: m.SERVE_USAGE, run: m.runServe }; },
  'export-gguf': async () => { const m = await import('./commands/export-gguf'); return { usage: m.EXPORT_USAGE, run: m.runExportGguf }; },
  doctor: async () => { const m = await import('./commands/doctor'); return { usage: m.DOCTOR_USAGE, run: m.runDoctor }; },
};

async function usage(): Promise<string> {
  const commands = await Promise.all(Object.values(COMMANDS).map((load) => load()));
  return `safety-arithmetic: make language models safer at test time (Safety Arithmetic, Hazra et al. 2024)

Commands:
${commands.map((c) => c.usage).join('')}
Environment: SAFETY_ARITHMETIC_DEVICE=cpu|cuda|auto chooses the device when --device is absent;
SAFETY_ARITHMETIC_API_KEY is serve's API key when --api-key is absent.
`;
}

/** A file-system error that escaped its caller still names its path and says what to do. */
function fileSystemError(err: unknown): SafetyArithmeticError | undefined {
  const e = err as NodeJS.ErrnoException;
  if (!e || typeof e.code !== 'string' || typeof e.syscall !== 'string') return undefined;
  return ioError(e, e.path ?? '(unknown path)', `${e.syscall} failed`);
}

function isParseError(err: unknown): boolean {
  const code = (err as { code?: string }).code ?? '';
  return code.startsWith('ERR_PARSE_ARGS');
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
      process.stdout.write(await usage());
      return command === undefined ? 2 : 0;
    }
    const load = Object.hasOwn(COMMANDS, command) ? COMMANDS[command] : undefined;
    if (!load) throw new UsageError(`unknown command "${command}"`);
    const { run } = await load();
    const release = handleInterrupts();
    try {
      return await run(rest);
    } finally {
      release();
    }
  } catch (err) {
    if (err instanceof UsageError || isParseError(err)) {
      process.stderr.write(`safety-arithmetic: ${(err as Error).message}\nRun "safety-arithmetic --help" for usage.\n`);
      return 2;
    }
    const known = err instanceof SafetyArithmeticError ? err : fileSystemError(err);
    if (known) {
      process.stderr.write(`safety-arithmetic: error [${known.code}]: ${known.message}\n`);
      return known.code === 'ABORT_ERR' ? 130 : 1;
    }
    process.stderr.write(`safety-arithmetic: unexpected error: ${(err as Error).stack ?? String(err)}\n`);
    return 1;
  }
}
