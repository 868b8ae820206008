"""Random Llama-2-7B-shaped bf16 checkpoints for the GPU benchmarks, made on the GPU machine with torch
(the JS generator of bench/gen-llama.js is too slow for 13.5 GB). Writes DIR/base (and with --hdr,
DIR/harmful = base + 0.01 * t-noise and DIR/target = base + 0.002 * N(0, 1)), sharded like the Hub's
checkpoints, with config.json. Usage: python3 make_random_llama.py DIR [--hdr] [--layers 32]"""
import json, os, sys
import torch
from safetensors.torch import save_file

def main():
    out = sys.argv[1]
    hdr = '--hdr' in sys.argv
    layers = int(sys.argv[sys.argv.index('--layers') + 1]) if '--layers' in sys.argv else 32
    H, I, V, heads = 4096, 11008, 32000, 32
    cfg = dict(architectures=['LlamaForCausalLM'], model_type='llama', hidden_size=H, intermediate_size=I,
               num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads, vocab_size=V,
               rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=4096, tie_word_embeddings=False,
               hidden_act='silu', torch_dtype='bfloat16', bos_token_id=1, eos_token_id=2)
    shapes = [('model.embed_tokens.weight', (V, H))]
    for l in range(layers):
        p = f'model.layers.{l}.'
        shapes += [(p + 'input_layernorm.weight', (H,)), (p + 'post_attention_layernorm.weight', (H,))]
        shapes += [(p + f'self_attn.{n}_proj.weight', (H, H)) for n in 'qkvo']
        shapes += [(p + 'mlp.gate_proj.weight', (I, H)), (p + 'mlp.up_proj.weight', (I, H)), (p + 'mlp.down_proj.weight', (H, I))]
    shapes += [('model.norm.weight', (H,)), ('lm_head.weight', (V, H))]
    kinds = ['base'] + (['harmful', 'target'] if hdr else [])
    shard_bytes = 5 * 10**9
    g = torch.Generator(device='cuda').manual_seed(0)
    shards = {k: [] for k in kinds}
    current = {k: {} for k in kinds}
    size = 0
    def flush():
        for k in kinds:
            if current[k]:
                shards[k].append(current[k])
                current[k] = {}
    for name, shape in shapes:
        nbytes = 2 * torch.Size(shape).numel()
        if size + nbytes > shard_bytes and current['base']:
            flush(); size = 0
        norm = name.endswith('norm.weight')
        base = (1.0 + 0.05 * torch.randn(shape, generator=g, device='cuda')) if norm else 0.02 * torch.randn(shape, generator=g, device='cuda')
        base = base.to(torch.bfloat16)
        current['base'][name] = base.cpu()
        if hdr:
            t = torch.distributions.StudentT(torch.tensor(4.0, device='cuda')).sample(shape)
            current['harmful'][name] = (base.float() + 0.01 * t).to(torch.bfloat16).cpu()
            current['target'][name] = (base.float() + 0.002 * torch.randn(shape, generator=g, device='cuda')).to(torch.bfloat16).cpu()
        size += nbytes
    flush()
    for k in kinds:
        d = os.path.join(out, k)
        os.makedirs(d, exist_ok=True)
        n = len(shards[k])
        weight_map, total = {}, 0
        for i, tensors in enumerate(shards[k]):
            fname = f'model-{i + 1:05d}-of-{n:05d}.safetensors'
            save_file(tensors, os.path.join(d, fname), metadata={'format': 'pt'})
            for name, t in tensors.items():
                weight_map[name] = fname
                total += t.numel() * 2
        json.dump({'metadata': {'total_size': total}, 'weight_map': weight_map}, open(os.path.join(d, 'model.safetensors.index.json'), 'w'))
        json.dump(cfg, open(os.path.join(d, 'config.json'), 'w'), indent=1)
    print(json.dumps({'dir': out, 'kinds': kinds, 'layers': layers}))

if __name__ == '__main__':
    main()
