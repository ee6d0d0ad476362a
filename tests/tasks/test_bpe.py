"""The build's tokenizer (tasks/manifest/bpe.py): an even sample of captions, and the contract
with the training library's tokenizer (special tokens, the same cleaning)."""

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.manifest import bpe
from tests.conftest import train_bpe
from training import tokenizer


def test_tokenizer_from_shards_reads_an_even_sample_when_capped(tmp_path):
    """A build's tokenizer learns from at most max_captions captions, every k-th row across shard
    boundaries (empty shards included), and from all of them without a cap."""
    shards, n = [], 0
    for k, rows in enumerate([7, 0, 13, 5]):
        shards.append(tmp_path / f"{k:05d}.parquet")
        pq.write_table(pa.table({"caption": [f"caption {n + i}" for i in range(rows)]}), shards[-1])
        n += rows
    assert list(bpe.sample_captions(shards)) == [f"caption {i}" for i in range(25)] == list(bpe.sample_captions(shards, 25))
    assert list(bpe.sample_captions(shards, 8)) == [f"caption {i}" for i in range(0, 25, 4)]  # k = ceil(25 / 8)
    assert list(bpe.sample_captions(shards, 1)) == ["caption 0"]
    tok = train_bpe(shards, tmp_path / "tok.json", vocab_size=300, max_captions=8)
    assert tok.decode(tok.encode("caption 24")) == "caption 24"
    assert tokenizer.Tokenizer.load(tmp_path / "tok.json").encode("caption 24") == tok.encode("caption 24")  # the file is the contract


def test_the_build_and_the_trainer_clean_captions_alike():
    """The BPE learns from captions cleaned by tasks/, and training encodes captions cleaned by
    training/: the two cleanings must be one rule (ftfy, HTML unescape, whitespace, lower case)."""
    tricky = ["  A  Red\tCircle  ", "Caf\u00c3\u00a9 &amp;amp; bar", "&lt;b&gt;bold&lt;/b&gt;", "ＦＵＬＬ　ｗｉｄｔｈ", "mojibake â€œquotesâ€\x9d",
              "e\u0301cole", "line\nbreak\r\nhere", "国旗 Flag", "🇫🇷 flag", ""]
    assert [bpe.clean(t) for t in tricky] == [tokenizer.clean(t) for t in tricky]
    tok = tokenizer.Tokenizer(bpe.train_bpe(["a red circle", "a blue square"] * 20, vocab_size=300))
    assert (tok.pad_id, tok.sot_id, tok.eot_id) == (0, 1, 2) and tok.kind == "bpe"
