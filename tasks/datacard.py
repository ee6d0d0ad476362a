"""The build's manifest (machine-readable, written last) and data card (for people).

manifest.json: schema version, spec hash, each shard's rows and sha256, totals by status.
datacard.md:   counts per stage, drop reasons, the balance plot, download success, sizes.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

MANIFEST_VERSION = 1


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _head_share(counts: np.ndarray, t: int) -> float:
    total = counts.sum()
    return float(counts[counts >= t].sum() / total) if total else 0.0


def balance_report(build: Path, balance_dir: Path, t: int) -> dict:
    """Entries by count band, the head's share before/after, top entries, and the plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before_t = pq.read_table(build / "match" / "entry_counts.parquet")
    after_t = pq.read_table(balance_dir / "entry_counts_after.parquet")
    before = before_t["count"].to_numpy()
    after = after_t["count_after"].to_numpy()
    queries = before_t["query"].to_pylist()
    bands = {"0": int((before == 0).sum()), "1-9": int(((before >= 1) & (before < 10)).sum()),
             "10-99": int(((before >= 10) & (before < 100)).sum()), f"100-{t - 1}": int(((before >= 100) & (before < t)).sum()),
             f">={t}": int((before >= t).sum())}
    order = np.argsort(-before, kind="stable")
    top = [(queries[i], int(before[i]), int(after[i])) for i in order[:15] if before[i] > 0]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for counts, label in ((before, "before balancing"), (after, "after balancing")):
        c = np.sort(counts[counts > 0])[::-1]
        if len(c):
            ax.plot(np.arange(1, len(c) + 1), np.cumsum(c) / c.sum(), label=f"{label} ({int(c.sum())} matches)")
    head = int((before >= t).sum())
    if head:
        ax.axvline(head, color="grey", ls="--", lw=0.8, label=f"{head} head entries (count >= t={t})")
    ax.set_xscale("log")
    ax.set_xlabel("entries, sorted by match count")
    ax.set_ylabel("cumulative share of matches")
    ax.set_title("MetaCLIP balancing: cumulative match count")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(balance_dir / "balance.png", dpi=110)
    plt.close(fig)
    return {"entries_by_count_band": bands, "head_entries": head,
            "head_share_before": round(_head_share(before, t), 4), "head_share_after": round(_head_share(after, t), 4),
            "top_entries": top, "plot": str(balance_dir / "balance.png")}


def write_manifest(ctx, shards: list[Path]) -> dict:
    from tasks.specs import spec_hash

    entries = []
    for s in shards:
        meta = pq.read_metadata(s)
        entries.append({"path": f"shards/{s.name}", "rows": meta.num_rows, "sha256": sha256_file(s), "bytes": s.stat().st_size})
    stage = lambda name: json.loads((ctx.out / name / "_DONE.json").read_text())["stats"]  # noqa: E731
    dl = stage("download")
    m = {
        "schema_version": MANIFEST_VERSION, "name": ctx.spec.name, "spec_hash": spec_hash(ctx.spec),
        "spec": ctx.spec.model_dump(mode="json"), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "shards": entries, "tokenizer": "tokenizer.json",
        "totals": {"rows": sum(e["rows"] for e in entries), "bytes": sum(e["bytes"] for e in entries),
                   "by_status": dl["by_status"], "refused_before_fetch": dl["refused_by_reason"]},
        "image_column": ctx.spec.download.encode_format, "image_size": ctx.spec.download.image_size,
    }
    tmp = ctx.out / "manifest.json.tmp"
    tmp.write_text(json.dumps(m, indent=1))
    tmp.rename(ctx.out / "manifest.json")
    return m


def _table(d: dict, head=("reason", "count")) -> str:
    rows = "\n".join(f"| {k} | {v:,} |" if isinstance(v, int) else f"| {k} | {v} |" for k, v in sorted(d.items(), key=lambda kv: str(kv[0])))
    return f"| {head[0]} | {head[1]} |\n|---|---|\n{rows}\n"


def write_datacard(ctx, manifest: dict) -> Path:
    stage = lambda name: json.loads((ctx.out / name / "_DONE.json").read_text())["stats"]  # noqa: E731
    voc, cand, mat, bal, dl = (stage(s) for s in ("vocabulary", "candidates", "match", "balance", "download"))
    drops = {k.removeprefix("drop:"): v for k, v in {**cand, **mat}.items() if k.startswith("drop:") or k.startswith("record_")}
    top = "\n".join(f"| {q} | {b:,} | {a:,} |" for q, b, a in bal["top_entries"])
    text = f"""# Data card: {ctx.spec.name}

{ctx.spec.description}

Spec hash `{manifest['spec_hash']}`, built {manifest['created']}.

## Counts per stage
| stage | count |
|---|---|
| vocabulary entries | {voc['entries']:,} |
| candidate pairs (after per-file dedup) | {cand.get('candidates', 0):,} |
| matched pairs (>= 1 entry) | {mat.get('matched', 0):,} |
| balanced pairs (t = {bal['t']:,}) | {bal['kept']:,} (expected {bal['expected_kept']:,}) |
| URLs refused before fetching | {sum(dl['refused_by_reason'].values()):,} |
| images downloaded | {dl['success']:,} of {dl['to_fetch']:,} |
| training rows in shards | {manifest['totals']['rows']:,} in {len(manifest['shards'])} shards, {manifest['totals']['bytes'] / 1e6:.1f} MB |

## Vocabulary by source
{_table(voc['by_source'], ('source', 'entries'))}
## Drop reasons (extraction and matching)
{_table(drops)}
## Balancing
Head entries (>= t matches): {bal['head_entries']:,}; share of all matches held by the head:
{bal['head_share_before']:.1%} before, {bal['head_share_after']:.1%} after.

{_table(bal['entries_by_count_band'], ('matches per entry', 'entries'))}
| top entry | matches before | after |
|---|---|---|
{top}

![cumulative match count](balance/balance.png)

## Download
{_table(dl['by_status'], ('status', 'images'))}
Refused before fetching:
{_table(dl['refused_by_reason']) if dl['refused_by_reason'] else 'none'}
"""
    path = ctx.out / "datacard.md"
    path.write_text(text)
    return path
