"""A MediaWiki XML export and Wikimedia hourly pageview files for the sample world.

The export uses the real schema (export-0.10) and real wikitext markup: templates, refs,
tables, file and category links, comments, redirects, talk and project namespaces. Words that
sit only inside markup come from `concepts.POISON`, so a test can prove the cleaner drops them.
"""

from __future__ import annotations

import bz2
import gzip
import random
from pathlib import Path
from xml.sax.saxutils import escape

from tasks.world.concepts import BACKGROUNDS, COLOURS, FILLER, PHRASES, POISON, SHAPES, SIZES, TOPIC_TITLES

HEADER = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">
  <siteinfo>
    <sitename>Openwit Sample Wiki</sitename>
    <dbname>enwiki</dbname>
    <base>http://sample.openwit.invalid/wiki/Main_Page</base>
    <generator>openwit sample world</generator>
    <case>first-letter</case>
    <namespaces>
      <namespace key="0" case="first-letter" />
      <namespace key="1" case="first-letter">Talk</namespace>
      <namespace key="4" case="first-letter">Wikipedia</namespace>
      <namespace key="6" case="first-letter">File</namespace>
      <namespace key="14" case="first-letter">Category</namespace>
    </namespaces>
  </siteinfo>
"""


def _zipf_weights(n: int, s: float = 1.05) -> list[float]:
    return [1.0 / (k + 1) ** s for k in range(n)]


class ArticleWriter:
    def __init__(self, rng: random.Random):
        self.rng = rng
        self.concepts = list(COLOURS) + SHAPES + list(SIZES) + list(BACKGROUNDS)
        self.filler_w = _zipf_weights(len(FILLER))

    decorated = True  # some sentences bold, some with a trailing filler word
    SECTIONS = ("History", "Use", "Design", "Examples")

    def insertion(self) -> str:
        """One topic word, phrase or link put into a sentence of filler words."""
        rng = self.rng
        r = rng.random()
        if r < 0.45:
            return rng.choice(self.concepts)
        if r < 0.7:
            return f"{rng.choice(list(COLOURS))} {rng.choice(SHAPES)}"
        if r < 0.85:
            return rng.choice(PHRASES)
        target = rng.choice(SHAPES).capitalize()
        return f"[[{target}|{target.lower()}s]]" if rng.random() < 0.5 else f"[[{target}]]"

    def sentence(self) -> str:
        rng = self.rng
        words = rng.choices(FILLER, self.filler_w, k=rng.randint(6, 16))
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(words) + 1)
            words.insert(pos, self.insertion())
        text = " ".join(words)
        if self.decorated and rng.random() < 0.2:
            text = f"'''{text}'''"
        punct = rng.choice([".", ".", ".", "!", "?", ";"])
        tail = f", {rng.choice(FILLER)}." if self.decorated and rng.random() < 0.1 else ""
        return text[0].upper() + text[1:] + punct + tail

    def markup(self) -> str:
        """One piece of markup whose words must never be counted."""
        rng, p = self.rng, POISON
        kind = rng.choice(["template", "ref", "table", "file", "category", "comment"])
        if kind == "template":
            return "{{Infobox shape | name = %s %s | sides = {{nowrap|%d}} }}" % (p["template"], p["template"], rng.randint(3, 8))  # noqa: UP031 - wikitext braces
        if kind == "ref":
            return "<ref name=\"r%d\">{{cite web |title=%s |url=http://example.invalid/%d}}</ref>" % (rng.randint(0, 99), p["ref"], rng.randint(0, 99))  # noqa: UP031
        if kind == "table":
            return "\n{| class=\"wikitable\"\n|-\n! %s !! %s\n|-\n| %s || %s\n|}\n" % ((p["table"],) * 4)
        if kind == "file":
            return f"[[File:Example {rng.randint(0, 99)}.png|thumb|left|{p['file']} {p['file']}]]"
        if kind == "category":
            return "[[Category:{}]]".format(p["category"])
        return "<!-- {} -->".format(p["comment"])

    def intro(self, title: str) -> str:
        return f"'''{title}''' is a topic of this sample wiki."

    def article(self, title: str, n_paragraphs: int) -> str:
        rng = self.rng
        parts = [self.markup(), self.intro(title)]
        for i in range(n_paragraphs):
            if i and rng.random() < 0.4:
                parts.append(f"\n== {rng.choice(self.SECTIONS)} ==\n")
            para = " ".join(self.sentence() + (self.markup() if rng.random() < 0.25 else "") for _ in range(rng.randint(3, 7)))
            parts.append(para)
        parts.append(f"[[Category:{p}]]" for p in [POISON["category"]])
        return "\n\n".join(x if isinstance(x, str) else "".join(x) for x in parts)


class TopicArticleWriter(ArticleWriter):
    """Articles about named topics (the flag worlds' countries): a sentence mentions a topic as
    often as `weights` say, one of `words`, one of `phrases`, or links to a topic."""

    decorated = False

    def __init__(self, rng: random.Random, names: list[str], weights: list[float], words: list[str], phrases: list[str],
                 link_label: str):
        super().__init__(rng)
        self.names, self.weights, self.words, self.phrases, self.link_label = names, weights, words, phrases, link_label

    def insertion(self) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.45:
            return rng.choices(self.names, self.weights)[0]
        if r < 0.6:
            return rng.choice(self.words)
        if r < 0.8:
            return rng.choice(self.phrases)
        target = rng.choices(self.names, self.weights)[0]
        return f"[[{target}|{self.link_label.format(target)}]]" if rng.random() < 0.5 else f"[[{target}]]"


def _page(title: str, ns: int, pid: int, text: str, redirect: str | None = None) -> str:
    red = f'    <redirect title="{escape(redirect)}" />\n' if redirect else ""
    return (
        f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n    <id>{pid}</id>\n{red}"
        f"    <revision>\n      <id>{pid * 10}</id>\n      <timestamp>2024-01-01T00:00:00Z</timestamp>\n"
        f"      <model>wikitext</model>\n      <format>text/x-wiki</format>\n"
        f'      <text bytes="{len(text.encode())}" xml:space="preserve">{escape(text)}</text>\n'
        f"    </revision>\n  </page>\n"
    )


def article_titles() -> list[str]:
    return [s.capitalize() for s in SHAPES] + [c.capitalize() for c in COLOURS] + TOPIC_TITLES


def write_dump(path: Path, rng: random.Random, paragraphs: int | dict[str, int], writer: ArticleWriter | None = None,
               titles: list[str] | None = None, language: str = "en") -> dict[str, int]:
    """Write `path` (.xml.bz2) and return page counts by kind. `paragraphs`: per article, or a
    number for each title (popular topics get longer articles)."""
    writer = writer or ArticleWriter(rng)
    titles = titles or article_titles()
    pages, pid = [], 1
    counts = {"articles": 0, "redirects": 0, "other_namespaces": 0}
    for title in titles:
        n = paragraphs[title] if isinstance(paragraphs, dict) else paragraphs
        pages.append(_page(title, 0, pid, writer.article(title, n)))
        pid += 1
        counts["articles"] += 1
        if rng.random() < 0.5:  # a redirect to it
            pages.append(_page(f"{title}s", 0, pid, f"#REDIRECT [[{title}]] {POISON['redirect']}", redirect=title))
            pid += 1
            counts["redirects"] += 1
        if rng.random() < 0.4:  # its talk page
            pages.append(_page(f"Talk:{title}", 1, pid, f"{POISON['talk']} " * 50))
            pid += 1
            counts["other_namespaces"] += 1
    pages.append(_page("Wikipedia:About", 4, pid, f"{POISON['talk']} " * 50))
    counts["other_namespaces"] += 1
    header = HEADER if language == "en" else HEADER.replace('xml:lang="en"', f'xml:lang="{language}"').replace(
        "<dbname>enwiki", f"<dbname>{language}wiki")
    xml = header + "".join(pages) + "</mediawiki>\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bz2.compress(xml.encode(), 9))
    return counts


def write_pageviews(folder: Path, rng: random.Random, hours: int = 6, titles: list[str] | None = None,
                    floor: int = 0, more_lines: list[list[str]] | None = None) -> list[Path]:
    """Hourly files in Wikimedia's format: `domain_code page_title count_views total_response_size`.
    `titles` in popularity order (Zipf views); `floor`: the fewest views a title gets in an hour;
    `more_lines`: other projects' lines for each hour (the Chinese world's `zh` lines)."""
    titles = titles or article_titles()
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for h, views in enumerate(hourly_views(titles, rng, hours, floor)):
        lines = []
        for t, v in views:
            lines.append(f"en {t.replace(' ', '_')} {v} 0")
            lines.append(f"en.m {t.replace(' ', '_')} {v * 2} 0")  # mobile: not the `en` project
            lines.append(f"de {t.replace(' ', '_')} {v} 0")
        lines += ["en Talk:Circle 500 0", "en Special:Search 900 0", "en Main_Page 5000 0", "en - 10 0", "broken line"]
        lines += more_lines[h] if more_lines else []
        path = folder / f"pageviews-20240101-{h:02d}0000.gz"
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
            gz.write(("\n".join(sorted(lines)) + "\n").encode())
        out.append(path)
    return out


def hourly_views(titles: list[str], rng: random.Random, hours: int, floor: int = 0) -> list[list[tuple[str, int]]]:
    """Views of each title in each hour: Zipf over `titles` (in popularity order), at least `floor`."""
    weights = _zipf_weights(len(titles), 1.2)
    return [[(t, max(floor, int(w * 60 * rng.uniform(0.5, 1.5)))) for t, w in zip(titles, weights)] for _h in range(hours)]
