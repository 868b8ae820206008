/**
 * Ctrl-C and SIGTERM for the CLI. A command that can stop between steps takes interruptSignal() and
 * is aborted by the first signal (it then discards its staged outputs and exits 130). For any other
 * command, and at a second signal, the process exits 130 at once; the output policy's exit hook
 * removes whatever was staged.
 */
const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM'];

let controller: AbortController | undefined;
let claimed = false;

/** The signal the running command stops on; taking it promises to stop when it fires. */
export function interruptSignal(): AbortSignal {
  if (!controller) controller = new AbortController();
  claimed = true;
  return controller.signal;
}

function onSignal(signal: NodeJS.Signals): void {
  if (claimed && controller && !controller.signal.aborted) {
    controller.abort();
    return;
  }
  process.stderr.write(`safety-arithmetic: stopped by ${signal}; nothing was written\n`);
  process.exit(130);
}

/** Installs the handlers for one command; returns the function that removes them. */
export function handleInterrupts(): () => void {
  controller = new AbortController();
  claimed = false;
  for (const s of SIGNALS) process.on(s, onSignal);
  return () => {
    for (const s of SIGNALS) process.removeListener(s, onSignal);
    controller = undefined;
    claimed = false;
  };
}
