"""The build's tokenizer: a byte-level BPE learned from its captions (tokenizer.json).

The training library loads it (`training.tokenizer.Tokenizer.load`); both sides agree on a
format, not on code: HF `tokenizers` JSON with the special tokens `<pad>` (id 0),
`<start_of_text>` and `<end_of_text>`, and CLIP's cleaning applied before encoding (ftfy, HTML
unescape, whitespace collapse, lower case), here before learning and there before encoding.
tests/tasks/test_bpe.py checks the two cleanings agree.

At full scale the BPE learns from an even sample of at most `tokenizer_sample_captions` captions
(every k-th row of the build, k from the parquet footers): a 400M-row build need not clean every
caption to learn 49k merges.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import ftfy
import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from tasks.engine import atomic

SPECIAL_TOKENS = ["<pad>", "<start_of_text>", "<end_of_text>"]  # ids 0, 1, 2
_WS = re.compile(r"\s+")


def clean(text: str) -> str:
    """CLIP's caption cleaning (open_clip's basic_clean + whitespace_clean), lower-cased."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return _WS.sub(" ", text).strip().lower()


def sample_captions(shards: list[Path], max_captions: int | None = None) -> Iterator[str]:
    """The shards' captions, cleaned; with max_captions, every k-th row of the build so that at
    most max_captions are read, spread evenly."""
    every = 1
    if max_captions:
        total = sum(pq.read_metadata(s).num_rows for s in shards)
        every = max(1, -(-total // max_captions))
    start = 0  # the build-wide index of the shard's first row
    for s in shards:
        col = pq.read_table(s, columns=["caption"])["caption"]
        picked = col if every == 1 else col.take(pa.array(range((-start) % every, len(col), every), pa.int64()))
        for t in picked.to_pylist():
            if t:
                yield clean(t)
        start += len(col)


def train_bpe(source: Iterable[Path] | Iterable[str], out_path: Path | None = None, vocab_size: int = 8192,
              max_captions: int | None = None) -> Tokenizer:
    """Learn a byte-level BPE from captions (parquet shards with a `caption` column, or strings)
    and write it to `out_path` (atomically)."""
    items = list(source)
    texts = sample_captions(items, max_captions) if items and isinstance(items[0], Path) else (clean(t) for t in items)
    hf = Tokenizer(models.BPE())
    hf.normalizer = normalizers.NFC()
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator(texts, trainer=trainer)
    if out_path is not None:
        with atomic(Path(out_path)) as tmp:
            hf.save(str(tmp))
    return hf
