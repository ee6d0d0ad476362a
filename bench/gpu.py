"""Does the data path keep the model fed? Model step, MFU and the loader end to end, in one process.

    python bench/gpu.py                      # on a GPU machine: ViT-B/32, ViT-B/16, RN50, CN-CLIP ViT-B/16
    python bench/gpu.py --cpu-sizes          # here (2 cores): the same code paths at debug sizes
    python bench/gpu.py --peak-tflops 989 --out bench/results/gpu.json

No Ray, no MLflow: it drives training/ directly (the model, `train_step`, `ShardLoader` with its
decode processes), so it runs on a lent GPU machine with torch, pyarrow and Pillow.

  model:   train-step samples/s of ours and of open_clip's model of the same config and batch
           (cn_clip's for CN-CLIP ViT-B/16, where importable), bf16 autocast, fused AdamW; FLOPs
           per sample from torch.utils.flop_counter on one forward+backward; MFU against --peak-tflops.
  compile: the same step under torch.compile (ViT-B/32).
  loader:  ShardLoader alone on 256 px JPEGs (about 25 KB, as wit-400m stores them) cropped to
           224 px: images/s for 1, 2, ... N decode processes.
  e2e:     ShardLoader -> train_step, ViT-B/32 at batch 512 (eager and compiled): samples/s,
           data-wait (time in next_batch) and the ratio to the model alone.
  gpu jpeg: torchvision.io.decode_jpeg(device="cuda") + crop on the GPU, images/s (an optional path).

Writes one JSON (after every section, so a run cut short keeps what it measured) and prints a table.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, debug_model, machine, row

RESULTS: dict = {"rows": [], "extra": {}}


def save(out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"name": "gpu", "machine": machine(), "date": time.strftime("%Y-%m-%d"), **RESULTS}, indent=1))


def sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- the model alone
def flops_per_sample(model, bs: int, size: int, ctx: int, vocab: int, dev) -> float:
    """Forward + backward FLOPs of one CLIP step, counted by torch's FLOP counter, per sample."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from training.loss import clip_loss

    img = torch.randn(bs, 3, size, size, device=dev)
    txt = torch.randint(3, vocab - 1, (bs, ctx), device=dev)
    with FlopCounterMode(display=False) as fc:
        fi, ft, s = model(img, txt)
        clip_loss(fi.float(), ft.float(), s).backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops() / bs


def stepper(model, bs: int, size: int, ctx: int, vocab: int, eot: int, dev, encode=None):
    """A closure running one train step on fixed random inputs (bf16 autocast on CUDA, fused AdamW)."""
    import torch

    from training.loss import clip_loss

    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=dev.type == "cuda")
    img = torch.randn(bs, 3, size, size, device=dev)
    txt = torch.randint(3, vocab - 1, (bs, ctx), device=dev)
    txt[:, -1] = eot
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    encode = encode or (lambda m, i, t: m(i, t)[:3])

    def step():
        with amp:
            fi, ft, s = encode(model, img, txt)
            loss = clip_loss(fi.float(), ft.float(), s)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def timed(step, steps: int, bs: int, dev) -> float:
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(dev)
    return steps * bs / (time.perf_counter() - t0)


def rate(step, steps: int, bs: int, dev, rounds: int = 3, warmup: int = 3) -> float:
    for _ in range(warmup):
        step()
    return statistics.median(timed(step, steps, bs, dev) for _ in range(rounds))


def open_clip_twin(name: str, ours, dev):
    """open_clip's model of the same config (its own factory for the standard names), or None."""
    try:
        from training.convert import import_open_clip, to_open_clip_model

        oc = import_open_clip()
    except ImportError:
        return None
    m = oc.create_model(name) if name in oc.list_models() else to_open_clip_model(ours)
    return m.to(dev).train()


def cn_clip_twin(dev):
    """cn_clip's own ViT-B/16 + RoBERTa-wwm-ext-base model, or None where cn_clip does not import."""
    try:
        from training.convert import import_cn_clip

        clip = import_cn_clip()
        from cn_clip.clip.model import CLIP as CnCLIP
    except Exception:  # noqa: BLE001 - optional comparison
        return None
    configs = Path(clip.__path__[0]) / "model_configs"
    info = {**json.loads((configs / "ViT-B-16.json").read_text()), **json.loads((configs / "RoBERTa-wwm-ext-base-chinese.json").read_text())}
    return CnCLIP(**info).to(dev).train()


