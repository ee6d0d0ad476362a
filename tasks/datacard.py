"""The build's manifest (machine-readable, written last) and data card (for people).

manifest.json: schema version, spec hash, each shard's rows and sha256, totals by status.
datacard.md:   counts per stage, drop reasons, the balance plot, download success, sizes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
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


def _head_share(counts: np.ndarray, head: np.ndarray) -> float:
    """The share of all counts held by the head entries (a mask: the entries with >= t matches in
    the pool, the same entries before and after balancing)."""
    total = counts.sum()
    return float(counts[head].sum() / total) if total else 0.0


def count_bands(counts: np.ndarray, t: int) -> dict[str, int]:
    """Entries by match count in bands that do not overlap and sum to all entries:
    0, 1-9, 10-99, 100-(t-1), >= t, with the edges at 10 and 100 dropped when t is below them."""
    edges = sorted({1, *(e for e in (10, 100) if e < t), t})
    bands = {"0": int((counts == 0).sum())}
    for lo, hi in itertools.pairwise(edges):
        bands[f"{lo}-{hi - 1}" if hi - 1 > lo else f"{lo}"] = int(((counts >= lo) & (counts < hi)).sum())
    bands[f">={t}"] = int((counts >= t).sum())
    return bands


def balance_report(counts_path: Path, balance_dir: Path, t: int | dict[str, int]) -> dict:
    """Entries by count band, the head's share before/after, top entries and the plot; with one t
    per language, also each language's row (its t, the tail share of its matches at that t, its
    head share before and after)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tasks.balancing import entry_languages, entry_thresholds, t_to_p

    before_t = pq.read_table(counts_path)
    after_t = pq.read_table(balance_dir / "entry_counts_after.parquet")
    before = before_t["count"].to_numpy()
    after = after_t["count_after"].to_numpy()
    # kept pairs each entry's own draw accepted (expected min(count, t)); None for an older balance stage
    drawn = after_t["drawn"].to_numpy() if "drawn" in after_t.column_names else None
    queries = before_t["query"].to_pylist()
    languages = entry_languages(before_t)
    t_by_lang = {lang: t for lang in dict.fromkeys(languages)} if isinstance(t, int) else dict(t)
    t_entry = entry_thresholds(languages, t_by_lang)
    lang_arr = np.array(languages, dtype=object)
    order = np.argsort(-before, kind="stable")
    top = [(queries[i], int(before[i]), int(after[i])) for i in order[:15] if before[i] > 0]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    multi = len(t_by_lang) > 1
    for lang, lt in t_by_lang.items():
        sel = lang_arr == lang
        # every curve in the pool's order (most matched entry first), so that at the head line each
        # curve reads the head's share the data card prints
        matched = np.nonzero(before[sel] > 0)[0]
        order_sel = matched[np.argsort(-before[sel][matched], kind="stable")]
        curves = [(before[sel], "pool: matches", "-", "matches"), (after[sel], "balanced set: matches", "--", "matches")]
        if drawn is not None:
            curves.append((drawn[sel], "balanced set: draws that kept pairs", ":", "draws"))
        for counts, label, ls, unit in curves:
            c = counts[order_sel]
            if c.sum():
                name = f"{lang} {label}" if multi else label
                ax.plot(np.arange(1, len(c) + 1), np.cumsum(c) / c.sum(), ls=ls, label=f"{name} ({int(c.sum()):,} {unit})")
        head_n = int((before[sel] >= lt).sum())
        if head_n:
            ax.axvline(head_n, color="grey", ls=":", lw=0.8, label=f"{head_n} {lang + ' ' if multi else ''}head entries (count >= t={lt})")
    ax.set_xscale("log")
    ax.set_xlabel("entries, sorted by their match count in the pool")
    ax.set_ylabel("cumulative share")
    ax.set_title("MetaCLIP balancing: cumulative share, head to tail" + (" per language" if multi else ""))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(balance_dir / "balance.png", dpi=110)
    plt.close(fig)
    per_language = {}
    for lang, lt in t_by_lang.items():
        sel = lang_arr == lang
        per_language[lang] = {"t": lt, "entries": int(sel.sum()), "entries_matched": int((before[sel] > 0).sum()),
                              "matches": int(before[sel].sum()), "tail_share_at_t": round(t_to_p(before[sel], lt), 4),
                              "head_entries": int((before[sel] >= lt).sum()),
                              "head_share_before": round(_head_share(before[sel], before[sel] >= lt), 4),
                              "head_share_after": round(_head_share(after[sel], before[sel] >= lt), 4),
                              "head_share_drawn": (round(_head_share(drawn[sel], before[sel] >= lt), 4)
                                                   if drawn is not None else None),
                              "entries_by_count_band": count_bands(before[sel], lt)}
    first = next(iter(per_language.values()), {"entries_by_count_band": count_bands(before, 1)})
    return {"entries_by_count_band": first["entries_by_count_band"], "head_entries": int((before >= t_entry).sum()),
            "head_share_before": round(_head_share(before, before >= t_entry), 4),
            "head_share_after": round(_head_share(after, before >= t_entry), 4),
            "head_share_drawn": round(_head_share(drawn, before >= t_entry), 4) if drawn is not None else None,
            "top_entries": top, "plot": str(balance_dir / "balance.png"), "by_language": per_language}


