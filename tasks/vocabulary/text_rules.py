"""The one text rule shared by vocabulary counting and caption matching.

MetaCLIP matches an entry when ` entry ` occurs in the caption after padding it with spaces and
putting spaces around `, . ; : ? !`. We use exactly that rule, plus one change: runs of
whitespace (tabs, newlines included) collapse to one space, so "red  circle" matches
"red circle" (MetaCLIP's loop would miss it).

Tokens for counting are the space-separated pieces of the same padded text, so every unigram
and bigram we count is something the matcher can find.

Chinese (`language: zh`; MetaCLIP 2's rules for languages without spaces): text is converted to
Simplified script with OpenCC (zhwiki stores both scripts, and alt text on the web uses both; one
script makes "國旗" and "国旗" the same entry), CJK punctuation (，。、；：？！“”‘’（）【】《》「」『』〈〉～—)
is spaced like `, . ;` so it separates, and an entry matches as a plain substring: it is padded
with a space only on a side that ends in a non-CJK character ("NBA" must stand alone, "国旗"
matches inside "中华人民共和国国旗"). Counting segments each piece into words (tasks/counting.py). A token is a vocabulary *word* when it
has a letter or digit and no bracket or quote characters (`(circle` is a token, not a word);
bigrams never span punctuation because punctuation marks are tokens of their own.
"""

from __future__ import annotations

import re

BOUNDARY_PUNCT = ",.;:?!"
CJK_PUNCT = "，。、；：？！“”‘’（）【】《》「」『』〈〉～—"
NO_SPACE_LANGUAGES = frozenset({"zh"})  # languages written without spaces that openwit supports
_PUNCT_RE = re.compile(r"([,.;:?!])")
_CJK_PUNCT_RE = re.compile(f"([{re.escape(CJK_PUNCT)}])")
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2EBEF), (0xF900, 0xFAFF), (0x2E80, 0x2FFF),
               (0x3000, 0x303F), (0xFF00, 0xFFEF))  # ideographs, radicals, CJK symbols, full-width forms
_OPENCC = None
_WS_RE = re.compile(r"\s+")
_WORD_RE = re.compile(r"^(?=.*\w)[^\s()\[\]{}<>\"“”«»|=*#]+$")


def to_simplified(text: str) -> str:
    """Traditional -> Simplified Chinese (OpenCC's t2s), loaded once per process."""
    global _OPENCC
    if _OPENCC is None:
        import opencc

        _OPENCC = opencc.OpenCC("t2s")
    return _OPENCC.convert(text)


def is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES) or ch in CJK_PUNCT


def spaced(text: str, case_sensitive: bool = True, language: str = "en") -> str:
    """` text ` with spaces around boundary punctuation and whitespace collapsed."""
    if not case_sensitive:
        text = text.lower()
    if language in NO_SPACE_LANGUAGES:
        text = _CJK_PUNCT_RE.sub(r" \1 ", to_simplified(text))
    return " " + _WS_RE.sub(" ", _PUNCT_RE.sub(r" \1 ", text)).strip() + " "


def automaton_key(entry: str, language: str = "en") -> str:
    """What the matcher looks for: ` entry ` (MetaCLIP), or for a language without spaces the
    entry padded only on a side whose character is not CJK (MetaCLIP 2)."""
    if language not in NO_SPACE_LANGUAGES:
        return f" {entry} "
    return ("" if is_cjk(entry[0]) else " ") + entry + ("" if is_cjk(entry[-1]) else " ")


def tokens(text: str, case_sensitive: bool = True) -> list[str]:
    return spaced(text, case_sensitive).split()


def is_word(token: str) -> bool:
    return token not in BOUNDARY_PUNCT and token not in CJK_PUNCT and bool(_WORD_RE.match(token))


def normalise_entry(entry: str, case_sensitive: bool = True, language: str = "en") -> str:
    """An entry as the matcher sees it: tokens joined by single spaces (Simplified for zh)."""
    return " ".join(spaced(entry, case_sensitive, language).split())
