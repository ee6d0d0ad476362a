"""Turn a suite dict into data, and evaluation artifacts into MLflow files (plots, tables)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from training.eval_data import LabelledSet, load_cifar, load_imagefolder, load_imagenet, load_parquet

_CACHE: dict[str, LabelledSet] = {}


def suite_data(suite: dict) -> LabelledSet:
    """Load (and memoise per process) the dataset a resolved suite dict names."""
    src = suite["source"]
    key = json.dumps(src, sort_keys=True)
    if key not in _CACHE:
        path, kind, n = Path(src["path"]), src["kind"], src.get("max_images")
        if kind in ("imagefolder", "world"):
            data = load_imagefolder(path, n)
        elif kind in ("cifar10", "cifar100"):
            data = load_cifar(path, kind == "cifar100", n)
        elif kind == "imagenet":
            data = load_imagenet(path, Path(src["synset_map"]), n)
        else:
            data = load_parquet(path, src.get("image_col", "image"), src.get("label_col", "label"),
                                src.get("caption_col", "caption"), suite.get("classnames"), n)
        _CACHE[key] = data
    return _CACHE[key]


def confusion_png(cm: np.ndarray, classnames: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classnames)
    fig, ax = plt.subplots(figsize=(max(4, n * 0.45 + 2), max(3.5, n * 0.45 + 1.5)))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classnames, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), classnames, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def log_eval_artifacts(client, run_id: str, suite: str, artifacts: dict) -> None:
    with tempfile.TemporaryDirectory() as d:
        for name, obj in artifacts.items():
            if name.endswith("-confusion"):
                cm, classnames = obj
                confusion_png(cm, classnames, f"zero-shot confusion: {suite}", Path(d) / f"{name}.png")
                client.log_artifact(run_id, str(Path(d) / f"{name}.png"), artifact_path=f"eval/{suite}")
            else:
                p = Path(d) / f"{name}.json"
                p.write_text(json.dumps(obj, indent=1))
                client.log_artifact(run_id, str(p), artifact_path=f"eval/{suite}")
