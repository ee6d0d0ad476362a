"""The wit-400m projection: bench/scale.py's per-stage measurements times the full build's work.

    python bench/scale_projection.py [--machines 10] [--cores 16]

It also writes the training bill: GPU-hours of pretraining ViT-B/32 and ViT-L/14 on the build
(32 epochs) at the rates measured on an H200, and what a 2x better data path or MFU saves.

Reads bench/results/scale.json, measures the candidates stage once more on real Common Crawl
bytes (../shared/data/warc, when present) and writes bench/results/scale.md, the section that
bench/report.py appends to bench/REPORT.md.

How a stage's wall time is projected: its driver work (the stage process's own CPU: merges,
planning, the automaton) does not spread over a cluster, its workers' CPU does:

    wall = driver core-s at full work  +  worker core-s at full work / (N x C)

each scaled as fixed + marginal x work, with the marginal cost per unit of work taken between the
two largest sizes (so start-up costs are not multiplied by 1,000). The download's fetch is projected from img2dataset's
published rate instead (a loopback server says nothing about the internet), times our guard's
measured overhead (bench/download.py); its selection over the matched pool is ours, measured.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, SHARED

from tasks.specs import BuildSpec

MATCH_SHARE = 0.5  # assumed share of candidate pairs that match the 500k-entry vocabulary (MetaCLIP does not publish it)
# The work of a full wit-400m build, and where each number comes from.
FULL = {
    "vocabulary": (100_000, "MB of XML: enwiki pages-articles-multistream, 27 parts, ~22 GB of bz2 expanding to ~100 GB"),
    "candidates": (1.6e9 / MATCH_SHARE, f"img tags with alt text: MetaCLIP's 1.6B matched pool / an assumed {MATCH_SHARE:.0%} match share"),
    "match": (1.6e9 / MATCH_SHARE, "candidate pairs (after per-file dedup)"),
    "balance": (1.6e9, "matched pairs: MetaCLIP's pool"),
    "download": (1.6e9, "matched pairs scanned (selection, guard), then the ~400M balanced URLs fetched"),
    "manifest": (400e6, "training rows (at most the balanced set)"),
}
BALANCED = 400e6
IMG2DATASET_RATE = 1300.0  # images/s per 16-core machine (img2dataset's LAION-400M figure)
TOKENIZER_SAMPLE = BuildSpec.model_fields["tokenizer_sample_captions"].default
JPEG_256_BYTES = 25_000     # ~ bytes of one 256 px JPEG at quality 95 (image + caption + metadata in parquet/tar)


def real_warc_rate() -> dict | None:
    """Candidates extraction on the Common Crawl WARC excerpt: compressed MB per core-second and img tags per MB."""
    warc = SHARED / "warc" / "cc-main-2020-34-excerpt.warc.gz"
    if not warc.exists():
        return None
    from tasks.crawl.extract import extract_file
    from tasks.specs import CrawlSpec

    extract_file("warc", str(warc), CrawlSpec(), Path(tempfile.mkdtemp()) / "warm.parquet")  # load fastText once
    r0, t0, n = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), 0
    tags = 0
    while time.perf_counter() - t0 < 5 or n < 3:
        st = extract_file("warc", str(warc), CrawlSpec(), Path(tempfile.mkdtemp()) / "c.parquet")
        tags, n = st.rows_in, n + 1
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / n
    mb = warc.stat().st_size / 1e6
    return {"mb": mb, "img_tags": tags, "mb_per_core_s": mb / cpu, "tags_per_core_s": tags / cpu, "tags_per_mb": tags / mb}


def at_scale(scale: dict, stage: str, key: str, work: float) -> float:
    """A stage's core-seconds (`key`) at `work`: fixed + marginal x work, both from the two largest
    sizes (the marginal cost is what grows; start-up costs do not), or linear from one size."""
    runs = [r["stages"][stage] for r in scale["runs"]]
    b = runs[-1]
    y1 = b.get(key) or 0.0
    if len(runs) < 2 or runs[-2]["work"] == b["work"]:
        return y1 * work / b["work"]
    a = runs[-2]
    marginal = max((y1 - (a.get(key) or 0.0)) / (b["work"] - a["work"]), 0.0)
    return max(y1 - marginal * b["work"], 0.0) + marginal * work


PAGEVIEW_LINES = 624 * 7e6  # MetaCLIP's 26 days x 24 hourly files of ~7M lines (all projects) each


def pageview_rate() -> float | None:
    """Pageview lines counted per core-second (one hourly file of the rehearsal's inputs, all in one job)."""
    from tasks.vocabulary.pageviews import count_pageview_file

    files = sorted((ROOT / ".openwit" / "bench-scale").glob("x*/inputs/pageviews/*.gz"))
    if not files:
        return None
    files = files[:40]
    lines = 0
    for f in files:
        with gzip.open(f) as fh:
            lines += sum(1 for _ in fh)
    out, t0 = Path(tempfile.mkdtemp()), resource.getrusage(resource.RUSAGE_SELF)
    for i, f in enumerate(files):
        count_pageview_file(str(f), ["en"], str(out / f"h{i}"), 16)
    t1 = resource.getrusage(resource.RUSAGE_SELF)
    return lines / (t1.ru_utime + t1.ru_stime - t0.ru_utime - t0.ru_stime)


SPEC_PARTITIONS, REHEARSAL_PARTITIONS = 256, 16  # data_specs/wit-400m.yaml vs bench/scale_inputs.py


def memory_text(stage: str, t: dict, work: float) -> str:
    """Peak RSS per process at the largest size, and where it grows, its value at full work."""
    parts = []
    for who in ("driver", "worker"):
        mb, b = t[f"rss_{who}_mb"], t[f"growth_rss_{who}"] or 0.0
        if not mb:
            continue
        if b < 0.2:
            parts.append(f"{who} {mb:,.0f} MB (flat)")
            continue
        full = mb * (work / t["work"]) ** b
        text = f"{who} {mb:,.0f} MB, grows x^{b:.2f}: ~{full / 1e3:,.1f} GB at full work"
        if stage == "vocabulary" and who == "driver":  # the merge holds distinct keys / partitions
            text += f", ~{full / 1e3 * REHEARSAL_PARTITIONS / SPEC_PARTITIONS:,.1f} GB with the spec's {SPEC_PARTITIONS} partitions"
        parts.append(text)
    return "; ".join(parts)


def manifest_rates() -> dict | None:
    """The manifest stage's per-row work, measured on real captions (../shared/data/tables): caption
    cleaning (ftfy), BPE training (Hugging Face tokenizers, threads), and sha256 per byte."""
    import hashlib

    import pyarrow.parquet as pq

    table = SHARED / "tables" / "laion400m-meta-10000.parquet"
    if not table.exists():
        return None
    from tasks.manifest.bpe import train_bpe
    from training.tokenizer import clean

    captions = [c for c in pq.read_table(table, columns=["TEXT"])["TEXT"].to_pylist() if c] * 5

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    c0 = cpu()
    for c in captions:
        clean(c)
    c1 = cpu()
    train_bpe(captions, None, 49408)  # cleans each caption, then learns the BPE
    c2 = cpu()
    c2 -= c1 - c0  # the BPE alone
    block, n = b"\0" * (1 << 20), 256
    h, t0 = hashlib.sha256(), time.perf_counter()
    for _ in range(n):
        h.update(block)
    sha = n * len(block) / (time.perf_counter() - t0)
    return {"captions": len(captions), "clean_s": (c1 - c0) / len(captions), "bpe_cpu_s": (c2 - c1) / len(captions), "sha_bytes_s": sha}


def fmt_n(x: float) -> str:
    return next((f"{x / d:,.1f}{u}" for d, u in ((1e9, "B"), (1e6, "M"), (1e3, "k")) if x >= d), f"{x:,.0f}")


def fmt_h(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h" if seconds >= 3600 else f"{seconds / 60:,.0f} min"


def projection(scale: dict, machines: int, cores: int, download_ratio: float, warc: dict | None,
               pv_rate: float | None = None, manifest_rates: dict | None = None) -> str:
    table = {t["stage"]: t for t in scale["table"]}
    big = scale["sizes"][-1]
    g = (lambda v: "-" if v is None else f"{v:.2f}")
    lines = [(f"## Scale rehearsal (`bench/scale.py`: sizes {', '.join(f'{s}x' for s in scale['sizes'])}, "
              f"{scale['workers']} workers, {scale['minutes']:.1f} min in all)"), "",
             ("Per stage at the largest size; b is the growth exponent (log-log slope between the two largest sizes; "
              "1 linear, 0 flat) of CPU time and of peak RSS in the stage's work."), "",
             f"| stage | work at {big}x | per core-s | core-s (driver) | wall s | b time | RSS driver MB | b | RSS worker MB | b | disk MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s, t in table.items():
        drv = t.get("cpu_driver_s")
        lines.append(f"| {s} | {t['work']:,.0f} {t['work_unit']} | {t['per_core_s']:,.0f} | {t['cpu_s']:,.1f}"
                     f"{f' ({drv:,.1f})' if drv is not None else ''} | {t['wall_s']:,.1f} | {g(t['growth_time'])} | "
                     f"{t['rss_driver_mb']:,.0f} | {g(t['growth_rss_driver'])} | {t['rss_worker_mb']:,.0f} | {g(t['growth_rss_worker'])} | "
                     f"{t['disk_bytes'] / 1e6:,.1f} |")
    n_cores = machines * cores
    lines += ["", f"## Projection: `build-wit/wit-400m` on {machines} machines of {cores} cores ({n_cores} cores)", "",
              "| stage | full-build work | core-hours | wall | peak RSS per process (measured at the largest size) | disk | where the work number comes from |",
              "|---|---|---|---|---|---|---|"]
    total_wall, total_core_h, disk_total = 0.0, 0.0, 0.0
    dominant = ("", 0.0)
    for s, (work, source) in FULL.items():
        t = table[s]
        core_s, drv_s = at_scale(scale, s, "cpu_s", work), at_scale(scale, s, "cpu_driver_s", work)
        if s == "manifest" and manifest_rates:  # measured per caption and per byte: the rehearsal has too few rows
            m = manifest_rates
            sample = min(work, TOKENIZER_SAMPLE)  # the tokenizer learns from an even sample of the captions
            clean_s, bpe_s, sha_s = sample * m["clean_s"], sample * m["bpe_cpu_s"], BALANCED * JPEG_256_BYTES / m["sha_bytes_s"]
            core_s = clean_s + bpe_s + sha_s
            # the driver cleans the sample and trains the BPE on one machine's threads; the shards are
            # checksummed in Ray tasks over every core (CPU-bound figure; each machine reads its share from disk)
            wall = clean_s + bpe_s / cores + sha_s / n_cores
            source += (f"; tokenizer on an even sample of {fmt_n(sample)} captions (`tokenizer_sample_captions`): cleaning "
                       f"{m['clean_s'] * 1e6:.0f} us each ({fmt_h(clean_s)}, serial), BPE training {m['bpe_cpu_s'] * 1e6:.0f} "
                       f"core-us per caption on {cores} threads ({fmt_h(bpe_s / cores)}); sha256 of the shards at "
                       f"{m['sha_bytes_s'] / 1e6:,.0f} MB/s per core in parallel tasks ({fmt_h(sha_s / n_cores)} on {n_cores} cores; "
                       f"each machine reads {BALANCED * JPEG_256_BYTES / machines / 1e12:,.2f} TB, so its disk may set the pace); "
                       f"rates measured on {m['captions']:,} LAION captions")
            disk = t["disk_bytes"] / t["work"] * work
        elif s == "download":  # our selection per matched pair as measured; the fetch at img2dataset's rate
            fetch_wall = BALANCED / (IMG2DATASET_RATE * download_ratio * machines)
            wall = drv_s + (core_s - drv_s) / n_cores + fetch_wall
            core_s += fetch_wall * n_cores
            source += f"; fetch at img2dataset's {IMG2DATASET_RATE:,.0f} images/s per 16-core machine x our guard's {download_ratio:.3f}"
            disk = BALANCED * JPEG_256_BYTES
        elif s == "candidates" and warc:
            core_s = work / warc["tags_per_core_s"]
            wall = core_s / n_cores
            source += (f"; rate measured on real CC-MAIN-2020-34 bytes: {warc['tags_per_core_s']:,.0f} img tags/core-s, "
                       f"{warc['mb_per_core_s']:.2f} MB of WARC.gz/core-s ({warc['tags_per_mb']:,.0f} tags per MB)")
            disk = t["disk_bytes"] / t["work"] * work
        else:
            wall = drv_s + (core_s - drv_s) / n_cores
            disk = t["disk_bytes"] / t["work"] * work
        rss_text = memory_text(s, t, work)
        lines.append(f"| {s} | {fmt_n(work)} {t['work_unit']} | {core_s / 3600:,.0f} | {fmt_h(wall)} | {rss_text} | "
                     f"{disk / 1e12:,.2f} TB | {source} |")
        total_wall += wall
        total_core_h += core_s / 3600
        disk_total += disk
        if core_s > dominant[1]:
            dominant = (s, core_s)
    if pv_rate:
        core_s = PAGEVIEW_LINES / pv_rate
        lines.append(f"| (vocabulary: pageviews) | {fmt_n(PAGEVIEW_LINES)} lines | {core_s / 3600:,.0f} | {fmt_h(core_s / n_cores)} | "
                     f"one hour's titles | - | 624 hourly files of ~7M lines; {pv_rate:,.0f} lines/core-s measured on the "
                     "rehearsal's hours; part of the vocabulary stage, counted here apart |")
        total_wall += core_s / n_cores
        total_core_h += core_s / 3600
    lines += [f"| **total** | | {total_core_h:,.0f} | {fmt_h(total_wall)} | | {disk_total / 1e12:,.1f} TB | |", "",
              (f"Dominant cost: **{dominant[0]}** ({dominant[1] / 3600 / total_core_h:.0%} of the core-hours). "
               f"MetaCLIP's pools for scale: candidates from the crawl -> 1.6B matched -> ~400M balanced; "
               f"img2dataset: LAION-400M at ~{IMG2DATASET_RATE:,.0f} images/s per 16-core machine.")]
    lines += ["", BOUNDS]
    return "\n".join(lines) + "\n"


BOUNDS = """What each stage holds in memory, and what grows (the state a streaming stage cannot avoid):

* **vocabulary**: a worker holds at most `spill_items` distinct keys (flat). The driver merges one
  of `partitions` hash partitions at a time, folding spills in as it reads them: memory is about
  twice a partition's distinct keys, which grow sublinearly with the corpus (new words and word
  pairs keep appearing); the full spec's 256 partitions (16 in the rehearsal) cover enwiki. The
  driver also holds the unigrams above the count threshold and the entries: O(vocabulary). The
  merges and the PMI scoring run in the driver, one partition after another: that serial share is
  what the wall-time column charges at full price.
* **candidates**: one WARC per worker, flat; per-file dedup holds that file's uids.
* **match**: every worker holds the automata: O(vocabulary entries) (the rehearsal's vocabulary
  grew from the 10x to the 100x build, and the worker's memory with it); the cross-file dedup holds one
  hash bucket of about 2M keys per worker (`tasks/dedup.py`), whatever the pool.
* **balance**: one matched shard per worker plus the keep probability of every entry:
  O(vocabulary). The baseline keeps a 4,096-bin histogram, then one bin's hashes.
* **download**: selection works one matched shard at a time; the driver holds the distinct hosts
  and their pinned addresses (`pinned_hosts.json`): O(hosts), ~170 bytes each (measured with 1M
  synthetic host names: 109 MB the set, 58 MB the resolved addresses), so ~1.7 GB for 10M hosts. img2dataset's processes are flat. Not charged above: after img2dataset, the driver
  writes the training shards and the WebDataset tars one shard after another, in Python per row;
  the rehearsal fetches too few rows to measure it. Next: run both per shard in the workers.
* **manifest**: the BPE trainer (Hugging Face tokenizers) holds the distinct words of its caption
  sample (at most `tokenizer_sample_captions`, 5M, spread evenly over the shards); the checksums
  stream, one shard per task. The rehearsal's largest build has few training rows (one synthetic
  host in 8 resolves), so the projection measures its per-row work apart, on real captions."""


# ----------------------------------------------------------------------------- the training bill
EPOCHS = 32  # CLIP's and MetaCLIP's schedule: 32 epochs of the balanced set
H200_PEAK = 989e12  # dense bf16 FLOP/s
# Measured on one H200 (16 cores, torch 2.11, bf16 autocast, batch 512, one process; ../shared/PRODUCT.md
# "On a GPU", 2026-12-04): the ViT-B/32 train step eager and compiled, and the old in-thread loader feeding it
H200_VIT_B32 = {"eager": 4752.0, "compiled": 6753.0, "old_loader_end_to_end": 1002.0, "old_loader_cores": 16}
H200_MFU_VIT_B16 = 0.26  # measured, eager, batch 256: the MFU assumed for ViT-L/14 (larger ViTs usually do better)
LOADER_PROCESSES = 15  # decode processes beside the trainer on a 16-core GPU machine


def model_flops() -> dict[str, float]:
    """Forward + backward FLOPs per sample, counted by torch's FLOP counter on meta tensors (no compute)."""
    import torch
    from gpu import flops_per_sample

    from training.model import CLIP, CLIPConfig, preset_dict

    out = {}
    for name in ("ViT-B-32", "ViT-L-14"):
        cfg = CLIPConfig.from_dict(preset_dict(name))
        with torch.device("meta"):
            m = CLIP(cfg)
        out[name] = flops_per_sample(m, 2, cfg.vision.image_size, cfg.text.context_length, cfg.text.vocab_size, "meta")
    return out


def loader_rate_per_process() -> tuple[float, str] | None:
    """Images/s of one decode process at 224 px from 256 px JPEGs (bench/loader.py on this machine)."""
    f = RESULTS / "loader.json"
    if not f.exists():
        return None
    d = json.loads(f.read_text())
    row = next((r for r in d["rows"] if r["figure"].startswith("images/s 224 px from 256 px JPEGs: 2 processes vs 1")), None)
    return (row["baseline"], d.get("machine", "")) if row else None


def training_bill(flops: dict[str, float], per_process: tuple[float, str] | None) -> str:
    """GPU-hours of pretraining on wit-400m (32 epochs of the balanced set) at the measured rates."""
    samples = EPOCHS * BALANCED
    hours = lambda rate: samples / rate / 3600
    b32, l14 = flops["ViT-B-32"], flops["ViT-L-14"]
    l14_rate = H200_PEAK * H200_MFU_VIT_B16 / l14
    l14_compiled = H200_PEAK * (H200_VIT_B32["compiled"] * b32 / H200_PEAK) / l14  # compiled B/32's MFU
    feed = per_process[0] * LOADER_PROCESSES if per_process else None
    rows = [
        ("ViT-B/32", "old in-thread loader (measured end to end, 0.21x the step)", H200_VIT_B32["old_loader_end_to_end"]),
        ("ViT-B/32", f"model-bound, eager (measured; MFU {H200_VIT_B32['eager'] * b32 / H200_PEAK:.0%})", H200_VIT_B32["eager"]),
        ("ViT-B/32", f"model-bound, torch.compile (measured; MFU {H200_VIT_B32['compiled'] * b32 / H200_PEAK:.0%})",
         H200_VIT_B32["compiled"]),
        ("ViT-L/14", f"model-bound at MFU {H200_MFU_VIT_B16:.0%} (ViT-B/16's measured eager MFU)", l14_rate),
        ("ViT-L/14", f"model-bound at MFU {H200_VIT_B32['compiled'] * b32 / H200_PEAK:.0%} (compiled ViT-B/32's)", l14_compiled),
    ]
    if feed:
        what = (f"decode processes (projected: {LOADER_PROCESSES} x {per_process[0]:,.0f} images/s measured "
                f"per process on {per_process[1]}), eager step")
        rows.insert(1, ("ViT-B/32", what, min(feed, H200_VIT_B32["eager"])))
    title = (f"## Projection: pretraining on wit-400m ({EPOCHS} epochs of {BALANCED / 1e6:,.0f}M balanced pairs = "
             f"{samples / 1e9:,.1f}B samples), one H200 per GPU-hour")
    lines = [title, "", "| model | what sets the pace | samples/s per H200 | GPU-hours | on 8 H200s |", "|---|---|---|---|---|"]
    for model, what, rate in rows:
        lines.append(f"| {model} | {what} | {rate:,.0f} | {hours(rate):,.0f} | {hours(rate) / 8 / 24:,.1f} days |")
    old, eager = H200_VIT_B32["old_loader_end_to_end"], H200_VIT_B32["eager"]
    flops_line = (f"FLOPs per sample (forward + backward, image 224 px and 77 text tokens, `torch.utils.flop_counter`): "
                  f"ViT-B/32 {b32 / 1e9:.1f} G, ViT-L/14 {l14 / 1e9:.1f} G.")
    savings = (f"What 2x saves. ViT-B/32 is data-bound with the old loader: a 2x faster data path takes it from "
               f"{hours(old):,.0f} to {hours(2 * old):,.0f} GPU-hours, and anything up to {eager / old:.1f}x keeps paying, "
               f"down to the step's {hours(eager):,.0f} (eager) or {hours(H200_VIT_B32['compiled']):,.0f} (compiled). "
               f"ViT-L/14 needs only {l14_rate:,.0f} samples/s, which {LOADER_PROCESSES} decode processes feed; it is model-bound, "
               f"so 2x MFU is what halves its {hours(l14_rate):,.0f} GPU-hours (to {hours(2 * l14_rate):,.0f}). "
               "The build is the CPU bill above; at either model size the training is the larger bill.")
    source = ("The ViT-B/32 and loader rates were measured on a lent H200 (PRODUCT.md, \"On a GPU\"); the process "
              "loader's rate there is projected from this machine's per-process rate until bench/gpu.py runs on a GPU "
              "(it prints the measured end-to-end rate and data wait for 1..N processes).")
    lines += ["", flops_line, "", savings, "", source]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--machines", type=int, default=10)
    ap.add_argument("--cores", type=int, default=16)
    a = ap.parse_args()
    scale = json.loads((RESULTS / "scale.json").read_text())["extra"]
    dl = RESULTS / "download.json"
    ratio = json.loads(dl.read_text())["rows"][0]["ratio"] if dl.exists() else 1.0
    text = projection(scale, a.machines, a.cores, ratio, real_warc_rate(), pageview_rate(), manifest_rates())
    text += "\n" + training_bill(model_flops(), loader_rate_per_process())
    (RESULTS / "scale.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
