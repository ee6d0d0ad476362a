"""The build-wit stages, declared for the stage engine (tasks/engine.py); no Prefect here.

    vocabulary -> candidates -> match -> balance -> download -> manifest

Each stage is a plain function `fn(run: StageRun) -> Stats` (a typed subclass where it reports
more) plus a declaration of what it reads and what keys it. The engine decides whether it runs,
resumes or is skipped; the function only does the work, reading other stages' folders through
`run.input(name)`. The inputs come resolved in the context (tasks/context.py).
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections import Counter
from pathlib import Path

from tasks import engine
from tasks.context import BuildContext
from tasks.curate.balancing import BalanceStats
from tasks.curate.matching import MatchStats
from tasks.download.driver import DownloadStats
from tasks.engine import Stage, StageRun, Stats, atomic, mark_unit, unit_stats
from tasks.parallel import FileCountProgress, run_parallel
from tasks.vocabulary.build import VocabularyStats


# ----------------------------------------------------------------------------- stages
def vocabulary(run: StageRun) -> VocabularyStats:
    """Each language's vocabulary (a multilingual build: one folder per language, then merged)."""
    from tasks.vocabulary.build import build_vocabulary, merge_languages

    ctx = run.ctx
    if ctx.spec.curation == "none":  # nothing is matched: an empty vocabulary, so the stages after read what they always do
        from tasks.vocabulary.build import write_empty_vocabulary

        return write_empty_vocabulary(run.dir)
    specs = ctx.spec.vocabulary_specs()
    built = {}
    for lang, vspec in specs.items():
        folder = run.dir if len(specs) == 1 else run.dir / lang
        vi = ctx.vocab[lang]
        built[lang] = build_vocabulary(vspec, folder, vi.dumps, vi.pageviews, ctx.spec.ray.address, ctx.log)
    return next(iter(built.values())) if len(specs) == 1 else merge_languages(run.dir, built)


def _extract_job(kind: str, src, crawl_spec, out: str) -> Stats:
    from tasks.crawl.extract import extract_file

    return extract_file(kind, src, crawl_spec, Path(out))


def candidates(run: StageRun) -> Stats:
    ctx, spec = run.ctx, run.ctx.spec.crawl
    jobs = [("warc", w, spec, str(run.dir / f"w{i:05d}.parquet")) for i, w in enumerate(ctx.warcs)]
    jobs += [("table", t.model_copy(update={"path": ctx.input_path(t.path)}), spec, str(run.dir / f"t{i:05d}.parquet"))
             for i, t in enumerate(spec.tables)]
    jobs += [("local", t.model_copy(update={"path": ctx.input_path(t.path)}), spec, str(run.dir / f"local-{i:05d}.parquet"))
             for i, t in enumerate(spec.local)]
    todo = [j for j in jobs if unit_stats(run.dir, Path(j[3]).stem) is None]
    run.log(f"candidates: {len(jobs) - len(todo)} inputs cached, {len(todo)} to extract")
    run_parallel(_extract_job, todo, spec.workers, ctx.spec.ray.address, "candidates: inputs", run.log)
    total = Stats()
    for j in jobs:
        total.add(unit_stats(run.dir, Path(j[3]).stem))
    return total  # cross-file dedup happens in the match stage


def _match_job(automata_path: str, in_path: str, out_path: str, case_sensitive: bool, losers_dir: str, index: int) -> Stats:
    from tasks.curate.dedup import losers_of
    from tasks.curate.matching import load_automata, match_shard

    rows, reasons = losers_of(Path(losers_dir), index)
    automata = load_automata(automata_path) if automata_path else None  # None: curation none keeps every candidate
    return match_shard(automata, Path(in_path), Path(out_path), case_sensitive, skip_rows=rows, skip_reasons=reasons)


