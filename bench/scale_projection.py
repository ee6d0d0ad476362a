"""The wit-400m projection: bench/scale.py's per-stage measurements times the full build's work.

    python bench/scale_projection.py [--machines 10] [--cores 16]

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
from common import RESULTS, ROOT, SHARED  # noqa: E402

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
JPEG_256_BYTES = 25_000     # ~ bytes of one 256 px JPEG at quality 95 (image + caption + metadata in parquet/tar)


def real_warc_rate() -> dict | None:
    """Candidates extraction on the Common Crawl WARC excerpt: compressed MB per core-second and img tags per MB."""
    warc = SHARED / "warc" / "cc-main-2020-34-excerpt.warc.gz"
    if not warc.exists():
        return None
    from tasks.candidates import extract_file
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
    from tasks.pageviews import count_pageview_file

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


def fmt_n(x: float) -> str:
    return next((f"{x / d:,.1f}{u}" for d, u in ((1e9, "B"), (1e6, "M"), (1e3, "k")) if x >= d), f"{x:,.0f}")


def fmt_h(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h" if seconds >= 3600 else f"{seconds / 60:,.0f} min"


def projection(scale: dict, machines: int, cores: int, download_ratio: float, warc: dict | None,
               pv_rate: float | None = None) -> str:
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
              "| stage | full-build work | core-hours | wall | peak RSS per worker | disk | where the work number comes from |",
              "|---|---|---|---|---|---|---|"]
    total_wall, total_core_h, disk_total = 0.0, 0.0, 0.0
    dominant = ("", 0.0)
    for s, (work, source) in FULL.items():
        t = table[s]
        core_s, drv_s = at_scale(scale, s, "cpu_s", work), at_scale(scale, s, "cpu_driver_s", work)
        if s == "download":  # our selection per matched pair as measured; the fetch at img2dataset's rate
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
        rss = max(t["rss_driver_mb"], t["rss_worker_mb"])
        rss_note = "flat" if (t["growth_rss_worker"] or 0) < 0.2 and (t["growth_rss_driver"] or 0) < 0.2 else \
            f"grows x^{max(t['growth_rss_worker'] or 0, t['growth_rss_driver'] or 0):.2f}"
        lines.append(f"| {s} | {fmt_n(work)} {t['work_unit']} | {core_s / 3600:,.0f} | {fmt_h(wall)} | {rss:,.0f} MB ({rss_note}) | "
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
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--machines", type=int, default=10)
    ap.add_argument("--cores", type=int, default=16)
    a = ap.parse_args()
    scale = json.loads((RESULTS / "scale.json").read_text())["extra"]
    dl = RESULTS / "download.json"
    ratio = json.loads(dl.read_text())["rows"][0]["ratio"] if dl.exists() else 1.0
    text = projection(scale, a.machines, a.cores, ratio, real_warc_rate(), pageview_rate())
    (RESULTS / "scale.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
