"""A scale rehearsal of build-wit: every stage on synthetic inputs of growing size, with the
growth of its time and memory in the work size.

    python bench/scale.py [--sizes 1,10,100] [--workers 2] [--keep]

Inputs (bench/scale_inputs.py) are generated per size and cached under .openwit/bench-scale/:
a multistream enwiki-style dump with its index, hourly pageview files, Common Crawl-style WARCs
whose pages carry <img alt> pairs on thousands of hosts, and a loopback image server that
answers for every host. One unit (1x) is about the sample world: 30k candidate pairs, 1,500
articles (6.5 MB of XML), 4 hourly pageview files of 10k lines. Real WordNet
(/usr/share/wordnet) joins the vocabulary as in a real build. On this project's 2-core machine
the default sizes take 8 to 15 minutes (by the day), input generation included.

Each stage runs in a fresh process through the stage engine exactly as the flow runs it
(tasks/build_stages.run_stage), so its figures are its own:
  core-s      user+sys CPU of the stage process and all its workers (work done after imports);
              "driver" is the stage process's own share (what a cluster does not spread)
  per core    work units per core-second
  RSS driver  peak resident memory of the stage process (VmHWM)
  RSS worker  peak resident memory of the largest worker process (spawned pools, img2dataset),
              polled every 0.2 s
  disk        bytes the stage wrote (its folder and the outputs it owns)
The growth exponent b of a figure y in the work size x is the slope of log y against log x
between the two largest sizes (y ~ x^b): 1 is linear, 0 is flat. Fixed start-up costs make the
small sizes look sublinear, so the two largest sizes are the honest estimate.

Writes bench/results/scale.json (rows for bench/REPORT.md) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, report, row

SCALE_DIR = ROOT / ".openwit" / "bench-scale"
PORT = int(os.environ.get("OPENWIT_SCALE_PORT", "8799"))
STAGES = ["vocabulary", "candidates", "match", "balance", "download", "manifest"]
# the work each stage's time and memory are measured against
WORK = {"vocabulary": "MB of dump XML", "candidates": "img tags", "match": "candidate pairs", "balance": "matched pairs",
        "download": "matched pairs", "manifest": "training rows"}


# ----------------------------------------------------------------------------- one stage, in its own process
def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def vm_hwm_mb(pid: int | str = "self") -> float:
    """Peak resident memory of one process since it started its program (VmHWM). Not ru_maxrss:
    Linux keeps that across exec, so a child would inherit the peak of the process that forked it."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class WorkerPeak:
    """The largest VmHWM of any descendant process (pool workers, img2dataset's), polled."""

    def __init__(self, every: float = 0.2):
        import threading

        self.peak, self._every, self._stop = 0.0, every, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.wait(self._every):
            try:
                kids = me.children(recursive=True)
            except psutil.Error:
                continue
            for k in kids:
                self.peak = max(self.peak, vm_hwm_mb(k.pid))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_stage_child(spec_path: str, stage: str) -> None:
    """Run one stage of the build in `spec_path` (called in a fresh interpreter); print its figures."""
    os.environ["TQDM_DISABLE"] = "1"
    from tasks.context import make_context
    from tasks.specs import BuildSpec, load_spec
    from tasks.stages import run_stage

    async def loopback(host: str):
        """One synthetic host in 8 resolves (to the image server on loopback); the others fail
        as dead hosts do, so the download stage handles every selected row but fetches a share."""
        if zlib.crc32(host.encode()) % 8:
            raise OSError(f"{host}: no such host")
        return ["127.0.0.1"]

    spec = load_spec(spec_path, BuildSpec)
    ctx = make_context(spec, log=lambda *_: None)
    ctx.dns_lookup = loopback
    cpu0, t0 = _cpu(resource.RUSAGE_SELF), time.perf_counter()
    with WorkerPeak() as workers:
        stats, skipped = run_stage(ctx, stage)
    wall = time.perf_counter() - t0
    driver = _cpu(resource.RUSAGE_SELF) - cpu0
    out = {"stage": stage, "wall_s": wall, "cpu_s": driver + _cpu(resource.RUSAGE_CHILDREN), "cpu_driver_s": driver,
           "rss_driver_mb": vm_hwm_mb(), "rss_worker_mb": workers.peak,
           "rows_in": stats.rows_in, "rows_out": stats.rows_out, "skipped": skipped, "info": _small(stats.info)}
    print(json.dumps(out))


def _small(info: dict) -> dict:
    keep = ("entries", "hosts", "kept", "pool", "t", "to_fetch", "shards", "unbalanced_baseline")
    return {k: v for k, v in info.items() if k in keep}


def du(paths: list[Path]) -> int:
    total = 0
    for p in paths:
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return total


STAGE_OUTPUTS = {"download": ["download", "shards", "webdataset"], "manifest": ["manifest", "manifest.json", "datacard.md", "tokenizer.json"]}


