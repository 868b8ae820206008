/**
 * Continuous batching: every sequence being generated on a model, whichever call it came from, takes
 * part in one shared ragged step per token. A request that arrives while a step runs joins the next
 * one. Each sequence gets the tokens it would get alone: rows never mix in the engine, a prompt fed
 * in chunks leaves the same cache as fed whole, and each sequence samples from its own seeded
 * generator, which only advances when the sequence samples.
 *
 * Each step carries every decoding sequence's next token first, then chunks of the prompts still
 * being prefilled, in arrival order, up to `maxStepTokens` tokens in all; so a long prompt never
 * stalls the streams already decoding. A chunk that does not end its prompt is not sampled.
 *
 * Admission: at most `maxSequences` sequences run (hold a KV cache) at once; each reserves its worst
 * case, (prompt + maxNewTokens) x KV bytes per token, against `kvBudgetBytes`; the others wait in
 * arrival order. A sequence's session is disposed (its cache freed) as soon as it finishes, fails or
 * is cancelled; cancellation is noticed before each step.
 */
import { performance } from 'node:perf_hooks';
import type { NativeSeq, NativeSession } from '../native';

export interface ScheduledSequence {
  /** The prompt's token ids (at least one). */
  prompt: readonly number[];
  /** The most tokens this sequence's cache will hold: prompt + maxNewTokens. */
  maxTokens: number;
  seed: number;
  steer: [number, number][];
  sampling: { temperature: number; topK: number; topP: number };
  /** Receives the sampled token; returns true when the sequence is finished. */
  accept(token: number): boolean;
  /** Checked before each step: true when the request was cancelled. */
  cancelled(): boolean;
  fail(err: unknown): void;
}

/** What the scheduler needs of the engine. */
export interface StepEngine {
  step(batch: NativeSeq[]): Promise<Int32Array>;
  createSession(maxTokens: number): NativeSession;
  readonly kvBytesPerToken: number;
}

export interface SchedulerOptions {
  /** The most sequences running (holding a KV cache, taking part in steps) at once. */
  maxSequences: number;
  /** Tokens per step: every decoding sequence's token, then prompt chunks up to this total. */
  maxStepTokens: number;
  /** KV-cache bytes the running sequences may reserve in all; null: unlimited. */
  kvBudgetBytes: number | null;
}

/** One engine step, as reported to onStep listeners. */
export interface StepEvent {
  /** Sequences in the step. */
  sequences: number;
  /** Tokens fed: one per decoding sequence, plus the prompt chunks. */
  tokens: number;
  /** Of those, prompt tokens. */
  prefillTokens: number;
  /** Wall time of the engine step. */
  seconds: number;
}

export interface SchedulerStats {
  /** Engine steps taken, and sequence-steps carried by them (their ratio is the mean batch). */
  steps: number;
  sequenceSteps: number;
  /** Prompt tokens and generated tokens fed to the engine, in all. */
  prefillTokens: number;
  decodeTokens: number;
  /** Sequences holding a KV cache and taking part in steps. */
  running: number;
  /** Sequences waiting for a place (maxSequences) or for KV budget. */
  waiting: number;
  lastBatchSequences: number;
  lastBatchTokens: number;
  /** Worst-case KV bytes reserved by the running sequences. */
  kvBytesReserved: number;
  kvBytesBudget: number | null;
  kvBytesPerToken: number;
}

interface Running {
  seq: ScheduledSequence;
  session: NativeSession;
  /** Prompt tokens already in the cache. */
  fed: number;
  /** The last sampled token, fed at the next step (once the prompt is in). */
  next: number;
  reservedBytes: number;
}

interface StepItem {
  run: Running;
  tokens: number[];
  sample: boolean;
}

export class StepScheduler {
  private readonly queue: ScheduledSequence[] = [];
  private readonly active: Running[] = [];
  private looping = false;
  private readonly listeners = new Set<(e: StepEvent) => void>();
  private readonly counters = { steps: 0, sequenceSteps: 0, prefillTokens: 0, decodeTokens: 0, lastBatchSequences: 0, lastBatchTokens: 0 };
  private reservedBytes = 0;

  constructor(
    private readonly engine: StepEngine,
    private readonly options: SchedulerOptions,
  ) {}

  /** The number of sequences being generated or waiting. */
  get size(): number {
    return this.queue.length + this.active.length;
  }

  /** The worst-case KV bytes of a sequence holding this many tokens. */
  kvBytesFor(tokens: number): number {
    return tokens * this.engine.kvBytesPerToken;
  }

  get stats(): SchedulerStats {
    return {
      ...this.counters,
      running: this.active.length,
      waiting: this.queue.length,
      kvBytesReserved: this.reservedBytes,
      kvBytesBudget: this.options.kvBudgetBytes,
      kvBytesPerToken: this.engine.kvBytesPerToken,
    };
  }

