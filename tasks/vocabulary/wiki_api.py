"""Article text through the MediaWiki API, with wikipedia-api, for users without a dump.

Fetches a title list, the members of a category, and/or N random articles (up to
`max_articles`), with a descriptive User-Agent (Wikimedia's policy asks for one), a client-side
rate limit, and wikipedia-api's retries (which honour `Retry-After` on HTTP 429).
`api_url` points the client at another MediaWiki (the tests use a loopback fake).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import wikipediaapi

from tasks.engine import Stats
from tasks.specs import WikiApiSpec


def make_client(spec: WikiApiSpec) -> wikipediaapi.Wikipedia:
    api_url = spec.api_url

    class _Client(wikipediaapi.Wikipedia):
        @staticmethod
        def _build_url(language: str) -> str:
            return api_url or f"https://{language}.wikipedia.org/w/api.php"

    return _Client(user_agent=spec.user_agent, language=spec.language,
                   extract_format=wikipediaapi.ExtractFormat.WIKI,
                   max_retries=spec.max_retries, retry_wait=0.5)


class _RateLimiter:
    def __init__(self, per_second: float):
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self.next_at = 0.0

    def wait(self) -> None:
        now = time.monotonic()
        if now < self.next_at:
            time.sleep(self.next_at - now)
        self.next_at = max(now, self.next_at) + self.interval


def fetch_articles(spec: WikiApiSpec, stats: Stats | None = None) -> Iterator[tuple[str, str]]:
    """(title, plain text) for each requested article; failures are counted, not fatal."""
    stats = stats if stats is not None else Stats()
    wiki = make_client(spec)
    limit = _RateLimiter(spec.requests_per_second)
    titles: list[str] = list(spec.titles)
    if spec.category:
        limit.wait()
        members = wiki.page(spec.category if spec.category.startswith("Category:") else f"Category:{spec.category}").categorymembers
        titles += [t for t, p in members.items() if p.namespace == 0]
    if spec.random:
        limit.wait()
        titles += list(wiki.random(limit=min(spec.random, 500)).keys())
    seen: set[str] = set()
    for title in titles:
        if title in seen or len(seen) >= spec.max_articles:
            continue
        seen.add(title)
        limit.wait()
        stats.rows_in += 1
        try:
            page = wiki.page(title)
            text = page.text
        except wikipediaapi.WikipediaException as e:
            stats.drop("api_error")
            stats.counts[f"api_error:{type(e).__name__}"] += 1
            continue
        if not text:
            stats.drop("api_missing")
            continue
        stats.counts["articles"] += 1
        yield title, text
