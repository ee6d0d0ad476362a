"""Tokenizers for the text tower (HF `tokenizers`): byte-level BPE, or BERT-Chinese WordPiece.

Three ways to get one:
  * `Tokenizer.load(build / "tokenizer.json")`: the byte-level BPE build-wit learned from the
    build's captions (tasks/manifest/bpe.py; its special tokens and cleaning are this module's);
    checkpoints carry it.
  * `from_clip_bpe("bpe_simple_vocab_16e6.txt.gz")`: CLIP's own 49,408-token vocabulary from its
    merges file, assembled the way OpenAI's `SimpleTokenizer` does (byte-to-unicode alphabet,
    `</w>` end-of-word suffix, CLIP's pre-tokenisation regex).
  * `bert_chinese()`: Chinese-CLIP's tokenizer, BERT WordPiece over the 21,128-token BERT-Chinese
    vocabulary that the `cn_clip` package ships (its `clip/vocab.txt`; read from the installed
    package, never imported): BERT's cleaning, every CJK character a word of its own, lower case
    with accents stripped, punctuation split off, `[CLS] ... [SEP]` padded with `[PAD]` (0) to 52,
    truncation keeping `[SEP]`; ids equal `cn_clip.clip.tokenize` (tests/training/test_cn_clip.py).

Cleaning of the BPE tokenizers is CLIP's: ftfy, HTML unescape, whitespace collapse, lowercase. Every sequence is
`<start_of_text> ... <end_of_text>` padded with 0; truncation keeps the end token, because the
text tower pools the feature at the end token.
"""

from __future__ import annotations

import gzip
import html
import json
import re
from collections.abc import Iterable
from pathlib import Path

import ftfy
import numpy as np
import torch
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

SOT, EOT, PAD = "<start_of_text>", "<end_of_text>", "<pad>"
CLS, SEP, BERT_PAD, UNK = "[CLS]", "[SEP]", "[PAD]", "[UNK]"
BERT_CONTEXT = 52  # Chinese-CLIP's context length
_WS = re.compile(r"\s+")
CLIP_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def clean(text: str) -> str:
    """CLIP's caption cleaning (open_clip's basic_clean + whitespace_clean), lower-cased; the build's
    BPE learned from captions cleaned the same way (tasks/manifest/bpe.py, a test checks)."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return _WS.sub(" ", text).strip().lower()


class Tokenizer:
    """texts -> LongTensor [B, context_length]; `eot_id` marks the pooled position."""

    def __init__(self, hf: HFTokenizer, context_length: int = 77):
        self.hf = hf
        self.context_length = context_length
        # a BERT WordPiece vocabulary marks its sequences [CLS] ... [SEP]; the BPE ones <start_of_text> ...
        self.kind = "bert" if hf.token_to_id(CLS) is not None and hf.token_to_id(SOT) is None else "bpe"
        start, end = (CLS, SEP) if self.kind == "bert" else (SOT, EOT)
        self.sot_id = hf.token_to_id(start)
        self.eot_id = hf.token_to_id(end)
        if self.sot_id is None or self.eot_id is None:
            raise ValueError(f"tokenizer lacks {SOT} / {EOT} (or {CLS} / {SEP}) special tokens")
        self.pad_id = hf.token_to_id(BERT_PAD) if self.kind == "bert" else 0
        self._clean = (lambda t: t) if self.kind == "bert" else clean  # BERT's normalizer does its own cleaning

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(self._clean(text), add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        specials = {self.sot_id, self.eot_id, self.pad_id}
        return self.hf.decode([i for i in ids if i not in specials]).strip()

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        n = context_length or self.context_length
        out = np.full((len(texts), n), self.pad_id, dtype=np.int64)
        encs = self.hf.encode_batch([self._clean(t) for t in texts], add_special_tokens=False)
        for i, enc in enumerate(encs):
            ids = [self.sot_id] + enc.ids[: n - 2] + [self.eot_id]  # truncation keeps the end token
            out[i, : len(ids)] = ids
        return torch.from_numpy(out)

    def save(self, path: str | Path) -> None:
        self.hf.save(str(path))

    def to_json(self) -> str:
        return self.hf.to_str()

    @classmethod
    def load(cls, path: str | Path, context_length: int | None = None) -> Tokenizer:
        """A tokenizer.json; without `context_length`, the context of the model beside it (an
        exported folder's open_clip_config.json, a checkpoint's config.json), else CLIP's 77."""
        hf = HFTokenizer.from_file(str(path))
        default = BERT_CONTEXT if hf.token_to_id(CLS) is not None and hf.token_to_id(SOT) is None else 77
        return cls(hf, context_length or _context_beside(Path(path)) or default)

    @classmethod
    def from_json(cls, blob: str, context_length: int = 77) -> Tokenizer:
        return cls(HFTokenizer.from_str(blob), context_length)


