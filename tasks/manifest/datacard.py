"""The build's data card (datacard.md, for people): counts per stage, every drop reason with its
explanation, languages, balancing (the head's share before and after, the plot), the download."""

from __future__ import annotations

import re
from pathlib import Path

from tasks.curate.balancing import BalanceStats, LanguagePairs
from tasks.engine import Stats, atomic
from tasks.vocabulary.build import VocabularyStats


def _table(d: dict, head=("reason", "count")) -> str:
    rows = "\n".join(f"| {k} | {v:,} |" if isinstance(v, int) else f"| {k} | {v} |" for k, v in d.items())
    return f"| {head[0]} | {head[1]} |\n|---|---|\n{rows}\n"


def _reasons_table(stages: dict) -> str:
    from tasks.reasons import explain

    rows = [f"| {name} | {reason} | {n:,} | {explain(reason)} |" for name, st in stages.items()
            for reason, n in sorted(st.dropped.items(), key=lambda kv: -kv[1]) if n]
    return "| stage | reason | count | what it means |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"


def _languages_section(voc: VocabularyStats, bal: BalanceStats, candidates: dict[str, int]) -> str:
    """One row per language: vocabulary, candidates, matched pairs, its t and what balancing did to it."""
    if not bal.by_language:
        return ""
    rows = []
    for lang, r in bal.by_language.items():
        pl = bal.pairs_by_language.get(lang) or LanguagePairs()
        entries = voc.by_language[lang].entries if lang in voc.by_language else r.entries
        rows.append(f"| {lang} | {entries:,} | {r.entries_matched:,} | {candidates.get(lang, 0):,} | {r.matches:,} | "
                    f"{pl.pool:,} | {r.t:,} | {r.tail_share_at_t:.1%} | {r.head_share_before:.1%} -> "
                    f"{_pct(r.head_share_drawn)} / {r.head_share_after:.1%} | {pl.kept:,} |")
    rule = ("each language's own t: English keeps t, the others the t at which their tail holds the share of matches that "
            "English's tail holds at t (MetaCLIP 2)" if len(bal.by_language) > 1 else "one language, one t")
    return ("## Languages\n" + f"Balancing per language: {rule}.\n\n"
            "| language | entries | entries matched | candidates | matches | matched pairs | t | tail share at t | "
            "head share: pool -> draws / balanced matches | pairs kept |\n|---|---|---|---|---|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n")


def _language_id_lines(cand: Stats) -> str:
    """How language ID routed the alt texts: labels folded into the build's languages, English rescued."""
    folded = {k.split(":", 1)[1]: v for k, v in cand.counts.items() if k.startswith("lang_folded:")}
    rescued = cand.counts.get("lang_rescued_en", 0)
    vetoed = cand.counts.get("lang_not_rescued_en:foreign_word", 0)
    other_words = cand.counts.get("lang_not_en:other_language_words", 0)
    country = cand.counts.get("lang_not_rescued_en:country_domain", 0)
    if not any((folded, rescued, vetoed, other_words, country)):
        return ""
    lines = ["Language ID (tasks/crawl/langid.py) routed these alt texts to the build's languages:"]
    lines += [f"- {n:,} labelled `{pair.split('->')[0]}` kept as `{pair.split('->')[1]}` (a macrolanguage's member: "
              "Wu, Cantonese, ... are written in the same script and matched as Chinese)" for pair, n in sorted(folded.items())]
    if rescued:
        by = ", ".join(f"{cand.counts[k]:,} by {k.split(':')[1]}" for k in ("lang_rescued_en:prob", "lang_rescued_en:words")
                       if cand.counts.get(k))
        lines.append(f"- {rescued:,} kept as English although lid.176's top label was another language ({by}: English probability "
                     "at least `crawl.english_min_prob`, or at least `crawl.english_min_words` of the words English; short "
                     "titles, names, capitals)")
    if vetoed:
        lines.append(f"- {vetoed:,} not kept as English although they would have been: they hold a common word of the language "
                     "lid.176 named, at least 200 times rarer in English (`crawl.english_foreign_words`: \"un koala\", "
                     "\"Bilde fra ...\")")
    if country:
        lines.append(f"- {country:,} not kept as English although they would have been: the image or its page is on a "
                     "country-code domain of a country that speaks the language lid.176 named (`crawl.english_foreign_words`: "
                     "\"... Montierung\" from a .de shop)")
    if other_words:
        lines.append(f"- {other_words:,} not kept as English although lid.176 or the rescue read them so: a quarter of their "
                     "words are words of one of lid.176's top languages and not English (`crawl.english_foreign_words`: "
                     "product titles that mix an English brand with another language, \"Digitales Infrarot Thermometer ...\")")
    return "\n".join(lines) + "\n"


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _head_lines(bal: BalanceStats) -> str:
    """The head's share before and after balancing, in both of balancing's currencies."""
    return (f"- of the matches in the pool (before): **{_pct(bal.head_share_before)}**;\n"
            f"- of the draws that kept pairs (after; a kept pair counts once for each entry whose own draw accepted it, "
            f"so an entry expects min(count, t): the distribution balancing shapes): **{_pct(bal.head_share_drawn)}**;\n"
            f"- of the matches in the balanced set (after): {_pct(bal.head_share_after)}. This share falls less: a pair "
            "kept for a tail entry still matches every head entry its caption names (words such as \"of\" and \"the\" "
            "ride along, as they do in MetaCLIP's pool).\n")


