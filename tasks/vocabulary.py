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

import json
import math
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.counting import SpillCounter, merge_partition
from tasks.engine import Stats, mark_unit, unit_stats
from tasks.pageviews import popular_titles
from tasks.parallel import run_parallel
from tasks.specs import VocabularySpec
from tasks.text_rules import NO_SPACE_LANGUAGES, normalise_entry
from tasks.wikitext import DumpError, iter_article_texts
from tasks.wordnet import head_names

QUERY_SCHEMA = pa.schema([
    ("entry_id", pa.int64()), ("query", pa.string()), ("sources", pa.list_(pa.string())),
    ("unigram_count", pa.int64()), ("bigram_count", pa.int64()), ("pmi", pa.float64()),
    ("npmi", pa.float64()), ("title_views", pa.int64()), ("language", pa.string()),
])


@dataclass
class PartResult:
    name: str
    folder: Path
    stats: dict


def _part_name(i: int, source: str) -> str:
    stem = source.rstrip("/").rsplit("/", 1)[-1]
    return f"{i:04d}-{''.join(c if c.isalnum() or c in '.-' else '_' for c in stem)[:80]}"


def count_texts(texts: Iterable[tuple[str, str]], folder: Path, partitions: int, spill_items: int,
                case_sensitive: bool, stats: dict, language: str = "en") -> PartResult:
    """Count one part's texts into `folder`, crash-safe: the folder is renamed into place when
    complete, then the part is marked done."""
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    counter = SpillCounter(tmp, partitions, spill_items, case_sensitive, language)
    titles = []
    try:
        for title, text in texts:
            counter.add_text(text)
            titles.append(title)
    except DumpError as e:  # a malformed dump: keep what was read, report why it stopped
        stats["malformed_dump"] = str(e)
    counter.spill()
    stats["tokens"] = counter.total_tokens
    pq.write_table(pa.table({"title": titles}), tmp / "titles.parquet")
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    mark_unit(folder.parent, folder.name, Stats(info=stats))
    return PartResult(folder.name, folder, stats)


def count_dump_part(source: str, folder: str, partitions: int, spill_items: int, case_sensitive: bool,
                    language: str = "en") -> PartResult:
    """One dump file (or multistream part): a unit of parallel work, locally or on Ray."""
    stats: dict = {"source": source}
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


