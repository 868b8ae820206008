/** The server's Prometheus metrics (prom-client), in a registry of its own. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

const PREFIX = 'safety_arithmetic_';

export class ServerMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({ name: `${PREFIX}requests_total`, help: 'HTTP requests answered, by route and status', labelNames: ['route', 'status'] as const, registers: [this.registry] });
  readonly promptTokens = new Counter({ name: `${PREFIX}prompt_tokens_total`, help: 'Prompt tokens of generation requests', registers: [this.registry] });
  readonly generatedTokens = new Counter({ name: `${PREFIX}generation_tokens_total`, help: 'Tokens generated', registers: [this.registry] });
  readonly queueDepth = new Gauge({ name: `${PREFIX}queue_depth`, help: 'Generation requests waiting for a place in the batch', registers: [this.registry] });
  readonly running = new Gauge({ name: `${PREFIX}running_sequences`, help: 'Sequences being generated', registers: [this.registry] });
  readonly batchSize = new Histogram({ name: `${PREFIX}batch_sequences`, help: 'Sequences per engine step', buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256], registers: [this.registry] });
  readonly stepTokens = new Histogram({ name: `${PREFIX}batch_tokens`, help: 'Tokens per engine step (prompt chunks and decoded tokens)', buckets: [1, 4, 16, 64, 256, 1024, 4096], registers: [this.registry] });
  readonly timeToFirstToken = new Histogram({ name: `${PREFIX}time_to_first_token_seconds`, help: 'From the request to its first generated token', buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [this.registry] });
  readonly interTokenLatency = new Histogram({ name: `${PREFIX}inter_token_latency_seconds`, help: 'Between consecutive generated tokens of a request', buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1], registers: [this.registry] });
  readonly steering = new Counter({ name: `${PREFIX}steered_requests_total`, help: 'Generation requests by the ICV applied ("none" when alpha is 0 or no ICV)', labelNames: ['icv'] as const, registers: [this.registry] });
  readonly alpha = new Histogram({ name: `${PREFIX}steering_alpha`, help: 'Alpha applied to generation requests', buckets: [0, 0.05, 0.12, 0.25, 0.5, 1, 2, 5], registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: PREFIX });
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
