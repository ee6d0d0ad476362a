"""The build-wit stages, declared for the stage engine (tasks/engine.py); no Prefect here.

    vocabulary -> candidates -> match -> balance -> download -> manifest

Each stage is a plain function `fn(run: StageRun) -> Stats` plus a declaration of what it reads
and what keys it. The engine decides whether it runs, resumes or is skipped; the function only
does the work, reading other stages' folders through `run.input(name)`.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tasks import engine
from tasks.engine import Stage, StageRun, Stats, mark_unit, unit_stats
from tasks.parallel import FileCountProgress, run_parallel
from tasks.specs import BuildSpec, SpecError, resolve_path


@dataclass
class VocabularyInputs:
    """One language's vocabulary inputs, resolved: dump parts (byte ranges of multistream dumps)
    and pageview files."""
    dumps: list[str] = field(default_factory=list)
    pageviews: list[str] = field(default_factory=list)
    index: dict[str, str] = field(default_factory=dict)  # multistream part -> index, resolved by name


@dataclass
class BuildContext:
    spec: BuildSpec
    out: Path
    world: Path | None = None
    vocab: dict[str, VocabularyInputs] = field(default_factory=dict)  # language -> its inputs
    warcs: list[str] = field(default_factory=list)
    inputs: list[dict] = field(default_factory=list)  # every input file (url, size, checksum): the manifest's
    log: Callable[[str], None] = print
    dns_lookup: Callable | None = None  # tests inject a fake resolver (tasks/download/guard.py)

    @property
    def dumps(self) -> list[str]:
        """Every language's dump parts."""
        return [d for v in self.vocab.values() for d in v.dumps]

    @property
    def pageviews(self) -> list[str]:
        return [f for v in self.vocab.values() for f in v.pageviews]

    @contextlib.contextmanager
    def serving_world(self) -> Iterator[None]:
        """While the download runs, make sure this build's sample world is served on its port:
        use the server `openwit up` started if it serves this world, else serve it from a thread.
        A port held by anything else is an error (the build would fetch from it)."""
        if self.world is None:
            yield
            return
        from tasks.world.server import serve_in_thread, serves

        w = self.spec.world
        state = serves(self.world / "www", w.host, w.port)
        if state == "other":
            raise SpecError(f"port {w.port} on {w.host} is taken by a server that is not this build's sample world; "
                            "stop it or set OPENWIT_WORLD_PORT to a free port")
        if state == "ours":
            yield
            return
        srv, _t = serve_in_thread(self.world / "www", w.host, w.port)
        self.log(f"download: serving the sample world on http://{w.host}:{w.port} for this build")
        try:
            yield
        finally:
            srv.shutdown()
            srv.server_close()

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
    from tasks.candidates import warc_list

    named: set[str] = set()
    for lang, vspec in spec.vocabulary_specs().items():
        if vspec.wordnet.enabled:
            from tasks.wordnet import WordNetMissing, check

            try:
                check(resolve_path(vspec.wordnet.path), lang)
            except WordNetMissing as e:
                raise SpecError(f"vocabulary.wordnet: {e}") from None
        vi = ctx.vocab[lang] = VocabularyInputs(_expand(vspec.wikipedia.dumps, ctx), _expand(vspec.pageviews.files, ctx))
        named |= _resolve_named_vocabulary(ctx, vspec, vi)
    ctx.warcs = _expand(warc_list(spec.crawl), ctx)
    _resolve_named_crawl(ctx)
    missing = [p for p in ctx.dumps + ctx.pageviews + ctx.warcs + [ctx.input_path(t.path) for t in spec.crawl.tables]
               if "://" not in p and not Path(p).exists() and p not in named]
    if missing:
        raise SpecError(f"input file not found: {missing[0]}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
    from tasks.candidates import check_table_columns

    for i, t in enumerate(spec.crawl.tables):
        check_table_columns(t.model_copy(update={"path": ctx.input_path(t.path)}), f"crawl.tables[{i}]")
    for lang, vspec in spec.vocabulary_specs().items():
        ctx.vocab[lang].dumps = _split_multistream(ctx, vspec, ctx.vocab[lang])
    return ctx


def _resolve_named_vocabulary(ctx: BuildContext, vspec, vi: VocabularyInputs) -> set[str]:
    """A language's inputs named instead of listed (tasks/inputs.py) join its listed ones; every
    file goes into `ctx.inputs` for the manifest. Returns the pageview hours resolved by name (a
    missing hour is counted when read, not refused here)."""
    from tasks import inputs

    wp, pv = vspec.wikipedia, vspec.pageviews
    named: set[str] = set()
    resolved: set[str] = set()
    if wp.wiki or wp.dump_date:
        if not (wp.wiki and wp.dump_date):
            raise SpecError("vocabulary.wikipedia: `wiki` and `dump_date` go together (e.g. enwiki and 20240601)")
        r = inputs.wikipedia_dump(wp.wiki, wp.dump_date, _base(wp.dumps_base_url))
        vi.dumps += r.files
        vi.index.update(r.index)
        ctx.inputs += r.inputs
        resolved.update(i["url"] for i in r.inputs)
        ctx.log(f"vocabulary: {wp.wiki} {wp.dump_date} resolves to {len(r.files)} multistream parts, {len(r.index)} with an index")
    days = inputs.pageview_days(pv.days, pv.date_range, pv.dates, pv.seed)
    if days:
        r = inputs.pageview_files(days, _base(pv.base_url))
        vi.pageviews += r.files
        ctx.inputs += r.inputs
        named.update(r.files)
        ctx.log(f"vocabulary: pageviews of {len(days)} days ({days[0]} .. {days[-1]}), {len(r.files)} hourly files")
    listed = [("wikipedia", p) for p in vi.dumps if p not in resolved] + [("pageviews", p) for p in vi.pageviews if p not in named]
    ctx.inputs += [_listed_input(s, p, vspec.language) for s, p in listed]
    return named


def _resolve_named_crawl(ctx: BuildContext) -> None:
    from tasks import inputs

    cr = ctx.spec.crawl
    resolved: set[str] = set()
    if cr.crawl_id:
        r = inputs.common_crawl(cr.crawl_id, _base(cr.cc_base_url), cr.crawl_files, cr.max_warc_files)
        ctx.warcs += r.files
        ctx.inputs += r.inputs
        resolved.update(i["url"] for i in r.inputs)
        ctx.log(f"candidates: {cr.crawl_id} resolves to {len(r.files)} {cr.crawl_files.upper()} files")
    ctx.inputs += [_listed_input("crawl", p) for p in ctx.warcs if p not in resolved]


def _listed_input(source: str, p: str, language: str | None = None) -> dict:
    size = {"size": Path(p).stat().st_size} if "://" not in p and Path(p).exists() else {}
    return {"source": source, "url": p, **({"language": language} if language and language != "en" else {}), **size}


def _base(base: str) -> str:
    """A base URL, or a local folder resolved like any spec path."""
    return base if "://" in base else str(resolve_path(base))


def _split_multistream(ctx: BuildContext, vspec, vi: VocabularyInputs) -> list[str]:
    """Dumps with a multistream index become byte ranges of `streams_per_part` streams each."""
    from tasks.wikitext import multistream_ranges

    wp = vspec.wikipedia
    index = {ctx.input_path(d): ctx.input_path(i) for d, i in wp.multistream_index.items()}
    index.update(vi.index)  # resolved by name
    for d, i in index.items():
        if d not in vi.dumps:
            raise SpecError(f"vocabulary.wikipedia.multistream_index: {d} is not one of the dumps")
        if "://" not in i and not Path(i).exists():
            raise SpecError(f"input file not found: {i}")
    out = []
    for d in vi.dumps:
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


# ----------------------------------------------------------------------------- stages
def vocabulary(run: StageRun) -> Stats:
    """Each language's vocabulary (a multilingual build: one folder per language, then merged)."""
    from tasks.vocabulary import build_vocabulary, merge_languages

    ctx = run.ctx
    specs = ctx.spec.vocabulary_specs()
    built = {}
    for lang, vspec in specs.items():
        folder = run.dir if len(specs) == 1 else run.dir / lang
        vi = ctx.vocab[lang]
        built[lang] = build_vocabulary(vspec, folder, vi.dumps, vi.pageviews, ctx.spec.ray.address, ctx.log)
    v = built[next(iter(specs))] if len(specs) == 1 else merge_languages(run.dir, list(specs))
    keys = ("entries", "by_source", "total_tokens", "wordnet_synsets", "wordnet_names", "titles_kept", "top_unigrams", "top_bigrams")
    stats = Stats(rows_out=v["entries"], info={k: v[k] for k in keys + (("by_language",) if len(specs) > 1 else ())})
    for b in built.values():
        for part in b["parts"].values():
            stats.rows_in += sum(part.get(k, 0) for k in ("articles", "skipped_redirect", "skipped_other_namespace"))
            stats.drop("redirect_page", part.get("skipped_redirect", 0))
            stats.drop("other_namespace", part.get("skipped_other_namespace", 0))
            stats.drop("malformed_dump", 1 if part.get("malformed_dump") else 0)
            stats.drop("api_error", part.get("api_errors", 0))
            stats.drop("api_missing", part.get("api_missing", 0))
        pv = b["pageviews"]
        stats.drop("malformed_pageview_line", pv.get("malformed_lines", 0))
        stats.drop("namespace_title", pv.get("skipped_namespace_titles", 0))
        stats.drop("missing_pageview_file", pv.get("missing_files", 0))
        stats.drop("title_not_in_dump", pv.get("popular_not_in_dump", 0))
    stats.dropped = +stats.dropped  # reasons that did not occur are not listed
    return stats


def _extract_job(kind: str, src, crawl_spec, out: str) -> Stats:
    from tasks.candidates import extract_file

    return extract_file(kind, src, crawl_spec, Path(out))


def candidates(run: StageRun) -> Stats:
    ctx, spec = run.ctx, run.ctx.spec.crawl
    jobs = [("warc", w, spec, str(run.dir / f"w{i:05d}.parquet")) for i, w in enumerate(ctx.warcs)]
    jobs += [("table", t.model_copy(update={"path": ctx.input_path(t.path)}), spec, str(run.dir / f"t{i:05d}.parquet"))
             for i, t in enumerate(spec.tables)]
    todo = [j for j in jobs if unit_stats(run.dir, Path(j[3]).stem) is None]
    run.log(f"candidates: {len(jobs) - len(todo)} inputs cached, {len(todo)} to extract")
    run_parallel(_extract_job, todo, spec.workers, ctx.spec.ray.address, "candidates: inputs", run.log)
    total = Stats()
    for j in jobs:
        total.add(unit_stats(run.dir, Path(j[3]).stem))
    return total  # cross-file dedup happens in the match stage


def _match_job(automata_path: str, in_path: str, out_path: str, case_sensitive: bool, losers_dir: str, index: int) -> Stats:
    from tasks.dedup import losers_of
    from tasks.matching import load_automata, match_shard

    return match_shard(load_automata(automata_path), Path(in_path), Path(out_path), case_sensitive,
                       skip_rows=losers_of(Path(losers_dir), index))


def match(run: StageRun) -> Stats:
    from tasks.dedup import FILES_PER_SPLIT, bucket_keys, bucket_losers, n_buckets, split_losers
    from tasks.matching import automata_from_vocabulary, entry_counts

    files = sorted(run.input("candidates").glob("*.parquet"))
    queries = run.input("vocabulary") / "queries.parquet"
    workers, ray = run.ctx.spec.matching.workers, run.ctx.spec.ray.address
    # cross-file dedup (the first file holding a uid keeps it), hash-partitioned: tasks/dedup.py
    dedup = run.dir / "dedup"
    buckets = n_buckets(files)
    key_files = [str(dedup / "keys" / f.name) for f in files]
    by_lang: Counter[str] = Counter()
    for langs in run_parallel(bucket_keys, [(str(f), i, buckets, k) for i, (f, k) in enumerate(zip(files, key_files))],
                              workers, ray, "match: dedup keys", run.log):
        by_lang.update(langs)
    (dedup / "losers").mkdir(parents=True, exist_ok=True)
    run_parallel(bucket_losers, [(key_files, b, str(dedup / "losers" / f"{b:05d}.parquet")) for b in range(buckets)],
                 workers, ray, "match: dedup buckets", run.log)
    run_parallel(split_losers, [(str(dedup / "losers"), a, min(a + FILES_PER_SPLIT, len(files)), str(dedup / "by_file"))
                                for a in range(0, len(files), FILES_PER_SPLIT)], workers, ray, "match: dedup by file", run.log)
    automata_path = run.dir / "automata.pkl"  # pickled once; each worker process loads it once
    with open(automata_path, "wb") as fh:
        pickle.dump(automata_from_vocabulary(queries), fh)  # one automaton per language
    case_sensitive = next(iter(run.ctx.spec.vocabulary_specs().values())).case_sensitive
    jobs = [(str(automata_path), str(f), str(run.dir / f.name), case_sensitive, str(dedup / "by_file"), i) for i, f in enumerate(files)]
    results = run_parallel(_match_job, jobs, workers, ray, "match: shards", run.log)
    shutil.rmtree(dedup)
    automata_path.unlink()
    table = entry_counts(run.dir, queries, run.dir / "entry_counts.parquet")
    stats = Stats()
    for r in results:
        stats.add(r)
    stats.info["entries_matched"] = int(sum(1 for c in table["count"].to_pylist() if c))
    stats.info["candidates_by_language"] = dict(sorted(by_lang.items(), key=lambda kv: -kv[1]))
    return stats


def match_files(match_dir: Path) -> list[Path]:
    return sorted(p for p in match_dir.glob("*.parquet") if p.name != "entry_counts.parquet")


def balance(run: StageRun) -> Stats:
    import pyarrow.parquet as pq

    from tasks.balancing import balance_shards, language_thresholds, unbalanced_sample
    from tasks.datacard import balance_report

    spec = run.ctx.spec.balancing
    files = match_files(run.input("match"))
    counts_path = run.input("match") / "entry_counts.parquet"
    t_by_language = language_thresholds(pq.read_table(counts_path), spec)
    if len(t_by_language) > 1:
        run.log("balance: t per language " + ", ".join(f"{k} {v:,}" for k, v in t_by_language.items()))
    ray = run.ctx.spec.ray.address
    b = balance_shards(files, counts_path, run.dir, t_by_language, spec.seed, spec.workers, ray, run.log)
    b["unbalanced_baseline"] = unbalanced_sample(files, b["kept"], spec.seed, run.dir / "unbalanced.json", spec.workers, ray, run.log)
    b.update(balance_report(counts_path, run.dir, t_by_language))
    stats = Stats(rows_in=b["pool"], rows_out=b["kept"], info=b)
    stats.drop("balanced_out", b["pool"] - b["kept"])
    return stats


def _select_rows(run: StageRun, spec) -> list[Path]:
    """download/select/NNNNN.parquet: each matched shard's balanced and baseline pairs (in parallel)."""
    from tasks.download.driver import select_shard

    bal_dir = run.input("balance")
    baseline = json.loads((bal_dir / "unbalanced.json").read_text())
    files = match_files(run.input("match"))
    out = [run.dir / "select" / f"{i:05d}.parquet" for i in range(len(files))]
    jobs = [(str(f), str(bal_dir / f"{i:05d}.parquet"), baseline, str(o), spec.allow_networks) for i, (f, o) in enumerate(zip(files, out))]
    got = run_parallel(select_shard, jobs, spec.processes, run.ctx.spec.ray.address, "download: selecting rows", run.log)
    lost = [(j[0], g) for j, g in zip(jobs, got) if g["balanced"] != g["balanced_file"]]
    if lost:
        raise RuntimeError(f"{lost[0][0]}: its balanced shard names {lost[0][1]['balanced_file']} pairs but {lost[0][1]['balanced']} "
                           "are in the matched shard; rerun the balance stage (delete its folder)")
    if sum(g["unbalanced"] for g in got) != baseline["n"]:
        raise RuntimeError(f"the unbalanced baseline names {baseline['n']} pairs but {sum(g['unbalanced'] for g in got)} were "
                           "found in the matched shards; rerun the balance stage (delete its folder)")
    return out


def download(run: StageRun) -> Stats:
    from tasks.download.driver import (
        export_webdataset,
        prepare_input,
        run_img2dataset,
        write_training_shards,
    )
    from tasks.download.guard import AddressPolicy, ConnectionGuard, Resolver, worker_env

    ctx, spec = run.ctx, run.ctx.spec.download
    policy = AddressPolicy(spec.allow_networks)
    prep = unit_stats(run.dir, "input")
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
    at_connection = {k.split(":", 1)[1]: v for k, v in fetched.counts.items() if k.startswith("refused_at_connection:")}
    stats = Stats(rows_in=prep.rows_in, rows_out=fetched.rows_out, dropped=prep.dropped + fetched.dropped)
    stats.info = {"to_fetch": prep.rows_out, "refused_before_fetch": dict(prep.dropped), "fetch_failures": dict(fetched.dropped),
                  "refused_at_connection": at_connection, **prep.info}
    if spec.webdataset:
        stats.info["webdataset_samples"] = export_webdataset(ctx.out / "shards", ctx.out / "webdataset", spec.encode_format)
    return stats


def manifest(run: StageRun) -> Stats:
    from tasks.datacard import write_datacard, write_manifest
    from training.tokenizer import train_bpe

    ctx = run.ctx
    shards = sorted((ctx.out / "shards").glob("*.parquet"))
    train_bpe(shards, ctx.out / "tokenizer.json", vocab_size=ctx.spec.tokenizer_vocab_size,
              max_captions=ctx.spec.tokenizer_sample_captions)
    m = write_manifest(ctx, shards, ctx.spec.download.processes, ctx.spec.ray.address, run.log)
    write_datacard(ctx, m)
    return Stats(rows_in=m["totals"]["rows"], rows_out=m["totals"]["rows"], info={"shards": len(m["shards"])})


def _vocabulary_config(ctx: BuildContext):
    specs = ctx.spec.vocabulary_specs()
    if len(specs) == 1:
        return (next(iter(specs.values())).model_dump(), ctx.dumps, ctx.pageviews)
    return {lang: (v.model_dump(), ctx.vocab[lang].dumps, ctx.vocab[lang].pageviews) for lang, v in specs.items()}


STAGE_LIST = [
    Stage("vocabulary", vocabulary, config=lambda ctx: _vocabulary_config(ctx)),
    Stage("candidates", candidates, config=lambda ctx: (ctx.spec.crawl.model_dump(), ctx.warcs)),
    Stage("match", match, reads=("vocabulary", "candidates"),
          config=lambda ctx: (ctx.spec.matching.model_dump(),)),  # the vocabulary's config covers its languages and case
    Stage("balance", balance, reads=("match",), config=lambda ctx: ctx.spec.balancing.model_dump(exclude={"workers"})),
    Stage("download", download, reads=("match", "balance"), owns=("shards", "webdataset"),
          config=lambda ctx: ctx.spec.download.model_dump(exclude={"processes", "threads", "dns_concurrency"})),
    Stage("manifest", manifest, reads=("vocabulary", "candidates", "match", "balance", "download"),
          owns=("manifest.json", "datacard.md", "tokenizer.json"),
          config=lambda ctx: (ctx.spec.tokenizer_vocab_size, ctx.spec.tokenizer_sample_captions)),
]
STAGES = [s.name for s in STAGE_LIST]
BY_NAME = {s.name: s for s in STAGE_LIST}


class EmptyStageError(RuntimeError):
    """A stage that had input and produced nothing: the message says why and what to change."""


LOSS_WARNING = 0.5  # one reason taking more than half of a stage's input is said out loud


def run_stage(ctx: BuildContext, stage: str) -> tuple[Stats, bool]:
    """Run one stage unless the engine finds it done for the same inputs; (stats, skipped).

    A stage whose input was not empty and whose output is must not let the build go on quietly
    (a tokenizer trained on nothing, an empty manifest): it raises EmptyStageError naming the
    main reason. One reason that takes most of the input is logged as a warning."""
    from tasks.reasons import explain

    stats, skipped = engine.run(ctx, BY_NAME[stage])
    if stats.dropped and stats.rows_in:
        reason, n = stats.dropped.most_common(1)[0]
        if stats.rows_out == 0:
            raise EmptyStageError(f"{stage}: all {stats.rows_in:,} input rows were dropped, most ({n:,}) as {reason}: "
                                  f"{explain(reason)}. Nothing was written for the next stages.")
        if n > LOSS_WARNING * stats.rows_in:
            ctx.log(f"WARNING {stage}: {n:,} of {stats.rows_in:,} rows ({n / stats.rows_in:.0%}) were dropped as {reason}: {explain(reason)}")
    return stats, skipped
