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
