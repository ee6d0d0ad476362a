"""Turn a suite dict into data, and evaluation artifacts into MLflow files (plots, tables)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from training.eval_data import LabelledSet, load_cifar, load_imagefolder, load_imagenet, load_parquet

_CACHE: dict[str, LabelledSet] = {}


def suite_data(suite: dict, split: str = "test") -> LabelledSet:
    """Load (and memoise per process) the dataset a resolved suite dict names: its `source`, or
    with split="train" its `train_source` (the linear probe's training split)."""
    src = suite["train_source"] if split == "train" else suite["source"]
    key = json.dumps([src, suite.get("classnames")], sort_keys=True)
    if key not in _CACHE:
        path, kind, n = Path(src["path"]), src["kind"], src.get("max_images")
        if kind in ("imagefolder", "world"):
            data = load_imagefolder(path, n)
        elif kind in ("cifar10", "cifar100"):
            data = load_cifar(path, kind == "cifar100", n)
        elif kind == "imagenet":
            data = load_imagenet(path, Path(src["synset_map"]), n, wordnet_names=suite.get("classnames") == "wordnet")
        else:
            data = load_parquet(path, src.get("image_col", "image"), src.get("label_col", "label"),
                                src.get("caption_col", "caption"), suite["classnames"] if isinstance(suite.get("classnames"), list) else None, n)
        _CACHE[key] = data
    return _CACHE[key]


MAX_LABELLED = 40  # classes a figure names one by one


def confusion_figure(cm: np.ndarray, classnames: list[str], title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classnames)
    side = min(n, MAX_LABELLED) * 0.45  # past MAX_LABELLED classes: a fixed size, no class names
    fig, ax = plt.subplots(figsize=(max(4, side + 2), max(3.5, side + 1.5)))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    if n <= MAX_LABELLED:
        ax.set_xticks(range(n), classnames, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(n), classnames, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def per_class_figure(per_class: dict[str, float], title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(per_class, key=lambda k: per_class[k])
    if len(names) > MAX_LABELLED:  # the worst and the best classes
        half = MAX_LABELLED // 2
        names = names[:half] + names[-half:]
        title += f" (the {half} worst and {half} best of {len(per_class)})"
    fig, ax = plt.subplots(figsize=(6, max(2.5, 0.22 * len(names) + 1)))
    ax.barh(names, [per_class[k] for k in names], color="#4c72b0")
    ax.set_xlim(0, 1)
    ax.set_xlabel("zero-shot accuracy (recall of the class)")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def log_eval_artifacts(client, run_id: str, suite: str, artifacts: dict) -> None:
    """MLflow figures (shown as images in the run's Artifacts tab), the per-class accuracies as
    JSON, and a table of sample predictions with their images (MLflow's table viewer)."""
    import matplotlib.pyplot as plt

    for name, obj in artifacts.items():
        if name.endswith("-confusion"):
            cm, classnames = obj
            fig = confusion_figure(cm, classnames, f"zero-shot confusion: {suite}")
            client.log_figure(run_id, fig, f"eval/{suite}/{name}.png")
            plt.close(fig)
        elif name.endswith("-per-class"):
            fig = per_class_figure(obj, f"zero-shot accuracy per class: {suite}")
            client.log_figure(run_id, fig, f"eval/{suite}/{name}.png")
            plt.close(fig)
            client.log_dict(run_id, obj, f"eval/{suite}/{name}.json")
        elif name.endswith("-predictions"):
            client.log_table(run_id, data=obj, artifact_file=f"eval/{suite}/{name}.json")
        else:
            client.log_dict(run_id, obj, f"eval/{suite}/{name}.json")
