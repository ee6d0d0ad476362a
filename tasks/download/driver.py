"""Stage 5 of build-wit: download images with img2dataset into parquet training shards.

    download/select/NNNNN.parquet  the rows of matched shard NNNNN to fetch (balanced or baseline), host
    download/input/NNNNN.parquet   what img2dataset is asked to fetch (rows that passed the guard)
    download/refused.parquet       rows refused before fetching, with the reason
    download/raw/NNNNN.parquet     img2dataset's output: every row, with status and error_message,
    download/raw/NNNNN_stats.json  ... and its per-shard stats (incremental mode skips these shards)
    download/raw/NNNNN.reasons.parquet  uid, url, reason (tasks/reasons.py), img2dataset's message
    shards/NNNNN.parquet           training shards: successful rows only, + uid, entry_ids, ...

Which rows: the balanced pairs, plus the unbalanced baseline (a uniform sample of the whole
matched pool of the same size, drawn by the balance stage) read from the match stage's shards;
`in_balanced` / `in_unbalanced` say which set each row belongs to.

Safety (tasks/download/guard.py): hosts are resolved concurrently (c-ares, cached, with a
timeout) and rows whose host is refused or does not resolve are dropped with their reason; then
img2dataset's worker processes start with the connection guard installed in Python's socket
layer, which checks every address where the connection is made, every redirect hop included, for
any HTTP client; the stage first checks that the guard is active where the workers run.

Crash safety: img2dataset writes `NNNNN_stats.json` only when a shard is complete, and its
incremental mode redoes shards without one. A training shard is derived only from a complete
raw shard, written to a temporary name and renamed, so a rerun after a crash (even SIGKILL)
ends with every pair exactly once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations phones home on import

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field
from tqdm import tqdm

from tasks.download.guard import (
    REFUSED_PHRASE,
    AddressPolicy,
    ConnectionGuard,
    Resolver,
    check_host,
    check_workers_guarded,
)
from tasks.engine import Stats, atomic
from tasks.specs import DownloadSpec

EXTRA_COLUMNS = ["uid", "entry_ids_json", "page_url", "lang", "in_balanced", "in_unbalanced"]


class DownloadStats(Stats):
    """The download stage: selected pairs (rows_in) -> images in training shards (rows_out)."""

    to_fetch: int = 0
    refused_before_fetch: dict[str, int] = Field(default_factory=dict)
    fetch_failures: dict[str, int] = Field(default_factory=dict)
    refused_at_connection: dict[str, int] = Field(default_factory=dict)
    hosts: int = 0
    dns_lookups: int = 0
    dns_max_in_flight: int = 0
    webdataset_samples: int | None = None
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")
_HTTP_NAMED = {403, 404, 410, 429}


def error_reason(msg: str | None) -> str:
    """img2dataset's error_message -> a reason of tasks/reasons.py (closed set; `other` keeps the text)."""
    if not msg:
        return "ok"
    m = msg.lower()
    if REFUSED_PHRASE in m:
        return "refused_redirect"  # the row's own host passed the pre-pass: a later hop was refused
    if "x-robots-tag" in m:
        return "opt_out_x_robots_tag"
    if "cv_io_max_image_pixels" in m or "image area too large" in m or "decompressionbomb" in m:
        return "decompression_bomb"
    if "!buf.empty()" in m:  # OpenCV's assertion on an empty buffer
        return "empty_body"
    if "image decoding error" in m or m.startswith("opencv("):
        return "decode_error"  # told apart by sniff_decode_failure
    if m.startswith("http error"):
        try:
            code = int(m.split()[2].rstrip(":"))
        except (IndexError, ValueError):
            return "other"
        if "redirect" in m and code in (301, 302, 303, 307, 308):
            return "too_many_redirects"
        return f"http_{code}" if code in _HTTP_NAMED else ("http_5xx" if code >= 500 else "http_4xx")
    if "timed out" in m or "timeout" in m:
        return "timeout"
    if "ssl" in m or "certificate" in m:
        return "ssl_error"
    if "name or service not known" in m or "nodename nor servname" in m or "temporary failure in name resolution" in m:
        return "dns_failure"
    if "urlopen error" in m or "connection" in m or "remote end closed" in m:
        return "connection_error"
    return "other"


