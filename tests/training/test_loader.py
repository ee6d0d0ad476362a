"""The streaming loader: disjoint shares, exact resume, no duplicates for bad records, bounded
reads, and the same batches with 0, 1 or N decode processes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from training.data.loader import ShardLoader
from training.data.shares import LoaderState, RowStream


class CharTokenizer:
    """Enough of training.tokenizer.Tokenizer for the loader: a fixed-length id tensor per caption."""

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([[ord(c) % 256 for c in t[:16].ljust(16)] for t in texts])


def jpeg(i: int, px: int = 24) -> bytes:
    rng = np.random.default_rng(i)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (px, px, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def make_build(root: Path, shards: int = 4, rows: int = 50, row_group: int = 10, bad: set[int] = frozenset(),
               unbalanced_only: set[int] = frozenset(), row_groups_in_manifest: bool = True) -> Path:
    """A build folder as build-wit writes it: manifest.json + shards/NNNNN.parquet."""
    (root / "shards").mkdir(parents=True)
    entries, n = [], 0
    for s in range(shards):
        ids = range(n, n + rows)
        n += rows
        t = pa.table({"uid": [f"u{i}" for i in ids], "caption": [f"caption {i}" for i in ids],
                      "jpg": [b"not a jpeg" if i in bad else jpeg(i) for i in ids],
                      "in_balanced": [i not in unbalanced_only for i in ids], "in_unbalanced": [True for _ in ids]})
        path = root / "shards" / f"{s:05d}.parquet"
        pq.write_table(t, path, row_group_size=row_group)
        e = {"path": f"shards/{s:05d}.parquet", "rows": rows}
        if row_groups_in_manifest:
            md = pq.read_metadata(path)
            e["row_groups"] = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
        entries.append(e)
    (root / "manifest.json").write_text(json.dumps({"shards": entries, "totals": {"rows": n}, "image_column": "jpg"}))
    return root


def loader(build: Path, **kw) -> ShardLoader:
    args = {"tokenizer": CharTokenizer(), "image_size": 16, "batch_size": 8, "seed": 0, "shuffle_units": 2, "unit_rows": 10, "workers": 0,
                "chunk_rows": 5}
    args.update(kw)
    return ShardLoader(build, **args)


def epoch0_uids(build: Path, rank: int, world: int, **kw) -> list[str]:
    """Every uid a worker reads in its share of epoch 0 (batches cut at the epoch boundary)."""
    seen = []
    with loader(build, rank=rank, world=world, **kw) as ld:
        while ld.state().epoch == 0:
            before = ld.state()
            ld.next_batch()
            for uid, epoch in zip(ld.last_uids, _epochs(before, ld)):
                if epoch == 0:
                    seen.append(uid)
    return seen


def _epochs(before: LoaderState, ld: ShardLoader) -> list[int]:
    # a batch spans at most one epoch boundary; rows after it belong to the new epoch
    after = ld.state()
    if after.epoch == before.epoch:
        return [before.epoch] * len(ld.last_uids)
    return [before.epoch] * (len(ld.last_uids) - after.offset) + [after.epoch] * after.offset


def test_workers_read_disjoint_shares_that_cover_the_subset_once(tmp_path):
    build = make_build(tmp_path, unbalanced_only={3, 77, 150})
    shares = [epoch0_uids(build, r, 2) for r in range(2)]
    assert not set(shares[0]) & set(shares[1])
    assert len(shares[0]) + len(shares[1]) == len(set(shares[0]) | set(shares[1]))  # no row twice
    assert set(shares[0]) | set(shares[1]) == {f"u{i}" for i in range(200)} - {"u3", "u77", "u150"}


def test_unbalanced_subset_reads_the_rows_balancing_removed(tmp_path):
    build = make_build(tmp_path, unbalanced_only={3, 77, 150})
    assert {"u3", "u77", "u150"} <= set(epoch0_uids(build, 0, 1, subset="unbalanced"))


def test_order_is_shuffled_and_differs_between_epochs(tmp_path):
    build = make_build(tmp_path)
    with loader(build, batch_size=40) as ld:
        first = []
        for _ in range(5):
            ld.next_batch()
            first += ld.last_uids
        second = []
        for _ in range(5):
            ld.next_batch()
            second += ld.last_uids
    assert first != sorted(first, key=lambda u: int(u[1:]))
    assert sorted(first) == sorted(second) and first != second  # one epoch each, another order


def test_resume_from_state_gives_the_same_batches(tmp_path):
    build = make_build(tmp_path, bad={5, 17, 60})
    with loader(build, rank=1, world=2) as ld:
        for _ in range(3):
            ld.next_batch()
        mid = ld.state()
        rest = [(*ld.next_batch(), list(ld.last_uids)) for _ in range(12)]  # crosses an epoch
    assert rest[-1] is not None and ld.state().epoch >= 1
    resumed = loader(build, rank=1, world=2, state=LoaderState.from_dict(mid.to_dict()))
    with resumed:
        for img, tok, uids in rest:
            i2, t2 = resumed.next_batch()
            assert resumed.last_uids == uids
            assert torch.equal(i2, img) and torch.equal(t2, tok)  # the same crops: augmentation is seeded by position
    assert resumed.state() == ld.state()


def test_bad_records_are_replaced_by_new_rows_never_duplicated(tmp_path):
    bad = set(range(0, 200, 3))
    build = make_build(tmp_path, bad=bad)
    with loader(build, batch_size=32) as ld:
        for _ in range(4):
            imgs, toks = ld.next_batch()
            assert imgs.shape[0] == toks.shape[0] == 32
            assert len(set(ld.last_uids)) == 32
            assert not {f"u{i}" for i in bad} & set(ld.last_uids)
        assert sum(ld.state().skipped.values()) >= 4 * 32 // 2 - 2  # a third of rows are bad: about half as many skipped as kept
        assert set(ld.state().skipped) == {"UnidentifiedImageError"}


def test_builds_without_row_groups_in_the_manifest_read_shard_footers(tmp_path):
    build = make_build(tmp_path, row_groups_in_manifest=False)
    assert len(set(epoch0_uids(build, 0, 1))) == 200


def test_reads_are_bounded_by_the_shuffle_window(tmp_path, monkeypatch):
    """The memory bound: a block never holds more rows than shuffle_units x unit_rows."""
    build = make_build(tmp_path, shards=8, rows=100)
    sizes = []
    orig = RowStream.read_block

    def spy(self, units):
        out = orig(self, units)
        sizes.append(len(out[0]))
        return out

    monkeypatch.setattr(RowStream, "read_block", spy)
    with loader(build, shuffle_units=3, batch_size=16) as ld:
        for _ in range(30):
            ld.next_batch()
    assert sizes and max(sizes) <= 30


def test_a_build_smaller_than_a_global_batch_is_refused(tmp_path):
    build = make_build(tmp_path, shards=1, rows=10)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        loader(build, batch_size=8, world=2)


def test_old_checkpoint_positions_restart_the_epoch():
    st = LoaderState.from_dict({"epoch": 3, "index": 1024, "skipped": {"OSError": 2}})
    assert (st.epoch, st.block, st.offset, st.skipped) == (3, 0, 0, {"OSError": 2})


def test_without_augmentation_images_are_clips_centre_crop_normalised(tmp_path):
    """uint8 batches normalised where the model runs equal the evaluation transform (to_tensor of
    the centre crop)."""
    from training.data.images import eval_tensor, normalise

    build = make_build(tmp_path, shards=1, rows=40)
    with loader(build, augment=False, batch_size=8) as ld:
        images, _ = ld.next_batch()
        uids = ld.last_uids
    assert images.dtype == torch.uint8 and images.shape == (8, 16, 16, 3)  # [B,H,W,3]: a quarter of float32's bytes
    for img, uid in zip(normalise(images), uids):
        expected = eval_tensor(Image.open(io.BytesIO(jpeg(int(uid[1:])))), 16)
        assert np.allclose(img.numpy(), expected, atol=1e-5)


def _sequence(build: Path, steps: int, state: LoaderState | None = None, **kw) -> tuple[list, LoaderState]:
    """(uids, images, tokens) of `steps` batches, and the position after them."""
    out = []
    with loader(build, state=state, **kw) as ld:
        for _ in range(steps):
            img, tok = ld.next_batch()
            out.append((list(ld.last_uids), img.clone(), tok.clone()))
        return out, ld.state()


@pytest.mark.parametrize("world", [1, 2])
def test_decode_processes_give_the_same_batches_as_one_thread_across_a_resume_on_every_rank(tmp_path, world):
    """The multi-process path yields exactly the single-process sequence (uids, crops, tokens) for
    a seed, on every rank, and so does a resume from the middle of an epoch, with bad records and
    epochs crossed in between."""
    build = make_build(tmp_path, bad={5, 17, 60, 111})
    for rank in range(world):
        ref, _ = _sequence(build, 14, rank=rank, world=world, workers=0)
        assert len({u for uids, _, _ in ref for u in uids}) > 100 // world  # more than one epoch of this rank's share
        par, _ = _sequence(build, 14, rank=rank, world=world, workers=2)
        head, mid = _sequence(build, 5, rank=rank, world=world, workers=2)
        assert mid.offset > 0 or mid.block > 0  # the middle of an epoch
        tail, _ = _sequence(build, 9, state=LoaderState.from_dict(mid.to_dict()), rank=rank, world=world, workers=3)
        for (u0, i0, t0), (u1, i1, t1), (u2, i2, t2) in zip(ref, par, head + tail):
            assert u0 == u1 == u2
            assert torch.equal(i0, i1) and torch.equal(i0, i2)  # the same crops, byte for byte
            assert torch.equal(t0, t1) and torch.equal(t0, t2)


def test_a_batch_never_holds_a_row_twice_even_when_a_share_is_smaller_than_it(tmp_path):
    """A rank whose share of an epoch is smaller than its batch would wrap into the next epoch
    and repeat rows: refused with a clear error (the build's 40 rows pass the global check; its
    subset's 20, split over 2 ranks, do not fill a batch of 16). A share a little larger than a batch wraps
    without repeating a uid in any batch (the repeat is skipped as duplicate_in_batch)."""
    small = make_build(tmp_path / "small", shards=1, rows=40, row_group=5, unbalanced_only=set(range(0, 40, 2)))  # 20 balanced rows
    with pytest.raises(ValueError, match="fewer than its batch of 16"), loader(small, batch_size=16, world=2, rank=1) as ld:
        ld.next_batch()
    ok = make_build(tmp_path / "ok", shards=1, rows=18, row_group=9)
    with loader(ok, batch_size=16, shuffle_units=1, unit_rows=9) as ld:
        for _ in range(8):
            ld.next_batch()
            assert len(set(ld.last_uids)) == 16
        assert ld.state().skipped.get("duplicate_in_batch", 0) > 0