def shard_entry(path: str) -> dict:
    """A training shard's manifest entry: rows, sha256, bytes and row groups (the loader's units)."""
    s = Path(path)
    meta = pq.read_metadata(s)
    return {"path": f"shards/{s.name}", "rows": meta.num_rows, "sha256": sha256_file(s), "bytes": s.stat().st_size,
            "row_groups": [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]}


def write_manifest(ctx, shards: list[Path], workers: int = 1, ray_address: str | None = None, log=None) -> dict:
    """manifest.json; the shards are read and checksummed in parallel (workers processes, or Ray
    tasks on the cluster), since at full scale they are ~10 TB."""
    from tasks.engine import stage_stats
    from tasks.parallel import run_parallel
    from tasks.specs import spec_hash

    entries = run_parallel(shard_entry, [(str(s),) for s in shards], workers, ray_address, "manifest: shard checksums", log)
    dl = stage_stats(ctx.out, "download")
    m = {
        "schema_version": MANIFEST_VERSION, "name": ctx.spec.name, "spec_hash": spec_hash(ctx.spec),
        "spec": ctx.spec.model_dump(mode="json"), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "shards": entries, "tokenizer": "tokenizer.json",
        "inputs": ctx.inputs,  # every file read: url, size and published checksum where known
        "totals": {"rows": sum(e["rows"] for e in entries), "bytes": sum(e["bytes"] for e in entries),
                   "by_status": {"ok": dl.rows_out, **dl.info["fetch_failures"]}, "refused_before_fetch": dl.info["refused_before_fetch"],
                   "refused_at_connection": dl.info["refused_at_connection"]},
        "image_column": ctx.spec.download.encode_format, "image_size": ctx.spec.download.image_size,
        "prefect_flow_run_id": _prefect_flow_run_id(),  # links a training run back to the build-wit run
    }
    tmp = ctx.out / "manifest.json.tmp"
    tmp.write_text(json.dumps(m, indent=1))
    tmp.rename(ctx.out / "manifest.json")
    return m


def _prefect_flow_run_id() -> str | None:
    try:
        from prefect.runtime import flow_run

        return str(flow_run.id) if flow_run.id else None
    except Exception:  # noqa: BLE001 - outside Prefect there is none
        return None


def _table(d: dict, head=("reason", "count")) -> str:
    rows = "\n".join(f"| {k} | {v:,} |" if isinstance(v, int) else f"| {k} | {v} |" for k, v in d.items())
    return f"| {head[0]} | {head[1]} |\n|---|---|\n{rows}\n"


def _reasons_table(stages: dict) -> str:
    from tasks.reasons import explain

    rows = [f"| {name} | {reason} | {n:,} | {explain(reason)} |" for name, st in stages.items()
            for reason, n in sorted(st.dropped.items(), key=lambda kv: -kv[1]) if n]
    return "| stage | reason | count | what it means |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"


