"""The download stage against a loopback server, next to plain img2dataset on the same URLs, and
the guard's host resolution when hosts never answer.

    python bench/download.py [--n 6000] [--rounds 4] [--hosts 20000]

Throughput: serves the generated sample world on 127.0.0.1:8765 (or uses the stack's server when
it is up) and takes --n of its image URLs. Alternating rounds, each in this process:
  plain: img2dataset.download(...) with the stage's arguments (parquet output), no guard;
  ours:  the whole stage around it: the guard's pre-pass (concurrent resolution, policy), the
         same img2dataset call with the connection guard in its workers (every hop checked),
         then training shards with per-row reasons (tasks.download.driver.write_training_shards).
Images per second (median of the rounds of each); the stage's overhead is 1 - ours/plain.

Resolution: --hosts distinct host names whose lookups never answer (a fake resolver that
sleeps), resolved with the stage's defaults (1,000 in flight, 5 s timeout), against the old
guard's way (one blocking lookup at a time), whose time is computed, not waited for.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report, row


def bench_resolution(n_hosts: int) -> tuple[dict, dict]:
    from tasks.download.guard import Resolver
    from tasks.specs import DownloadSpec

    spec = DownloadSpec()

    async def never_answers(host):
        await asyncio.sleep(3600)

    r = Resolver(spec.dns_timeout, spec.dns_concurrency, lookup=never_answers)
    t0 = time.perf_counter()
    out = asyncio.run(r.resolve_all([f"host-{i}.example" for i in range(n_hosts)]))
    wall = time.perf_counter() - t0
    assert set(out.values()) == {"dns_timeout"}
    serial = n_hosts * spec.dns_timeout  # the old guard: one blocking getaddrinfo at a time
    return (row(f"hosts that never answer resolved per second ({n_hosts:,} hosts)", n_hosts / wall, n_hosts / serial, "hosts/s",
                f"{r.max_in_flight:,} lookups in flight, {spec.dns_timeout:g}s timeout: {wall:.1f}s vs {serial / 3600:.1f} h one at a time"),
            {"hosts": n_hosts, "wall_s": wall, "max_in_flight": r.max_in_flight, "serial_s": serial})


def main() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.download.driver import (
        EXTRA_COLUMNS,
        prepare_input,
        run_img2dataset,
        selection_table,
        write_training_shards,
    )
    from tasks.download.guard import AddressPolicy, ConnectionGuard, Resolver, worker_env
    from tasks.specs import DownloadSpec, WorldSpec
    from tasks.world.generate import ensure_world
    from tasks.world.server import serve_in_thread

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=6000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--hosts", type=int, default=20000)
    a = ap.parse_args()
    dns_row, dns_extra = bench_resolution(a.hosts)
    print(dns_row["note"], flush=True)

    world = ensure_world(WorldSpec(port=8765), log=lambda *_: None)
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
            policy = AddressPolicy(spec.allow_networks)
            sel = ours / "select" / "00000.parquet"
            sel.parent.mkdir(parents=True)
            pairs = pa.Table.from_pylist([{k: x[k] for k in ("uid", "url", "text", "page_url", "lang")} for x in rows])
            pq.write_table(selection_table(pairs, [True] * len(rows), [False] * len(rows), spec.allow_networks), sel)
            prep = prepare_input([sel], ours, policy, Resolver(spec.dns_timeout, spec.dns_concurrency), log=lambda *_: None)
            run_img2dataset(ours, spec, worker_env(spec.allow_networks, ours / "pinned_hosts.json"))
            stats = write_training_shards(ours, ours / "shards", ConnectionGuard(policy))
            ours_rates.append(len(urls) / (time.perf_counter() - t0))
            print(f"round {r}: plain {plain_rates[-1]:.0f} img/s, ours {ours_rates[-1]:.0f} img/s "
                  f"({stats.rows_out} ok of {prep.rows_out} through the guard)", flush=True)
            shutil.rmtree(base)
            shutil.rmtree(ours)
    if srv:
        srv.shutdown()
    med_o, med_p = statistics.median(ours_rates), statistics.median(plain_rates)
    report("download", [row("images/s, whole stage (guarded) vs plain img2dataset", med_o, med_p, "images/s",
                            f"{len(urls):,} loopback URLs, {a.rounds} alternating rounds, medians, overhead {100 * (1 - med_o / med_p):.1f}%"),
                        dns_row],
           {"plain_rounds": plain_rates, "ours_rounds": ours_rates, "resolution": dns_extra})


if __name__ == "__main__":  # img2dataset's multiprocessing distributor spawns
    main()
