"""Popular Wikipedia titles from Wikimedia's hourly pageview files.

Each line is `domain_code page_title count_views total_response_size`
(https://dumps.wikimedia.org/other/pageviews/). We keep the given projects (`en` is desktop
English Wikipedia), drop titles containing `:` (other namespaces, as MetaCLIP does), turn `_`
into spaces, and sum views over all files given. Malformed lines and missing files are counted,
not fatal.

MetaCLIP reads 26 days x 24 hours = 624 files of a few million titles each, so `popular_titles`
counts each file in its own job (in parallel, locally or on Ray) and spills hash partitions of
its counts to disk like the Wikipedia counters (`tasks/counting.py`); the merge sums one
partition at a time. Memory: one file's distinct titles per worker, then one partition's.
"""

from __future__ import annotations

import shutil
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tasks.engine import Stats, atomic, mark_unit, unit_stats
from tasks.parallel import run_parallel
from tasks.vocabulary.counting import merge_partition, spill_counts
from tasks.vocabulary.wikitext import open_source


def title_views(files: list[str], projects: list[str], stats: Stats | None = None) -> Counter[str]:
    """Summed views per title over `files`, in memory (one file, or a few in tests)."""
    stats = stats if stats is not None else Stats()
    wanted = set(projects)
    views: Counter[str] = Counter()
    for path in files:
        try:
            fh = open_source(path)
        except FileNotFoundError:  # an hour the site does not have (they exist): counted, not fatal
            stats.drop("missing_pageview_file")
            continue
        with fh:
            for raw in fh:
                parts = raw.decode("utf-8", "replace").split(" ")
                if len(parts) != 4 or not parts[2].isdigit():
                    stats.drop("malformed_pageview_line")
                    continue
                if parts[0] not in wanted:
                    continue
                title = parts[1]
                if ":" in title or title in ("-", ""):
                    stats.drop("namespace_title")
                    continue
                views[title.replace("_", " ")] += int(parts[2])
        stats.counts["pageview_files"] += 1
    return views


def count_pageview_file(path: str, projects: list[str], folder: str, partitions: int) -> Stats:
    """One hourly file -> `folder/t<p>/spill-00000.parquet` per partition, crash-safe (written
    under a temporary name, renamed into place when complete, then marked done)."""
    out = Path(folder)
    stats = Stats()
    views = title_views([path], projects, stats)
    if stats.dropped["missing_pageview_file"]:  # not marked done: a rerun asks for the hour again
        return stats
    with atomic(out) as tmp:
        tmp.mkdir(parents=True)
        spill_counts(views, tmp, "t", partitions, 0)
        if out.exists():
            shutil.rmtree(out)
    return mark_unit(out.parent, out.name, stats)


def popular_titles(files: list[str], projects: list[str], min_views: int, work_dir: Path, partitions: int,
                   workers: int = 1, ray_address: str | None = None, stats: Stats | None = None,
                   log: Callable[[str], None] | None = None) -> dict[str, int]:
    """{title: views summed over `files`} for titles with at least `min_views`. Each file is a
    cached unit under `work_dir` (a rerun counts only the files not done)."""
    stats = stats if stats is not None else Stats()
    work_dir.mkdir(parents=True, exist_ok=True)
    # named by position and source, so a changed file list never reuses another file's counts
    folders = [work_dir / f"h{i:05d}-{zlib.crc32(f.encode()):08x}" for i, f in enumerate(files)]
    jobs, infos = [], []
    for f, d in zip(files, folders):
        if (done := unit_stats(work_dir, d.name)) is None:
            jobs.append((f, projects, str(d), partitions))
        else:
            infos.append(done)
    if log:
        log(f"vocabulary: {len(infos)} pageview files cached, {len(jobs)} to count")
    infos += run_parallel(count_pageview_file, jobs, workers, ray_address, "vocabulary: pageview files", log)
    for info in infos:
        stats.add(info)
    popular: dict[str, int] = {}
    for p in range(partitions):
        t = merge_partition(folders, "t", p, min_views)
        popular.update(zip(t["key"].to_pylist(), t["count"].to_pylist()))
    return popular
