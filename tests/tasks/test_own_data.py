"""Your own images with captions become a build with no network: a folder of name.jpg + name.txt,
a table of paths, or Chinese-CLIP's layout, through the real stages (candidates -> match ->
balance -> download with img2dataset reading file:// URLs -> manifest) with `curation: none`.
A build's shards go out in Chinese-CLIP's layout, and cn_clip's own LMDBDataset reads them."""

import base64
import io
import json
import pickle

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from tasks import stages as build_stages
from tasks.context import make_context
from tasks.manifest.cn_clip_layout import export_cn_clip
from tasks.specs import load_spec

COLORS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220)}
SHAPES = ("circle", "square")


def shape_image(color: str, shape: str, k: int, size=(48, 36)) -> Image.Image:
    """A coloured shape on a light background, placed by k (so no two images are the same)."""
    img = Image.new("RGB", size, (235, 235, 225))
    d = ImageDraw.Draw(img)
    x, y = 4 + (k * 5) % 16, 3 + (k * 3) % 8
    box = (x, y, x + 24, y + 24)
    (d.ellipse if shape == "circle" else d.rectangle)(box, fill=COLORS[color])
    return img


def make_pairs_folder(root, per_class: int = 3) -> dict[str, str]:
    """name.jpg + name.txt for every colour x shape x k; returns file stem -> caption."""
    root.mkdir(parents=True, exist_ok=True)
    captions = {}
    for color in COLORS:
        for shape in SHAPES:
            for k in range(per_class):
                stem = f"{color}_{shape}_{k}"
                shape_image(color, shape, k).save(root / f"{stem}.jpg", quality=95)
                captions[stem] = f"a photo of a {color} {shape}, number {k}"
                (root / f"{stem}.txt").write_text(captions[stem])
    return captions


def own_build_spec(tmp_path, local: list[dict], name="own", **extra) -> dict:
    return {"kind": "build-wit", "name": name, "output_dir": str(tmp_path / name), "curation": "none",
            "crawl": {"local": local, "workers": 1}, "matching": {"workers": 1}, "balancing": {"workers": 1},
            "download": {"image_size": 32, "processes": 1, "threads": 4, "number_sample_per_shard": 50},
            "tokenizer_vocab_size": 300, **extra}


def run_build(spec_dict: dict):
    ctx = make_context(load_spec(spec_dict), log=lambda *_: None)
    stats = {stage: build_stages.run_stage(ctx, stage)[0] for stage in build_stages.STAGES}
    return ctx.out, stats


