"""What evaluation leaves for people: MLflow figures and tables, and clip_benchmark-format JSON.

`log_eval_artifacts` turns a suite's artifacts into the run's Artifacts tab (confusion matrix and
per-class accuracy as figures, per-class accuracy as JSON, a table of sample predictions with
their images). `clip_benchmark_results` writes one JSON per (model, suite, task) in
clip_benchmark's result format, so our numbers merge with its CSVs (`clip_benchmark build`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from training.config import SuiteConfig
from training.run_dir import write_text

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


# clip_benchmark's task names and metric keys (clip_benchmark/cli.py, metrics/zeroshot_classification.py,
# zeroshot_retrieval.py, linear_probe.py): our metric -> theirs
CLIP_BENCHMARK_TASKS = {
    "zeroshot": ("zeroshot_classification", {"top1": "acc1", "top5": "acc5", "mean_per_class_recall": "mean_per_class_recall"}),
    # clip_benchmark's image_retrieval is text -> image (a caption finds its image), its text_retrieval image -> text
    "retrieval": ("zeroshot_retrieval", {f"{d}_recall_at_{k}": f"{'text' if d == 'i2t' else 'image'}_retrieval_recall@{k}"
                                         for d in ("i2t", "t2i") for k in (1, 5, 10)}),
    "linprobe": ("linear_probe", {"top1": "lp_acc1", "top5": "lp_acc5", "mean_per_class_recall": "lp_mean_per_class_recall"}),
}


def clip_benchmark_results(metrics: dict[str, float], suite: SuiteConfig, model: str, pretrained: str, out_dir: Path) -> list[Path]:
    """One JSON per task of `suite` in clip_benchmark's format ({dataset, model, pretrained, task,
    metrics, language}), named as clip_benchmark names them (`<dataset>_<pretrained>_<model>_<language>_<task>.json`)."""
    out = []
    for ours, (task, keys) in CLIP_BENCHMARK_TASKS.items():
        prefix = f"{ours}/{suite.name}/"
        found = {keys[k.removeprefix(prefix)]: v for k, v in metrics.items() if k.startswith(prefix) and k.removeprefix(prefix) in keys}
        if not found:
            continue
        rec = {"dataset": suite.name, "model": model, "pretrained": pretrained, "task": task, "metrics": found,
               "language": suite.language}
        f = out_dir / f"{suite.name}_{pretrained}_{model}_{suite.language}_{task}.json".replace("/", "_")
        write_text(f, json.dumps(rec, indent=2, ensure_ascii=False))
        out.append(f)
    return out
