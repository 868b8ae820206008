/**
 * The whole framework in one call: Harm Direction Removal on the target, then the ICV computed on the
 * patched model, saved inside the output folder so that generating from it steers by default.
 */
import fs from 'node:fs';
import path from 'node:path';
import { StagedOutput } from './checkpoint/output';
import { SafetyArithmeticError } from './errors';
import { removeHarmDirection, METADATA_FILE, type HdrOptions, type HdrSummary } from './hdr';
import { ICV_FILE, computeIcv, defaultDemosFile, readDemos, saveIcv, DEFAULT_ALPHA, type DemoPair } from './icv';
import { LanguageModel } from './model/model';

export interface AlignOptions extends Omit<HdrOptions, 'harmVector' | 'saveHarmVector' | 'onProgress'> {
  /** Demonstration pairs, or a JSONL file of them (default: the package's own set). */
  demos?: string | DemoPair[];
  /** The steering strength stored as the ICV's default (default 0.12, as published). */
  alpha?: number;
  /** Layers the ICV steers (default: options.layers when given, as for edited models; else all). */
  icvLayers?: number[];
  onProgress?: (p: { stage: 'hdr' | 'icv'; doneBytes?: number; totalBytes?: number }) => void;
}

export interface AlignSummary {
  out: string;
  hdr: HdrSummary;
  icv: { file: string; layers: number[]; pairs: number; defaultAlpha: number; demos: string };
  seconds: number;
}

function withoutAlignFields(o: AlignOptions): Omit<AlignOptions, 'demos' | 'alpha' | 'icvLayers' | 'onProgress'> {
  const copy: Partial<AlignOptions> = { ...o };
  delete copy.demos;
  delete copy.alpha;
  delete copy.icvLayers;
  delete copy.onProgress;
  return copy as Omit<AlignOptions, 'demos' | 'alpha' | 'icvLayers' | 'onProgress'>;
}

export async function align(options: AlignOptions): Promise<AlignSummary> {
  const started = Date.now();
  if (!options || typeof options.out !== 'string') throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', 'out: the output folder is required', { field: 'out' });
  const demosSource = options.demos ?? defaultDemosFile();
  const demos = typeof demosSource === 'string' ? readDemos(demosSource) : demosSource;
  const staged = StagedOutput.folder(options.out, options.force ?? false, 'out');
  try {
    const { onProgress } = options;
    const hdrRun: HdrOptions = { ...withoutAlignFields(options), out: staged.temp, force: true };
    if (onProgress) hdrRun.onProgress = (p) => onProgress({ stage: 'hdr', doneBytes: p.doneBytes, totalBytes: p.totalBytes });
    const hdr = await removeHarmDirection(hdrRun);
    onProgress?.({ stage: 'icv' });
    const model = await LanguageModel.load(staged.temp, options.device ? { device: options.device } : {});
    let icvInfo: AlignSummary['icv'];
    try {
      const layers = options.icvLayers ?? options.layers;
      const icv = await computeIcv(model, demos, { ...(layers ? { layers } : {}), defaultAlpha: options.alpha ?? DEFAULT_ALPHA });
      saveIcv(path.join(staged.temp, ICV_FILE), icv);
      icvInfo = {
        file: path.join(path.resolve(options.out), ICV_FILE),
        layers: icv.layers,
        pairs: demos.length,
        defaultAlpha: icv.defaultAlpha,
        demos: typeof demosSource === 'string' ? path.resolve(demosSource) : `${demos.length} pairs given in code`,
      };
    } finally {
      model.dispose();
    }
    const recordFile = path.join(staged.temp, METADATA_FILE);
    const record = JSON.parse(fs.readFileSync(recordFile, 'utf8')) as Record<string, unknown>;
    record.operation = 'safety-arithmetic align (harm direction removal + safety alignment)';
    record.icv = icvInfo;
    fs.writeFileSync(recordFile, JSON.stringify(record, null, 2) + '\n');
    staged.commit();
    return { out: path.resolve(options.out), hdr: { ...hdr, out: path.resolve(options.out) }, icv: icvInfo, seconds: (Date.now() - started) / 1000 };
  } catch (err) {
    staged.discard();
    throw err;
  }
}