def _languages_section(voc, bal: dict, candidates: dict[str, int]) -> str:
    """One row per language: vocabulary, candidates, matched pairs, its t and what balancing did to it."""
    per = bal.get("by_language") or {}
    if not per:
        return ""
    pairs = bal.get("pairs_by_language") or {}
    vocab = (voc.info.get("by_language") or {})
    rows = []
    for lang, r in per.items():
        pl = pairs.get(lang, {"pool": 0, "kept": 0})
        rows.append(f"| {lang} | {vocab.get(lang, {}).get('entries', r['entries']):,} | {r['entries_matched']:,} | "
                    f"{candidates.get(lang, 0):,} | {r['matches']:,} | "
                    f"{pl['pool']:,} | {r['t']:,} | {r['tail_share_at_t']:.1%} | {r['head_share_before']:.1%} -> "
                    f"{_pct(r.get('head_share_drawn'))} / {r['head_share_after']:.1%} | {pl['kept']:,} |")
    rule = ("each language's own t: English keeps t, the others the t at which their tail holds the share of matches that "
            "English's tail holds at t (MetaCLIP 2)" if len(per) > 1 else "one language, one t")
    return ("## Languages\n" + f"Balancing per language: {rule}.\n\n"
            "| language | entries | entries matched | candidates | matches | matched pairs | t | tail share at t | "
            "head share: pool -> draws / balanced matches | pairs kept |\n|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _head_lines(bal: dict) -> str:
    """The head's share before and after balancing, in both of balancing's currencies."""
    return (f"- of the matches in the pool (before): **{_pct(bal['head_share_before'])}**;\n"
            f"- of the draws that kept pairs (after; a kept pair counts once for each entry whose own draw accepted it, "
            f"so an entry expects min(count, t): the distribution balancing shapes): **{_pct(bal.get('head_share_drawn'))}**;\n"
            f"- of the matches in the balanced set (after): {_pct(bal['head_share_after'])}. This share falls less: a pair "
            "kept for a tail entry still matches every head entry its caption names (words such as \"of\" and \"the\" "
            "ride along, as they do in MetaCLIP's pool).\n")


def write_datacard(ctx, manifest: dict) -> Path:
    from tasks.engine import stage_stats

    stages = {name: stage_stats(ctx.out, name) for name in ("vocabulary", "candidates", "match", "balance", "download")}
    voc, bal, dl = stages["vocabulary"], stages["balance"].info, stages["download"]
    top = "\n".join(f"| {q} | {b:,} | {a:,} |" for q, b, a in bal["top_entries"])
    langs = _languages_section(voc, bal, stages["match"].info.get("candidates_by_language") or {})
    t_by = bal.get("t_by_language") or {}
    t_text = ("t = " + ", ".join(f"{v:,} ({k})" for k, v in t_by.items())) if len(t_by) > 1 else f"t = {bal['t']:,}"
    flow = "\n".join(f"| {name} | {st.rows_in:,} | {st.rows_out:,} | {sum(st.dropped.values()):,} |" for name, st in stages.items())
    text = f"""# Data card: {ctx.spec.name}

{ctx.spec.description}

Spec hash `{manifest['spec_hash']}`, built {manifest['created']}.

## Counts per stage
| stage | in | out | dropped |
|---|---|---|---|
{flow}

vocabulary: pages read -> entries; candidates: `<img>` tags and table rows -> pairs (deduplicated per input);
match: candidate pairs -> pairs matching >= 1 entry; balance: matched pool -> kept at {t_text}
(expected {bal['expected_kept']:,}); download: balanced pairs plus the unbalanced baseline's -> images in
shards ({manifest['totals']['rows']:,} rows in {len(manifest['shards'])} shards, {manifest['totals']['bytes'] / 1e6:.1f} MB).

Alt texts written in capitals: {stages['candidates'].counts.get('all_caps_captions', 0):,} (they never match a lower-case
vocabulary; {stages['candidates'].counts.get('all_caps_casefolded', 0):,} lower-cased by `crawl.casefold_all_caps`).

## Why records were dropped
{_reasons_table(stages)}
## Vocabulary by source
{_table(voc.info['by_source'], ('source', 'entries'))}
{langs}
## Balancing
Head entries (>= t matches in the pool): {bal['head_entries']:,}. The head's share:

{_head_lines(bal)}
The unbalanced baseline (`data.subset: unbalanced`) is a uniform sample of {bal['unbalanced_baseline']:,} pairs of
the whole matched pool.

{_table(bal['entries_by_count_band'], ('matches per entry', 'entries'))}
| top entry | matches before | after |
|---|---|---|
{top}

![cumulative match count](balance/balance.png)

## Download
{dl.info['to_fetch']:,} URLs fetched through the guard; {dl.info['dns_lookups']:,} host lookups
(at most {dl.info['dns_max_in_flight']:,} in flight). Refused before fetching:
{_table(dl.info['refused_before_fetch']) if dl.info['refused_before_fetch'] else 'none'}
Refused at connection time (redirect hops): {dl.info['refused_at_connection'] or 'none'}

Fetch results:
{_table(manifest['totals']['by_status'], ('status', 'images'))}
"""
    path = ctx.out / "datacard.md"
    path.write_text(text)
    return path


_IMAGE_REF = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")


def inline_images(markdown: str, base: Path) -> str:
    """Relative image references -> data: URIs of the files under `base`, so the markdown shows
    its plots wherever it is rendered (the Prefect UI serves no files of its own: a relative path
    is a 404 there)."""
    import base64
    import mimetypes

    def repl(m: re.Match) -> str:
        alt, ref = m.group(1), m.group(2)
        if re.match(r"^[a-z]+:", ref) or not (base / ref).is_file():
            return m.group(0)
        mime = mimetypes.guess_type(ref)[0] or "application/octet-stream"
        return f"![{alt}](data:{mime};base64,{base64.b64encode((base / ref).read_bytes()).decode()})"

    return _IMAGE_REF.sub(repl, markdown)
