"""Shared helpers for bench/*.py: peak memory of a child process, machine line, result files.

Every benchmark prints a table and writes `bench/results/<name>.json` (rows of figure, ours,
baseline, ratio, unit), which `bench/report.py` collects into `bench/REPORT.md`. Ratios are
ours / baseline measured in the same process run, because the machines are noisy.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
SHARED = ROOT / "tests" / "data"  # real third-party samples, with their provenance (tests/data/README.md)


def machine() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)}, {os.cpu_count()} CPU cores"
    except ImportError:
        pass
    return f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(code: str, *args: str) -> dict:
    """Run `code` in a fresh interpreter (so peak memory is its own); it prints one JSON line last."""
    t0 = time.perf_counter()
    # the repository first, then whatever the caller's PYTHONPATH holds (a lent GPU machine puts
    # carried wheels such as open_clip there: replacing it made bench/model.py report "not installed")
    path = os.pathsep.join([str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=path), check=False)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res.setdefault("wall_s", time.perf_counter() - t0)
    return res


def row(figure: str, ours: float, baseline: float | None, unit: str, note: str = "") -> dict:
    ratio = ours / baseline if baseline else None
    return {"figure": figure, "ours": ours, "baseline": baseline, "ratio": ratio, "unit": unit, "note": note}


def report(name: str, rows: list[dict], extra: dict | None = None) -> None:
    print(f"\n{name} on {machine()}")
    print(f"{'figure':58s} {'ours':>12s} {'baseline':>12s} {'ratio':>7s}  unit")
    for r in rows:
        b = f"{r['baseline']:12.2f}" if r["baseline"] is not None else f"{'-':>12s}"
        q = f"{r['ratio']:7.2f}" if r["ratio"] is not None else f"{'-':>7s}"
        print(f"{r['figure'][:58]:58s} {r['ours']:12.2f} {b} {q}  {r['unit']}{'  (' + r['note'] + ')' if r['note'] else ''}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"name": name, "machine": machine(), "rows": rows, "extra": extra or {},
                                                      "date": time.strftime("%Y-%m-%d")}, indent=1))


def sample_build() -> Path:
    """The sample build's folder (written by `make demo` / `build-wit/sample`)."""
    b = ROOT / ".openwit" / "builds" / "sample"
    if not (b / "manifest.json").exists():
        sys.exit(f"{b} has no manifest: run `make demo` (or `openwit up` then `openwit build data_specs/sample.yaml`) first")
    return b


def debug_model(name: str, vocab: int = 1024, eot: int = 1):
    """A training-library model of a preset (training/model_configs/<name>.json, open_clip's names)."""
    from training.model import CLIP, CLIPConfig, preset_dict

    cfg = CLIPConfig.from_dict(preset_dict(name))
    cfg.text.vocab_size, cfg.text.eot_id = vocab, eot
    return CLIP(cfg)
