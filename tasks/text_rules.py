"""The one text rule shared by vocabulary counting and caption matching.

MetaCLIP matches an entry when ` entry ` occurs in the caption after padding it with spaces and
putting spaces around `, . ; : ? !`. We use exactly that rule, plus one change: runs of
whitespace (tabs, newlines included) collapse to one space, so "red  circle" matches
"red circle" (MetaCLIP's loop would miss it).

Tokens for counting are the space-separated pieces of the same padded text, so every unigram
and bigram we count is something the matcher can find. A token is a vocabulary *word* when it
has a letter or digit and no bracket or quote characters (`(circle` is a token, not a word);
bigrams never span punctuation because punctuation marks are tokens of their own.
"""

from __future__ import annotations

import re

BOUNDARY_PUNCT = ",.;:?!"
_PUNCT_RE = re.compile(r"([,.;:?!])")
_WS_RE = re.compile(r"\s+")
_WORD_RE = re.compile(r"^(?=.*\w)[^\s()\[\]{}<>\"“”«»|=*#]+$")


def spaced(text: str, case_sensitive: bool = True) -> str:
    """` text ` with spaces around boundary punctuation and whitespace collapsed."""
    if not case_sensitive:
        text = text.lower()
    return " " + _WS_RE.sub(" ", _PUNCT_RE.sub(r" \1 ", text)).strip() + " "


def tokens(text: str, case_sensitive: bool = True) -> list[str]:
    return spaced(text, case_sensitive).split()


def is_word(token: str) -> bool:
    return token not in BOUNDARY_PUNCT and bool(_WORD_RE.match(token))


def normalise_entry(entry: str, case_sensitive: bool = True) -> str:
    """An entry as the matcher sees it: tokens joined by single spaces."""
    return " ".join(tokens(entry, case_sensitive))
