"""Stage 1 of build-wit: the WIT query vocabulary (MetaCLIP's four sources).

    openwit build data_specs/sample.yaml --stages vocabulary

Output under `<build>/vocabulary/`:
  queries.parquet  entry_id, query, sources, unigram_count, bigram_count, pmi, npmi, title_views,
                   language (sorted by language, then query; entry_id is the row number)
  stats.json       counts per source and the skip reasons of every input
  <language>/      a multilingual build: each language's own queries.parquet, stats.json and parts/,
                   merged into the two files above (merge_languages)
  parts/<name>/    per-dump-part counts, renamed into place when complete and then marked
                   (`parts/_units/<name>.json`, tasks/engine.py), so a rerun after a crash redoes
                   only unfinished parts

Bigram selection: raw PMI = log2(c(xy) N / (c(x) c(y))) over-ranks rare pairs (a pair seen once
whose words are seen once has the maximum PMI). We keep bigrams with c(xy) >= min_bigram_count
and PMI >= min_pmi, rank them by normalised PMI (PMI / -log2 p(xy), in [-1, 1], which discounts
rare pairs), and keep at most max_bigrams.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from tasks.engine import Stats, atomic, mark_unit, unit_stats, write_json
from tasks.parallel import run_parallel
from tasks.specs import VocabularySpec
from tasks.vocabulary.counting import SpillCounter, merge_partition
from tasks.vocabulary.pageviews import popular_titles
from tasks.vocabulary.text_rules import NO_SPACE_LANGUAGES, normalise_entry
from tasks.vocabulary.wikitext import DumpError, iter_article_texts
from tasks.vocabulary.wordnet import head_names

QUERY_SCHEMA = pa.schema([
    ("entry_id", pa.int64()), ("query", pa.string()), ("sources", pa.list_(pa.string())),
    ("unigram_count", pa.int64()), ("bigram_count", pa.int64()), ("pmi", pa.float64()),
    ("npmi", pa.float64()), ("title_views", pa.int64()), ("language", pa.string()),
])


class PartStats(Stats):
    """One dump part (or the API's articles): pages read and skipped, tokens counted."""

    source: str = ""
    tokens: int = 0
    error: str | None = None  # why a malformed dump stopped parsing (pages before it were counted)


class LanguageVocabulary(BaseModel):
    entries: int = 0
    by_source: dict[str, int] = {}
    total_tokens: int = 0
    titles_kept: int = 0


class VocabularyStats(Stats):
    """The vocabulary stage: pages read (rows_in) -> entries (rows_out), with every skip's reason."""

    entries: int = 0
    by_source: dict[str, int] = Field(default_factory=dict)
    total_tokens: int = 0
    wordnet_synsets: int = 0
    wordnet_names: int = 0
    titles_kept: int = 0
    top_unigrams: list[tuple[int, str]] = Field(default_factory=list)
    top_bigrams: list[tuple[str, int, float]] = Field(default_factory=list)
    by_language: dict[str, LanguageVocabulary] = Field(default_factory=dict)  # a multilingual build's languages


@dataclass
class PartResult:
    name: str
    folder: Path
    stats: PartStats


def _part_name(i: int, source: str) -> str:
    stem = source.rstrip("/").rsplit("/", 1)[-1]
    return f"{i:04d}-{''.join(c if c.isalnum() or c in '.-' else '_' for c in stem)[:80]}"


def count_texts(texts: Iterable[tuple[str, str]], folder: Path, partitions: int, spill_items: int,
                case_sensitive: bool, stats: PartStats, language: str = "en") -> PartResult:
    """Count one part's texts into `folder`, crash-safe: written under a temporary name, renamed
    into place when complete, then the part is marked done."""
    with atomic(folder) as tmp:
        counter = SpillCounter(tmp, partitions, spill_items, case_sensitive, language)
        titles = []
        try:
            for title, text in texts:
                counter.add_text(text)
                titles.append(title)
        except DumpError as e:  # a malformed dump: keep what was read, report why it stopped
            stats.error = str(e)
            stats.drop("malformed_dump")
        counter.spill()
        stats.tokens = counter.total_tokens
        pq.write_table(pa.table({"title": titles}), tmp / "titles.parquet")
        if folder.exists():
            shutil.rmtree(folder)
    mark_unit(folder.parent, folder.name, stats)
    return PartResult(folder.name, folder, stats)


def count_dump_part(source: str, folder: str, partitions: int, spill_items: int, case_sensitive: bool,
                    language: str = "en") -> PartResult:
    """One dump file (or multistream part): a unit of parallel work, locally or on Ray."""
    stats = PartStats(source=source)
    return count_texts(iter_article_texts(source, stats), Path(folder), partitions, spill_items, case_sensitive, stats, language)


def select_bigrams(part_folders: list[Path], spec: VocabularySpec, unigram_counts: dict[str, int],
                   total_tokens: int) -> list[tuple[str, int, float, float]]:
    wp = spec.wikipedia
    scored = []
    n = max(total_tokens, 1)
    for p in range(wp.partitions):
        table = merge_partition(part_folders, "b", p, wp.min_bigram_count)
        for key, c in zip(table["key"].to_pylist(), table["count"].to_pylist()):
            a, b = key.split(" ", 1)
            ca, cb = unigram_counts.get(a), unigram_counts.get(b)
            if not ca or not cb:
                continue
            pmi = math.log2(c * n / (ca * cb))
            if pmi < wp.min_pmi:
                continue
            p_xy = c / n
            npmi = pmi / -math.log2(p_xy) if p_xy < 1 else 1.0
            scored.append((key, c, pmi, npmi))
        if wp.max_bigrams and len(scored) > 2 * wp.max_bigrams:  # hold at most ~2x the cap, not every passing bigram
            scored.sort(key=lambda r: (-r[3], r[0]))
            del scored[wp.max_bigrams:]
    scored.sort(key=lambda r: (-r[3], r[0]))
    return scored[: wp.max_bigrams] if wp.max_bigrams else scored


def count_parts(spec: VocabularySpec, parts_dir: Path, dumps: list[str], ray_address: str | None,
                progress: Callable[[str], None]) -> list[PartResult]:
    """Every dump part counted (cached parts reused), and the API's articles if the spec asks."""
    wp = spec.wikipedia
    parts_dir.mkdir(parents=True, exist_ok=True)
    jobs, done = [], []
    for i, src in enumerate(dumps):
        folder = parts_dir / _part_name(i, src)
        if (cached := unit_stats(parts_dir, folder.name, PartStats)) is not None:
            done.append(PartResult(folder.name, folder, cached))
        else:
            jobs.append((src, str(folder), wp.partitions, wp.spill_items, spec.case_sensitive, spec.language))
    progress(f"vocabulary: {len(done)} dump parts cached, {len(jobs)} to count")
    results = done + run_parallel(count_dump_part, jobs, wp.workers, ray_address, "vocabulary: dump parts", progress)
    if wp.api is not None:
        folder = parts_dir / "api"
        if (cached := unit_stats(parts_dir, "api", PartStats)) is None:
            from tasks.vocabulary.wiki_api import fetch_articles

            st = PartStats(source="wikipedia-api")
            cached = count_texts(fetch_articles(wp.api, st), folder, wp.partitions, wp.spill_items, spec.case_sensitive, st,
                                 spec.language).stats
        results.append(PartResult("api", folder, cached))
    return results


def kept_unigrams(spec: VocabularySpec, unigram_counts: dict[str, int]) -> list[tuple[int, str]]:
    """(count, word) of the unigrams kept, most frequent first: >= min_unigram_count, then MetaCLIP 2's caps."""
    wp = spec.wikipedia
    kept = sorted(((c, w) for w, c in unigram_counts.items() if c >= wp.min_unigram_count), key=lambda x: (-x[0], x[1]))
    if wp.unigram_top_share is not None:  # MetaCLIP 2: the most frequent 10% of a language's distinct words
        kept = kept[: int(len(unigram_counts) * wp.unigram_top_share)]
    if wp.max_unigrams is not None:
        kept = kept[: wp.max_unigrams]
    return kept


def popular_article_titles(spec: VocabularySpec, out_dir: Path, results: list[PartResult], pageview_files: list[str],
                           stats: Stats, ray_address: str | None, progress: Callable[[str], None]) -> dict[str, int]:
    """{title: views} of the titles kept: popular in the pageviews, capped (MetaCLIP 2), and
    articles of the dumps read (when dumps were read)."""
    wp, pv = spec.wikipedia, spec.pageviews
    popular = popular_titles(pageview_files, pv.projects, pv.min_title_views, out_dir / "pageviews", wp.partitions, wp.workers,
                             ray_address, stats, progress)
    if pv.title_top_share is not None or pv.max_titles is not None:  # MetaCLIP 2's cap
        order = sorted(popular, key=lambda t: (-popular[t], t))
        n = len(order) if pv.title_top_share is None else int(len(order) * pv.title_top_share)
        popular = {t: popular[t] for t in order[: min(n, pv.max_titles or n)]}
    folders = [r.folder for r in results if (r.folder / "titles.parquet").exists()]
    if folders and any(r.name != "api" for r in results):  # only titles that are articles in the dump
        in_dump = set()
        for f in folders:
            in_dump.update(t for t in pq.read_table(f / "titles.parquet")["title"].to_pylist() if t in popular)
        stats.drop("title_not_in_dump", len(popular) - len(in_dump))
        popular = {t: v for t, v in popular.items() if t in in_dump}
    return popular


class _Entries:
    """The vocabulary being assembled: normalised query -> its sources and numbers."""

    def __init__(self, spec: VocabularySpec):
        self.spec, self.rows = spec, {}

    def __call__(self, q: str) -> dict:
        q = normalise_entry(q, self.spec.case_sensitive, self.spec.language)
        if not q:
            return {"sources": set()}  # punctuation only, or too long: dropped
        return self.rows.setdefault(q, {"sources": set(), "unigram_count": None, "bigram_count": None, "pmi": None,
                                        "npmi": None, "title_views": None})

    def table(self) -> pa.Table:
        queries = sorted(self.rows)
        return pa.table({
            "entry_id": list(range(len(queries))), "query": queries,
            "sources": [sorted(self.rows[q]["sources"]) for q in queries],
            **{k: [self.rows[q][k] for q in queries] for k in ("unigram_count", "bigram_count", "pmi", "npmi", "title_views")},
            "language": [self.spec.language] * len(queries),
        }, schema=QUERY_SCHEMA)

    def by_source(self) -> dict[str, int]:
        return {s: sum(1 for e in self.rows.values() if s in e["sources"])
                for s in ("wordnet", "wikipedia_unigram", "wikipedia_bigram", "wikipedia_title")}


def build_vocabulary(spec: VocabularySpec, out_dir: Path, dumps: list[str], pageview_files: list[str],
                     ray_address: str | None = None, progress: Callable[[str], None] = print) -> VocabularyStats:
    """Build `out_dir/queries.parquet` and `stats.json` (with every part's stats); returns the stats."""
    wp = spec.wikipedia
    results = count_parts(spec, out_dir / "parts", dumps, ray_address, progress)
    part_folders = [r.folder for r in results]
    stats = VocabularyStats(total_tokens=sum(r.stats.tokens for r in results))
    for r in results:
        stats.add(r.stats)
    # unigrams: keep every count PMI needs (>= the smaller threshold), report those >= min_unigram_count
    unigram_counts: dict[str, int] = {}
    for p in range(wp.partitions):
        t = merge_partition(part_folders, "u", p, min(wp.min_unigram_count, wp.min_bigram_count))
        unigram_counts.update(zip(t["key"].to_pylist(), t["count"].to_pylist()))
    bigrams = select_bigrams(part_folders, spec, unigram_counts, stats.total_tokens)
    kept = kept_unigrams(spec, unigram_counts)
    if wp.bigram_share_of_unigrams is not None:  # MetaCLIP 2: bigrams up to 40% of the unigrams
        bigrams = bigrams[: int(len(kept) * wp.bigram_share_of_unigrams)]

    entry = _Entries(spec)
    for c, w in kept:
        e = entry(w)
        e["sources"].add("wikipedia_unigram")
        e["unigram_count"] = c
    for key, c, pmi, npmi in bigrams:
        e = entry(key.replace(" ", "") if spec.language in NO_SPACE_LANGUAGES else key)  # MetaCLIP 2: joined
        e["sources"].add("wikipedia_bigram")
        e.update(bigram_count=c, pmi=round(pmi, 4), npmi=round(npmi, 4))
    if pageview_files:
        popular = popular_article_titles(spec, out_dir, results, pageview_files, stats, ray_address, progress)
        for t, v in popular.items():
            e = entry(t)
            e["sources"].add("wikipedia_title")
            e["title_views"] = (e["title_views"] or 0) + v
        stats.titles_kept = len(popular)
    if spec.wordnet.enabled:
        names, stats.wordnet_synsets = head_names(spec.wordnet.path, spec.language)
        for name in names:
            entry(name)["sources"].add("wordnet")
        stats.wordnet_names = len(names)
        progress(f"vocabulary: WordNet {stats.wordnet_synsets} synsets, {len(names)} unique head names"
                 + (" (WordNet 3.0: about 86.6k)" if spec.language == "en" else f" ({spec.language}, Open Multilingual Wordnet)"))

    table = entry.table()
    with atomic(out_dir / "queries.parquet") as tmp:
        pq.write_table(table, tmp)
    stats.entries = stats.rows_out = table.num_rows
    stats.by_source = entry.by_source()
    stats.top_unigrams = sorted(((c, w) for w, c in unigram_counts.items()), reverse=True)[:20]
    stats.top_bigrams = [(b[0], b[1], round(b[2], 4)) for b in bigrams[:20]]
    write_json(out_dir / "stats.json", {**stats.to_dict(), "parts": {r.name: r.stats.to_dict() for r in results}})
    return stats


def write_empty_vocabulary(out_dir: Path) -> VocabularyStats:
    """A build with `curation: none` matches nothing: an empty queries.parquet (the stages after
    read it as they always do) and its stats."""
    with atomic(out_dir / "queries.parquet") as tmp:
        pq.write_table(QUERY_SCHEMA.empty_table(), tmp)
    stats = VocabularyStats()
    write_json(out_dir / "stats.json", stats.to_dict())
    return stats


def merge_languages(out_dir: Path, built: dict[str, VocabularyStats]) -> VocabularyStats:
    """A multilingual vocabulary: every language's `out_dir/<language>/queries.parquet` in one
    table (languages in the given order, entry ids renumbered so they stay row numbers) and the
    stats of each language side by side. The same string in two languages is two entries: each
    caption is matched only against its own language's."""
    tables = []
    offset = 0
    for lang in built:
        t = pq.read_table(out_dir / lang / "queries.parquet")
        tables.append(t.set_column(0, "entry_id", pa.array(range(offset, offset + t.num_rows), pa.int64())))
        offset += t.num_rows
    with atomic(out_dir / "queries.parquet") as tmp:
        pq.write_table(pa.concat_tables(tables), tmp)
    stats = VocabularyStats()
    for lang, st in built.items():
        stats.add(st)
        for k in ("entries", "total_tokens", "wordnet_synsets", "wordnet_names", "titles_kept"):
            setattr(stats, k, getattr(stats, k) + getattr(st, k))
        for k, v in st.by_source.items():
            stats.by_source[k] = stats.by_source.get(k, 0) + v
        stats.by_language[lang] = LanguageVocabulary(entries=st.entries, by_source=st.by_source, total_tokens=st.total_tokens,
                                                     titles_kept=st.titles_kept)
    stats.rows_out = stats.entries
    first = next(iter(built.values()))
    stats.top_unigrams, stats.top_bigrams = first.top_unigrams, first.top_bigrams
    write_json(out_dir / "stats.json", stats.to_dict())
    return stats