def match(run: StageRun) -> MatchStats:
    from tasks.curate.dedup import (
        FILES_PER_SPLIT,
        bucket_keys,
        bucket_losers,
        n_buckets,
        split_losers,
        worst_urls,
    )
    from tasks.curate.matching import automata_from_vocabulary, entry_counts

    files = sorted(run.input("candidates").glob("*.parquet"))
    queries = run.input("vocabulary") / "queries.parquet"
    workers, ray = run.ctx.spec.matching.workers, run.ctx.spec.ray.address
    # cross-file dedup (the first file holding a uid keeps it) and URLs under too many captions,
    # hash-partitioned by URL: tasks/curate/dedup.py
    dedup = run.dir / "dedup"
    buckets = n_buckets(files)
    key_files = [str(dedup / "keys" / f.name) for f in files]
    by_lang: Counter[str] = Counter()
    for langs in run_parallel(bucket_keys, [(str(f), i, buckets, k) for i, (f, k) in enumerate(zip(files, key_files))],
                              workers, ray, "match: dedup keys", run.log):
        by_lang.update(langs)
    (dedup / "losers").mkdir(parents=True, exist_ok=True)
    limit = run.ctx.spec.crawl.max_captions_per_url
    found = run_parallel(bucket_losers, [(key_files, b, str(dedup / "losers" / f"{b:05d}.parquet"), limit) for b in range(buckets)],
                         workers, ray, "match: dedup buckets", run.log)
    run_parallel(split_losers, [(str(dedup / "losers"), a, min(a + FILES_PER_SPLIT, len(files)), str(dedup / "by_file"))
                                for a in range(0, len(files), FILES_PER_SPLIT)], workers, ray, "match: dedup by file", run.log)
    automata_path = run.dir / "automata.pkl"  # pickled once; each worker process loads it once
    curate = run.ctx.spec.curation != "none"
    if curate:
        with atomic(automata_path) as tmp, open(tmp, "wb") as fh:
            pickle.dump(automata_from_vocabulary(queries), fh)  # one automaton per language
    case_sensitive = next(iter(run.ctx.spec.vocabulary_specs().values())).case_sensitive
    jobs = [(str(automata_path) if curate else "", str(f), str(run.dir / f.name), case_sensitive, str(dedup / "by_file"), i)
            for i, f in enumerate(files)]
    results = run_parallel(_match_job, jobs, workers, ray, "match: shards", run.log)
    shutil.rmtree(dedup)
    automata_path.unlink(missing_ok=True)
    table = entry_counts(run.dir, queries, run.dir / "entry_counts.parquet")
    stats = MatchStats(entries_matched=int(sum(1 for c in table["count"].to_pylist() if c)),
                       candidates_by_language=dict(sorted(by_lang.items(), key=lambda kv: -kv[1])), worst_urls=worst_urls(found))
    for r in results:
        stats.add(r)
    return stats


def match_files(match_dir: Path) -> list[Path]:
    return sorted(p for p in match_dir.glob("*.parquet") if p.name != "entry_counts.parquet")


def balance(run: StageRun) -> BalanceStats:
    import pyarrow.parquet as pq

    from tasks.curate.balance_report import balance_report
    from tasks.curate.balancing import balance_shards, language_thresholds, unbalanced_sample

    spec = run.ctx.spec.balancing
    files = match_files(run.input("match"))
    counts_path = run.input("match") / "entry_counts.parquet"
    t_by_language = language_thresholds(pq.read_table(counts_path), spec)
    if len(t_by_language) > 1:
        run.log("balance: t per language " + ", ".join(f"{k} {v:,}" for k, v in t_by_language.items()))
    ray = run.ctx.spec.ray.address
    keep_all = run.ctx.spec.curation == "none"  # every deduplicated candidate is kept, with P(keep) 1
    stats = balance_shards(files, counts_path, run.dir, t_by_language, spec.seed, spec.workers, ray, run.log, keep_all=keep_all)
    stats.unbalanced_baseline = unbalanced_sample(files, stats.rows_out, spec.seed, run.dir / "unbalanced.json", spec.workers, ray, run.log)
    return stats if keep_all else balance_report(counts_path, run.dir, t_by_language, stats)  # nothing was drawn to report


