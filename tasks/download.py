"""Stage 3 of build-wit: download images with img2dataset into parquet training shards.

    download/input/urls.parquet    what img2dataset is asked to fetch (URLs that passed the guard)
    download/refused.parquet       URLs refused before fetching, with the reason
    download/raw/NNNNN.parquet     img2dataset's output: every row, with status and error_message,
    download/raw/NNNNN_stats.json  ... and its per-shard stats (incremental mode skips these shards)
    shards/NNNNN.parquet           training shards: successful rows only, + uid, entry_ids, ...

Crash safety: img2dataset writes `NNNNN_stats.json` only when a shard is complete, and its
incremental mode redoes shards without one. A training shard is derived only from a complete
raw shard, written to a temporary name and renamed, so a rerun after a crash (even SIGKILL)
ends with every pair exactly once.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations phones home on import

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.specs import DownloadSpec
from tasks.url_safety import UrlGuard

EXTRA_COLUMNS = ["uid", "entry_ids_json", "page_url", "lang", "in_balanced", "in_unbalanced"]
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")


def error_reason(msg: str | None) -> str:
    """img2dataset's error_message -> a stable reason name for the stats."""
    if not msg:
        return "ok"
    m = msg.lower()
    if "x-robots-tag" in m:
        return "opt_out_x_robots_tag"
    if "cv_io_max_image_pixels" in m or "image area too large" in m:
        return "decompression_bomb"
    if "image decoding error" in m:
        return "decode_error"
    if m.startswith("http error"):
        return "http_" + m.split()[2].rstrip(":")
    if "timed out" in m or "timeout" in m:
        return "timeout"
    if "urlopen error" in m or "connection" in m:
        return "connection_error"
    return "other:" + msg[:60]


def sniff_decode_failure(url: str, guard: UrlGuard, timeout: float = 5.0) -> str:
    """Tell a corrupt image from a body that is no image at all, from its first bytes.

    img2dataset reports both as "Image decoding error"; this re-reads at most 64 KiB of the
    few URLs that failed that way (through the same guard) to name the reason.
    """
    import urllib.request

    if guard.check(url):
        return "decode_error"
    try:
        req = urllib.request.Request(url, headers={"Range": "bytes=0-65535", "User-Agent": "openwit-diagnose"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            head = r.read(65536)
    except Exception:  # noqa: BLE001 - diagnosis is best effort
        return "decode_error"
    return "corrupt_image" if head.startswith(IMAGE_MAGIC) else "not_an_image"


def prepare_input(balanced_files: list[Path], unbalanced_uids: Path | None, out_dir: Path, spec: DownloadSpec) -> dict:
    """The URL list for img2dataset, after the safety guard; refused URLs are kept with reasons."""
    tables = [pq.read_table(f) for f in balanced_files]
    tables = [t for t in tables if t.num_rows]
    pool = pa.concat_tables(tables) if tables else None
    want_unbalanced = set()
    if unbalanced_uids is not None and unbalanced_uids.exists():
        want_unbalanced = set(pq.read_table(unbalanced_uids)["uid"].to_pylist())
    rows: dict[str, dict] = {}
    if pool is not None:
        for r in pool.select(["uid", "url", "text", "page_url", "lang", "entry_ids"]).to_pylist():
            r["entry_ids_json"] = json.dumps(r.pop("entry_ids"))
            r.update(in_balanced=True, in_unbalanced=r["uid"] in want_unbalanced)
            rows[r["uid"]] = r
    if want_unbalanced - rows.keys():
        # the baseline sample also holds pairs balancing dropped: read them from the matched shards
        match_dir = balanced_files[0].parent.parent / "matches" if balanced_files else None
        for f in sorted(match_dir.glob("*.parquet")) if match_dir else []:
            t = pq.read_table(f)
            t = t.filter(pc.is_in(t["uid"], pa.array(sorted(want_unbalanced - rows.keys()))))
            for r in t.select(["uid", "url", "text", "page_url", "lang", "entry_ids"]).to_pylist():
                r["entry_ids_json"] = json.dumps(r.pop("entry_ids"))
                r.update(in_balanced=False, in_unbalanced=True)
                rows[r["uid"]] = r
    guard = UrlGuard(spec.allow_networks)
    ok, refused = [], []
    for uid in sorted(rows):
        r = rows[uid]
        reason = guard.check(r["url"])
        (refused if reason else ok).append({**r, "reason": reason} if reason else r)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "input").mkdir(exist_ok=True)
    cols = ["url", "text"] + EXTRA_COLUMNS
    pq.write_table(pa.Table.from_pylist(ok, schema=_input_schema()).select(cols), out_dir / "input" / "urls.parquet")
    pq.write_table(pa.Table.from_pylist(refused) if refused else pa.table({"url": pa.array([], pa.string())}), out_dir / "refused.parquet")
    reasons = Counter(r["reason"] for r in refused)
    return {"to_fetch": len(ok), "refused": len(refused), "refused_by_reason": dict(reasons)}


def _input_schema() -> pa.Schema:
    return pa.schema([("uid", pa.string()), ("url", pa.string()), ("text", pa.string()), ("page_url", pa.string()),
                      ("lang", pa.string()), ("entry_ids_json", pa.string()), ("in_balanced", pa.bool_()),
                      ("in_unbalanced", pa.bool_())])


def run_img2dataset(out_dir: Path, spec: DownloadSpec) -> None:
    """Call img2dataset from Python. Its multiprocessing distributor spawns: callers need a
    `__main__` guard (flows/cli.py and the Prefect worker's entry point have one)."""
    os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(spec.max_pixels)  # cv2 refuses bombs at the header
    from img2dataset import download

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


def write_training_shards(out_dir: Path, shard_dir: Path, spec: DownloadSpec) -> dict:
    """Successful rows of every complete raw shard -> shards/NNNNN.parquet; stats by reason."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    guard = UrlGuard(spec.allow_networks)
    totals: Counter = Counter()
    for stats_file in sorted((out_dir / "raw").glob("*_stats.json")):
        sid = stats_file.name.split("_")[0]
        raw = pq.read_table(out_dir / "raw" / f"{sid}.parquet")
        reasons = [error_reason(m) for m in raw["error_message"].to_pylist()]
        urls = raw["url"].to_pylist()
        diagnosed = [sniff_decode_failure(u, guard) if r == "decode_error" else r for u, r in zip(urls, reasons)]
        pq.write_table(pa.table({"uid": raw["uid"], "url": raw["url"], "reason": diagnosed}), out_dir / "raw" / f"{sid}.reasons.parquet")
        totals.update(diagnosed)
        target = shard_dir / f"{sid}.parquet"
        if target.exists():
            continue
        ok = raw.filter(pc.equal(raw["status"], "success"))
        ids = pa.array([json.loads(s) for s in ok["entry_ids_json"].to_pylist()], pa.list_(pa.int64()))
        ok = ok.drop(["entry_ids_json"]).append_column("entry_ids", ids)
        tmp = target.with_suffix(".tmp")
        pq.write_table(ok, tmp)
        tmp.rename(target)
    return {"by_status": dict(totals), "success": totals.get("ok", 0), "failed": sum(v for k, v in totals.items() if k != "ok")}


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
        tmp = target.with_suffix(".tmp")
        t = pq.read_table(shard)
        with tarfile.open(tmp, "w") as tar:
            for r in t.to_pylist():
                meta = {k: r[k] for k in ("uid", "url", "entry_ids", "width", "height")}
                for ext, data in ((image_format, r[image_format]), ("txt", r["caption"].encode()), ("json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(f"{r['key']}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                n += 1
        tmp.rename(target)
    return n
