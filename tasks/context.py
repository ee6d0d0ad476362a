"""The build's context: the spec with every input resolved, and the sample world on demand.

`make_context(spec)` turns a build spec into what the stages read: local paths and URLs of every
dump part (multistream byte ranges), pageview hour and WARC file, inputs named instead of listed
resolved through `tasks/inputs.py` (a dump by wiki and date, pageviews by days, a crawl by id),
local files checked, table columns checked. It fails before any work, with one line naming the
spec key. The sample world (tasks/world/) is imported and generated only when the spec has a
`world:` section.

`resolve_named=False` checks what can be checked offline (schema, local files, columns) and
leaves named inputs unresolved: `openwit validate` does that; `openwit validate --resolve`
and every build resolve them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

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
    flow_run_id: str | None = None  # the orchestrator's run that builds this (the manifest links it)
    resolved: dict[str, str] = field(default_factory=dict)  # names resolved to values (dump_date: latest -> 20261101)

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


def make_context(spec: BuildSpec, out_dir: Path | None = None, log: Callable[[str], None] = print,
                 resolve_named: bool = True) -> BuildContext:
    """Resolve inputs (generating the sample world if the spec has one) and check local files;
    without `resolve_named`, nothing is fetched (named inputs and remote lists stay unresolved)."""
    out = out_dir or resolve_path(spec.output_dir)
    ctx = BuildContext(spec, out, log=log)
    if spec.world is not None:
        from tasks.world.generate import ensure_world

        ctx.world = ensure_world(spec.world, log=log)
    from tasks.crawl.extract import warc_list

    named: set[str] = set()
    vocab_specs = spec.vocabulary_specs() if spec.curation != "none" else {}  # curation none builds no vocabulary
    for lang in spec.vocabulary_specs():
        ctx.vocab[lang] = VocabularyInputs()
    for lang, vspec in vocab_specs.items():
        if vspec.wordnet.enabled:
            from tasks.vocabulary.wordnet import WordNetMissing, check

            try:
                check(resolve_path(vspec.wordnet.path), lang)
            except WordNetMissing as e:
                raise SpecError(f"vocabulary.wordnet: {e}") from None
        vi = ctx.vocab[lang] = VocabularyInputs(_expand(vspec.wikipedia.dumps, ctx), _expand(vspec.pageviews.files, ctx))
        wp = vspec.wikipedia
        if bool(wp.wiki) != bool(wp.dump_date):
            raise SpecError("vocabulary.wikipedia: `wiki` and `dump_date` go together (e.g. enwiki and latest)")
        if resolve_named:
            named |= _resolve_named_vocabulary(ctx, vspec, vi)
    cr = spec.crawl
    if "en" in cr.languages and cr.english_rule == "lid_prob_words" and not (Path(cr.wordnet) / "index.noun").exists():
        raise SpecError(f"crawl.wordnet: {cr.wordnet} holds no WordNet index (english_rule lid_prob_words counts English words "
                        "with it); install Debian's wordnet-base (`make install` does), point crawl.wordnet at a WordNet 3.0 "
                        "folder, or set crawl.english_rule: lid_prob")
    remote_list = spec.crawl.warc_paths_file and "://" in spec.crawl.warc_paths_file
    ctx.warcs = _expand(warc_list(spec.crawl) if resolve_named or not remote_list else list(spec.crawl.warc), ctx)
    if resolve_named:
        _resolve_named_crawl(ctx)
    missing = [p for p in ctx.dumps + ctx.pageviews + ctx.warcs + [ctx.input_path(t.path) for t in spec.crawl.tables]
               if "://" not in p and not Path(p).exists() and p not in named]
    if missing:
        raise SpecError(f"input file not found: {missing[0]}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
    from tasks.crawl.tables import check_table_columns

    for i, t in enumerate(spec.crawl.tables):
        check_table_columns(t.model_copy(update={"path": ctx.input_path(t.path)}), f"crawl.tables[{i}]")
    from tasks.crawl.local import check_local

    for i, t in enumerate(spec.crawl.local):
        check_local(t.model_copy(update={"path": ctx.input_path(t.path)}), f"crawl.local[{i}]")
    for lang, vspec in vocab_specs.items():
        ctx.vocab[lang].dumps = _split_multistream(ctx, vspec, ctx.vocab[lang], fetch=resolve_named)
    return ctx


def _resolve_named_vocabulary(ctx: BuildContext, vspec, vi: VocabularyInputs) -> set[str]:
    """A language's inputs named instead of listed (tasks/inputs.py) join its listed ones; every
    file goes into `ctx.inputs` for the manifest. Returns the pageview hours resolved by name (a
    missing hour is counted when read, not refused here)."""
    from tasks import inputs

    wp, pv = vspec.wikipedia, vspec.pageviews
    named: set[str] = set()
    resolved: set[str] = set()
    if wp.wiki:
        r = inputs.wikipedia_dump(wp.wiki, wp.dump_date, _base(wp.dumps_base_url))
        vi.dumps += r.files
        vi.index.update(r.index)
        ctx.inputs += r.inputs
        ctx.resolved.update(r.resolved)
        resolved.update(i["url"] for i in r.inputs)
        ctx.log(f"vocabulary: {wp.wiki} {r.resolved.get('dump_date', wp.dump_date)} resolves to {len(r.files)} multistream "
                f"parts, {len(r.index)} with an index")
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


def _split_multistream(ctx: BuildContext, vspec, vi: VocabularyInputs, fetch: bool = True) -> list[str]:
    """Dumps with a multistream index become byte ranges of `streams_per_part` streams each
    (without `fetch`, an index that is a URL is not read)."""
    from tasks.vocabulary.wikitext import multistream_ranges

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
        if d in index and (fetch or "://" not in index[d]):
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
