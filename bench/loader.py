"""The data path: decoded and augmented images per second per core from the sample build's
shards, next to what one core of training consumes.

    python bench/loader.py [--model debug-rn] [--batches 20] [--batch 256]

  ours:     training.data.ShardLoader.next_batch() on one thread (JPEG decode, CLIP's random
            resized crop at scale 0.9-1.0, normalisation, tokenisation);
  baseline: samples/s of one training step on one thread (the consumption rate).
A ratio above 1 means one loader core keeps up with one training core; the per-worker reader
runs inside each Ray worker, so that is the condition for a low data-wait fraction.

With --ray-data (default when ray is importable), the same decode+augment runs as a Ray Data
pipeline (read_parquet -> map_batches -> iter_torch_batches) on 1 CPU, the alternative we
measured before choosing the per-worker reader.
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
    ap.add_argument("--ray-data", action=argparse.BooleanOptionalAction, default=True)
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
    rows = [row(f"images/s/core decoded+augmented vs {a.model} step consumption", load_rate, step_rate, "images/s",
                f"{table.num_rows:,} rows read in {read_s:.1f}s")]
    if a.ray_data:
        rd = ray_data_rate(build, a.batch, a.batches)
        if rd is not None:
            rows.append(row("images/s/core per-worker reader vs Ray Data pipeline", load_rate, rd, "images/s", "Ray Data on 1 CPU"))
    report("loader", rows)


def ray_data_rate(build: Path, batch: int, batches: int) -> float | None:
    """The same decode + augment as a Ray Data pipeline on one CPU (timed from the pipeline's start, after ray.init)."""
    try:
        import ray
        import ray.data
    except ImportError:
        return None
    import io
    import json

    import numpy as np
    from PIL import Image

    from training.data import random_resized_crop, to_tensor

    manifest = json.loads((build / "manifest.json").read_text())
    col = manifest.get("image_column", "jpg")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        ds = ray.data.read_parquet([str(build / s["path"]) for s in manifest["shards"]], columns=[col])

        def decode(b: dict) -> dict:
            rng = np.random.default_rng(0)
            imgs = [to_tensor(random_resized_crop(Image.open(io.BytesIO(x)), 32, rng)) for x in b[col]]
            return {"image": np.stack(imgs)}

        n, t0 = 0, time.perf_counter()  # the pipeline runs ahead of the consumer: time it from its start
        it = ds.map_batches(decode, batch_size=batch, batch_format="numpy").iter_torch_batches(batch_size=batch)
        for i, b in enumerate(it):
            n += len(b["image"])
            if i + 1 >= batches:
                break
        return n / (time.perf_counter() - t0)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