  /** Calls listener after every engine step; returns the function that unsubscribes it. */
  onStep(listener: (e: StepEvent) => void): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  add(seq: ScheduledSequence): void {
    this.queue.push(seq);
    if (!this.looping) {
      // Start after the current task, so that requests made together share the first step.
      this.looping = true;
      queueMicrotask(() => void this.loop());
    }
  }

  private finish(run: Running): void {
    const i = this.active.indexOf(run);
    if (i >= 0) this.active.splice(i, 1);
    this.reservedBytes -= run.reservedBytes;
    run.session.dispose();
  }

  private failRunning(run: Running, err: unknown): void {
    this.finish(run);
    run.seq.fail(err);
  }

  private dropCancelled(): void {
    for (const run of [...this.active]) if (run.seq.cancelled()) this.failRunning(run, undefined);
    for (const seq of [...this.queue]) {
      if (!seq.cancelled()) continue;
      this.queue.splice(this.queue.indexOf(seq), 1);
      seq.fail(undefined);
    }
  }

  /** Admits waiting sequences in arrival order while a place and their KV reservation are free. */
  private admit(): void {
    const budget = this.options.kvBudgetBytes;
    while (this.queue.length > 0 && this.active.length < this.options.maxSequences) {
      const seq = this.queue[0]!;
      const bytes = this.kvBytesFor(seq.maxTokens);
      // Nothing running means nothing will be released: a sequence over the whole budget is refused
      // before it is queued, so this only guards against a budget that changed under it.
      if (budget !== null && this.reservedBytes + bytes > budget && this.active.length > 0) return;
      this.queue.shift();
      let session: NativeSession;
      try {
        session = this.engine.createSession(seq.maxTokens);
        session.seed(seq.seed);
      } catch (err) {
        seq.fail(err);
        continue;
      }
      this.reservedBytes += bytes;
      this.active.push({ seq, session, fed: 0, next: -1, reservedBytes: bytes });
    }
  }

  /** The next step: every decoding sequence's token, then prompt chunks up to the token budget. */
  private plan(): StepItem[] {
    const items: StepItem[] = [];
    const prefilling: Running[] = [];
    for (const run of this.active) {
      if (run.fed === run.seq.prompt.length) items.push({ run, tokens: [run.next], sample: true });
      else prefilling.push(run);
    }
    let room = this.options.maxStepTokens - items.length;
    for (const run of prefilling) {
      const left = run.seq.prompt.length - run.fed;
      // The oldest prompt advances at least one token per step, however many sequences decode.
      const n = Math.min(left, Math.max(room, run === prefilling[0] ? 1 : 0));
      if (n <= 0) break;
      items.push({ run, tokens: run.seq.prompt.slice(run.fed, run.fed + n), sample: n === left });
      room -= n;
    }
    return items;
  }

  private async loop(): Promise<void> {
    this.looping = true;
    try {
      while (this.size > 0) {
        this.dropCancelled();
        this.admit();
        const items = this.plan();
        if (items.length === 0) continue;
        const tokens = items.reduce((n, it) => n + it.tokens.length, 0);
        const prefillTokens = items.reduce((n, it) => n + (it.run.fed < it.run.seq.prompt.length ? it.tokens.length : 0), 0);
        this.counters.steps++;
        this.counters.sequenceSteps += items.length;
        this.counters.prefillTokens += prefillTokens;
        this.counters.decodeTokens += tokens - prefillTokens;
        this.counters.lastBatchSequences = items.length;
        this.counters.lastBatchTokens = tokens;
        const batch: NativeSeq[] = items.map(({ run, tokens: t, sample }) => ({
          tokens: Int32Array.from(t), session: run.session, steer: run.seq.steer, sampling: run.seq.sampling, sample,
        }));
        const started = performance.now();
        let next: Int32Array;
        try {
          next = await this.engine.step(batch);
        } catch (err) {
          for (const { run } of items) this.failRunning(run, err);
          continue;
        }
        this.emit({ sequences: items.length, tokens, prefillTokens, seconds: (performance.now() - started) / 1000 });
        items.forEach(({ run, tokens: t, sample }, k) => {
          if (run.fed < run.seq.prompt.length) run.fed += t.length;
          if (!sample) return;
          const token = next[k]!;
          run.next = token;
          let finished: boolean;
          try {
            finished = run.seq.accept(token);
          } catch (err) {
            this.failRunning(run, err);
            return;
          }
          if (finished) this.finish(run);
        });
      }
    } finally {
      this.looping = false;
    }
  }

  private emit(e: StepEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(e);
      } catch (err) {
        process.emitWarning(`an onStep listener threw: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  }
}
