/**
 * Continuous batching: every sequence being generated on a model, whichever call it came from, takes
 * part in one shared ragged step per token. A request that arrives while a step runs joins the next
 * one (its prompt is prefilled in the same pass as the others' next tokens). Each sequence gets the
 * tokens it would get alone: rows never mix in the engine, and each sequence samples from its own
 * seeded generator.
 */
import type { NativeSeq, NativeSession } from '../native';

export interface ScheduledSequence {
  session: NativeSession;
  /** Tokens to feed at the next step: the prompt, then each sampled token. */
  pending: number[];
  steer: [number, number][];
  sampling: { temperature: number; topK: number; topP: number };
  /** Receives the sampled token; returns true when the sequence is finished. */
  accept(token: number): boolean;
  /** Checked before each step: true when the request was cancelled. */
  cancelled(): boolean;
  fail(err: unknown): void;
}

export class StepScheduler {
  private readonly waiting: ScheduledSequence[] = [];
  private running = false;
  /** Engine steps taken, and sequence-steps carried by them (their ratio is the mean batch). */
  readonly stats = { steps: 0, sequenceSteps: 0 };

  constructor(
    private readonly step: (batch: NativeSeq[]) => Promise<Int32Array>,
    private readonly maxSequences: number,
  ) {}

  /** The number of sequences being generated or waiting. */
  get size(): number {
    return this.waiting.length;
  }

  add(seq: ScheduledSequence): void {
    this.waiting.push(seq);
    if (!this.running) {
      // Start after the current task, so that requests made together share the first step.
      this.running = true;
      queueMicrotask(() => void this.loop());
    }
  }

  private drop(seq: ScheduledSequence): void {
    const i = this.waiting.indexOf(seq);
    if (i >= 0) this.waiting.splice(i, 1);
  }

  private async loop(): Promise<void> {
    this.running = true;
    try {
      while (this.waiting.length > 0) {
        for (const s of [...this.waiting]) {
          if (s.cancelled()) {
            this.drop(s);
            s.fail(undefined);
          }
        }
        const batch = this.waiting.slice(0, this.maxSequences);
        if (batch.length === 0) continue;
        let next: Int32Array;
        this.stats.steps++;
        this.stats.sequenceSteps += batch.length;
        try {
          next = await this.step(batch.map((s) => ({ tokens: Int32Array.from(s.pending), session: s.session, steer: s.steer, sampling: s.sampling })));
        } catch (err) {
          for (const s of batch) {
            this.drop(s);
            s.fail(err);
          }
          continue;
        }
        batch.forEach((s, k) => {
          const token = next[k]!;
          s.pending = [token];
          let finished: boolean;
          try {
            finished = s.accept(token);
          } catch (err) {
            this.drop(s);
            s.fail(err);
            return;
          }
          if (finished) this.drop(s);
        });
      }
    } finally {
      this.running = false;
    }
  }
}