def run_build(size: int, workers: int, log=print) -> dict:
    from scale_inputs import ensure_inputs, serve_images

    inputs = ensure_inputs(size, SCALE_DIR / f"x{size}" / "inputs", workers, PORT, log)
    build = SCALE_DIR / f"x{size}" / "build"
    shutil.rmtree(build, ignore_errors=True)
    spec_path = SCALE_DIR / f"x{size}" / "spec.yaml"
    spec_path.write_text(json.dumps(inputs["spec"] | {"output_dir": str(build)}, indent=1))
    out = {"size": size, "inputs": inputs["summary"], "stages": {}}
    srv = serve_images(PORT)
    try:
        for stage in STAGES:
            p = subprocess.run([sys.executable, __file__, "--run-stage", stage, "--spec", str(spec_path)], capture_output=True, check=False,
                               text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
            if p.returncode != 0:
                raise RuntimeError(f"x{size} {stage} failed:\n{p.stderr[-4000:]}")
            r = json.loads(p.stdout.strip().splitlines()[-1])
            r["disk_bytes"] = du([build / n for n in STAGE_OUTPUTS.get(stage, [stage])])
            # the download stage scans every matched pair (selection, baseline) and fetches the selected ones
            r["work"] = (inputs["summary"]["dump_xml_mb"] if stage == "vocabulary" else
                         out["stages"]["balance"]["rows_in"] if stage == "download" else r["rows_in"])
            out["stages"][stage] = r
            log(f"x{size} {stage:10s} {r['wall_s']:7.1f}s wall {r['cpu_s']:7.1f} core-s  work {r['work']:>12,.1f} {WORK[stage]}"
                f"  rss driver {r['rss_driver_mb']:6.0f} MB worker {r['rss_worker_mb']:6.0f} MB  disk {r['disk_bytes'] / 1e6:8.1f} MB")
    finally:
        srv.shutdown()
        srv.server_close()
    return out


def exponent(x0: float, y0: float, x1: float, y1: float) -> float | None:
    if min(x0, y0, x1, y1) <= 0 or x0 == x1:
        return None
    return math.log(y1 / y0) / math.log(x1 / x0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1,10,100", help="multiples of the one-unit build (default 1,10,100)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="processes per parallel stage")
    ap.add_argument("--keep", action="store_true", help="keep the builds (inputs are always cached)")
    ap.add_argument("--run-stage", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.run_stage:
        run_stage_child(a.spec, a.run_stage)
        return
    sizes = sorted(int(s) for s in a.sizes.split(","))
    t0 = time.perf_counter()
    runs = []
    for s in sizes:
        runs.append(run_build(s, a.workers))
        if not a.keep:
            shutil.rmtree(SCALE_DIR / f"x{s}" / "build", ignore_errors=True)
    total = time.perf_counter() - t0

    rows, table = [], []
    big, prev = runs[-1], runs[-2] if len(runs) > 1 else None
    for stage in STAGES:
        b = big["stages"][stage]
        per_core = b["work"] / b["cpu_s"] if b["cpu_s"] else 0.0
        e_t = e_m = e_w = None
        if prev:
            p = prev["stages"][stage]
            e_t = exponent(p["work"], p["cpu_s"], b["work"], b["cpu_s"])
            e_m = exponent(p["work"], p["rss_driver_mb"], b["work"], b["rss_driver_mb"])
            e_w = exponent(p["work"], max(p["rss_worker_mb"], 1), b["work"], max(b["rss_worker_mb"], 1))
        fmt = (lambda v: "-" if v is None else f"{v:.2f}")
        note = (f"x{big['size']}: {b['work']:,.0f} {WORK[stage]}, {b['cpu_s']:.1f} core-s, {b['wall_s']:.1f} s wall; growth "
                f"time {fmt(e_t)}, RSS driver {fmt(e_m)}, worker {fmt(e_w)}; RSS {b['rss_driver_mb']:.0f}/{b['rss_worker_mb']:.0f} MB; "
                f"disk {b['disk_bytes'] / 1e6:.1f} MB")
        rows.append(row(f"{stage}: {WORK[stage]} per core-second", per_core, None, f"{WORK[stage]}/core-s", note))
        table.append({"stage": stage, "work_unit": WORK[stage], "per_core_s": per_core, "growth_time": e_t,
                      "growth_rss_driver": e_m, "growth_rss_worker": e_w,
                      **{k: b[k] for k in ("work", "cpu_s", "cpu_driver_s", "wall_s", "rss_driver_mb", "rss_worker_mb", "disk_bytes")}})
    print(f"\nscale rehearsal on {machine()}: sizes {sizes}, {total / 60:.1f} min in all")
    print(f"{'stage':11s} {'work at x' + str(big['size']):>16s} {'unit':16s} {'core-s':>8s} {'per core-s':>11s} {'b time':>7s} "
          f"{'b RSS drv':>9s} {'b RSS wrk':>9s} {'RSS drv':>8s} {'RSS wrk':>8s} {'disk MB':>8s}")
    for t in table:
        fmt = (lambda v: "-" if v is None else f"{v:.2f}")
        print(f"{t['stage']:11s} {t['work']:16,.0f} {t['work_unit']:16s} {t['cpu_s']:8.1f} {t['per_core_s']:11,.1f} {fmt(t['growth_time']):>7s} "
              f"{fmt(t['growth_rss_driver']):>9s} {fmt(t['growth_rss_worker']):>9s} {t['rss_driver_mb']:8.0f} {t['rss_worker_mb']:8.0f} "
              f"{t['disk_bytes'] / 1e6:8.1f}")
    report("scale", rows, {"sizes": sizes, "workers": a.workers, "minutes": total / 60, "table": table, "runs": runs})
    print("\nwit-400m projection: python bench/scale_projection.py (writes bench/results/scale.md for bench/REPORT.md)")


if __name__ == "__main__":
    main()