def shard_rows(build) -> list[dict]:
    return [r for f in sorted((build / "shards").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_a_folder_of_images_and_captions_builds_into_shards_without_network(tmp_path):
    captions = make_pairs_folder(tmp_path / "mine")
    Image.new("RGB", (20, 20)).save(tmp_path / "mine" / "no_caption.jpg")  # dropped, counted
    spec = own_build_spec(tmp_path, [{"path": str(tmp_path / "mine")}])
    assert "allow_networks" not in spec["download"]
    build, stats = run_build(spec)
    rows = shard_rows(build)
    assert sorted(r["caption"] for r in rows) == sorted(captions.values())  # every pair, once
    assert stats["candidates"].dropped == {"local_no_caption": 1}
    dl = stats["download"]
    assert dl.hosts == 0 and dl.dns_lookups == 0 and dl.rows_out == len(captions) and not dl.dropped  # nothing resolved or fetched
    assert all(r["url"].startswith("file://") and r["in_balanced"] for r in rows)
    for r in rows[:3]:
        img = Image.open(io.BytesIO(r["jpg"]))
        assert img.size == (32, 32)  # img2dataset resized it (center_crop at download.image_size)
    m = json.loads((build / "manifest.json").read_text())
    assert m["totals"]["rows"] == len(captions)


def test_web_inputs_cannot_name_local_files(tmp_path):
    """Only crawl.local reads the disk: a table (or a page) naming file:// URLs is dropped."""
    make_pairs_folder(tmp_path / "mine", per_class=1)
    table = tmp_path / "t.jsonl"
    table.write_text(json.dumps({"url": (tmp_path / "mine" / "red_circle_0.jpg").as_uri(), "caption": "a red circle"}) + "\n"
                     + json.dumps({"url": "file:///etc/passwd", "caption": "a red circle too"}) + "\n")
    spec = load_spec(own_build_spec(tmp_path, [], crawl={"tables": [{"path": str(table)}], "workers": 1}))
    ctx = make_context(spec, log=lambda *_: None)
    build_stages.run_stage(ctx, "vocabulary")
    with pytest.raises(build_stages.EmptyStageError, match="not_http"):
        build_stages.run_stage(ctx, "candidates")


def test_a_table_of_paths_and_the_chinese_clip_layout_build_every_pair(tmp_path):
    captions = make_pairs_folder(tmp_path / "imgs", per_class=2)
    table = tmp_path / "imgs" / "captions.csv"
    table.write_text("image,caption\n" + "".join(f"{k}.jpg,\"{c}\"\n" for k, c in captions.items()) + "missing.jpg,gone\n")
    build, stats = run_build(own_build_spec(tmp_path, [{"path": str(table)}], name="from-table"))
    assert len(shard_rows(build)) == len(captions) and stats["candidates"].dropped == {"local_missing_image": 1}

    # Chinese-CLIP's layout (as MUGE ships it): one text names two images, one image has two texts
    folder = tmp_path / "muge"
    folder.mkdir()
    images = {i: shape_image(c, s, i) for i, (c, s) in enumerate([("red", "circle"), ("blue", "square"), ("green", "circle")])}
    with open(folder / "train_imgs.tsv", "w") as fh:
        for i, img in images.items():
            buf = io.BytesIO()
            img.save(buf, format="JPEG")
            fh.write(f"{1000 + i}\t{base64.urlsafe_b64encode(buf.getvalue()).decode()}\n")
    texts = [{"text_id": 1, "text": "红色的圆形", "image_ids": [1000]}, {"text_id": 2, "text": "蓝色的方块图片", "image_ids": [1001]},
             {"text_id": 3, "text": "两种颜色的形状", "image_ids": [1000, 1002]}, {"text_id": 4, "text": "不在这里的图片", "image_ids": [9]}]
    (folder / "train_texts.jsonl").write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in texts) + "{broken\n")
    build, stats = run_build(own_build_spec(tmp_path, [{"path": str(folder)}], name="from-cn-clip", language="zh"))
    got = sorted((r["caption"], r["uid"]) for r in shard_rows(build))
    assert sorted(c for c, _ in got) == sorted(["红色的圆形", "蓝色的方块图片", "两种颜色的形状", "两种颜色的形状"])
    assert stats["candidates"].dropped == {"local_missing_image": 1, "local_bad_record": 1}


def test_export_cn_clip_is_read_by_chinese_clips_own_lmdb_dataset(tmp_path):
    from training.convert import import_cn_clip

    captions = make_pairs_folder(tmp_path / "mine")
    build, _ = run_build(own_build_spec(tmp_path, [{"path": str(tmp_path / "mine")}]))
    out, st = export_cn_clip(build, tmp_path / "cn", valid=0.25, seed=0)
    assert set(st.images) == {"train", "valid"} and sum(st.pairs.values()) == len(captions)
    assert sorted(p.name for p in out.iterdir()) == ["lmdb", "train_imgs.tsv", "train_texts.jsonl", "valid_imgs.tsv",
                                                    "valid_texts.jsonl"]
    import_cn_clip()  # cn_clip imports torchvision's transforms and timm (training/convert.py explains)
    from cn_clip.training.data import LMDBDataset

    ours = {r["caption"]: np.asarray(Image.open(io.BytesIO(r["jpg"])).convert("RGB")) for r in shard_rows(build)}
    seen = []
    for split in ("train", "valid"):
        ds = LMDBDataset(str(out / "lmdb" / split), split="val", max_txt_length=52, resolution=32)
        assert len(ds) == st.pairs[split] and ds.number_images == st.images[split]
        for i in range(len(ds)):
            image, text, eos = ds[i]
            _image_id, _text_id, raw = pickle.loads(ds.txn_pairs.get(str(i).encode()).tobytes())
            seen.append(raw)
            # their transform (resize to 32, CLIP mean/std) of our image is the tensor they give
            expect = (ours[raw] / 255.0 - np.array([0.48145466, 0.4578275, 0.40821073])) / np.array([0.26862954, 0.26130258, 0.27577711])
            assert np.abs(image.numpy().transpose(1, 2, 0) - expect).max() < 1e-4
            assert text[0] == 101 and text[eos] == 102  # [CLS] ... [SEP] in cn_clip's own tokenizer
    assert sorted(seen) == sorted(captions.values())
    with pytest.raises(FileExistsError, match="exists"):
        export_cn_clip(build, out)
