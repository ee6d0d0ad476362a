"""The build's manifest.json: what a training run reads, written last.

schema version, spec hash, every shard's rows, sha256, bytes and row groups, the inputs read,
totals by status. The shards are checksummed in parallel (at full scale they are ~10 TB).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pyarrow.parquet as pq

from tasks.download.driver import DownloadStats
from tasks.engine import write_json

MANIFEST_VERSION = 1


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def shard_entry(path: str) -> dict:
    """A training shard's manifest entry: rows, sha256, bytes and row groups (the loader's units)."""
    s = Path(path)
    meta = pq.read_metadata(s)
    return {"path": f"shards/{s.name}", "rows": meta.num_rows, "sha256": sha256_file(s), "bytes": s.stat().st_size,
            "row_groups": [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]}


def write_manifest(ctx, shards: list[Path], download: DownloadStats, workers: int = 1, ray_address: str | None = None,
                   log=None) -> dict:
    """manifest.json; the shards are read and checksummed in parallel (workers processes, or Ray
    tasks on the cluster), since at full scale they are ~10 TB."""
    from tasks.parallel import run_parallel
    from tasks.specs import spec_hash

    entries = run_parallel(shard_entry, [(str(s),) for s in shards], workers, ray_address, "manifest: shard checksums", log)
    m = {
        "schema_version": MANIFEST_VERSION, "name": ctx.spec.name, "spec_hash": spec_hash(ctx.spec),
        "spec": ctx.spec.model_dump(mode="json"), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "shards": entries, "tokenizer": "tokenizer.json",
        "inputs": ctx.inputs,  # every file read: url, size and published checksum where known
        "resolved": ctx.resolved,  # names the spec gave, as resolved for this build (dump_date: latest -> a date)
        "totals": {"rows": sum(e["rows"] for e in entries), "bytes": sum(e["bytes"] for e in entries),
                   "by_status": {"ok": download.rows_out, **download.fetch_failures},
                   "refused_before_fetch": download.refused_before_fetch, "refused_at_connection": download.refused_at_connection},
        "image_column": ctx.spec.download.encode_format, "image_size": ctx.spec.download.image_size,
        "prefect_flow_run_id": ctx.flow_run_id,  # links a training run back to the build-wit run
    }
    write_json(ctx.out / "manifest.json", m)
    return m