def _select_rows(run: StageRun, spec) -> list[Path]:
    """download/select/NNNNN.parquet: each matched shard's balanced and baseline pairs (in parallel)."""
    from tasks.download.driver import select_shard

    bal_dir = run.input("balance")
    baseline = json.loads((bal_dir / "unbalanced.json").read_text())
    files = match_files(run.input("match"))
    out = [run.dir / "select" / f"{i:05d}.parquet" for i in range(len(files))]
    local = tuple(run.ctx.input_path(t.path) for t in run.ctx.spec.crawl.local)  # rows of these may name file:// URLs
    jobs = [(str(f), str(bal_dir / f"{i:05d}.parquet"), baseline, str(o), spec.allow_networks, local) for i, (f, o) in enumerate(zip(files, out))]
    got = run_parallel(select_shard, jobs, spec.processes, run.ctx.spec.ray.address, "download: selecting rows", run.log)
    lost = [(j[0], g) for j, g in zip(jobs, got) if g["balanced"] != g["balanced_file"]]
    if lost:
        raise RuntimeError(f"{lost[0][0]}: its balanced shard names {lost[0][1]['balanced_file']} pairs but {lost[0][1]['balanced']} "
                           "are in the matched shard; rerun the balance stage (delete its folder)")
    if sum(g["unbalanced"] for g in got) != baseline["n"]:
        raise RuntimeError(f"the unbalanced baseline names {baseline['n']} pairs but {sum(g['unbalanced'] for g in got)} were "
                           "found in the matched shards; rerun the balance stage (delete its folder)")
    return out


