"""The download stage against a loopback server, next to plain img2dataset on the same URLs.

    python bench/download.py [--n 6000] [--rounds 2]

Serves the generated sample world on 127.0.0.1:8765 (or uses the stack's server when it is up)
and takes --n of its image URLs. Alternating rounds, each in this process:
  plain: img2dataset.download(...) with the stage's arguments (parquet output);
  ours:  the whole stage around it: the URL guard on every URL, the same img2dataset call
         (+ decompression-bomb cap, opt-out directives), then training shards with per-row
         reasons (tasks.download.write_training_shards).
Images per second (median of the rounds of each); the wrapper's overhead is 1 - ours/plain.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report, row  # noqa: E402


def main() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.download import EXTRA_COLUMNS, run_img2dataset, write_training_shards
    from tasks.specs import DownloadSpec, WorldSpec
    from tasks.url_safety import UrlGuard
    from tasks.world.generate import ensure_world
    from tasks.world.server import serve_in_thread

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=6000)
    ap.add_argument("--rounds", type=int, default=4)
    a = ap.parse_args()
    world = ensure_world(WorldSpec(), log=lambda *_: None)
    with socket.socket() as s:
        up = s.connect_ex(("127.0.0.1", 8765)) == 0
    srv = None if up else serve_in_thread(world / "www", port=8765)[0]
    files = sorted(p for p in (world / "www" / "img").rglob("*") if p.suffix in (".jpg", ".png", ".webp"))[: a.n]
    urls = [f"http://127.0.0.1:8765/{p.relative_to(world / 'www').as_posix()}" for p in files]
    spec = DownloadSpec(image_size=32, processes=2, threads=16, retries=0, timeout=5, number_sample_per_shard=1000,
                        allow_networks=["127.0.0.1/32"])
    rows = [{"url": u, "text": f"image {i}", "uid": f"{i:08d}", "entry_ids_json": "[]", "page_url": "", "lang": "en",
             "in_balanced": True, "in_unbalanced": False} for i, u in enumerate(urls)]
    plain_rates, ours_rates = [], []
    with tempfile.TemporaryDirectory() as d:
        for r in range(a.rounds):
            base = Path(d) / f"plain{r}"
            (base / "input").mkdir(parents=True)
            pq.write_table(pa.Table.from_pylist(rows), base / "input" / "urls.parquet")
            from img2dataset import download

            t0 = time.perf_counter()
            download(url_list=str(base / "input"), input_format="parquet", url_col="url", caption_col="text",
                     save_additional_columns=list(EXTRA_COLUMNS), output_format="parquet", output_folder=str(base / "raw"),
                     image_size=spec.image_size, resize_mode=spec.resize_mode, encode_format=spec.encode_format,
                     encode_quality=spec.encode_quality, processes_count=spec.processes, thread_count=spec.threads,
                     retries=spec.retries, timeout=spec.timeout, number_sample_per_shard=spec.number_sample_per_shard,
                     enable_wandb=False, distributor="multiprocessing")
            plain_rates.append(len(urls) / (time.perf_counter() - t0))

            ours = Path(d) / f"ours{r}"
            t0 = time.perf_counter()
            guard = UrlGuard(spec.allow_networks)
            ok = [x for x in rows if not guard.check(x["url"])]
            (ours / "input").mkdir(parents=True)
            pq.write_table(pa.Table.from_pylist(ok), ours / "input" / "urls.parquet")
            run_img2dataset(ours, spec)
            stats = write_training_shards(ours, ours / "shards", spec)
            ours_rates.append(len(urls) / (time.perf_counter() - t0))
            print(f"round {r}: plain {plain_rates[-1]:.0f} img/s, ours {ours_rates[-1]:.0f} img/s ({stats['success']} ok)", flush=True)
            shutil.rmtree(base)
            shutil.rmtree(ours)
    if srv:
        srv.shutdown()
    import statistics

    med_o, med_p = statistics.median(ours_rates), statistics.median(plain_rates)
    report("download", [row("images/s, whole stage vs plain img2dataset (medians)", med_o, med_p, "images/s",
                            f"{len(urls):,} loopback URLs, {a.rounds} alternating rounds, overhead {100 * (1 - med_o / med_p):.1f}%")],
           {"plain_rounds": plain_rates, "ours_rounds": ours_rates})


if __name__ == "__main__":  # img2dataset's multiprocessing distributor spawns
    main()
