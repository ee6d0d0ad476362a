"""A stage resumes from its own partial outputs but never reuses outputs made for other inputs."""

from types import SimpleNamespace

from tasks.build_stages import _claim


def test_partial_outputs_with_the_same_key_are_kept_and_others_removed(tmp_path):
    ctx = SimpleNamespace(out=tmp_path, log=lambda *_: None)
    d = tmp_path / "download"
    _claim(ctx, d, "download", "key-1")
    (d / "raw").mkdir()
    (d / "raw" / "00000.parquet").write_text("complete shard of run 1")
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "00000.parquet").write_text("training shard of run 1")

    _claim(ctx, d, "download", "key-1")  # a crash and a rerun with the same inputs: resume
    assert (d / "raw" / "00000.parquet").exists() and (tmp_path / "shards" / "00000.parquet").exists()

    _claim(ctx, d, "download", "key-2")  # new balancing upstream: start over, shards included
    assert not (d / "raw").exists() and not (tmp_path / "shards").exists()
    assert (d / "_STARTED").read_text() == "key-2"


def test_outputs_from_before_claims_existed_are_not_trusted(tmp_path):
    ctx = SimpleNamespace(out=tmp_path, log=lambda *_: None)
    (tmp_path / "manifest").mkdir()
    (tmp_path / "manifest.json").write_text("{}")
    _claim(ctx, tmp_path / "manifest", "manifest", "k")
    assert not (tmp_path / "manifest.json").exists()
