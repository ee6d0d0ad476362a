"""Evaluation datasets and the suite runner used by `pretrain` (during training) and `evaluate`.

Sources: an ImageFolder (`<class>/*.jpg`), CIFAR-10/100 python pickle batches, an ImageNet
validation folder with its `LOC_synset_mapping.txt`, a parquet table with image bytes and a
label or captions. Suites are plain dicts here (validated by tasks/specs.py upstream).
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from training.data import center_resize, to_tensor
from training.zero_shot import (
    TEMPLATE_SETS,
    class_embeddings,
    image_features,
    linear_probe,
    retrieval_metrics,
    zero_shot_classify,
)

IMG_EXT = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")


@dataclass
class LabelledSet:
    images: list  # PIL images or bytes
    labels: np.ndarray
    classnames: list[str]
    captions: list[list[str]] = field(default_factory=list)


def _open(x) -> Image.Image:
    return x if isinstance(x, Image.Image) else Image.open(io.BytesIO(x) if isinstance(x, bytes) else x)


def load_imagefolder(path: Path, max_images: int | None = None) -> LabelledSet:
    classes = sorted(d.name for d in path.iterdir() if d.is_dir())
    images, labels = [], []
    for c, name in enumerate(classes):
        files = sorted(f for f in (path / name).iterdir() if f.suffix.lower() in IMG_EXT)
        images += files
        labels += [c] * len(files)
    return _cap(LabelledSet(images, np.array(labels), classes), max_images)


def load_cifar(path: Path, hundred: bool = False, max_images: int | None = None) -> LabelledSet:
    batch = "test" if hundred else "test_batch"
    # CIFAR's own python batches are pickles: only load them from the dataset's official files
    with open(path / ("meta" if hundred else "batches.meta"), "rb") as f:
        meta = pickle.load(f, encoding="latin1")
    with open(path / batch, "rb") as f:
        d = pickle.load(f, encoding="latin1")
    data = d["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.array(d["fine_labels" if hundred else "labels"])
    names = meta["fine_label_names" if hundred else "label_names"]
    return _cap(LabelledSet([Image.fromarray(a) for a in data], labels, [n.replace("_", " ") for n in names]), max_images)


OPENAI_IMAGENET_CLASSNAMES = Path(__file__).with_name("metadata") / "imagenet_classnames_openai.txt"


def load_imagenet(path: Path, synset_map: Path, max_images: int | None = None, wordnet_names: bool = False) -> LabelledSet:
    """ImageNet-1k in <wnid>/ folders. Class names: OpenAI's curated list (the one open_clip and
    clip_benchmark use, in wnid order; the WordNet first lemmas collide, e.g. two "crane"s), or
    with `wordnet_names` the first lemma of each synset in `synset_map`."""
    wnids, names = [], []
    for line in synset_map.read_text().splitlines():
        wnid, rest = line.split(" ", 1)
        wnids.append(wnid)
        names.append(rest.split(",")[0].strip())
    if not wordnet_names:
        if len(wnids) != 1000 or wnids != sorted(wnids):
            raise ValueError(f"{synset_map}: OpenAI's class names need the 1,000 ImageNet-1k synsets in wnid order "
                             f"({len(wnids)} found); set `classnames: wordnet` in the suite to use WordNet lemmas")
        names = OPENAI_IMAGENET_CLASSNAMES.read_text().splitlines()
    images, labels = [], []
    for c, w in enumerate(wnids):
        files = sorted((path / w).glob("*")) if (path / w).is_dir() else []
        images += files
        labels += [c] * len(files)
    return _cap(LabelledSet(images, np.array(labels), names), max_images)


def load_parquet(path: Path, image_col: str, label_col: str, caption_col: str, classnames: list[str] | None,
                 max_images: int | None = None) -> LabelledSet:
    t = pq.read_table(path)
    images = t[image_col].to_pylist()
    if label_col in t.column_names:
        labels = np.array(t[label_col].to_pylist())
        return _cap(LabelledSet(images, labels, classnames or [str(i) for i in range(int(labels.max()) + 1)]), max_images)
    caps = t[caption_col].to_pylist() if caption_col in t.column_names else t["captions"].to_pylist()
    caps = [c if isinstance(c, list) else [c] for c in caps]
    return _cap(LabelledSet(images, np.zeros(len(images), dtype=np.int64), [], caps), max_images)


def _cap(s: LabelledSet, n: int | None) -> LabelledSet:
    if n is None or len(s.images) <= n:
        return s
    idx = np.random.default_rng(0).permutation(len(s.images))[:n]
    idx.sort()
    return LabelledSet([s.images[i] for i in idx], s.labels[idx], s.classnames, [s.captions[i] for i in idx] if s.captions else [])


def batches(images: list, labels: np.ndarray, size: int, bs: int = 256):
    for i in range(0, len(images), bs):
        x = np.stack([to_tensor(center_resize(_open(im), size)) for im in images[i:i + bs]])
        yield torch.from_numpy(x), torch.from_numpy(labels[i:i + bs])


def sample_predictions(feats: torch.Tensor, labels: torch.Tensor, cls: torch.Tensor, classnames: list[str], images: list,
                       n: int = 24, thumb: int = 64) -> dict[str, list]:
    """A table of `n` images spread over the suite: the image, its class, the top-3 predictions."""
    probs = (100.0 * feats @ cls.T).softmax(dim=1)
    top_p, top_i = probs.topk(min(3, len(classnames)), dim=1)
    pick = np.linspace(0, len(labels) - 1, num=min(n, len(labels))).astype(int)
    rows: dict[str, list] = {"image": [], "true": [], "predicted": [], "correct": [], "top3": []}
    for i in pick.tolist():
        img = _open(images[i]).convert("RGB")
        img.thumbnail((thumb, thumb))
        rows["image"].append(img)
        rows["true"].append(classnames[int(labels[i])])
        rows["predicted"].append(classnames[int(top_i[i, 0])])
        rows["correct"].append(bool(int(top_i[i, 0]) == int(labels[i])))
        rows["top3"].append(", ".join(f"{classnames[int(c)]} {float(p):.2f}" for p, c in zip(top_p[i], top_i[i])))
    return rows


def group_metrics(suite_name: str, cm: np.ndarray, classnames: list[str], per_class: list[float], groups_file: str) -> dict:
    """top1 and mean per-class recall over the images of each group's classes, from the confusion
    matrix of the classification among all classes (rows: true class)."""
    import json

    groups = json.loads(Path(groups_file).read_text())
    index = {c: i for i, c in enumerate(classnames)}
    out = {}
    for group, names in groups.items():
        missing = [c for c in names if c not in index]
        if missing:
            raise ValueError(f"{groups_file}: group {group!r} names classes the suite {suite_name!r} lacks: {missing[:5]}")
        ids = [index[c] for c in names]
        seen = cm[ids].sum()
        out[f"zeroshot/{suite_name}/{group}/top1"] = float(cm[ids, ids].sum() / seen) if seen else float("nan")
        out[f"zeroshot/{suite_name}/{group}/mean_per_class_recall"] = float(np.nanmean([per_class[i] for i in ids]))
    return out


def suite_classnames(suite: dict, folder_names: list[str]) -> list[str]:
    """The names zero-shot prompts use: the suite's list, its {folder: name} map (e.g. Chinese
    names for the sample world's folders), else the data's own class names."""
    names = suite.get("classnames")
    if isinstance(names, list):
        return names
    if isinstance(names, dict):
        missing = [c for c in folder_names if c not in names]
        if missing:
            raise ValueError(f"suite {suite['name']}: classnames_file names no class for {missing[:5]} "
                             f"({len(missing)} of {len(folder_names)} classes)")
        return [names[c] for c in folder_names]
    return folder_names


@torch.no_grad()
def run_suite(model, tokenizer, suite: dict, data: LabelledSet, image_size: int, cache: dict | None = None,
              model_key: str | None = None, train_data: LabelledSet | None = None) -> tuple[dict, dict]:
    """Metrics `{<task>/<suite>/<metric>: value}` and artifacts `{name: object}` for one suite.

    `cache` maps (model_key, suite name) to the suite's class embeddings; pass a key that names
    the weights (a hash) to reuse it across calls, or leave it out for a per-object key."""
    name = suite["name"]
    model.eval()
    metrics, artifacts = {}, {}
    # inputs go to the model's device (a GPU during training); features come back to the CPU
    device = next(model.parameters()).device
    enc_text = lambda texts: model.encode_text(tokenizer(texts).to(device)).float().cpu()
    enc_image = lambda x: model.encode_image(x.to(device)).float().cpu()
    feats, labels = image_features(enc_image, batches(data.images, data.labels, image_size))
    tasks = suite.get("tasks", ["zeroshot"])
    if "zeroshot" in tasks and data.classnames:
        templates = suite.get("templates", "simple")
        templates = TEMPLATE_SETS[templates] if isinstance(templates, str) else templates
        classnames = suite_classnames(suite, data.classnames)
        key = (model_key or id(model), name)
        if cache is not None and key in cache:
            cls = cache[key]
        else:
            cls = class_embeddings(enc_text, classnames, templates)
            if cache is not None:
                cache[key] = cls
        m, cm, per_class = zero_shot_classify(feats, labels, cls)
        metrics.update({f"zeroshot/{name}/{k}": v for k, v in m.items()})
        if suite.get("class_groups"):
            metrics.update(group_metrics(name, cm, classnames, per_class, suite["class_groups"]))
        artifacts[f"zeroshot-{name}-confusion"] = (cm, classnames)
        artifacts[f"zeroshot-{name}-per-class"] = dict(zip(classnames, per_class))
        artifacts[f"zeroshot-{name}-predictions"] = sample_predictions(feats, labels, cls, classnames, data.images)
    if "retrieval" in tasks and data.captions:
        caps = [c for cs in data.captions for c in cs]
        owner = torch.tensor([i for i, cs in enumerate(data.captions) for _ in cs])
        txt = torch.cat([torch.nn.functional.normalize(enc_text(caps[i:i + 256]).float(), dim=-1) for i in range(0, len(caps), 256)])
        metrics.update({f"retrieval/{name}/{k}": v for k, v in retrieval_metrics(feats, txt, owner).items()})
    if "linear_probe" in tasks and data.classnames:
        if train_data is None and suite.get("train_source"):
            from training.eval_report import suite_data

            train_data = suite_data(suite, "train")
        X, y = feats.numpy(), labels.numpy()
        if train_data is not None:  # clip_benchmark's protocol: fit on the train split, test on this one
            tX, ty = image_features(enc_image, batches(train_data.images, train_data.labels, image_size))
            lp, prefix = linear_probe(tX.numpy(), ty.numpy(), X, y), f"linprobe/{name}"
        else:  # no train split: a seeded half of this set, reported under its own name
            idx = np.random.default_rng(0).permutation(len(y))
            cut = len(y) // 2
            lp, prefix = linear_probe(X[idx[:cut]], y[idx[:cut]], X[idx[cut:]], y[idx[cut:]]), f"linprobe_heldout/{name}"
        metrics.update({f"{prefix}/{k}": v for k, v in lp.items() if k in ("top1", "top5", "mean_per_class_recall")})
        metrics[f"{prefix}/weight_decay"] = lp["weight_decay"]
    return metrics, artifacts