def write_datacard(out: Path, spec, manifest: dict, stages: dict[str, Stats]) -> Path:
    """datacard.md from the finished stages' typed stats (vocabulary, candidates, match, balance, download)."""
    voc, cand, match, bal, dl = (stages[k] for k in ("vocabulary", "candidates", "match", "balance", "download"))
    top = "\n".join(f"| {q} | {b:,} | {a:,} |" for q, b, a in bal.top_entries)
    langs = _languages_section(voc, bal, match.candidates_by_language)
    curation = _curated_sections(voc, bal, langs, top) if spec.curation != "none" else CURATION_NONE
    flow = "\n".join(f"| {name} | {st.rows_in:,} | {st.rows_out:,} | {sum(st.dropped.values()):,} |" for name, st in stages.items())
    text = f"""# Data card: {spec.name}

{spec.description}

Spec hash `{manifest['spec_hash']}`, built {manifest['created']}.

## Counts per stage
| stage | in | out | dropped |
|---|---|---|---|
{flow}

{_flow_lines(spec, bal, manifest)}

Alt texts written in capitals: {cand.counts.get('all_caps_captions', 0):,} (they never match a lower-case
vocabulary; {cand.counts.get('all_caps_casefolded', 0):,} lower-cased by `crawl.casefold_all_caps`).
{_language_id_lines(cand)}{_image_sources(cand, match)}
## Why records were dropped
{_reasons_table(stages)}
{curation}## Download
{dl.to_fetch:,} URLs fetched through the guard; {dl.dns_lookups:,} host lookups
(at most {dl.dns_max_in_flight:,} in flight). Refused before fetching:
{_table(dl.refused_before_fetch) if dl.refused_before_fetch else 'none'}
Refused at connection time (redirect hops): {dl.refused_at_connection or 'none'}

Fetch results:
{_table(manifest['totals']['by_status'], ('status', 'images'))}
"""
    with atomic(out / "datacard.md") as tmp:
        tmp.write_text(text)
    return out / "datacard.md"


CURATION_NONE = """## Curation
None (`curation: none`): every candidate is kept as given, after removing exact duplicates. No
vocabulary was built, nothing was matched or balanced; the set is the user's own (a fine-tuning set).

"""


def _flow_lines(spec, bal: BalanceStats, manifest: dict) -> str:
    shards = (f"shards ({manifest['totals']['rows']:,} rows in {len(manifest['shards'])} shards, "
              f"{manifest['totals']['bytes'] / 1e6:.1f} MB)")
    if spec.curation == "none":
        return ("candidates: images and captions from the inputs -> pairs (deduplicated per input); match and balance keep "
                f"every pair; download: pairs -> images in {shards}.")
    t_text = ("t = " + ", ".join(f"{v:,} ({k})" for k, v in bal.t_by_language.items())) if len(bal.t_by_language) > 1 else f"t = {bal.t:,}"
    return ("vocabulary: pages read -> entries; candidates: `<img>` tags and table rows -> pairs (deduplicated per input);\n"
            f"match: candidate pairs -> pairs matching >= 1 entry; balance: matched pool -> kept at {t_text}\n"
            f"(expected {bal.expected_kept:,}); download: balanced pairs plus the unbalanced baseline's -> images in\n{shards}.")


def _curated_sections(voc: VocabularyStats, bal: BalanceStats, langs: str, top: str) -> str:
    """The vocabulary and balancing sections of a curated (MetaCLIP) build."""
    return f"""## Vocabulary by source
{_table(voc.by_source, ('source', 'entries'))}
{langs}
## Balancing
Head entries (>= t matches in the pool): {bal.head_entries:,}. The head's share:

{_head_lines(bal)}
The unbalanced baseline (`data.subset: unbalanced`) is a uniform sample of {bal.unbalanced_baseline:,} pairs of
the whole matched pool.

{_table(bal.entries_by_count_band, ('matches per entry', 'entries'))}
| top entry | matches before | after |
|---|---|---|
{top}

![cumulative match count](balance/balance.png)

"""


def _image_sources(cand: Stats, match) -> str:
    """Which <img> attribute gave the image URLs (lazy-loading pages keep the real one in data-src,
    srcset, ...), and the URLs dropped for carrying too many different captions."""
    by_attr = {k.split(":", 1)[1]: v for k, v in cand.counts.items() if k.startswith("src_from:")}
    lines = []
    if set(by_attr) - {"src", "local"}:
        lines.append("Image URLs by the attribute that gave them (a placeholder `src` is replaced by the real image of a "
                     "lazy-loading page): " + ", ".join(f"`{a}` {n:,}" for a, n in sorted(by_attr.items(), key=lambda kv: -kv[1])))
    if match.worst_urls:
        lines.append("URLs with more than `crawl.max_captions_per_url` distinct captions (placeholders, logos, spacers), "
                     "dropped as url_many_captions; the worst: " + ", ".join(f"{u} ({n:,})" for u, n in match.worst_urls))
    return "\n\n".join(lines) + ("\n" if lines else "")


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
