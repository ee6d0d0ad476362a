"""Inputs named instead of listed: a Wikipedia dump by wiki and date, pageviews by days, a Common
Crawl by crawl id. Each resolves, against the public sites or a mirror with their layout (an
http(s) server, a `file://` URL or a local folder), into the list of files the stages read, and
into `inputs`: every file with its size and checksum where the source publishes them, written
into the build's manifest so a build can be reproduced exactly and its inputs cited.

Layouts (as on dumps.wikimedia.org and data.commoncrawl.org):
    <dumps>/<wiki>/<date>/dumpstatus.json                       the dump's jobs, files, sizes, sha1/md5
    <dumps>/other/pageviews/<Y>/<Y>-<M>/pageviews-<YMD>-<HH>0000.gz
    <cc>/crawl-data/<crawl id>/warc.paths.gz (or wat.paths.gz)  one path per line, relative to <cc>
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from dataclasses import dataclass, field

from tasks.specs import SpecError

MULTISTREAM_JOB = "articlesmultistreamdump"
_PART = re.compile(r"-pages-articles-multistream(\d*)\.xml(-p\d+p\d+)?\.bz2$")
_INDEX = re.compile(r"-pages-articles-multistream-index(\d*)\.txt(-p\d+p\d+)?\.bz2$")


def join(base: str, rel: str) -> str:
    """`rel` under `base`, a URL or a local folder."""
    rel = rel.lstrip("/")
    return f"{base.rstrip('/')}/{rel}"


def read_bytes(path: str) -> bytes:
    import fsspec

    with fsspec.open(path, "rb").open() as fh:
        return fh.read()


@dataclass
class Resolved:
    files: list[str] = field(default_factory=list)
    index: dict[str, str] = field(default_factory=dict)  # multistream part -> its index
    inputs: list[dict] = field(default_factory=list)  # for the manifest
    resolved: dict[str, str] = field(default_factory=dict)  # names resolved to values (dump_date: latest -> 20261101)


def dump_dates(wiki: str, base: str) -> list[str]:
    """The dump dates the site (or mirror) lists for `wiki`, newest first: the YYYYMMDD folders of
    `<base>/<wiki>/` (an HTML index on dumps.wikimedia.org, a folder on a local mirror)."""
    listing = join(base, f"{wiki}/")
    if "://" not in base or base.startswith("file://"):
        from pathlib import Path

        folder = Path(listing.removeprefix("file://"))
        names = [p.name for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
    else:
        try:
            names = re.findall(r'href="(\d{8})/?"', read_bytes(listing).decode("utf-8", "replace"))
        except FileNotFoundError:
            names = []
    dates = sorted({n for n in names if re.fullmatch(r"\d{8}", n)}, reverse=True)
    if not dates:
        raise SpecError(f"vocabulary.wikipedia: no dump dates listed at {listing}; check `wiki` and `dumps_base_url`")
    return dates


def latest_finished_dump(wiki: str, base: str, tries: int = 4) -> tuple[str, dict]:
    """(date, dumpstatus) of the newest dump whose multistream job is done (the newest one is
    often still running; older ones are deleted after a few months)."""
    seen = []
    for date in dump_dates(wiki, base)[:tries]:
        try:
            status = json.loads(read_bytes(join(base, f"{wiki}/{date}/dumpstatus.json")))
        except (FileNotFoundError, ValueError):
            seen.append(f"{date}: no dumpstatus.json")
            continue
        state = status.get("jobs", {}).get(MULTISTREAM_JOB, {}).get("status")
        if state == "done":
            return date, status
        seen.append(f"{date}: {state}")
    raise SpecError(f"vocabulary.wikipedia: no finished {wiki} dump among the newest ({'; '.join(seen)}); "
                    "give a dump_date, or retry when the running dump is done")


def wikipedia_dump(wiki: str, date: str, base: str) -> Resolved:
    """Every pages-articles multistream part of `wiki`'s dump of `date` (or of the latest finished
    dump, `date: latest`) and its index, from the dump's dumpstatus.json. A job whose status is not
    `done` is refused (a failed or unfinished dump would silently miss articles)."""
    status_url = join(base, f"{wiki}/{date}/dumpstatus.json")
    if date == "latest":
        date, status = latest_finished_dump(wiki, base)
        status_url = join(base, f"{wiki}/{date}/dumpstatus.json")
    else:
        try:
            status = json.loads(read_bytes(status_url))
        except FileNotFoundError as e:
            raise SpecError(f"vocabulary.wikipedia: no dump status at {status_url} ({e}); check `wiki`, `dump_date` "
                            "and `dumps_base_url` (dumps.wikimedia.org keeps the last few months: `dump_date: latest` "
                            "takes the newest finished one)") from e
        except ValueError as e:
            raise SpecError(f"vocabulary.wikipedia: {status_url} is not JSON ({e})") from e
    job = status.get("jobs", {}).get(MULTISTREAM_JOB)
    if job is None:
        raise SpecError(f"vocabulary.wikipedia: {status_url} has no {MULTISTREAM_JOB} job")
    if job.get("status") != "done":
        raise SpecError(f"vocabulary.wikipedia: {wiki} {date}: the {MULTISTREAM_JOB} job's status is "
                        f"{job.get('status')!r}, not 'done', so some parts are missing or incomplete; "
                        f"choose a dump_date whose status is done ({status_url})")
    parts, indexes = {}, {}
    for name, meta in sorted(job.get("files", {}).items()):
        url = join(base, meta.get("url") or f"{wiki}/{date}/{name}")
        entry = {"source": "wikipedia", "url": url, "size": meta.get("size"),
                 **{k: meta[k] for k in ("sha1", "md5") if meta.get(k)}}
        if m := _PART.search(name):
            parts[(m[1], m[2])] = entry
        elif m := _INDEX.search(name):
            indexes[(m[1], m[2])] = entry
    if not parts:
        raise SpecError(f"vocabulary.wikipedia: {status_url} lists no pages-articles multistream part")
    out = Resolved(resolved={"dump_date": date})
    for key in sorted(parts, key=lambda k: int(k[0] or 0)):
        out.files.append(parts[key]["url"])
        out.inputs.append(parts[key])
        if key in indexes:
            out.index[parts[key]["url"]] = indexes[key]["url"]
            out.inputs.append({**indexes[key], "source": "wikipedia_index"})
    return out


def pageview_days(days: int | None, date_range: list[str] | None, dates: list[str], seed: int) -> list[dt.date]:
    """The days to read: `dates` if given, else `days` distinct days drawn with `seed` from
    `date_range` (both ends included), in order."""
    if dates:
        return sorted(dt.date.fromisoformat(d) for d in dates)
    if not days or not date_range:
        return []
    lo, hi = (dt.date.fromisoformat(d) for d in date_range)
    span = (hi - lo).days + 1
    if span < days:
        raise SpecError(f"vocabulary.pageviews: {days} days asked for, the range {date_range} has {span}")
    picked = random.Random(seed).sample(range(span), days)
    return sorted(lo + dt.timedelta(d) for d in picked)


def pageview_files(days: list[dt.date], base: str) -> Resolved:
    """All 24 hourly files of each day (a missing hour is counted when read, not fatal)."""
    out = Resolved()
    for d in days:
        for h in range(24):
            url = join(base, f"other/pageviews/{d:%Y}/{d:%Y-%m}/pageviews-{d:%Y%m%d}-{h:02d}0000.gz")
            out.files.append(url)
            out.inputs.append({"source": "pageviews", "url": url})
    return out


def common_crawl(crawl_id: str, base: str, kind: str, max_files: int | None) -> Resolved:
    """The first `max_files` WARC (or WAT) files of a crawl, from its `<kind>.paths.gz`."""
    import gzip

    if not re.fullmatch(r"CC-MAIN-\d{4}-\d{2}", crawl_id):
        raise SpecError(f"crawl.crawl_id: {crawl_id!r} is not a Common Crawl id like CC-MAIN-2020-34")
    listing = join(base, f"crawl-data/{crawl_id}/{kind}.paths.gz")
    try:
        data = read_bytes(listing)
    except FileNotFoundError as e:
        raise SpecError(f"crawl: no listing at {listing}; check crawl.crawl_id and crawl.cc_base_url") from e
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    paths = [line.strip() for line in data.decode().splitlines() if line.strip()]
    paths = paths[:max_files] if max_files else paths
    out = Resolved(files=[join(base, p) for p in paths])
    out.inputs = [{"source": "common_crawl", "url": u, "listing": listing} for u in out.files]
    return out
