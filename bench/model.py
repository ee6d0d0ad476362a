"""Training-step throughput and peak memory of model configs on this machine.

    python bench/model.py [--configs debug-vit,debug-rn,ViT-B-32] [--batch 32] [--steps 5]

Each config runs in a fresh process (peak memory is its own): a forward+backward+AdamW step
with the CLIP loss on random images and tokens. When open_clip is importable (the optional
`bench` extra; it needs torchvision, which does not import beside the CPU torch wheel), the
same process also runs open_clip's model of the same config and batch and prints the ratio.
On a CUDA machine the step runs in bf16 autocast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report, row, run_child  # noqa: E402

CHILD = r"""
import json, sys, time, resource, torch
sys.path.insert(0, "bench")
from common import debug_model
from training.loss import clip_loss
name, bs, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
torch.set_num_threads(2)

def bench(model, encode):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    size = model_size
    img = torch.randn(bs, 3, size, size, device=dev)
    txt = torch.randint(3, 400, (bs, ctx), device=dev)
    txt[:, -1] = eot
    def step():
        with amp:
            fi, ft, s = encode(model, img, txt)
            loss = clip_loss(fi.float(), ft.float(), s)
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    step()
    if dev.type == "cuda": torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps): step()
    if dev.type == "cuda": torch.cuda.synchronize()
    return steps * bs / (time.perf_counter() - t0)

ours = debug_model(name, 49408 if not name.startswith("debug") else 1024, 2)
model_size, ctx, eot = ours.cfg.vision.image_size, ours.cfg.text.context_length, 2
ours = ours.to(dev).train()
rate = bench(ours, lambda m, i, t: m(i, t))
out = {"ours": rate, "params": sum(p.numel() for p in ours.parameters())}
del ours
try:
    import open_clip
    if name not in open_clip.list_models():
        raise ImportError(name)  # our debug presets have no open_clip twin
    oc = open_clip.create_model(name).to(dev).train()
    def oc_step(m, i, t):
        r = m(i, t)
        return (r["image_features"], r["text_features"], r["logit_scale"]) if isinstance(r, dict) else r[:3]
    out["open_clip"] = bench(oc, oc_step)
except ImportError:
    out["open_clip"] = None
mem = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out["peak_mb"] = mem
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="debug-vit,debug-rn,ViT-B-32")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    a = ap.parse_args()
    rows = []
    for name in a.configs.split(","):
        bs = a.batch * (8 if name.startswith("debug") else 1)
        r = run_child(CHILD, name, str(bs), str(a.steps))
        note = f"batch {bs}, {r['params'] / 1e6:.1f}M params" + ("" if r["open_clip"] else "; open_clip not installed")
        rows.append(row(f"{name} train-step samples/s (vs open_clip)", r["ours"], r["open_clip"], "samples/s", note))
        rows.append(row(f"{name} peak memory", r["peak_mb"], None, "MB", "RSS on CPU, allocated on GPU"))
        print(rows[-2], flush=True)
    report("model", rows)


if __name__ == "__main__":
    main()
