"""Normalise and check one (image URL, alt text) pair; every drop names its reason."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from tasks.crawl.langid import LanguageRouter
from tasks.engine import Stats
from tasks.specs import CrawlSpec

_WS = re.compile(r"\s+")


def uid_of(url: str, text: str) -> str:
    """Dedup key of a pair: sha1 of URL and text (cc2dataset and img2dataset do the same)."""
    return hashlib.sha1(f"{url}\t{text}".encode()).hexdigest()


def candidate_rows(pairs: Iterable[tuple[str, str, str | None]], filt: PairFilter, stats: Stats, source: str,
                   dropped: list | None = None, src_attr: str = "src") -> Iterator[dict]:
    """Candidate rows (uid, url, text, page_url, lang, source, record) of a table-like input:
    `pairs` yields (src, text, reason), reason None when the reader found nothing wrong; every
    pair is counted, every drop recorded with its reason (and kept in `dropped` when given)."""
    for i, (src, text, reason) in enumerate(pairs):
        stats.rows_in += 1
        row = None
        if reason is None:
            row, reason = filt(src, text, "", src_attr)
        if row is None:
            stats.drop(reason)
            if dropped is not None:
                dropped.append({"src": src, "text": text, "page_url": "", "reason": reason, "source": source, "record": i})
            continue
        row.update(uid=uid_of(row["url"], row["text"]), page_url="", source=source, record=i)
        yield row


def is_all_caps(text: str) -> bool:
    """An alt text in capitals ("RED FLOWER IN A VASE"): it never matches a lower-case vocabulary."""
    return text.isupper() and sum(c.isalpha() for c in text) >= 3


class PairFilter:
    """Normalise and check one (src, text) pair; every drop names its reason."""

    def __init__(self, spec: CrawlSpec, stats: Stats | None = None):
        self.spec = spec
        self.stats = stats if stats is not None else Stats()
        self.route = LanguageRouter(spec.languages, spec.fold_macrolanguages, spec.english_rule, spec.english_min_prob,
                                    spec.english_min_words, spec.wordnet, spec.english_foreign_words)
        self.langs = set(spec.languages)

    def __call__(self, src: str, text: str, base: str, src_attr: str = "src") -> tuple[dict | None, str]:
        """(row, "kept") or (None, the reason); `src_attr`: the <img> attribute the URL came from."""
        text = _WS.sub(" ", text or "").strip()
        if not text:
            return None, "empty_text"
        if src_attr == "local":  # the user's own file (tasks/crawl/local.py): never from a web page
            return self._local(src, text)
        src = (src or "").strip()
        if not src:
            return None, "no_src"
        low = src[:16].lower()
        if low.startswith("data:"):
            return None, "data_uri"
        if low.startswith("javascript:"):
            return None, "javascript_uri"
        try:
            url = urljoin(base, src)
            parts = urlsplit(url)
            hosts = (parts.hostname or "", urlsplit(base).hostname or "")  # the image's and the page's
        except ValueError:
            return None, "invalid_url"
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return None, "not_http"
        if parts.path.lower().endswith((".svg", ".svgz")):
            return None, "svg"
        if len(url) > 2048:
            return None, "url_too_long"
        if len(text) < self.spec.min_text_chars:
            return None, "text_too_short"
        if len(text) > self.spec.max_text_chars:
            return None, "text_too_long"
        if is_all_caps(text):
            self.stats.counts["all_caps_captions"] += 1
            if self.spec.casefold_all_caps:  # matched (and trained) in lower case
                text = text.lower()
                self.stats.counts["all_caps_casefolded"] += 1
        lang, how = self.route(text, hosts)
        if how in ("foreign_word", "country_domain"):
            self.stats.counts[f"lang_not_rescued_en:{how}"] += 1
        elif how == "other_language_words":
            self.stats.counts["lang_not_en:other_language_words"] += 1
        if lang not in self.langs and "any" not in self.langs:
            return None, "language"
        if how == "folded":
            self.stats.counts[f"lang_folded:{self.route.last_label}->{lang}"] += 1
        elif how.startswith("english_"):
            self.stats.counts["lang_rescued_en"] += 1
            self.stats.counts[f"lang_rescued_en:{how.removeprefix('english_')}"] += 1
        self.stats.counts[f"src_from:{src_attr}"] += 1
        return {"url": url, "text": text, "lang": lang}, "kept"

    def _local(self, path: str, text: str) -> tuple[dict | None, str]:
        """A local image and its caption: a file:// URL, the text checks, and the language recorded
        but not filtered (the user chose these pairs; a language without a vocabulary is dropped
        by matching, with its reason, only when the build curates)."""
        if len(text) < self.spec.min_text_chars:
            return None, "text_too_short"
        if len(text) > self.spec.max_text_chars:
            return None, "text_too_long"
        lang, _how = self.route(text)
        if lang not in self.langs:
            lang = self.route.last_label or lang
        self.stats.counts["src_from:local"] += 1
        return {"url": Path(path).resolve().as_uri(), "text": text, "lang": lang}, "kept"
