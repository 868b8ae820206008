#!/usr/bin/python3
"""Reference HDR (Harm Direction Removal, TIES trimming) in PyTorch, for the benchmark.

The published algorithm (Safety Arithmetic, Hazra et al. 2024) as the project's docs/semantics.md states it:
  tau = harmful - base                    (float32, every floating-point tensor)
  flat = cat(|tau| of every tensor)       (one global region)
  kth = kthvalue(flat, d - keep)          keep = floor(d * top_k)
  out = target - lambda * tau * (|tau| >= kth)   in float32, then rounded to the target's dtype

It holds the whole models in memory as float32, the way the published code does.
Reads and writes safetensors with a small reader/writer (numpy + json), no safetensors package.

Usage: /usr/bin/python3 bench/reference_hdr.py --base B --harmful H --target T --out OUT
           [--top-k 0.1] [--lambda 3] [--threads 2]
The last stdout line is a JSON object with timings and the threshold.
"""
import argparse
import json
import os
import struct
import sys
import time

import numpy as np
import torch

NP_DTYPES = {
    "F32": np.float32, "F64": np.float64, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
FLOAT_DTYPES = ("F32", "F64", "F16", "BF16")


def read_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n).decode("utf-8"))
    header.pop("__metadata__", None)
    return 8 + n, header


def checkpoint_files(path):
    if os.path.isfile(path):
        return [path]
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            wm = json.load(f)["weight_map"]
        names = sorted(set(wm.values()))
    else:
        names = sorted(n for n in os.listdir(path) if n.endswith(".safetensors"))
    return [os.path.join(path, n) for n in names]


def load(path):
    """name -> (float32 tensor or raw tensor, dtype string). bf16 is widened exactly to float32."""
    out = {}
    for file in checkpoint_files(path):
        start, header = read_header(file)
        with open(file, "rb") as f:
            for name, meta in header.items():
                b, e = meta["data_offsets"]
                dt = meta["dtype"]
                f.seek(start + b)
                count = (e - b) // np.dtype(NP_DTYPES[dt]).itemsize
                arr = np.fromfile(f, dtype=NP_DTYPES[dt], count=count).reshape(meta["shape"])
                if dt == "BF16":
                    t = torch.from_numpy(arr.astype(np.int32) << 16).view(torch.float32)
                elif dt in FLOAT_DTYPES:
                    t = torch.from_numpy(arr.astype(np.float32))
                else:
                    t = torch.from_numpy(arr)
                out[name] = (t, dt)
    return out


def to_bytes(t, dt):
    if dt == "BF16":
        return t.to(torch.bfloat16).contiguous().view(torch.int16).numpy().tobytes()
    if dt == "F16":
        return t.to(torch.float16).contiguous().numpy().tobytes()
    if dt == "F32":
        return t.to(torch.float32).contiguous().numpy().tobytes()
    if dt == "F64":
        return t.to(torch.float64).contiguous().numpy().tobytes()
    return t.contiguous().numpy().tobytes()


def save(path, tensors):
    """tensors: list of (name, shape, dtype, bytes). Writes one safetensors file."""
    header = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, shape, dt, data in tensors:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
    js = json.dumps(header, separators=(",", ":")).encode("utf-8")
    js += b" " * ((8 - len(js) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(js)))
        f.write(js)
        for _, _, _, data in tensors:
            f.write(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--harmful", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--out", required=True, help="output folder (model.safetensors is written inside)")
    ap.add_argument("--top-k", type=float, default=0.1)
    ap.add_argument("--lambda", dest="lam", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.set_grad_enabled(False)
    t0 = time.perf_counter()

    base = load(a.base)
    harm = load(a.harmful)
    target = load(a.target)
    t_load = time.perf_counter()

    keys = [k for k in base if base[k][1] in FLOAT_DTYPES]
    tau = {k: harm[k][0] - base[k][0] for k in keys}
    flat = torch.cat([tau[k].abs().flatten() for k in keys])
    d = flat.numel()
    keep = int(d * a.top_k)
    kth = torch.kthvalue(flat, d - keep).values
    del flat
    t_kth = time.perf_counter()

    out = []
    kept = 0
    for k in sorted(target):
        t, dt = target[k]
        if k in tau:
            mask = tau[k].abs() >= kth
            kept += int(mask.sum())
            res = t - a.lam * torch.where(mask, tau[k], torch.zeros_like(tau[k]))
            out.append((k, t.shape, dt, to_bytes(res, dt)))
        else:
            out.append((k, t.shape, dt, to_bytes(t, dt)))
    t_apply = time.perf_counter()

    os.makedirs(a.out, exist_ok=True)
    save(os.path.join(a.out, "model.safetensors"), out)
    t_save = time.perf_counter()

    kth_f = float(kth)
    kth_bits = struct.unpack("<I", struct.pack("<f", kth_f))[0]
    print(f"reference: load {t_load - t0:.2f}s, tau+kthvalue {t_kth - t_load:.2f}s, "
          f"apply {t_apply - t_kth:.2f}s, save {t_save - t_apply:.2f}s", file=sys.stderr)
    print(json.dumps({
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "region_elements": d, "keep_target": keep, "kept": kept,
        "threshold": kth_f, "threshold_bits": kth_bits,
        "seconds": {"load": t_load - t0, "kthvalue": t_kth - t_load, "apply": t_apply - t_kth,
                    "save": t_save - t_apply, "total": t_save - t0},
    }))


if __name__ == "__main__":
    main()