def sniff_decode_failure(url: str, guard: ConnectionGuard, timeout: float = 5.0) -> str:
    """Tell an empty body, a corrupt image and a body that is no image apart, from its first bytes.

    img2dataset reports all three as "Image decoding error"; this re-reads at most 64 KiB of the
    few URLs that failed that way, through the same connection guard."""
    import urllib.request

    try:
        req = urllib.request.Request(url, headers={"Range": "bytes=0-65535", "User-Agent": "openwit-diagnose"})
        with guard.installed(), urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=timeout) as r:
            head = r.read(65536)
    except Exception:  # noqa: BLE001 - diagnosis is best effort
        return "corrupt_image"
    if not head:
        return "empty_body"
    return "corrupt_image" if head.startswith(IMAGE_MAGIC) else "not_an_image"


def selection_table(rows: pa.Table, in_balanced, in_unbalanced, allow_networks: list[str], local_sources: tuple[str, ...] = ()
                    ) -> pa.Table:
    """Rows to fetch (uid, url, text, page_url, lang, entry_ids) with the sets they belong to and,
    from the guard's URL check, each row's host or the reason its URL can never be fetched."""
    policy = AddressPolicy(allow_networks)
    sources = rows["source"].to_pylist() if "source" in rows.column_names else [None] * rows.num_rows
    checked = [policy.url_reason(u, s in local_sources) for u, s in zip(rows["url"].to_pylist(), sources)]
    ids = rows["entry_ids"].to_pylist() if "entry_ids" in rows.column_names else [[] for _ in range(rows.num_rows)]
    return pa.table({
        **{c: rows[c] for c in ("uid", "url", "text", "page_url", "lang")},
        "entry_ids_json": pa.array([json.dumps(x) for x in ids], pa.string()),
        "in_balanced": pa.array(in_balanced, pa.bool_()), "in_unbalanced": pa.array(in_unbalanced, pa.bool_()),
        "host": pa.array([h for _r, h in checked], pa.string()), "url_reason": pa.array([r for r, _h in checked], pa.string()),
    })


def select_shard(match_file: str, balanced_file: str, baseline: dict, out_path: str, allow_networks: list[str],
                 local_sources: tuple[str, ...] = ()) -> dict:
    """The rows of one matched shard to fetch: its balanced pairs (balance/NNNNN.parquet, same
    number) and its pairs of the unbalanced baseline (the rank rule of tasks/balancing.py), in
    one table; a unit of parallel work. Memory: one shard. `local_sources`: the build's crawl.local
    inputs; only their rows may name file:// URLs (a web page or table naming one is refused)."""
    import numpy as np

    from tasks.curate.balancing import in_unbalanced

    m = pq.read_table(match_file)
    balanced = pq.read_table(balanced_file, columns=["uid"])["uid"] if Path(balanced_file).exists() else pa.array([], pa.string())
    in_b = pc.is_in(m["uid"], value_set=balanced).to_numpy(zero_copy_only=False)
    in_u = in_unbalanced(m["uid"].to_pylist(), baseline)
    keep = np.nonzero(in_b | in_u)[0]
    table = selection_table(m.take(pa.array(keep, pa.int64())), in_b[keep], in_u[keep], allow_networks, local_sources)
    with atomic(Path(out_path)) as tmp:
        pq.write_table(table, tmp)
    return {"rows": table.num_rows, "balanced": int(in_b.sum()), "balanced_file": len(balanced), "unbalanced": int(in_u.sum())}


