/** Tolerance checks used against the golden fixtures. */
export function maxRelativeError(ours: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (ours.length !== ref.length) throw new Error(`length ${ours.length} != reference ${ref.length}`);
  let diff = 0, scale = 0;
  for (let i = 0; i < ref.length; i++) {
    diff = Math.max(diff, Math.abs(ours[i]! - ref[i]!));
    scale = Math.max(scale, Math.abs(ref[i]!));
  }
  return diff / scale;
}

/** log-softmax of each row of a [rows, vocab] matrix. */
function logSoftmaxRow(x: ArrayLike<number>, offset: number, vocab: number): Float64Array {
  let mx = -Infinity;
  for (let j = 0; j < vocab; j++) mx = Math.max(mx, x[offset + j]!);
  let sum = 0;
  for (let j = 0; j < vocab; j++) sum += Math.exp(x[offset + j]! - mx);
  const out = new Float64Array(vocab);
  for (let j = 0; j < vocab; j++) out[j] = x[offset + j]! - mx - Math.log(sum);
  return out;
}

/** Mean KL(ref || ours) over rows, and the fraction of rows whose argmax agrees. */
export function klAndTop1(ours: ArrayLike<number>, ref: ArrayLike<number>, vocab: number): { kl: number; top1: number } {
  const rows = ref.length / vocab;
  let kl = 0, agree = 0;
  for (let r = 0; r < rows; r++) {
    const p = logSoftmaxRow(ref, r * vocab, vocab), q = logSoftmaxRow(ours, r * vocab, vocab);
    let k = 0, ap = 0, aq = 0;
    for (let j = 0; j < vocab; j++) {
      k += Math.exp(p[j]!) * (p[j]! - q[j]!);
      if (p[j]! > p[ap]!) ap = j;
      if (q[j]! > q[aq]!) aq = j;
    }
    kl += k;
    if (ap === aq) agree++;
  }
  return { kl: kl / rows, top1: agree / rows };
}
