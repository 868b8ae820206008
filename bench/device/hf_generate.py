"""Hugging Face transformers' generate on the same weights as bench/gpu-bench.js: decode tokens/s at
batch 1 and 20, prompt 64, 128 new tokens, greedy, bf16, on the GPU. Prints one JSON line.
Usage: python3 hf_generate.py MODEL_DIR"""
import json, sys, time
import torch
from transformers import AutoModelForCausalLM

def main():
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16).cuda().eval()
    prompt = [100 + (i * 37) % 30000 for i in range(64)]
    runs = []
    for batch in (1, 20):
        ids = torch.tensor([prompt] * batch, device='cuda')
        with torch.no_grad():
            model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
            torch.cuda.synchronize()
            t0 = time.time()
            out = model.generate(ids, max_new_tokens=128, min_new_tokens=128, do_sample=False)
            torch.cuda.synchronize()
            s = time.time() - t0
        tokens = (out.shape[1] - ids.shape[1]) * batch
        runs.append({'batch': batch, 'seconds': s, 'tokensPerSecond': tokens / s})
    print(json.dumps({'transformers': runs, 'gpu': torch.cuda.get_device_name(0)}))

if __name__ == '__main__':
    main()
