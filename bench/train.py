"""Training throughput on CPU from the sample build's shards, and the time spent waiting for data.

    python bench/train.py [--model debug-rn] [--steps 30] [--batch 256] [--threads 2]

One process drives the training library and loader directly (no Ray, no MLflow), so it runs on
a lent GPU machine too (then it uses CUDA and bf16 and prints MFU for --model ViT-B-32).
  ours:     loader.next_batch() + train_step, as each Ray worker runs them;
  baseline: train_step alone on one batch prepared in advance (the compute ceiling).
The data-wait fraction is the share of wall time spent in next_batch().
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import debug_model, report, row, sample_build


def flops_per_sample(model, image_size: int) -> float:
    """Forward+backward FLOPs per sample (6 x parameters x tokens for the transformers)."""
    v = model.cfg.vision
    n_img = (image_size // v.patch_size) ** 2 + 1 if getattr(v, "patch_size", None) else 1
    vis = sum(p.numel() for p in model.visual.parameters())
    txt = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("visual"))
    return 6 * (vis * n_img + txt * model.cfg.text.context_length)


def main() -> None:
    import torch

    from training.data.loader import ShardLoader
    from training.tokenizer import Tokenizer
    from training.train_loop import param_groups, train_step

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="debug-rn")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--loader-workers", type=int, default=1, help="decode processes (0: in the loader's thread)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = torch.bfloat16 if dev.type == "cuda" else None
    build = sample_build()
    model = debug_model(a.model)
    tok = Tokenizer.load(str(build / "tokenizer.json"), model.cfg.text.context_length)
    model = debug_model(a.model, tok.vocab_size, tok.eot_id).to(dev)
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-4)
    loader = ShardLoader(build, tok, a.image_size, a.batch, 0, workers=a.loader_workers, pin_memory=dev.type == "cuda")
    fixed = loader.next_batch()
    for _ in range(3):  # warm up
        train_step(model, opt, [fixed], "clip", dev, amp, 1.0)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    sync()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        train_step(model, opt, [fixed], "clip", dev, amp, 1.0)
    sync()
    ceiling = a.steps * a.batch / (time.perf_counter() - t0)

    wait = 0.0
    t0 = time.perf_counter()
    for _ in range(a.steps):
        tw = time.perf_counter()
        batch = loader.next_batch()
        wait += time.perf_counter() - tw
        train_step(model, opt, [batch], "clip", dev, amp, 1.0)
    sync()
    wall = time.perf_counter() - t0
    rate = a.steps * a.batch / wall
    rows = [row(f"{a.model} samples/s, loader+step vs step alone ({dev.type})", rate, ceiling, "samples/s",
                f"batch {a.batch}, {a.threads} threads, {a.loader_workers} decode processes"),
            row(f"{a.model} data-wait fraction", wait / wall, None, "fraction", "time in next_batch()")]
    if dev.type == "cuda":
        peak = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
        name = torch.cuda.get_device_name(0)
        pk = next((v for k, v in peak.items() if k in name), None)
        if pk:
            rows.append(row(f"{a.model} MFU (bf16 dense peak of {name})", rate * flops_per_sample(model, a.image_size) / pk, None, "fraction"))
    report(f"train-{a.model}", rows)


if __name__ == "__main__":
    main()