def download(run: StageRun) -> DownloadStats:
    from tasks.download.driver import export_webdataset, prepare_input, run_img2dataset, write_training_shards
    from tasks.download.guard import AddressPolicy, ConnectionGuard, Resolver, worker_env

    ctx, spec = run.ctx, run.ctx.spec.download
    policy = AddressPolicy(spec.allow_networks)
    prep = unit_stats(run.dir, "input", DownloadStats)
    if prep is None:
        selected = _select_rows(run, spec)
        resolver = Resolver(spec.dns_timeout, spec.dns_concurrency, lookup=ctx.dns_lookup)
        prep = mark_unit(run.dir, "input", prepare_input(selected, run.dir, policy, resolver, run.log))
    run.log(f"download: {prep.rows_out:,} URLs to fetch, {sum(prep.dropped.values()):,} refused {dict(prep.dropped)}")
    fetched = Stats()
    if prep.rows_out:
        pinned = run.dir / "pinned_hosts.json"
        shards = -(-prep.rows_out // spec.number_sample_per_shard)
        with ctx.serving_world(), FileCountProgress(run.dir / "raw", "*_stats.json", shards, "download: shards", run.log):
            run_img2dataset(run.dir, spec, worker_env(spec.allow_networks, pinned), ctx.spec.ray.address)
            guard = ConnectionGuard(policy, json.loads(pinned.read_text()))
            fetched = write_training_shards(run.dir, ctx.out / "shards", guard)
    stats = DownloadStats(rows_in=prep.rows_in, rows_out=fetched.rows_out, dropped=prep.dropped + fetched.dropped,
                          to_fetch=prep.rows_out, refused_before_fetch=dict(prep.dropped), fetch_failures=dict(fetched.dropped),
                          refused_at_connection={k.split(":", 1)[1]: v for k, v in fetched.counts.items()
                                                 if k.startswith("refused_at_connection:")},
                          hosts=prep.hosts, dns_lookups=prep.dns_lookups, dns_max_in_flight=prep.dns_max_in_flight)
    if spec.webdataset:
        stats.webdataset_samples = export_webdataset(ctx.out / "shards", ctx.out / "webdataset", spec.encode_format)
    return stats


class ManifestStats(Stats):
    shards: int = 0


def manifest(run: StageRun) -> ManifestStats:
    from tasks.manifest.bpe import train_bpe
    from tasks.manifest.datacard import write_datacard
    from tasks.manifest.manifest import write_manifest

    ctx = run.ctx
    shards = sorted((ctx.out / "shards").glob("*.parquet"))
    train_bpe(shards, ctx.out / "tokenizer.json", vocab_size=ctx.spec.tokenizer_vocab_size, max_captions=ctx.spec.tokenizer_sample_captions)
    stages = {name: stage_stats(ctx.out, name) for name in ("vocabulary", "candidates", "match", "balance", "download")}
    m = write_manifest(ctx, shards, stages["download"], ctx.spec.download.processes, ctx.spec.ray.address, run.log)
    write_datacard(ctx.out, ctx.spec, m, stages)
    return ManifestStats(rows_in=m["totals"]["rows"], rows_out=m["totals"]["rows"], shards=len(m["shards"]))


def _vocabulary_config(ctx: BuildContext):
    if ctx.spec.curation == "none":
        return "none"
    specs = ctx.spec.vocabulary_specs()
    if len(specs) == 1:
        return (next(iter(specs.values())).model_dump(), ctx.dumps, ctx.pageviews)
    return {lang: (v.model_dump(), ctx.vocab[lang].dumps, ctx.vocab[lang].pageviews) for lang, v in specs.items()}


STAGE_LIST = [
    Stage("vocabulary", vocabulary, config=lambda ctx: _vocabulary_config(ctx), stats=VocabularyStats),
    Stage("candidates", candidates, config=lambda ctx: (ctx.spec.crawl.model_dump(exclude={"max_captions_per_url"}), ctx.warcs),
          version=6),  # 2: a quarter of the words another language's (#31); 3: names, domain suffixes; 4: acronyms, file names; 5: codes; 6: country domains
    Stage("match", match, reads=("vocabulary", "candidates"), stats=MatchStats,
          # the vocabulary's config covers its languages and case
          config=lambda ctx: (ctx.spec.matching.model_dump(exclude={"workers"}), ctx.spec.crawl.max_captions_per_url,
                              ctx.spec.curation)),
    Stage("balance", balance, reads=("match",), stats=BalanceStats,
          config=lambda ctx: (ctx.spec.balancing.model_dump(exclude={"workers"}), ctx.spec.curation)),
    Stage("download", download, reads=("match", "balance"), owns=("shards", "webdataset"), stats=DownloadStats,
          config=lambda ctx: ctx.spec.download.model_dump(exclude={"processes", "threads", "dns_concurrency"})),
    Stage("manifest", manifest, reads=("vocabulary", "candidates", "match", "balance", "download"),
          owns=("manifest.json", "datacard.md", "tokenizer.json"), stats=ManifestStats,
          config=lambda ctx: (ctx.spec.tokenizer_vocab_size, ctx.spec.tokenizer_sample_captions)),
]
STAGES = [s.name for s in STAGE_LIST]
BY_NAME = {s.name: s for s in STAGE_LIST}


def stage_stats(build: Path, name: str) -> Stats | None:
    """The typed stats of a finished stage of a build (None if it has not finished)."""
    return engine.stage_stats(build, BY_NAME[name])


class EmptyStageError(RuntimeError):
    """A stage that had input and produced nothing: the message says why and what to change."""


LOSS_WARNING = 0.5  # one reason taking more than half of a stage's input is said out loud


def run_stage(ctx: BuildContext, stage: str) -> tuple[Stats, bool]:
    """Run one stage unless the engine finds it done for the same inputs; (stats, skipped).

    A stage whose input was not empty and whose output is must not let the build go on quietly
    (a tokenizer trained on nothing, an empty manifest): it raises EmptyStageError naming the
    main reason and what to do. One reason that takes most of the input is logged as a warning."""
    from tasks.reasons import advice, explain

    stats, skipped = engine.run(ctx, BY_NAME[stage])
    if stats.dropped and stats.rows_in:
        reason, n = stats.dropped.most_common(1)[0]
        if stats.rows_out == 0:
            raise EmptyStageError(f"{stage}: all {stats.rows_in:,} input rows were dropped, most ({n:,}) as {reason}: "
                                  f"{explain(reason)}. Nothing was written for the next stages." + advice(reason))
        if n > LOSS_WARNING * stats.rows_in:
            ctx.log(f"WARNING {stage}: {n:,} of {stats.rows_in:,} rows ({n / stats.rows_in:.0%}) were dropped as {reason}: "
                    f"{explain(reason)}" + advice(reason))
    return stats, skipped
