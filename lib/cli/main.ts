/** The command line: a thin shell over the public API. */
import { SafetyArithmeticError } from '../errors';
import { ioError } from '../io/files';
import { UsageError } from './args';
import { handleInterrupts } from './interrupt';
import { DOCTOR_USAGE, runDoctor } from './commands/doctor';
import { FORWARD_USAGE, runForward } from './commands/forward';
import { GENERATE_USAGE, runGenerate } from './commands/generate';
import { HDR_USAGE, runHdr } from './commands/hdr';
import { ICV_USAGE, runIcv } from './commands/icv';
import { ALIGN_USAGE, runAlign } from './commands/align';
import { EXPORT_USAGE, runExportGguf } from './commands/export-gguf';
import { SERVE_USAGE, runServe } from './commands/serve';
import { EVAL_USAGE, runEval } from './commands/eval';
import { SWEEP_USAGE, runSweep } from './commands/sweep';

const USAGE = `safety-arithmetic: make language models safer at test time (Safety Arithmetic, Hazra et al. 2024)

Commands:
${ALIGN_USAGE}${HDR_USAGE}${ICV_USAGE}${EVAL_USAGE}${SWEEP_USAGE}${FORWARD_USAGE}${GENERATE_USAGE}${SERVE_USAGE}${EXPORT_USAGE}${DOCTOR_USAGE}
Environment: SAFETY_ARITHMETIC_DEVICE=cpu|cuda|auto chooses the device when --device is absent;
SAFETY_ARITHMETIC_API_KEY is serve's API key when --api-key is absent.
`;

const COMMANDS: Record<string, (argv: string[]) => Promise<number> | number> = {
  align: runAlign,
  hdr: runHdr,
  icv: runIcv,
  forward: runForward,
  generate: runGenerate,
  serve: runServe,
  eval: runEval,
  sweep: runSweep,
  'export-gguf': runExportGguf,
  doctor: runDoctor,
};

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
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    }
    const run = COMMANDS[command];
    if (!run) throw new UsageError(`unknown command "${command}"`);
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
