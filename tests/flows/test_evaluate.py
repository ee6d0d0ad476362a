"""The evaluate flow in-process: a checkpoint on a suite, metrics into a run nested under the
training run, class embeddings cached per (weights, suite)."""

import json
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_evaluate_flow_logs_metrics_and_reuses_cached_class_embeddings(tiny_world, tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from flows import evaluate as ev
    from tasks.world import generate
    from tests.conftest import train_bpe
    from training.checkpoint import save_model
    from training.model import CLIP, CLIPConfig

    world, _port, _ = tiny_world
    monkeypatch.setattr(generate, "world_dir", lambda s, root=None: world)
    monkeypatch.setenv("OPENWIT_STATE", str(tmp_path / ".openwit"))  # the cache lands under tmp_path/.openwit
    cfg = CLIPConfig.from_dict(json.loads((REPO / "training/model_configs/debug-vit.json").read_text()))
    tok = train_bpe([f"a photo of a {s}." for s in ("circle", "square", "star", "ring")] * 20, vocab_size=300)
    tok.context_length = cfg.text.context_length
    cfg.text.vocab_size, cfg.text.eot_id = tok.vocab_size, tok.eot_id
    run_dir = tmp_path / "run"
    folder = save_model(CLIP(cfg), run_dir / "model", tok, extra={"step": 7})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("t")
    parent = MlflowClient(uri).create_run(exp).info.run_id
    (run_dir / "mlflow_run_id").write_text(parent)
    spec = {"kind": "evaluate", "name": "t", "checkpoint": str(folder), "suites": ["data_specs/eval/sample-tiny-shape.yaml"],
            "mlflow": {"experiment": "t", "tracking_uri": uri}}

    first = ev.evaluate(spec=spec)
    caches = list((tmp_path / ".openwit/cache/class-embeddings").rglob("*.safetensors"))
    assert len(caches) == 1 and "sample-tiny-shape" in caches[0].name
    run = MlflowClient(uri).get_run(first["run_id"])
    assert run.data.tags["mlflow.parentRunId"] == parent  # nested under the training run
    top1 = run.data.metrics["zeroshot/sample-tiny-shape/top1"]
    assert 0 <= top1 <= 1 and "linprobe_heldout/sample-tiny-shape/top1" in run.data.metrics
    assert [m.step for m in MlflowClient(uri).get_metric_history(first["run_id"], "zeroshot/sample-tiny-shape/top1")] == [7]
    logged = {a.path for a in MlflowClient(uri).list_artifacts(first["run_id"], "eval/sample-tiny-shape")}
    assert {f"eval/sample-tiny-shape/zeroshot-sample-tiny-shape-{x}" for x in ("confusion.png", "per-class.png", "predictions.json")} <= logged
    table = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=first["run_id"], artifact_path="eval/sample-tiny-shape/zeroshot-sample-tiny-shape-predictions.json", tracking_uri=uri)).read_text())
    assert table["columns"] == ["image", "true", "predicted", "correct", "top3"] and len(table["data"]) == 24

    # clip_benchmark-format JSON beside the checkpoint, merged into a CSV by clip_benchmark's own `build` step
    results = sorted(p.name for p in (run_dir / "eval-results").iterdir())
    # (the held-out linear probe is not clip_benchmark's protocol, so it has no JSON there)
    assert results == [f"sample-tiny-shape_{str(folder).replace('/', '_')}_t_en_zeroshot_classification.json"]
    rows = clip_benchmark_build(run_dir / "eval-results", tmp_path / "benchmark.csv")
    zs = next(r for r in rows if r["task"] == "zeroshot_classification")
    assert zs["dataset"] == "sample-tiny-shape" and zs["model"] == "t" and zs["language"] == "en"
    assert float(zs["acc1"]) == pytest.approx(top1) and {"acc5", "mean_per_class_recall"} <= set(zs)
    assert zs["model_fullname"] == f"t {folder}"

    mtime = caches[0].stat().st_mtime_ns
    second = ev.evaluate(spec={**spec, "run_id": parent})  # into the training run itself, from the cache
    assert caches[0].stat().st_mtime_ns == mtime
    assert second["run_id"] == parent
    assert second["metrics"]["zeroshot/sample-tiny-shape/top1"] == pytest.approx(top1)
    assert MlflowClient(uri).get_run(parent).data.metrics["zeroshot/sample-tiny-shape/top1"] == pytest.approx(top1)


def clip_benchmark_build(folder, out_csv) -> list[dict]:
    """clip_benchmark's `build` step (clip_benchmark/cli.py:main_build, the installed package's own
    code) on `folder`; its rows. The function is taken from the module's source: importing
    clip_benchmark.cli imports its datasets and captioning metrics (torchvision, pycocoevalcap),
    which `build` does not use."""
    import argparse
    import ast
    import csv
    import importlib.util
    import os

    src = importlib.util.find_spec("clip_benchmark.cli").origin
    with open(src) as fh:
        tree = ast.parse(fh.read())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main_build")
    scope = {"json": json, "os": os, "csv": csv}
    exec(compile(ast.Module([fn], []), src, "exec"), scope)  # noqa: S102 - clip_benchmark's own function, from its file
    scope["main_build"](argparse.Namespace(files=[str(folder)], output=str(out_csv)))
    with open(out_csv) as fh:
        return list(csv.DictReader(fh))


def test_the_device_comes_from_the_spec_and_cuda_without_one_is_refused_in_one_line(monkeypatch):
    import torch

    from flows.evaluate import choose_device
    from tasks.specs import SpecError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU machine, whatever this one is
    with pytest.raises(SpecError, match="device: cuda, but torch .* sees no CUDA device here"):
        choose_device("cuda")
    assert choose_device("auto") == "cpu" and choose_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine
    assert choose_device("auto") == "cuda" and choose_device("cuda") == "cuda" and choose_device("cpu") == "cpu"


def test_a_folder_that_is_no_checkpoint_is_refused(tmp_path):
    from flows.evaluate import checkpoint_folder

    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        checkpoint_folder(str(tmp_path), "sqlite:///x.db")