def build_vocabulary(spec: VocabularySpec, out_dir: Path, dumps: list[str], pageview_files: list[str],
                     ray_address: str | None = None, progress: Callable[[str], None] = print) -> dict:
    """Build `out_dir/queries.parquet` and `stats.json`; returns the stats."""
    wp = spec.wikipedia
    parts_dir = out_dir / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    jobs, done = [], []
    for i, src in enumerate(dumps):
        folder = parts_dir / _part_name(i, src)
        if (cached := unit_stats(parts_dir, folder.name)) is not None:
            done.append(PartResult(folder.name, folder, cached.info))
        else:
            jobs.append((src, str(folder), wp.partitions, wp.spill_items, spec.case_sensitive, spec.language))
    progress(f"vocabulary: {len(done)} dump parts cached, {len(jobs)} to count")
    results = done + run_parallel(count_dump_part, jobs, wp.workers, ray_address, "vocabulary: dump parts", progress)
    if wp.api is not None:
        folder = parts_dir / "api"
        if (cached := unit_stats(parts_dir, "api")) is None:
            from tasks.wiki_api import fetch_articles

            st: dict = {"source": "wikipedia-api"}
            cached = Stats(info=count_texts(fetch_articles(wp.api, st), folder, wp.partitions, wp.spill_items,
                                            spec.case_sensitive, st, spec.language).stats)
        results.append(PartResult("api", folder, cached.info))
    part_folders = [r.folder for r in results]
    total_tokens = sum(r.stats.get("tokens", 0) for r in results)

    # Unigrams: keep every count PMI needs (>= the smaller threshold), report those >= min_unigram_count.
    keep_min = min(wp.min_unigram_count, wp.min_bigram_count)
    unigram_counts: dict[str, int] = {}
    for p in range(wp.partitions):
        t = merge_partition(part_folders, "u", p, keep_min)
        unigram_counts.update(zip(t["key"].to_pylist(), t["count"].to_pylist()))
    bigrams = select_bigrams(part_folders, spec, unigram_counts, total_tokens)

    entries: dict[str, dict] = {}

    def entry(q: str) -> dict:
        q = normalise_entry(q, spec.case_sensitive, spec.language)
        return entries.setdefault(q, {"sources": set(), "unigram_count": None, "bigram_count": None,
                                      "pmi": None, "npmi": None, "title_views": None}) if q else {"sources": set()}

    kept = sorted(((c, w) for w, c in unigram_counts.items() if c >= wp.min_unigram_count), key=lambda x: (-x[0], x[1]))
    if wp.unigram_top_share is not None:  # MetaCLIP 2: the most frequent 10% of a language's distinct words
        kept = kept[: int(len(unigram_counts) * wp.unigram_top_share)]
    if wp.max_unigrams is not None:
        kept = kept[: wp.max_unigrams]
    if wp.bigram_share_of_unigrams is not None:  # MetaCLIP 2: bigrams up to 40% of the unigrams
        bigrams = bigrams[: int(len(kept) * wp.bigram_share_of_unigrams)]
    for c, w in kept:
        e = entry(w)
        e["sources"].add("wikipedia_unigram")
        e["unigram_count"] = c
    for key, c, pmi, npmi in bigrams:
        e = entry(key.replace(" ", "") if spec.language in NO_SPACE_LANGUAGES else key)  # MetaCLIP 2: joined
        e["sources"].add("wikipedia_bigram")
        e.update(bigram_count=c, pmi=round(pmi, 4), npmi=round(npmi, 4))

    pv_stats: dict = {}
    n_titles = 0
    if pageview_files:
        popular = popular_titles(pageview_files, spec.pageviews.projects, spec.pageviews.min_title_views,
                                 out_dir / "pageviews", wp.partitions, wp.workers, ray_address, pv_stats, progress)
        if spec.pageviews.title_top_share is not None or spec.pageviews.max_titles is not None:  # MetaCLIP 2's cap
            order = sorted(popular, key=lambda t: (-popular[t], t))
            n = len(order) if spec.pageviews.title_top_share is None else int(len(order) * spec.pageviews.title_top_share)
            order = order[: min(n, spec.pageviews.max_titles or n)]
            popular = {t: popular[t] for t in order}
        if part_folders and dumps:  # only titles that are articles in the dump
            in_dump = set()
            for f in part_folders:
                if (f / "titles.parquet").exists():
                    in_dump.update(t for t in pq.read_table(f / "titles.parquet")["title"].to_pylist() if t in popular)
            pv_stats["popular_not_in_dump"] = len(popular) - len(in_dump)
            popular = {t: v for t, v in popular.items() if t in in_dump}
        for t, v in popular.items():
            e = entry(t)
            e["sources"].add("wikipedia_title")
            e["title_views"] = (e["title_views"] or 0) + v
            n_titles += 1

    wn_count, wn_synsets = 0, 0
    if spec.wordnet.enabled:
        names, wn_synsets = head_names(spec.wordnet.path, spec.language)
        for name in names:
            entry(name)["sources"].add("wordnet")
        wn_count = len(names)
        progress(f"vocabulary: WordNet {wn_synsets} synsets, {wn_count} unique head names"
                 + (" (WordNet 3.0: about 86.6k)" if spec.language == "en" else f" ({spec.language}, Open Multilingual Wordnet)"))

    queries = sorted(entries)
    table = pa.table({
        "entry_id": list(range(len(queries))),
        "query": queries,
        "sources": [sorted(entries[q]["sources"]) for q in queries],
        **{k: [entries[q][k] for q in queries] for k in ("unigram_count", "bigram_count", "pmi", "npmi", "title_views")},
        "language": [spec.language] * len(queries),
    }, schema=QUERY_SCHEMA)
    tmp = out_dir / "queries.parquet.tmp"
    pq.write_table(table, tmp)
    tmp.rename(out_dir / "queries.parquet")
    by_source = {s: sum(1 for q in queries if s in entries[q]["sources"])
                 for s in ("wordnet", "wikipedia_unigram", "wikipedia_bigram", "wikipedia_title")}
    stats = {
        "entries": len(queries), "by_source": by_source, "total_tokens": total_tokens,
        "wordnet_synsets": wn_synsets, "wordnet_names": wn_count, "titles_kept": n_titles,
        "parts": {r.name: r.stats for r in results}, "pageviews": pv_stats,
        "top_unigrams": sorted(((c, w) for w, c in unigram_counts.items()), reverse=True)[:20],
        "top_bigrams": [b[:3] for b in bigrams[:20]],
    }
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True))
    return stats


def merge_languages(out_dir: Path, languages: list[str]) -> dict:
    """A multilingual vocabulary: every language's `out_dir/<language>/queries.parquet` in one
    table (languages in the given order, entry ids renumbered so they stay row numbers) and the
    stats of each language side by side. The same string in two languages is two entries: each
    caption is matched only against its own language's."""
    tables, per_lang = [], {}
    offset = 0
    for lang in languages:
        t = pq.read_table(out_dir / lang / "queries.parquet")
        tables.append(t.set_column(0, "entry_id", pa.array(range(offset, offset + t.num_rows), pa.int64())))
        offset += t.num_rows
        per_lang[lang] = json.loads((out_dir / lang / "stats.json").read_text())
    table = pa.concat_tables(tables)
    tmp = out_dir / "queries.parquet.tmp"
    pq.write_table(table, tmp)
    tmp.rename(out_dir / "queries.parquet")
    by_source: dict[str, int] = {}
    for st in per_lang.values():
        for k, v in st["by_source"].items():
            by_source[k] = by_source.get(k, 0) + v
    sums = {k: sum(st[k] for st in per_lang.values()) for k in ("entries", "total_tokens", "wordnet_synsets", "wordnet_names", "titles_kept")}
    stats = {**sums, "by_source": by_source, "by_language": {lang: {k: st[k] for k in ("entries", "by_source", "total_tokens", "titles_kept")}
                                                            for lang, st in per_lang.items()},
             "parts": {f"{lang}/{name}": part for lang, st in per_lang.items() for name, part in st["parts"].items()},
             "pageviews": {lang: st["pageviews"] for lang, st in per_lang.items()},
             "top_unigrams": {lang: st["top_unigrams"] for lang, st in per_lang.items()},
             "top_bigrams": {lang: st["top_bigrams"] for lang, st in per_lang.items()}}
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True, ensure_ascii=False))
    return stats
