/**
 * Rank-1 PCA of a few long rows, through their N x N Gram matrix: for N pairs of L*H values this is
 * exact and takes microseconds, where an SVD of the N x (L*H) matrix would not.
 */

/** Eigen-decomposition of a symmetric matrix (cyclic Jacobi, float64). Returns eigenvalues and column eigenvectors. */
export function symmetricEigen(a: Float64Array, n: number): { values: Float64Array; vectors: Float64Array } {
  const m = Float64Array.from(a);
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += m[p * n + q]! ** 2;
    if (off < 1e-30) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = m[p * n + q]!;
        if (Math.abs(apq) < 1e-300) continue;
        const theta = (m[q * n + q]! - m[p * n + p]!) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1), s = t * c;
        for (let k = 0; k < n; k++) {
          const mkp = m[k * n + p]!, mkq = m[k * n + q]!;
          m[k * n + p] = c * mkp - s * mkq;
          m[k * n + q] = s * mkp + c * mkq;
        }
        for (let k = 0; k < n; k++) {
          const mpk = m[p * n + k]!, mqk = m[q * n + k]!;
          m[p * n + k] = c * mpk - s * mqk;
          m[q * n + k] = s * mpk + c * mqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = v[k * n + p]!, vkq = v[k * n + q]!;
          v[k * n + p] = c * vkp - s * vkq;
          v[k * n + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  const values = new Float64Array(n);
  for (let i = 0; i < n; i++) values[i] = m[i * n + i]!;
  return { values, vectors: v };
}

export interface RankOnePca {
  /** The mean row. */
  mean: Float64Array;
  /** First right singular vector of the centred rows, with sklearn's svd_flip sign rule applied to the left one. */
  component: Float64Array;
  singularValue: number;
}

/** rows: N rows of D values. */
export function rankOnePca(rows: ArrayLike<number>[], d: number): RankOnePca {
  const n = rows.length;
  if (n === 0) throw new Error('PCA needs at least one row');
  const mean = new Float64Array(d);
  for (const r of rows) for (let j = 0; j < d; j++) mean[j]! += r[j]!;
  for (let j = 0; j < d; j++) mean[j]! /= n;
  const centred = rows.map((r) => {
    const c = new Float64Array(d);
    for (let j = 0; j < d; j++) c[j] = r[j]! - mean[j]!;
    return c;
  });
  const gram = new Float64Array(n * n);
  for (let a = 0; a < n; a++) {
    for (let b = a; b < n; b++) {
      let s = 0;
      const ca = centred[a]!, cb = centred[b]!;
      for (let j = 0; j < d; j++) s += ca[j]! * cb[j]!;
      gram[a * n + b] = s;
      gram[b * n + a] = s;
    }
  }
  const { values, vectors } = symmetricEigen(gram, n);
  let top = 0;
  for (let i = 1; i < n; i++) if (values[i]! > values[top]!) top = i;
  const u = new Float64Array(n);
  for (let i = 0; i < n; i++) u[i] = vectors[i * n + top]!;
  // svd_flip: make the left vector's entry of largest magnitude positive.
  let big = 0;
  for (let i = 1; i < n; i++) if (Math.abs(u[i]!) > Math.abs(u[big]!)) big = i;
  if (u[big]! < 0) for (let i = 0; i < n; i++) u[i] = -u[i]!;
  const sigma = Math.sqrt(Math.max(values[top]!, 0));
  const component = new Float64Array(d);
  if (sigma > 0) {
    for (let i = 0; i < n; i++) {
      const w = u[i]! / sigma;
      const c = centred[i]!;
      for (let j = 0; j < d; j++) component[j]! += w * c[j]!;
    }
  }
  return { mean, component, singularValue: sigma };
}
