"""Fine-tune on your own images, as the README shows it: a folder of images with captions builds
(curation: none, no network), and `pretrain` with `init_from` a checkpoint imported from a
transformers folder fine-tunes on it with Ray Train; its zero-shot on a suite of those images
moves up from where the imported model stood."""

import json
import shutil

import pytest
import torch
import yaml

from tests.conftest import train_bpe
from tests.tasks.test_own_data import COLORS, SHAPES, make_pairs_folder, own_build_spec, run_build

pytestmark = pytest.mark.slow


def _zero_shot(checkpoint, suite_file) -> float:
    from flows.configs import suite_config
    from training.checkpoint import load_model
    from training.eval.datasets import suite_data
    from training.eval.suite import run_suite

    model, tok, pre = load_model(checkpoint)
    suite = suite_config(suite_file)
    metrics, _ = run_suite(model, tok, suite, suite_data(suite), pre.image_size)
    return metrics["zeroshot/own-shapes/top1"]


def test_fine_tuning_an_imported_checkpoint_on_own_images_moves_its_zero_shot(tmp_path):
    from flows.pretrain import pretrain
    from training.checkpoint import save_model
    from training.hf import export_hf, import_hf
    from training.model import CLIP, CLIPConfig, preset_dict

    captions = make_pairs_folder(tmp_path / "mine", per_class=6)
    build, _ = run_build(own_build_spec(tmp_path, [{"path": str(tmp_path / "mine")}]))
    suite_dir = tmp_path / "suite"  # the same images, one folder per class
    for color in COLORS:
        for shape in SHAPES:
            (suite_dir / f"{color} {shape}").mkdir(parents=True)
            for f in (tmp_path / "mine").glob(f"{color}_{shape}_*.jpg"):
                shutil.copy(f, suite_dir / f"{color} {shape}" / f.name)
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump({"kind": "eval-suite", "name": "own-shapes", "templates": ["a photo of a {}"],
                                          "source": {"kind": "imagefolder", "path": str(suite_dir)}}))

    # "a checkpoint from the Hub": a small CLIP saved by transformers' layout, imported
    tok = train_bpe(list(captions.values()) * 20, vocab_size=300)
    cfg = CLIPConfig.from_dict(preset_dict("debug-vit"))
    cfg.text.vocab_size, cfg.text.eot_id = tok.vocab_size, tok.eot_id
    torch.manual_seed(0)
    hf = export_hf(save_model(CLIP(cfg).eval(), tmp_path / "theirs", tok), tmp_path / "hf")
    imported = import_hf(hf, tmp_path / "imported")
    before = _zero_shot(imported, suite_file)

    spec = {"kind": "pretrain", "name": "own-finetune", "output_dir": str(tmp_path / "run"), "init_from": str(imported),
            "data": {"build": str(build), "image_size": 32},
            "train": {"steps": 60, "batch_size": 24, "lr": 2e-3, "warmup_steps": 5, "checkpoint_every": 60, "log_every": 10},
            "scaling": {"workers": 1, "resources_per_worker": {"CPU": 1}}, "eval_suites": [str(suite_file)],
            "mlflow": {"experiment": "openwit-tests", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}
    res = pretrain(spec=spec)
    after = res["metrics"]["zeroshot/own-shapes/top1"]
    assert after == pytest.approx(_zero_shot(tmp_path / "run" / "model", suite_file), abs=1e-6)
    print(f"zero-shot top-1 on own-shapes: imported {before:.3f} -> fine-tuned {after:.3f}")
    assert after >= before + 0.25, (before, after)  # 6 classes: chance is 0.17
    meta = json.loads((tmp_path / "run/model/config.json").read_text())
    assert meta["tokenizer"] == json.loads((imported / "config.json").read_text())["tokenizer"]
