"""WordNet 3.0 synset head names, read straight from the WNDB `data.*` files.

Debian's `wordnet-base` installs them in /usr/share/wordnet (without the `lexnames` file NLTK's
reader wants), and an NLTK data folder holds the same files under corpora/wordnet. A synset's
head name is its first lemma, as NLTK names synsets: `dog.n.01` -> `dog`; `_` becomes a space,
adjective markers like `(a)` are dropped, and names are lowercased as NLTK's synset names are
(MetaCLIP built its list from those names: 86,654; this reader gives 86,571 on WordNet 3.0).
"""

from __future__ import annotations

import re
from pathlib import Path

POS_FILES = ("noun", "verb", "adj", "adv")
_MARKER = re.compile(r"\([a-z]+\)$")


class WordNetMissing(FileNotFoundError):
    pass


def find_wndb(path: str | Path) -> Path:
    root = Path(path)
    for cand in (root, root / "corpora" / "wordnet", root / "wordnet"):
        if all((cand / f"data.{p}").exists() for p in POS_FILES):
            return cand
    raise WordNetMissing(
        f"WordNet 3.0 data files (data.noun, data.verb, ...) not found under {root}. "
        "Install Debian's wordnet-base (apt-get install wordnet-base) or point "
        "vocabulary.wordnet.path at an NLTK wordnet folder."
    )


def synset_head_names(path: str | Path = "/usr/share/wordnet") -> tuple[set[str], int]:
    """(unique head names, number of synsets)."""
    folder = find_wndb(path)
    names: set[str] = set()
    n_synsets = 0
    for pos in POS_FILES:
        with open(folder / f"data.{pos}", encoding="latin-1") as fh:
            for line in fh:
                if line.startswith("  "):  # licence header
                    continue
                fields = line.split(" ", 5)
                head = _MARKER.sub("", fields[4]).replace("_", " ").lower()
                names.add(head)
                n_synsets += 1
    return names, n_synsets


# Open Multilingual Wordnet (OMW 1.x, as NLTK's `omw-1.4` data holds it): one tab file per language,
# `wn-data-<iso639-3>.tab`, lines `<offset>-<pos>\t<lang>:lemma\t<lemma>` under a `#` header.
OMW_CODES = {"zh": "cmn", "ja": "jpn", "ko": "kor", "fr": "fra", "de": "deu", "es": "spa", "it": "ita", "pt": "por",
             "nl": "nld", "pl": "pol", "fi": "fin", "id": "ind", "th": "tha", "ar": "arb", "he": "heb", "el": "ell"}


def find_omw(path: str | Path, language: str) -> Path:
    """The OMW tab file of `language` at `path` (the file itself, or a folder holding it at any depth)."""
    root = Path(path)
    code = OMW_CODES.get(language, language)
    if root.is_file():
        return root
    if root.is_dir():
        for cand in sorted(root.rglob(f"wn-data-{code}.tab")):
            return cand
    raise WordNetMissing(
        f"no {language} wordnet (wn-data-{code}.tab, Open Multilingual Wordnet) under {root}. Point "
        f"vocabulary.wordnet.path at OMW's folder (e.g. NLTK's omw-1.4) or set vocabulary.wordnet.enabled: false."
    )


def omw_head_names(path: str | Path, language: str) -> tuple[set[str], int]:
    """(unique head names, number of synsets) of a language's OMW wordnet: each synset's first
    lemma in file order, as NLTK names a synset by its first lemma."""
    f = find_omw(path, language)
    heads: dict[str, str] = {}
    with open(f, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("#"):
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 3 and parts[1].endswith(":lemma") and parts[0] not in heads and parts[2].strip():
                heads[parts[0]] = parts[2].strip().replace("_", " ")
    return set(heads.values()), len(heads)


def head_names(path: str | Path, language: str = "en") -> tuple[set[str], int]:
    """English: Princeton WordNet 3.0 (WNDB); another language: its OMW wordnet."""
    return synset_head_names(path) if language == "en" else omw_head_names(path, language)


def check(path: str | Path, language: str = "en") -> None:
    """Raise WordNetMissing (with the fix) when the language's wordnet is not at `path`."""
    find_wndb(path) if language == "en" else find_omw(path, language)
