"""The build-wit stages as plain functions over a build folder (no Prefect here).

Each stage writes its outputs, then `<stage>/_DONE.json` holding a key (hash of the spec
section and the inputs) and its stats. A stage whose marker matches is skipped, so a rerun after
a crash redoes only what is missing; stages that work per shard also skip finished shards.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tasks.parallel import run_parallel
from tasks.specs import BuildSpec, SpecError, resolve_path

STAGES = ["vocabulary", "candidates", "match", "balance", "download", "manifest"]


@dataclass
class BuildContext:
    spec: BuildSpec
    out: Path
    world: Path | None = None
    dumps: list[str] = field(default_factory=list)
    pageviews: list[str] = field(default_factory=list)
    warcs: list[str] = field(default_factory=list)
    log: Callable[[str], None] = print

    def input_path(self, p: str) -> str:
        if p.startswith("world:"):
            if self.world is None:
                raise SpecError(f"{p}: a world: path needs a `world:` section in the spec")
            return str(self.world / p.removeprefix("world:"))
        if "://" in p:
            return p
        return str(resolve_path(p))


def make_context(spec: BuildSpec, out_dir: Path | None = None, log: Callable[[str], None] = print) -> BuildContext:
    """Resolve inputs (generating the sample world if the spec has one) and check local files."""
    out = out_dir or resolve_path(spec.output_dir)
    ctx = BuildContext(spec, out, log=log)
    if spec.world is not None:
        from tasks.world.generate import ensure_world

        ctx.world = ensure_world(spec.world, log=log)
    ctx.dumps = _expand(spec.vocabulary.wikipedia.dumps, ctx)
    ctx.pageviews = _expand(spec.vocabulary.pageviews.files, ctx)
    from tasks.candidates import warc_list

    ctx.warcs = _expand(warc_list(spec.crawl), ctx)
    missing = [p for p in ctx.dumps + ctx.pageviews + ctx.warcs + [ctx.input_path(t.path) for t in spec.crawl.tables]
               if "://" not in p and not Path(p).exists()]
    if missing:
        raise SpecError(f"input file not found: {missing[0]}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
    ctx.dumps = _split_multistream(ctx)
    return ctx


def _split_multistream(ctx: BuildContext) -> list[str]:
    """Dumps with a multistream index become byte ranges of `streams_per_part` streams each."""
    from tasks.wikitext import multistream_ranges

    wp = ctx.spec.vocabulary.wikipedia
    index = {ctx.input_path(d): ctx.input_path(i) for d, i in wp.multistream_index.items()}
    for d, i in index.items():
        if d not in ctx.dumps:
            raise SpecError(f"vocabulary.wikipedia.multistream_index: {d} is not one of the dumps")
        if "://" not in i and not Path(i).exists():
            raise SpecError(f"input file not found: {i}")
    out = []
    for d in ctx.dumps:
        if d in index:
            ranges = multistream_ranges(index[d], wp.streams_per_part)
            ctx.log(f"vocabulary: {d} splits into {len(ranges)} parts of {wp.streams_per_part} streams")
            out += [f"{d}#bytes={a}-{'' if b is None else b}" for a, b in ranges]
        else:
            out.append(d)
    return out


def _expand(paths: list[str], ctx: BuildContext) -> list[str]:
    """Resolve `world:` and relative paths; expand local globs (`pageviews/*.gz`)."""
    out = []
    for p in paths:
        r = ctx.input_path(p)
        if "://" not in r and any(c in r for c in "*?["):
            out += sorted(str(x) for x in Path("/").glob(r.lstrip("/")))
        else:
            out.append(r)
    return out


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _done(stage_dir: Path, key: str) -> dict | None:
    marker = stage_dir / "_DONE.json"
    if marker.exists():
        data = json.loads(marker.read_text())
        if data.get("key") == key:
            return data["stats"]
    return None


def _mark(stage_dir: Path, key: str, stats: dict) -> dict:
    stage_dir.mkdir(parents=True, exist_ok=True)
    tmp = stage_dir / "_DONE.json.tmp"
    tmp.write_text(json.dumps({"key": key, "stats": stats}, indent=1, sort_keys=True, default=str))
    tmp.rename(stage_dir / "_DONE.json")
    return stats


def stage_key(ctx: BuildContext, stage: str) -> str:
    s = ctx.spec
    keys = {
        "vocabulary": (s.vocabulary.model_dump(), ctx.dumps, ctx.pageviews),
        "candidates": (s.crawl.model_dump(), ctx.warcs),
        "match": (s.vocabulary.case_sensitive,),
        "balance": (s.balancing.model_dump(),),
        "download": (s.download.model_dump(),),
        "manifest": (),
    }
    upstream = STAGES[: STAGES.index(stage)]
    return _key(stage, keys[stage], [_read_key(ctx.out / u) for u in upstream])


def _read_key(d: Path) -> str | None:
    m = d / "_DONE.json"
    return json.loads(m.read_text())["key"] if m.exists() else None


def run_stage(ctx: BuildContext, stage: str) -> tuple[dict, bool]:
    """Run one stage unless its marker says it is done; returns (stats, skipped)."""
    d = ctx.out / stage
    key = stage_key(ctx, stage)
    cached = _done(d, key)
    if cached is not None:
        ctx.log(f"{stage}: complete, skipped (delete {d} to redo)")
        return cached, True
    _claim(ctx, d, stage, key)
    stats = STAGE_FUNCS[stage](ctx, d)
    return _mark(d, key, stats), False


# outputs a stage writes outside its own folder
OUTSIDE_OUTPUTS = {"download": ["shards", "webdataset"], "manifest": ["manifest.json", "datacard.md", "tokenizer.json"]}


def _claim(ctx: BuildContext, d: Path, stage: str, key: str) -> None:
    """Partial outputs of an interrupted run with the same key are kept (the stage resumes from
    them); outputs made for other inputs (a changed spec or upstream stage) are removed first,
    so a rerun never mixes them with new ones."""
    started = d / "_STARTED"
    resumable = started.exists() and started.read_text() == key
    if not resumable:  # a stage folder removed by hand takes its outside outputs with it too
        if d.exists():
            ctx.log(f"{stage}: outputs in {d} were made for other inputs; removing them")
            shutil.rmtree(d)
        for name in OUTSIDE_OUTPUTS.get(stage, []):
            p = ctx.out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    d.mkdir(parents=True, exist_ok=True)
    started.write_text(key)


# ----------------------------------------------------------------------------- stages
def vocabulary(ctx: BuildContext, d: Path) -> dict:
    from tasks.vocabulary import build_vocabulary

    return build_vocabulary(ctx.spec.vocabulary, d, ctx.dumps, ctx.pageviews, ctx.spec.ray.address, ctx.log)


def _extract_job(kind: str, src, crawl_spec, out: str) -> dict:
    from tasks.candidates import extract_file

    return extract_file(kind, src, crawl_spec, Path(out))


def candidates(ctx: BuildContext, d: Path) -> dict:
    spec = ctx.spec.crawl
    d.mkdir(parents=True, exist_ok=True)
    jobs = [("warc", w, spec, str(d / f"w{i:05d}.parquet")) for i, w in enumerate(ctx.warcs)]
    jobs += [("table", t.model_copy(update={"path": ctx.input_path(t.path)}), spec, str(d / f"t{i:05d}.parquet"))
             for i, t in enumerate(spec.tables)]
    todo = [j for j in jobs if not Path(j[3]).with_suffix(".stats.json").exists()]
    ctx.log(f"candidates: {len(jobs) - len(todo)} inputs cached, {len(todo)} to extract")
    run_parallel(_extract_job, todo, spec.workers, ctx.spec.ray.address, "candidates")
    totals: Counter = Counter()
    for j in jobs:
        totals.update(json.loads(Path(j[3]).with_suffix(".stats.json").read_text()))
    # cross-file dedup happens in matching's uid set; report the per-file totals here
    return dict(sorted(totals.items()))


def _match_job(auto_bytes: bytes, in_path: str, out_path: str, case_sensitive: bool) -> dict:
    from tasks.matching import match_shard

    return match_shard(auto_bytes, Path(in_path), Path(out_path), case_sensitive)


def match(ctx: BuildContext, d: Path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.matching import automaton_from_vocabulary, entry_counts

    d.mkdir(parents=True, exist_ok=True)
    files = sorted((ctx.out / "candidates").glob("*.parquet"))
    # cross-file dedup: the first file holding a uid keeps it
    dedup_dir = d / "dedup"
    dedup_dir.mkdir(exist_ok=True)
    seen: set[str] = set()
    dups = 0
    for f in files:
        t = pq.read_table(f)
        mask = []
        for u in t["uid"].to_pylist():
            mask.append(u not in seen)
            seen.add(u)
        dups += mask.count(False)
        pq.write_table(t.filter(pa.array(mask)), dedup_dir / f.name)
    auto = automaton_from_vocabulary(ctx.out / "vocabulary" / "queries.parquet")
    blob = pickle.dumps(auto)
    jobs = [(blob, str(dedup_dir / f.name), str(d / f.name), ctx.spec.vocabulary.case_sensitive) for f in files]
    results = run_parallel(_match_job, jobs, ctx.spec.matching.workers, ctx.spec.ray.address, "match")
    shutil.rmtree(dedup_dir)
    table = entry_counts(d, ctx.out / "vocabulary" / "queries.parquet", d / "entry_counts.parquet")
    totals: Counter = Counter()
    for r in results:
        totals.update(r)
    totals["drop:duplicate_across_files"] = dups
    totals["entries_matched"] = int(sum(1 for c in table["count"].to_pylist() if c))
    return dict(totals)


def balance(ctx: BuildContext, d: Path) -> dict:
    from tasks.balancing import balance_shards, unbalanced_sample
    from tasks.datacard import balance_report

    spec = ctx.spec.balancing
    match_files = sorted(p for p in (ctx.out / "match").glob("*.parquet") if p.name != "entry_counts.parquet")
    if d.exists():
        shutil.rmtree(d)
    stats = balance_shards(match_files, ctx.out / "match" / "entry_counts.parquet", d, spec.max_pairs_per_query, spec.seed)
    stats["unbalanced_baseline"] = unbalanced_sample(match_files, stats["kept"], spec.seed, d / "unbalanced_uids.parquet")
    stats.update(balance_report(ctx.out, d, spec.max_pairs_per_query))
    return stats


def download(ctx: BuildContext, d: Path) -> dict:
    from tasks.download import export_webdataset, prepare_input, run_img2dataset, write_training_shards

    spec = ctx.spec.download
    balanced = sorted((ctx.out / "balance").glob("0*.parquet"))
    if not (d / "input" / "urls.parquet").exists():
        prep = prepare_input(balanced, ctx.out / "balance" / "unbalanced_uids.parquet", d, spec)
        (d / "prepare.json").write_text(json.dumps(prep))
    prep = json.loads((d / "prepare.json").read_text())
    ctx.log(f"download: {prep['to_fetch']} URLs to fetch, {prep['refused']} refused {prep['refused_by_reason']}")
    run_img2dataset(d, spec)
    stats = write_training_shards(d, ctx.out / "shards", spec)
    stats["refused_by_reason"] = prep["refused_by_reason"]
    stats["to_fetch"] = prep["to_fetch"]
    if spec.webdataset:
        stats["webdataset_samples"] = export_webdataset(ctx.out / "shards", ctx.out / "webdataset", spec.encode_format)
    return stats


def manifest(ctx: BuildContext, d: Path) -> dict:
    from tasks.datacard import write_datacard, write_manifest
    from training.tokenizer import train_bpe

    shards = sorted((ctx.out / "shards").glob("*.parquet"))
    tok_path = ctx.out / "tokenizer.json"
    if not tok_path.exists():
        train_bpe(shards, tok_path, vocab_size=ctx.spec.tokenizer_vocab_size)
    m = write_manifest(ctx, shards)
    write_datacard(ctx, m)
    return {"shards": len(m["shards"]), "rows": m["totals"]["rows"]}


STAGE_FUNCS = {"vocabulary": vocabulary, "candidates": candidates, "match": match, "balance": balance,
               "download": download, "manifest": manifest}
