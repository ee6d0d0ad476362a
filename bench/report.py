"""`make bench`: run every bench/*.py and write one markdown table to bench/REPORT.md.

    python bench/report.py            # run all, then write the report
    python bench/report.py --no-run   # rebuild REPORT.md from bench/results/*.json

Each benchmark writes bench/results/<name>.json; results copied back from a lent GPU machine
(bench/results/gpu/*.json) are added as rows with their own machine column, and sections a
benchmark writes as bench/results/<name>.md (the scale rehearsal's table and projection) follow, then
the plots it draws as bench/results/<name>.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["vocabulary", "segment_zh", "language_id", "matching", "download", "model", "train", "loader", "eval",
         "scale", "scale_projection"]  # the scale rehearsal last (~20 min on 2 cores), then its wit-400m projection


def fmt(x) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if abs(x) < 10 else f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.1f}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-run", action="store_true")
    a = ap.parse_args()
    failed = []
    if not a.no_run:
        for name in ORDER:
            print(f"== bench/{name}.py", flush=True)
            t0 = time.time()
            r = subprocess.run([sys.executable, str(HERE / f"{name}.py")], cwd=HERE.parent, check=False)
            print(f"   ({time.time() - t0:.0f}s, exit {r.returncode})", flush=True)
            if r.returncode:
                failed.append(name)
    files = sorted((HERE / "results").glob("*.json")) + sorted((HERE / "results" / "gpu").glob("*.json"))
    lines = ["# openwit benchmarks", "",
             "Written by `make bench` (`python bench/report.py`). Each ratio is ours / baseline, both measured in the",
             "same process run; see each script's docstring for what the baseline is.", "",
             "| benchmark | figure | ours | baseline | ratio | unit | notes | machine | date |",
             "|---|---|---|---|---|---|---|---|---|"]
    for f in files:
        res = json.loads(f.read_text())
        for r in res["rows"]:
            lines.append(f"| {res['name']} | {r['figure']} | {fmt(r['ours'])} | {fmt(r['baseline'])} | {fmt(r['ratio'])} | {r['unit']} | "
                         f"{r.get('note', '')} | {res['machine']} | {res['date']} |")
    for section in sorted((HERE / "results").glob("*.md")):  # longer write-ups: bench/scale_projection.py's
        lines += ["", section.read_text().rstrip()]
    for plot in sorted((HERE / "results").glob("*.png")):  # plots a benchmark draws (bench/language_id.py's routing rules)
        lines += ["", f"![{plot.stem}](results/{plot.name})"]
    if failed:
        lines += ["", f"Failed this run: {', '.join(failed)} (their rows above, if any, are from an earlier run)."]
    (HERE / "REPORT.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
