"""Training-step throughput and peak memory of model configs on this machine.

    python bench/model.py [--configs debug-vit,debug-rn,ViT-B-32] [--batch 32] [--steps 5]

Each config runs in a fresh process (peak memory is its own): a forward+backward+AdamW step
with the CLIP loss on random images and tokens, timed in rounds of --steps steps that alternate
between the two models (medians reported). When open_clip is importable (a dev dependency), the
same process also runs open_clip's model of the same config and batch and prints the ratio
(ours / open_clip). On this CPU machine torchvision's compiled ops do not load;
`training.convert.import_open_clip` imports open_clip's pure-Python modules around that.
On a CUDA machine the step runs in bf16 autocast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report, row, run_child

CHILD = r"""
import json, statistics, sys, time, resource, torch
sys.path.insert(0, "bench")
from common import debug_model
from training.loss import clip_loss
name, bs, steps, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
torch.set_num_threads(2)

def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()

def stepper(model, encode):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    img = torch.randn(bs, 3, model_size, model_size, device=dev)
    txt = torch.randint(3, 400, (bs, ctx), device=dev)
    txt[:, -1] = eot
    def step():
        with amp:
            fi, ft, s = encode(model, img, txt)
            loss = clip_loss(fi.float(), ft.float(), s)
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    step()  # warm-up (allocations, kernel selection)
    return step

def timed(step):
    sync(); t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps * bs / (time.perf_counter() - t0)

ours = debug_model(name, 49408 if not name.startswith("debug") else 1024, 2)
model_size, ctx, eot = ours.cfg.vision.image_size, ours.cfg.text.context_length, 2
ours = ours.to(dev).train()
step_ours = stepper(ours, lambda m, i, t: m(i, t))
rates = {"ours": [timed(step_ours)], "open_clip": []}
out = {"params": sum(p.numel() for p in ours.parameters())}
# ours ran alone so far: its peak is measured before open_clip's model exists
out["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
try:
    from training.convert import import_open_clip, to_open_clip_model
    open_clip = import_open_clip()
    # the standard configs by open_clip's own factory; our debug presets built by open_clip.CLIP
    # from the same config (to_open_clip_model), so every row has a twin
    oc = open_clip.create_model(name) if name in open_clip.list_models() else to_open_clip_model(debug_model(name, 1024, 2))
    oc = oc.to(dev).train()
    out["open_clip_params"] = sum(p.numel() for p in oc.parameters())
    step_oc = stepper(oc, lambda m, i, t: m(i, t)[:3])
    for r in range(rounds):  # alternate, so drift on a noisy machine hits both alike
        rates["open_clip"].append(timed(step_oc))
        if r < rounds - 1:
            rates["ours"].append(timed(step_ours))
except ImportError:
    rates["ours"] += [timed(step_ours) for _ in range(rounds - 1)]
out["ours"] = statistics.median(rates["ours"])
out["open_clip"] = statistics.median(rates["open_clip"]) if rates["open_clip"] else None
out["rounds"] = rates
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="debug-vit,debug-rn,ViT-B-32")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per model; medians are reported")
    a = ap.parse_args()
    rows, rounds = [], {}
    for name in a.configs.split(","):
        bs = a.batch * (8 if name.startswith("debug") else 1)
        r = run_child(CHILD, name, str(bs), str(a.steps), str(a.rounds))
        rounds[name] = r["rounds"]
        note = f"batch {bs}, {r['params'] / 1e6:.1f}M params"
        if r["open_clip"] is None:
            note += "; open_clip not installed"
        elif r["open_clip_params"] != r["params"]:
            note += f"; open_clip's has {r['open_clip_params'] / 1e6:.1f}M"
        rows.append(row(f"{name} train-step samples/s (vs open_clip)", r["ours"], r["open_clip"], "samples/s", note))
        rows.append(row(f"{name} peak memory", r["peak_mb"], None, "MB", "ours alone: RSS on CPU, allocated on GPU"))
        print(rows[-2], flush=True)
    report("model", rows, {"samples_per_s_by_round": rounds, "steps_per_round": a.steps})


if __name__ == "__main__":
    main()
