"""The training data path: memory per worker as the build grows, and decode+augment throughput.

    python bench/loader.py [--sizes 20000,200000] [--batches 60] [--batch 256]

Synthetic builds (the layout build-wit writes: parquet shards of 1,000-row row groups, 64 px
JPEGs, a manifest) are generated once under .openwit/bench/.

  memory:     peak RSS of one worker process (a fresh interpreter) streaming `--batches` batches
              with training.data.ShardLoader, on a build 10x larger than the other: the ratio
              must stay near 1 (bounded by the shuffle window and prefetch depth). For contrast,
              the old path (every worker read the whole subset into one table) on the same builds.
  throughput: decoded + augmented images/s (random resized crop, tokenisation; batches as uint8)
              of the streaming loader with 1 and with 2 decode processes, against the old path
              (one synchronous decode per row) in the same process; at 64 px (the sample's size)
              and 224 px from 256 px JPEGs (CLIP's). The row `images/s 224 px from 256 px
              JPEGs: 2 processes vs 1` says whether the path scales with processes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, report, row, run_child

BENCH = ROOT / ".openwit" / "bench"


def synthetic_build(n: int, px: int, distinct: int = 1000) -> Path:
    """A build folder of n rows (`distinct` different JPEGs, cycled); made once."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    root = BENCH / f"loader-{n}-{px}px"
    if (root / "manifest.json").exists():
        return root
    (root / "shards").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    jpegs = []
    for i in range(distinct):  # smooth random images: JPEG sizes like real photos at this size
        small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        buf = io.BytesIO()
        if px >= 256:  # photo-like at CLIP's size (~27 KB): bench/gpu.py's generator
            from gpu import photo_like_jpeg

            jpegs.append(photo_like_jpeg(i, px))
            continue
        Image.fromarray(small).resize((px, px), Image.BICUBIC).save(buf, format="JPEG", quality=90)
        jpegs.append(buf.getvalue())
    per_shard, entries = 10_000, []
    for s, start in enumerate(range(0, n, per_shard)):
        ids = range(start, min(n, start + per_shard))
        t = pa.table({"uid": [f"{i:09d}" for i in ids], "caption": [f"a photo of thing {i % 997} in colour {i % 13}" for i in ids],
                      "jpg": [jpegs[i % distinct] for i in ids], "in_balanced": [i % 10 != 0 for i in ids],
                      "in_unbalanced": [True] * len(ids)})
        path = root / "shards" / f"{s:05d}.parquet"
        pq.write_table(t, path, row_group_size=1000)
        md = pq.read_metadata(path)
        entries.append({"path": f"shards/{s:05d}.parquet", "rows": t.num_rows, "bytes": path.stat().st_size,
                        "row_groups": [md.row_group(g).num_rows for g in range(md.num_row_groups)]})
    tok = {"model": "char"}
    (root / "tokenizer.json").write_text(json.dumps(tok))
    (root / "manifest.json").write_text(json.dumps({"name": root.name, "shards": entries, "image_column": "jpg",
                                                    "totals": {"rows": n, "bytes": sum(e["bytes"] for e in entries)}}))
    return root


TOKENIZER = """
import torch
class Tok:
    def __call__(self, texts):
        return torch.tensor([[ord(c) % 256 for c in t[:32].ljust(32)] for t in texts])
"""

STREAM = TOKENIZER + """
import json, sys, time
from common import peak_rss_mb
from training.data.loader import ShardLoader
build, size, batch, batches, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
with ShardLoader(build, Tok(), size, batch, 0, workers=workers, prefetch=2, shuffle_units=8) as ld:
    ld.next_batch()
    ld.next_batch()
    t0 = time.perf_counter()
    for _ in range(batches):
        ld.next_batch()
    rate = batches * batch / (time.perf_counter() - t0)
print(json.dumps({"rate": rate, "rss_mb": peak_rss_mb()}))
"""