def prepare_input(selected: list[Path], out_dir: Path, policy: AddressPolicy, resolver: Resolver, log=print) -> DownloadStats:
    """The URL lists for img2dataset (input/NNNNN.parquet, one per selection shard) after the
    guard's pre-pass; refused rows go to refused.parquet with their reason. The addresses of
    allowed hosts are written to `pinned_hosts.json`: the fetching processes connect to exactly
    those. Streams shard by shard: memory is one shard plus the set of hosts."""
    import asyncio
    import shutil

    stats = DownloadStats()
    hosts: set[str] = set()
    for f in selected:
        hosts.update(h for h in pq.read_table(f, columns=["host"])["host"].unique().to_pylist() if h)
        stats.rows_in += pq.ParquetFile(f).metadata.num_rows
    log(f"download: resolving {len(hosts):,} hosts of {stats.rows_in:,} URLs "
        f"({resolver.concurrency} lookups in flight at most, {resolver.timeout:g}s timeout)")
    with tqdm(total=len(hosts), desc="download: resolving hosts", unit="host", mininterval=2) as bar:
        resolved = asyncio.run(resolver.resolve_all(hosts, bar.update))
    host_reason = {h: check_host(policy, res)[0] for h, res in resolved.items()}
    with atomic(out_dir / "pinned_hosts.json") as tmp:
        tmp.write_text(json.dumps({h: list(res) for h, res in resolved.items() if not host_reason[h]}))
    shutil.rmtree(out_dir / "input", ignore_errors=True)  # a rerun after a crash writes every list again
    cols = ["url", "text"] + EXTRA_COLUMNS
    with atomic(out_dir / "refused.parquet") as tmp, pq.ParquetWriter(tmp, _input_schema().append(pa.field("reason", pa.string()))) as refused:
        for i, f in enumerate(selected):
            t = pq.read_table(f)
            reasons = [r or host_reason.get(h) for r, h in zip(t["url_reason"].to_pylist(), t["host"].to_pylist())]
            ok = pa.array([r is None for r in reasons])
            for r in reasons:
                if r:
                    stats.drop(r)
            n_ok = pc.sum(ok).as_py() or 0
            stats.rows_out += n_ok
            if n_ok:
                with atomic(out_dir / "input" / f"{i:05d}.parquet") as tmp_in:
                    pq.write_table(t.filter(ok).select(cols), tmp_in)
            if n_ok < t.num_rows:
                bad = pc.invert(ok)
                refused.write_table(t.filter(bad).select(_input_schema().names).append_column(
                    "reason", pa.array([r for r in reasons if r], pa.string())))
    stats.to_fetch = stats.rows_out
    stats.hosts, stats.dns_lookups, stats.dns_max_in_flight = len(hosts), resolver.lookups, resolver.max_in_flight
    return stats


def _input_schema() -> pa.Schema:
    return pa.schema([("uid", pa.string()), ("url", pa.string()), ("text", pa.string()), ("page_url", pa.string()),
                      ("lang", pa.string()), ("entry_ids_json", pa.string()), ("in_balanced", pa.bool_()),
                      ("in_unbalanced", pa.bool_())])