def model_section(a, dev, configs) -> None:
    import torch

    for name, bs in configs:
        ours = debug_model(name, 21128 if name.startswith("CN-CLIP") else 49408, 102 if name.startswith("CN-CLIP") else 49407)
        size, ctx, vocab = ours.cfg.vision.image_size, ours.cfg.text.context_length, ours.cfg.text.vocab_size
        ours = ours.to(dev).train()
        fps = flops_per_sample(ours, min(bs, 32), size, ctx, vocab, dev)
        r_ours = rate(stepper(ours, bs, size, ctx, vocab, ours.cfg.text.eot_id, dev), a.steps, bs, dev)
        twin = cn_clip_twin(dev) if name.startswith("CN-CLIP") and dev.type == "cuda" else open_clip_twin(name, ours, dev)
        r_twin = None
        if twin is not None:
            r_twin = rate(stepper(twin, bs, size, ctx, vocab, ours.cfg.text.eot_id, dev), a.steps, bs, dev)
        del twin
        mfu = r_ours * fps / (a.peak_tflops * 1e12) if dev.type == "cuda" else None
        anchor = "cn_clip" if name.startswith("CN-CLIP") else "open_clip"
        RESULTS["rows"].append(row(f"{name} b{bs} train step samples/s (vs {anchor})", r_ours, r_twin, "samples/s",
                                   f"{fps / 1e9:.1f} GFLOP/sample fwd+bwd" + (f", MFU {mfu:.1%}" if mfu else "")))
        RESULTS["extra"].setdefault("model", {})[f"{name}-b{bs}"] = {"ours": r_ours, "anchor": r_twin, "anchor_name": anchor,
                                                                     "gflop_per_sample": fps / 1e9, "mfu": mfu}
        print(RESULTS["rows"][-1], flush=True)
        del ours
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        save(a.out)


def compiled_step(name: str, bs: int, dev):
    import torch

    model = debug_model(name, 49408, 49407).to(dev).train()
    size, ctx = model.cfg.vision.image_size, model.cfg.text.context_length
    compiled = torch.compile(model)
    step = stepper(compiled, bs, size, ctx, 49408, 49407, dev)
    step.compiled = compiled
    return model, step


def compile_section(a, dev, name: str, bs: int):
    """(samples/s, the model, its compiled form) of the compiled step, or (None, None, None)."""
    try:
        t0 = time.perf_counter()
        model, step = compiled_step(name, bs, dev)
        r = rate(step, a.steps, bs, dev, warmup=3)
        fps = RESULTS["extra"].get("model", {}).get(f"{name}-b{bs}", {}).get("gflop_per_sample")
        mfu = r * fps * 1e9 / (a.peak_tflops * 1e12) if fps and dev.type == "cuda" else None
        RESULTS["rows"].append(row(f"{name} b{bs} train step, torch.compile: samples/s", r, None, "samples/s",
                                   f"compile + warm-up {time.perf_counter() - t0:.0f}s" + (f", MFU {mfu:.1%}" if mfu else "")))
        RESULTS["extra"]["compiled"] = {"name": name, "batch": bs, "samples_per_s": r, "mfu": mfu}
        print(RESULTS["rows"][-1], flush=True)
        save(a.out)
        return r, model, step.compiled
    except Exception as e:  # noqa: BLE001 - a failed compile is reported, the rest still runs
        RESULTS["extra"]["compile_error"] = f"{type(e).__name__}: {str(e)[:400]}"
        save(a.out)
        return None, None, None