OLD = TOKENIZER + """
import io, json, sys, time
import numpy as np, pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
from PIL import Image
from common import peak_rss_mb
from training.data.decode import crop_from_uniforms
from training.data.images import to_tensor
build, size, batch, batches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
# the loader before the streaming one: the whole subset in one table, a permutation of all rows
# per batch, one synchronous decode per row
m = json.load(open(build + "/manifest.json"))
tables = [pq.read_table(build + "/" + s["path"], columns=["caption", "jpg", "in_balanced"]) for s in m["shards"]]
table = pa.concat_tables([t.filter(pc.equal(t["in_balanced"], True)) for t in tables])
images, captions, tok = table["jpg"], table["caption"].to_pylist(), Tok()
def next_batch(k):
    idx = np.random.default_rng([0, 0]).permutation(table.num_rows)[k * batch:(k + 1) * batch]
    rng = np.random.default_rng([0, k])
    imgs = [to_tensor(crop_from_uniforms(Image.open(io.BytesIO(images[int(i)].as_py())), size, rng.random((10, 4)))) for i in idx]
    return np.stack(imgs), tok([captions[int(i)] for i in idx])
next_batch(0)
t0 = time.perf_counter()
for k in range(1, batches + 1):
    next_batch(k)
rate = batches * batch / (time.perf_counter() - t0)
print(json.dumps({"rate": rate, "rss_mb": peak_rss_mb()}))
"""


def child(code: str, build: Path, size: int, batch: int, batches: int, *extra) -> dict:
    return run_child(f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r})\n" + code, str(build), str(size), str(batch),
                     str(batches), *[str(x) for x in extra])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="20000,200000")
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--batch", type=int, default=256)
    a = ap.parse_args()
    small, large = (int(x) for x in a.sizes.split(","))
    t0 = time.perf_counter()
    builds = {n: synthetic_build(n, 64) for n in (small, large)}
    big_px = synthetic_build(8000, 256)
    print(f"synthetic builds ready in {time.perf_counter() - t0:.0f}s", flush=True)

    rows = []
    mem = {n: child(STREAM, b, 64, a.batch, a.batches, 2) for n, b in builds.items()}
    old = {n: child(OLD, b, 64, a.batch, 10) for n, b in builds.items()}
    mb = {n: sum(e["bytes"] for e in json.loads((b / "manifest.json").read_text())["shards"]) / 1e6 for n, b in builds.items()}
    rows.append(row(f"streaming loader peak RSS/worker: {large:,} vs {small:,} rows", mem[large]["rss_mb"], mem[small]["rss_mb"], "MB",
                    f"builds of {mb[small]:.0f} and {mb[large]:.0f} MB; {a.batches} batches of {a.batch}"))
    rows.append(row(f"old whole-build path peak RSS/worker: {large:,} vs {small:,} rows", old[large]["rss_mb"], old[small]["rss_mb"], "MB",
                    "every worker held the whole subset"))
    rows.append(row(f"peak RSS/worker at {large:,} rows: streaming vs old path", mem[large]["rss_mb"], old[large]["rss_mb"], "MB"))

    for size, build, label in ((64, builds[small], "64 px"), (224, big_px, "224 px from 256 px JPEGs")):
        base = child(OLD, build, size, a.batch, max(5, a.batches // 4))["rate"]
        rates = {w: child(STREAM, build, size, a.batch, max(5, a.batches // 4), w)["rate"] for w in (0, 1, 2)}
        for w in (0, 1, 2):
            rows.append(row(f"images/s {label}: streaming, {w or 'no'} decode process{'es' * (w != 1)} vs old path", rates[w], base,
                            "images/s", "old path: 1 synchronous decode per row; 0 processes: decoded in the loader's thread"))
        rows.append(row(f"images/s {label}: 2 processes vs 1", rates[2], rates[1], "images/s",
                        f"{os.cpu_count()} cores; the path scales with processes"))
    report("loader", rows)


if __name__ == "__main__":
    main()