def _context_beside(path: Path) -> int | None:
    for name, keys in (("open_clip_config.json", ("model_cfg", "text_cfg", "context_length")), ("config.json", ("context_length",))):
        f = path.with_name(name)
        if f.exists():
            d = json.loads(f.read_text())
            for k in keys:
                d = d.get(k) if isinstance(d, dict) else None
            if isinstance(d, int):
                return d
    return None


def cn_clip_vocab() -> Path:
    """The BERT-Chinese vocabulary file of the installed `cn_clip` package (found, not imported)."""
    import importlib.util

    spec = importlib.util.find_spec("cn_clip")
    f = Path(next(iter(spec.submodule_search_locations))) / "clip" / "vocab.txt" if spec and spec.submodule_search_locations else None
    if f is None or not f.exists():
        raise FileNotFoundError("the BERT-Chinese vocabulary comes with the cn_clip package: pip install --no-deps cn_clip==1.6.0 "
                                "(`make install` does), or pass a vocab.txt")
    return f


def bert_chinese(vocab: str | Path | None = None, context_length: int = BERT_CONTEXT) -> Tokenizer:
    """Chinese-CLIP's tokenizer: BERT WordPiece over `vocab` (a BERT vocab.txt; default cn_clip's)."""
    ids: dict[str, int] = {}
    lines = Path(vocab or cn_clip_vocab()).read_text(encoding="utf-8").split("\n")  # lines as readline() cuts them
    for i, line in enumerate(lines[:-1] if lines[-1] == "" else lines):  # (str.splitlines would also cut at U+0085 ...)
        ids[line.strip()] = i  # as BERT's load_vocab: stripped, a later duplicate wins
    hf = HFTokenizer(models.WordPiece(ids, unk_token=UNK, max_input_chars_per_word=200))  # BERT's limit (HF's default is 100)
    hf.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    hf.decoder = decoders.WordPiece()
    return Tokenizer(hf, context_length)


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def from_clip_bpe(path: str | Path, context_length: int = 77, n_merges: int = 49152 - 256 - 2) -> Tokenizer:
    """CLIP's tokenizer from its merges file (`bpe_simple_vocab_16e6.txt.gz`), at a user's path."""
    if str(path).endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            raw = f.read()
    else:
        raw = Path(path).read_text("utf-8")
    merges = [tuple(m.split()) for m in raw.split("\n")[1: n_merges + 1] if m.strip()]
    alphabet = list(_bytes_to_unicode().values())
    vocab_list = alphabet + [a + "</w>" for a in alphabet] + ["".join(m) for m in merges] + [SOT, EOT]
    vocab = {t: i for i, t in enumerate(vocab_list)}
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=merges, continuing_subword_prefix="", end_of_word_suffix="</w>",
                                fuse_unk=False, unk_token=None))
    hf.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    hf.decoder = decoders.BPEDecoder(suffix="</w>")
    hf.add_special_tokens([SOT, EOT])
    tok = Tokenizer(hf, context_length)
    tok.pad_id = 0  # CLIP pads with 0 (the "!" token), as OpenAI's tokenize() does
    return tok


def save_json(tok: Tokenizer) -> dict:
    return {"tokenizer_json": json.loads(tok.to_json()), "context_length": tok.context_length}
