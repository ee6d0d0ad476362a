"""The data path: decoded and augmented images per second per core from the sample build's
shards, next to what one core of training consumes.

    python bench/loader.py [--model debug-rn] [--batches 20] [--batch 256]

  ours:     training.data.ShardLoader.next_batch() on one thread (JPEG decode, CLIP's random
            resized crop at scale 0.9-1.0, normalisation, tokenisation);
  baseline: samples/s of one training step on one thread (the consumption rate).
A ratio above 1 means one loader core keeps up with one training core; the per-worker reader
runs inside each Ray worker, so that is the condition for a low data-wait fraction.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import debug_model, report, row, sample_build  # noqa: E402


def main() -> None:
    import torch

    from training.data import ShardLoader, load_rows
    from training.tokenizer import Tokenizer
    from training.train_loop import param_groups, train_step

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="debug-rn")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch", type=int, default=256)
    a = ap.parse_args()
    torch.set_num_threads(1)
    build = sample_build()
    t0 = time.perf_counter()
    table, _ = load_rows(build)
    read_s = time.perf_counter() - t0
    ctx = debug_model(a.model).cfg.text.context_length
    tok = Tokenizer.load(str(build / "tokenizer.json"), ctx)
    loader = ShardLoader(table, tok, 32, a.batch, 0)
    loader.next_batch()
    t0 = time.perf_counter()
    for _ in range(a.batches):
        batch = loader.next_batch()
    load_rate = a.batches * a.batch / (time.perf_counter() - t0)
    model = debug_model(a.model, tok.vocab_size, tok.eot_id)
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-4)
    train_step(model, opt, [batch], "clip", torch.device("cpu"), None, 1.0)
    n = max(3, a.batches // 4)
    t0 = time.perf_counter()
    for _ in range(n):
        train_step(model, opt, [batch], "clip", torch.device("cpu"), None, 1.0)
    step_rate = n * a.batch / (time.perf_counter() - t0)
    report("loader", [row(f"images/s/core decoded+augmented vs {a.model} step consumption", load_rate, step_rate, "images/s",
                          f"{table.num_rows:,} rows read in {read_s:.1f}s")])


if __name__ == "__main__":
    main()
