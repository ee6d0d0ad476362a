"""What balancing did, for people: the head's share before and after, count bands, the plot.

The head is the entries with >= t matches in the pool (the same entries before and after). Its
share is reported in both of balancing's currencies: of the matches (before, and in the balanced
set) and of the draws that kept pairs (each entry expects min(count, t): the distribution
balancing shapes). The plot draws all three curves in the pool's order, so that at the head line
each reads the share the data card prints.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from tasks.curate.balancing import BalanceStats, LanguageBalance, entry_languages, entry_thresholds, t_to_p


def _head_share(counts: np.ndarray, head: np.ndarray) -> float:
    """The share of all counts held by the head entries (a mask: the entries with >= t matches in
    the pool, the same entries before and after balancing)."""
    total = counts.sum()
    return float(counts[head].sum() / total) if total else 0.0


def count_bands(counts: np.ndarray, t: int) -> dict[str, int]:
    """Entries by match count in bands that do not overlap and sum to all entries:
    0, 1-9, 10-99, 100-(t-1), >= t, with the edges at 10 and 100 dropped when t is below them."""
    edges = sorted({1, *(e for e in (10, 100) if e < t), t})
    bands = {"0": int((counts == 0).sum())}
    for lo, hi in itertools.pairwise(edges):
        bands[f"{lo}-{hi - 1}" if hi - 1 > lo else f"{lo}"] = int(((counts >= lo) & (counts < hi)).sum())
    bands[f">={t}"] = int((counts >= t).sum())
    return bands


def balance_report(counts_path: Path, balance_dir: Path, t: int | dict[str, int], stats: BalanceStats) -> BalanceStats:
    """Fill `stats` with entries by count band, the head's share before/after, the top entries
    and each language's row (its t, the tail share of its matches at that t, its head share
    before and after), and draw the plot (balance/balance.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before_t = pq.read_table(counts_path)
    after_t = pq.read_table(balance_dir / "entry_counts_after.parquet")
    before = before_t["count"].to_numpy()
    after = after_t["count_after"].to_numpy()
    # kept pairs each entry's own draw accepted (expected min(count, t)); None for an older balance stage
    drawn = after_t["drawn"].to_numpy() if "drawn" in after_t.column_names else None
    queries = before_t["query"].to_pylist()
    languages = entry_languages(before_t)
    t_by_lang = {lang: t for lang in dict.fromkeys(languages)} if isinstance(t, int) else dict(t)
    t_entry = entry_thresholds(languages, t_by_lang)
    lang_arr = np.array(languages, dtype=object)
    order = np.argsort(-before, kind="stable")
    top = [(queries[i], int(before[i]), int(after[i])) for i in order[:15] if before[i] > 0]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    multi = len(t_by_lang) > 1
    for lang, lt in t_by_lang.items():
        sel = lang_arr == lang
        # every curve in the pool's order (most matched entry first), so that at the head line each
        # curve reads the head's share the data card prints
        matched = np.nonzero(before[sel] > 0)[0]
        order_sel = matched[np.argsort(-before[sel][matched], kind="stable")]
        curves = [(before[sel], "pool: matches", "-", "matches"), (after[sel], "balanced set: matches", "--", "matches")]
        if drawn is not None:
            curves.append((drawn[sel], "balanced set: draws that kept pairs", ":", "draws"))
        for counts, label, ls, unit in curves:
            c = counts[order_sel]
            if c.sum():
                name = f"{lang} {label}" if multi else label
                ax.plot(np.arange(1, len(c) + 1), np.cumsum(c) / c.sum(), ls=ls, label=f"{name} ({int(c.sum()):,} {unit})")
        head_n = int((before[sel] >= lt).sum())
        if head_n:
            ax.axvline(head_n, color="grey", ls=":", lw=0.8, label=f"{head_n} {lang + ' ' if multi else ''}head entries (count >= t={lt})")
    ax.set_xscale("log")
    ax.set_xlabel("entries, sorted by their match count in the pool")
    ax.set_ylabel("cumulative share")
    ax.set_title("MetaCLIP balancing: cumulative share, head to tail" + (" per language" if multi else ""))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(balance_dir / "balance.png", dpi=110)
    plt.close(fig)
    for lang, lt in t_by_lang.items():
        sel = lang_arr == lang
        b, a = before[sel], after[sel]
        stats.by_language[lang] = LanguageBalance(
            t=lt, entries=int(sel.sum()), entries_matched=int((b > 0).sum()), matches=int(b.sum()),
            tail_share_at_t=round(t_to_p(b, lt), 4), head_entries=int((b >= lt).sum()),
            head_share_before=round(_head_share(b, b >= lt), 4), head_share_after=round(_head_share(a, b >= lt), 4),
            head_share_drawn=round(_head_share(drawn[sel], b >= lt), 4) if drawn is not None else None,
            entries_by_count_band=count_bands(b, lt))
    first = next(iter(stats.by_language.values()), None)
    stats.entries_by_count_band = first.entries_by_count_band if first else count_bands(before, 1)
    stats.head_entries = int((before >= t_entry).sum())
    stats.head_share_before = round(_head_share(before, before >= t_entry), 4)
    stats.head_share_after = round(_head_share(after, before >= t_entry), 4)
    stats.head_share_drawn = round(_head_share(drawn, before >= t_entry), 4) if drawn is not None else None
    stats.top_entries = top
    return stats