# ----------------------------------------------------------------------------- the data path
def jpeg_build(root: Path, rows: int, distinct: int, px: int = 256, workers: int = 8) -> Path:
    """A build folder as build-wit writes it: parquet shards of 1,000-row row groups with JPEGs
    that compress like photos at this size (~25 KB at 256 px, quality 95), a manifest, a tokenizer."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    if (root / "manifest.json").exists():
        return root
    (root / "shards").mkdir(parents=True, exist_ok=True)
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers) as pool:
        jpegs = list(pool.map(photo_like_jpeg, range(distinct), [px] * distinct, chunksize=16))
    per_shard, entries = 10_000, []
    for s, start in enumerate(range(0, rows, per_shard)):
        ids = range(start, min(rows, start + per_shard))
        t = pa.table({"uid": [f"{i:09d}" for i in ids], "caption": [f"a photo of thing {i % 997} in colour {i % 13}" for i in ids],
                      "jpg": [jpegs[i % distinct] for i in ids], "in_balanced": [True] * len(ids), "in_unbalanced": [True] * len(ids)})
        path = root / "shards" / f"{s:05d}.parquet"
        pq.write_table(t, path, row_group_size=1000)
        md = pq.read_metadata(path)
        entries.append({"path": f"shards/{s:05d}.parquet", "rows": t.num_rows, "bytes": path.stat().st_size,
                        "row_groups": [md.row_group(g).num_rows for g in range(md.num_row_groups)]})
    write_tokenizer(root / "tokenizer.json")
    (root / "manifest.json").write_text(json.dumps({"name": root.name, "shards": entries, "image_column": "jpg",
                                                    "totals": {"rows": rows, "bytes": sum(e["bytes"] for e in entries)}}))
    RESULTS["extra"]["jpeg_kb_mean"] = float(np.mean([len(j) for j in jpegs]) / 1024)
    return root


def write_tokenizer(path: Path) -> None:
    """CLIP's own 49,408-token BPE (from the open_clip package) where it is installed, else a small
    BPE learned as build-wit learns one."""
    try:
        from training.convert import _open_clip_bpe
        from training.tokenizer import from_clip_bpe

        from_clip_bpe(_open_clip_bpe()).save(path)
    except FileNotFoundError:
        from tasks.manifest.bpe import train_bpe

        train_bpe([f"a photo of thing {i} in colour {i % 13}" for i in range(2000)], path, vocab_size=1000)


def photo_like_jpeg(i: int, px: int = 256) -> bytes:
    """Smooth shapes plus mid-frequency texture and a little noise: JPEG sizes like real photos."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(i)
    base = np.asarray(Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).resize((px, px), Image.BICUBIC), np.float32)
    mid = np.asarray(Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).resize((px, px), Image.BICUBIC), np.float32)
    img = np.clip(0.8 * base + 0.2 * mid + rng.normal(0, 4, (px, px, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def loader_rate(build: Path, workers: int, bs: int, seconds: float, size: int = 224) -> float:
    from training.data.loader import ShardLoader
    from training.tokenizer import Tokenizer

    tok = Tokenizer.load(build / "tokenizer.json", 77)
    with ShardLoader(build, tok, size, bs, 0, workers=workers, prefetch=4, pin_memory=True) as ld:
        ld.next_batch()
        ld.next_batch()  # the pool is up and the pipeline full
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            ld.next_batch()
            n += bs
        return n / (time.perf_counter() - t0)


def loader_section(a, build: Path, worker_counts: list[int], bs: int) -> dict[int, float]:
    rates = {}
    for w in worker_counts:
        rates[w] = loader_rate(build, w, bs, a.loader_seconds)
        base = rates.get(worker_counts[0])
        RESULTS["rows"].append(row(f"loader alone, 224 px from 256 px JPEGs: {w} decode processes (vs {worker_counts[0]})", rates[w],
                                   base if w != worker_counts[0] else None, "images/s", f"batch {bs}"))
        print(RESULTS["rows"][-1], flush=True)
        RESULTS["extra"].setdefault("loader", {})[str(w)] = rates[w]
        save(a.out)
    return rates


def e2e_section(a, dev, build: Path, name: str, bs: int, workers: int, model_only: float | None, prebuilt=None) -> None:
    """The loader feeding train_step; `prebuilt`: (model, its compiled form) from the compile section."""
    import torch

    from training.data.loader import ShardLoader
    from training.tokenizer import Tokenizer
    from training.train_loop import param_groups, train_step

    compiled = prebuilt is not None
    model, run_model = prebuilt or (debug_model(name, 49408, 49407).to(dev).train(),) * 2
    tok = Tokenizer.load(build / "tokenizer.json", model.cfg.text.context_length)
    opt = torch.optim.AdamW(param_groups(model, 0.2), lr=1e-5, fused=dev.type == "cuda")
    amp = torch.bfloat16 if dev.type == "cuda" else None
    size = model.cfg.vision.image_size
    with ShardLoader(build, tok, size, bs, 0, workers=workers, prefetch=4, pin_memory=dev.type == "cuda") as ld:
        for _ in range(4):  # warm-up: compile, the pool, pinned buffers
            train_step(run_model, opt, [ld.next_batch()], "clip", dev, amp, 1.0)
        sync(dev)
        wait, t0 = 0.0, time.perf_counter()
        for _ in range(a.e2e_steps):
            tw = time.perf_counter()
            batch = ld.next_batch()
            wait += time.perf_counter() - tw
            train_step(run_model, opt, [batch], "clip", dev, amp, 1.0)
        sync(dev)
        wall = time.perf_counter() - t0
    r = a.e2e_steps * bs / wall
    tag = "torch.compile" if compiled else "eager"
    RESULTS["rows"].append(row(f"{name} b{bs} end to end, {workers} decode processes, {tag}: samples/s vs model alone", r,
                               model_only, "samples/s", f"data-wait {wait / wall:.1%}"))
    RESULTS["extra"].setdefault("e2e", {})[tag] = {"samples_per_s": r, "model_only": model_only, "data_wait": wait / wall,
                                                   "workers": workers, "ratio": r / model_only if model_only else None}
    print(RESULTS["rows"][-1], flush=True)
    save(a.out)


def gpu_jpeg_section(a, build: Path, bs: int) -> None:
    """The optional path: JPEGs decoded by nvJPEG (torchvision) and cropped on the GPU."""
    import pyarrow.parquet as pq
    import torch
    import torch.nn.functional as F

    try:
        from torchvision.io import decode_jpeg
    except Exception as e:  # noqa: BLE001
        RESULTS["extra"]["gpu_jpeg"] = f"torchvision not importable: {e}"
        return
    data = pq.read_table(build / "shards" / "00000.parquet", columns=["jpg"])["jpg"].to_pylist()[: bs * 4]
    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in data]
    dev = torch.device("cuda")

    def one(batch):
        imgs = decode_jpeg(batch, device=dev)
        return torch.stack([F.interpolate(x[None, :, 16:240, 16:240].float(), size=(224, 224), mode="bicubic", antialias=True)[0]
                            for x in imgs]).to(torch.uint8)

    for _ in range(2):
        one(tensors[:bs])
    sync(dev)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < a.loader_seconds:
        for k in range(0, len(tensors), bs):
            one(tensors[k:k + bs])
            n += bs
    sync(dev)
    r = n / (time.perf_counter() - t0)
    RESULTS["rows"].append(row("GPU JPEG decode (nvJPEG) + crop on the GPU, 256 px -> 224 px", r, None, "images/s",
                               "host-to-device bytes as JPEG; an optional path, not the loader's"))
    RESULTS["extra"]["gpu_jpeg"] = r
    print(RESULTS["rows"][-1], flush=True)
    save(a.out)


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu-sizes", action="store_true", help="debug models and small batches (a CPU machine)")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="the device's dense bf16 peak (H100/H200: 989)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round of the model section")
    ap.add_argument("--e2e-steps", type=int, default=40)
    ap.add_argument("--loader-seconds", type=float, default=4.0)
    ap.add_argument("--rows", type=int, default=30_000, help="rows of the synthetic JPEG build")
    ap.add_argument("--sections", default="model,compile,loader,e2e,gpujpeg")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu.json")
    a = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() and not a.cpu_sizes else "cpu")
    cores = os.cpu_count() or 1
    RESULTS["extra"].update(device=str(dev), cores=cores, torch=torch.__version__, peak_tflops=a.peak_tflops)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        RESULTS["extra"]["gpu"] = torch.cuda.get_device_name(0)
    sections = set(a.sections.split(","))
    big = dev.type == "cuda"
    e2e_model, e2e_bs = ("ViT-B-32", 512) if big else ("debug-vit", 64)
    if "model" in sections:
        configs = [("ViT-B-32", 512), ("ViT-B-32", 256), ("ViT-B-16", 256), ("RN50", 256), ("CN-CLIP-ViT-B-16", 256)] if big \
            else [("debug-vit", 64), ("debug-rn", 64)]
        model_section(a, dev, configs)
    compiled, cmodel, crun = compile_section(a, dev, e2e_model, e2e_bs) if "compile" in sections and big else (None, None, None)
    build = jpeg_build(ROOT / ".openwit" / "bench" / f"gpu-jpeg-{a.rows}", a.rows, min(a.rows, 4000), workers=max(1, cores - 1))
    if "loader" in sections:
        counts = sorted({1, 2, 4, 8, cores - 1} & set(range(1, cores))) if cores > 2 else [1, 2]
        loader_section(a, build, counts, 256 if big else 64)
    if "e2e" in sections:
        model_only = RESULTS["extra"].get("model", {}).get(f"{e2e_model}-b{e2e_bs}", {}).get("ours")
        if dev.type == "cpu":
            e2e_bs = 64
        e2e_section(a, dev, build, e2e_model, e2e_bs, max(1, cores - 1), model_only)
        if compiled:
            e2e_section(a, dev, build, e2e_model, e2e_bs, max(1, cores - 1), compiled, prebuilt=(cmodel, crun))
    if "gpujpeg" in sections and big:
        gpu_jpeg_section(a, build, 256)
    print(f"\ngpu on {machine()}")
    print(f"{'figure':86s} {'ours':>10s} {'baseline':>10s} {'ratio':>6s}  unit")
    for r in RESULTS["rows"]:
        b = f"{r['baseline']:10.0f}" if r["baseline"] is not None else f"{'-':>10s}"
        q = f"{r['ratio']:6.2f}" if r["ratio"] is not None else f"{'-':>6s}"
        print(f"{r['figure'][:86]:86s} {r['ours']:10.0f} {b} {q}  {r['unit']}  {r['note']}")
    save(a.out)


if __name__ == "__main__":
    main()
