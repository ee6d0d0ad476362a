"""Popular Wikipedia titles from Wikimedia's hourly pageview files.

Each line is `domain_code page_title count_views total_response_size`
(https://dumps.wikimedia.org/other/pageviews/). We keep the given projects (`en` is desktop
English Wikipedia), drop titles containing `:` (other namespaces, as MetaCLIP does), turn `_`
into spaces, and sum views over all files given. Malformed lines and missing files are counted,
not fatal.
"""

from __future__ import annotations

from collections import Counter

from tasks.wikitext import open_source


def title_views(files: list[str], projects: list[str], stats: dict[str, int] | None = None) -> Counter[str]:
    stats = stats if stats is not None else {}
    wanted = set(projects)
    views: Counter[str] = Counter()
    for path in files:
        try:
            fh = open_source(path)
        except FileNotFoundError:  # an hour the site does not have (they exist): counted, not fatal
            stats["missing_files"] = stats.get("missing_files", 0) + 1
            continue
        with fh:
            for raw in fh:
                parts = raw.decode("utf-8", "replace").split(" ")
                if len(parts) != 4 or not parts[2].isdigit():
                    stats["malformed_lines"] = stats.get("malformed_lines", 0) + 1
                    continue
                if parts[0] not in wanted:
                    continue
                title = parts[1]
                if ":" in title or title in ("-", ""):
                    stats["skipped_namespace_titles"] = stats.get("skipped_namespace_titles", 0) + 1
                    continue
                views[title.replace("_", " ")] += int(parts[2])
        stats["files"] = stats.get("files", 0) + 1
    return views
