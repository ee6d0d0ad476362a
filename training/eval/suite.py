"""Run one evaluation suite: zero-shot classification (with class groups), retrieval, linear probe.

Used by `pretrain` (rank 0, during and after training) and by `evaluate`. Images are decoded in
parallel and go to the model's device as uint8 (training/eval/datasets.py); features come back to
the host for the metrics (training/zero_shot.py). Metric names are stable
(`zeroshot/<suite>/top1`, `retrieval/<suite>/i2t_recall_at_5`, `linprobe/<suite>/top1`), so runs
line up in the MLflow UI.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from training.config import SuiteConfig
from training.eval.datasets import LabelledSet, image_batches, open_image, suite_data
from training.zero_shot import (
    class_embeddings,
    image_features,
    linear_probe,
    retrieval_metrics,
    zero_shot_classify,
)


def sample_predictions(feats: torch.Tensor, labels: torch.Tensor, cls: torch.Tensor, classnames: list[str], images: list,
                       n: int = 24, thumb: int = 64) -> dict[str, list]:
    """A table of `n` images spread over the suite: the image, its class, the top-3 predictions."""
    probs = (100.0 * feats @ cls.T).softmax(dim=1)
    top_p, top_i = probs.topk(min(3, len(classnames)), dim=1)
    pick = np.linspace(0, len(labels) - 1, num=min(n, len(labels))).astype(int)
    rows: dict[str, list] = {"image": [], "true": [], "predicted": [], "correct": [], "top3": []}
    for i in pick.tolist():
        img = open_image(images[i]).convert("RGB")
        img.thumbnail((thumb, thumb))
        rows["image"].append(img)
        rows["true"].append(classnames[int(labels[i])])
        rows["predicted"].append(classnames[int(top_i[i, 0])])
        rows["correct"].append(bool(int(top_i[i, 0]) == int(labels[i])))
        rows["top3"].append(", ".join(f"{classnames[int(c)]} {float(p):.2f}" for p, c in zip(top_p[i], top_i[i])))
    return rows


def group_metrics(suite_name: str, cm: np.ndarray, classnames: list[str], per_class: list[float], groups_file) -> dict:
    """top1 and mean per-class recall over the images of each group's classes, from the confusion
    matrix of the classification among all classes (rows: true class)."""
    groups = json.loads(groups_file.read_text())
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


def suite_classnames(suite: SuiteConfig, folder_names: list[str]) -> list[str]:
    """The names zero-shot prompts use: the suite's list, its {folder: name} map (e.g. Chinese
    names for the sample world's folders), else the data's own class names."""
    names = suite.classnames
    if isinstance(names, tuple):
        return list(names)
    if isinstance(names, dict):
        missing = [c for c in folder_names if c not in names]
        if missing:
            raise ValueError(f"suite {suite.name}: classnames_file names no class for {missing[:5]} "
                             f"({len(missing)} of {len(folder_names)} classes)")
        return [names[c] for c in folder_names]
    return folder_names


@torch.no_grad()
def run_suite(model, tokenizer, suite: SuiteConfig, data: LabelledSet, image_size: int, cache: dict | None = None,
              model_key: str | None = None, train_data: LabelledSet | None = None, workers: int = 0,
              batch_size: int = 256) -> tuple[dict, dict]:
    """Metrics `{<task>/<suite>/<metric>: value}` and artifacts `{name: object}` for one suite, on
    the model's device, images decoded by `workers` processes.

    `cache` maps (model_key, suite name) to the suite's class embeddings; pass a key that names
    the weights (a hash) to reuse it across calls, or leave it out for a per-object key."""
    name = suite.name
    model.eval()
    metrics, artifacts = {}, {}
    device = next(model.parameters()).device  # images go to the model; features come back to the host
    enc_text = lambda texts: model.encode_text(tokenizer(texts).to(device)).float().cpu()
    enc_image = lambda x: model.encode_image(x).float().cpu()
    feats, labels = image_features(enc_image, image_batches(data.images, data.labels, image_size, device, batch_size, workers))
    if "zeroshot" in suite.tasks and data.classnames:
        classnames = suite_classnames(suite, data.classnames)
        key = (model_key or id(model), name)
        if cache is not None and key in cache:
            cls = cache[key]
        else:
            cls = class_embeddings(enc_text, classnames, list(suite.templates))
            if cache is not None:
                cache[key] = cls
        m, cm, per_class = zero_shot_classify(feats, labels, cls)
        metrics.update({f"zeroshot/{name}/{k}": v for k, v in m.items()})
        if suite.class_groups:
            metrics.update(group_metrics(name, cm, classnames, per_class, suite.class_groups))
        artifacts[f"zeroshot-{name}-confusion"] = (cm, classnames)
        artifacts[f"zeroshot-{name}-per-class"] = dict(zip(classnames, per_class))
        artifacts[f"zeroshot-{name}-predictions"] = sample_predictions(feats, labels, cls, classnames, data.images)
    if "retrieval" in suite.tasks and data.captions:
        caps = [c for cs in data.captions for c in cs]
        owner = torch.tensor([i for i, cs in enumerate(data.captions) for _ in cs])
        txt = torch.cat([torch.nn.functional.normalize(enc_text(caps[i:i + 256]).float(), dim=-1) for i in range(0, len(caps), 256)])
        metrics.update({f"retrieval/{name}/{k}": v for k, v in retrieval_metrics(feats, txt, owner).items()})
    if "linear_probe" in suite.tasks and data.classnames:
        if train_data is None and suite.train_source is not None:
            train_data = suite_data(suite, "train")
        X, y = feats.numpy(), labels.numpy()
        if train_data is not None:  # clip_benchmark's protocol: fit on the train split, test on this one
            tX, ty = image_features(enc_image, image_batches(train_data.images, train_data.labels, image_size, device, batch_size, workers))
            lp, prefix = linear_probe(tX.numpy(), ty.numpy(), X, y), f"linprobe/{name}"
        else:  # no train split: a seeded half of this set, reported under its own name
            idx = np.random.default_rng(0).permutation(len(y))
            cut = len(y) // 2
            lp, prefix = linear_probe(X[idx[:cut]], y[idx[:cut]], X[idx[cut:]], y[idx[cut:]]), f"linprobe_heldout/{name}"
        metrics.update({f"{prefix}/{k}": v for k, v in lp.items() if k in ("top1", "top5", "mean_per_class_recall")})
        metrics[f"{prefix}/weight_decay"] = lp["weight_decay"]
    return metrics, artifacts
