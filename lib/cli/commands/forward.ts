/** safety-arithmetic forward: logits (and captured activations) of one token sequence, as safetensors. */
import { renderSafetensors, type SmallTensor } from '../../checkpoint/safetensors';
import { planOutputs, writeOutputFile } from '../../io/output';
import { LanguageModel } from '../../model/model';
import { UsageError, parseInteger, parseTokens, requireFlags, parseCommandArgs } from '../args';
import { steeringFromFlags, STEER_FLAGS } from './steer-flags';

export const FORWARD_USAGE = `  forward  One forward pass; writes logits [T,V] float32 (and layer_out, mlp_out [L,T,H]) to a safetensors file
           safety-arithmetic forward --model DIR (--tokens 1,5,9 | --prompt TEXT) --out FILE
             [--capture layer_out,mlp_out] [--icv FILE --alpha A] [--device cpu|cuda|auto] [--threads N] [--float32] [--force]
`;

export async function runForward(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs({
    args: argv,
    options: {
      model: { type: 'string' }, tokens: { type: 'string' }, prompt: { type: 'string' }, out: { type: 'string' },
      capture: { type: 'string' }, device: { type: 'string' }, threads: { type: 'string' }, float32: { type: 'boolean' }, force: { type: 'boolean' },
      ...STEER_FLAGS,
    },
  });
  requireFlags('forward', values, ['model', 'out']);
  if ((values.tokens === undefined) === (values.prompt === undefined)) throw new UsageError('forward needs exactly one of --tokens LIST and --prompt TEXT');
  const capture = (values.capture ?? '').split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  for (const c of capture) if (c !== 'layer_out' && c !== 'mlp_out') throw new UsageError(`--capture takes layer_out and/or mlp_out, got "${c}"`);
  const output = { force: values.force ?? false, inputs: [{ path: values.model!, role: 'model' }, ...(values.icv ? [{ path: values.icv, role: 'ICV file' }] : [])] };
  planOutputs([{ dest: values.out!, kind: 'file', field: 'out' }], output);
  const model = await LanguageModel.load(values.model!, { ...(values.device ? { device: values.device as 'cpu' } : {}), weights: values.float32 ? 'float32' : 'auto', threads: parseInteger('--threads', values.threads) });
  try {
    const steer = await steeringFromFlags(model, values);
    const input = values.tokens !== undefined ? parseTokens(values.tokens) : values.prompt!;
    const [r] = await model.forward([input], { capture: capture as ('layer_out' | 'mlp_out')[], steer });
    const T = r!.tokens.length, V = model.config.vocabSize, L = model.config.numLayers, H = model.config.hiddenSize;
    const tensors: SmallTensor[] = [
      { name: 'logits', dtype: 'F32', shape: [T, V], data: r!.logits },
      { name: 'tokens', dtype: 'I32', shape: [T], data: Int32Array.from(r!.tokens) },
    ];
    if (r!.layerOut) tensors.push({ name: 'layer_out', dtype: 'F32', shape: [L, T, H], data: r!.layerOut });
    if (r!.mlpOut) tensors.push({ name: 'mlp_out', dtype: 'F32', shape: [L, T, H], data: r!.mlpOut });
    writeOutputFile(values.out!, renderSafetensors(tensors, { model: model.dir, backend: model.backend }), output);
    return 0;
  } finally {
    model.dispose();
  }
}
