/**
 * The whole framework in one call: Harm Direction Removal on the target, then the ICV computed on the
 * patched model, saved inside the output folder so that generating from it steers by default.
 */
import fs from 'node:fs';
import path from 'node:path';
import { io } from './io/files';
import { withStagedOutputs, type OutputInput } from './io/output';
import { SafetyArithmeticError, abortError } from './errors';
import { METADATA_FILE, patchInto, prepareHdr, type HdrOptions, type HdrSummary } from './hdr';
import { ICV_FILE, computeIcv, defaultDemosFile, readDemos, icvFileBytes, DEFAULT_ALPHA, type DemoPair } from './icv';
import { LanguageModel } from './model/model';
import type { LayersInput } from './layers';

export interface AlignOptions extends Omit<HdrOptions, 'harmVector' | 'saveHarmVector' | 'onProgress'> {
  /** Demonstration pairs, or a JSONL file of them (default: the package's own set). */
  demos?: string | DemoPair[];
  /** The steering strength stored as the ICV's default (default 0.12, as published). */
  alpha?: number;
  /** Layers the ICV steers (default: options.layers when given, as for edited models; else all). */
  icvLayers?: LayersInput;
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

/** Everything align reads, for the output policy. */
function alignInputs(o: AlignOptions, demosFile: string | undefined): OutputInput[] {
  const inputs: OutputInput[] = [
    { path: o.target, role: 'target' },
    { path: o.base, role: 'base' },
    { path: o.harmful, role: 'harmful' },
  ].filter((i): i is OutputInput => typeof i.path === 'string');
  if (demosFile !== undefined) inputs.push({ path: demosFile, role: 'demonstrations file' });
  return inputs;
}

export async function align(options: AlignOptions): Promise<AlignSummary> {
  const started = Date.now();
  if (!options || typeof options.out !== 'string') throw new SafetyArithmeticError('SA_INVALID_ARGUMENT', 'out: the output folder is required', { field: 'out' });
  const demosSource = options.demos ?? defaultDemosFile();
  const demos = typeof demosSource === 'string' ? readDemos(demosSource) : demosSource;
  const { onProgress } = options;
  const hdrRun: HdrOptions = withoutAlignFields(options);
  if (onProgress) hdrRun.onProgress = (p) => onProgress({ stage: 'hdr', doneBytes: p.doneBytes, totalBytes: p.totalBytes });
  const prep = prepareHdr(hdrRun);
  const inputs = alignInputs(options, typeof demosSource === 'string' ? demosSource : undefined);
  return withStagedOutputs([{ dest: options.out, kind: 'folder', field: 'out' }], { force: options.force ?? false, inputs }, async ([staged]) => {
    const folder = staged!.temp;
    const hdr = await patchInto(prep, folder, undefined, { out: staged!.dest, harmVector: null });
    onProgress?.({ stage: 'icv' });
    const model = await LanguageModel.load(folder, { ...(options.device ? { device: options.device } : {}), threads: options.threads });
    let icvInfo: AlignSummary['icv'];
    try {
      const layers = options.icvLayers ?? options.layers;
      const icv = await computeIcv(model, demos, { ...(layers ? { layers } : {}), defaultAlpha: options.alpha ?? DEFAULT_ALPHA });
      const icvFile = path.join(folder, ICV_FILE);
      io(icvFile, 'cannot write the ICV', () => fs.writeFileSync(icvFile, Buffer.concat(icvFileBytes(icv))));
      icvInfo = {
        file: path.join(staged!.dest, ICV_FILE),
        layers: icv.layers,
        pairs: demos.length,
        defaultAlpha: icv.defaultAlpha,
        demos: typeof demosSource === 'string' ? path.resolve(demosSource) : `${demos.length} pairs given in code`,
      };
    } finally {
      model.dispose();
    }
    if (options.signal?.aborted) throw abortError();
    const recordFile = path.join(folder, METADATA_FILE);
    const record = JSON.parse(fs.readFileSync(recordFile, 'utf8')) as Record<string, unknown>;
    record.operation = 'safety-arithmetic align (harm direction removal + safety alignment)';
    record.icv = icvInfo;
    io(recordFile, 'cannot write the run record', () => fs.writeFileSync(recordFile, JSON.stringify(record, null, 2) + '\n'));
    return { out: staged!.dest, hdr, icv: icvInfo, seconds: (Date.now() - started) / 1000 };
  });
}