def run_img2dataset(out_dir: Path, spec: DownloadSpec, guard_env: dict[str, str], ray_address: str | None = None) -> None:
    """Call img2dataset from Python; its worker processes start with the connection guard
    installed (`guard_env`: tasks/download/guard.py:worker_env).

    Its multiprocessing distributor spawns: callers need a `__main__` guard (flows/cli.py and
    the Prefect worker's entry point have one). Spawned processes inherit the environment, so
    the guard's variables are set for the call and restored after it. Proxy variables are
    removed for the call: the guard checks the address urllib connects to, which must be the
    image host's, not a proxy's."""
    from img2dataset import download

    saved = dict(os.environ)
    os.environ.update(guard_env, OPENCV_IO_MAX_IMAGE_PIXELS=str(spec.max_pixels))  # cv2 refuses bombs at the header
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        os.environ.pop(k, None)
    try:
        if spec.distributor == "ray":
            import ray

            if ray.is_initialized():
                ray.shutdown()
            ray.init(address=ray_address or "local", runtime_env={"env_vars": dict(guard_env)}, ignore_reinit_error=True)
        check_workers_guarded(guard_env, spec.distributor)  # fail closed: no worker fetches unguarded
        download(
            url_list=str(out_dir / "input"), input_format="parquet", url_col="url", caption_col="text",
            save_additional_columns=list(EXTRA_COLUMNS), output_format="parquet", output_folder=str(out_dir / "raw"),
            image_size=spec.image_size, resize_mode=spec.resize_mode, encode_format=spec.encode_format,
            encode_quality=spec.encode_quality, processes_count=spec.processes, thread_count=spec.threads,
            retries=spec.retries, timeout=spec.timeout, user_agent_token=spec.user_agent_token,
            disallowed_header_directives=spec.disallowed_header_directives, distributor=spec.distributor,
            number_sample_per_shard=spec.number_sample_per_shard, incremental_mode="incremental",
            max_image_area=spec.max_pixels, enable_wandb=False, compute_hash="sha256",
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)


ROW_GROUP_ROWS = 1000  # ~1-15 MB of images per row group: what a training worker reads at once


def write_training_shards(out_dir: Path, shard_dir: Path, guard: ConnectionGuard) -> Stats:
    """Successful rows of every complete raw shard -> shards/NNNNN.parquet; failures by reason."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    stats = Stats()
    for stats_file in sorted((out_dir / "raw").glob("*_stats.json")):
        sid = stats_file.name.split("_")[0]
        raw = pq.read_table(out_dir / "raw" / f"{sid}.parquet")
        messages = raw["error_message"].to_pylist()
        reasons = [error_reason(m) for m in messages]
        urls = raw["url"].to_pylist()
        reasons = [sniff_decode_failure(u, guard) if r == "decode_error" else r for u, r in zip(urls, reasons)]
        for m in messages:
            if m and REFUSED_PHRASE in m:  # "... openwit-guard refused <reason> (<host>)"
                stats.counts["refused_at_connection:" + m.split(REFUSED_PHRASE, 1)[1].split()[0]] += 1
        with atomic(out_dir / "raw" / f"{sid}.reasons.parquet") as tmp:
            pq.write_table(pa.table({"uid": raw["uid"], "url": raw["url"], "reason": reasons,
                                     "message": pa.array(messages, pa.string())}), tmp)
        stats.rows_in += raw.num_rows
        for r in reasons:
            if r != "ok":
                stats.drop(r)
        target = shard_dir / f"{sid}.parquet"
        ok = raw.filter(pc.equal(raw["status"], "success"))
        stats.rows_out += ok.num_rows
        if target.exists():
            continue
        ids = pa.array([json.loads(s) for s in ok["entry_ids_json"].to_pylist()], pa.list_(pa.int64()))
        ok = ok.drop(["entry_ids_json"]).append_column("entry_ids", ids)
        with atomic(target) as tmp:  # row groups are the training loader's unit of reading
            pq.write_table(ok, tmp, row_group_size=ROW_GROUP_ROWS)
    return stats


def export_webdataset(shard_dir: Path, wds_dir: Path, image_format: str) -> int:
    """Optional WebDataset tars (NNNNN.tar: key.jpg, key.txt, key.json) for open_clip."""
    import io
    import tarfile

    wds_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    for shard in sorted(shard_dir.glob("*.parquet")):
        target = wds_dir / f"{shard.stem}.tar"
        if target.exists():
            continue
        t = pq.read_table(shard)
        with atomic(target) as tmp, tarfile.open(tmp, "w") as tar:
            for r in t.to_pylist():
                meta = {k: r[k] for k in ("uid", "url", "entry_ids", "width", "height")}
                for ext, data in ((image_format, r[image_format]), ("txt", r["caption"].encode()), ("json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(f"{r['key']}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                n += 1
    return n
