"""Chinese-CLIP's two stages through the pretrain flow, on the tiny world's Chinese build (built
in-process here, as `openwit build data_specs/sample-tiny-zh.yaml` does): stage 1 locks the image
tower (started from another model's) and trains the BERT text tower; stage 2 trains both. Each
stage is its own MLflow run under the run's, a worker killed in either stage resumes from the
stage's checkpoint, and a rerun skips finished stages."""

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import TrainWorkerKiller, assert_exact_resume, build_on_tiny_world, expected_samples

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_zh_build(tiny_world, tmp_path_factory):
    return build_on_tiny_world(tiny_world, "data_specs/sample-tiny-zh.yaml", tmp_path_factory.mktemp("build-zh"))


def test_the_chinese_build_has_chinese_captions_and_a_language_row(tiny_zh_build):
    import re

    import pyarrow.parquet as pq

    m = json.loads((tiny_zh_build / "manifest.json").read_text())
    assert m["totals"]["rows"] > 300 and m["spec"]["language"] == "zh"
    texts = [t for s in m["shards"] for t in pq.read_table(tiny_zh_build / s["path"], columns=["caption"])["caption"].to_pylist()]
    assert all(re.search(r"[\u4e00-\u9fff]", t) for t in texts)  # every caption Chinese (Simplified or Traditional)
    q = pq.read_table(tiny_zh_build / "vocabulary/queries.parquet").to_pylist()
    assert {r["language"] for r in q} == {"zh"} and {"圆形", "红色", "三角形"} <= {r["query"] for r in q}
    row = next(line for line in (tiny_zh_build / "datacard.md").read_text().splitlines() if line.startswith("| zh |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert int(cells[3].replace(",", "")) > 300 and cells[6] == "60"  # zh candidates; t


def _image_donor(folder):
    """A saved model with debug-rn's image tower (as pretrain/sample writes one)."""
    from tests.conftest import train_bpe
    from training.checkpoint import save_model
    from training.model import CLIP, CLIPConfig, preset_dict

    tok = train_bpe(["a red circle", "a blue square"] * 20, vocab_size=300)
    cfg = CLIPConfig.from_dict(preset_dict("debug-rn"))
    cfg.text.vocab_size, cfg.text.eot_id = tok.vocab_size, tok.eot_id
    torch.manual_seed(123)
    donor = CLIP(cfg)
    with torch.no_grad():  # trained-looking BatchNorm statistics, which stage 1 must keep
        for mod in donor.visual.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
    return save_model(donor, folder, tok)


def test_two_stages_lock_then_unlock_each_nested_and_resumable(tiny_zh_build, tmp_path):
    from mlflow.tracking import MlflowClient

    from flows.pretrain import pretrain
    from training.model import CLIP, CLIPConfig, preset_dict

    donor = _image_donor(tmp_path / "donor")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = {"kind": "pretrain", "name": "zh-stages", "output_dir": str(tmp_path / "run"), "model": "debug-rn-bert",
            "init_image_from": str(donor), "data": {"build": str(tiny_zh_build), "image_size": 32},
            "train": {"batch_size": 32, "lr": 1e-3, "warmup_steps": 1, "checkpoint_every": 4, "log_every": 1, "seed": 0,
                      "record_samples": True},
            "stages": [{"name": "lock-image", "steps": 8, "lock_image": True}, {"name": "unlocked", "steps": 8, "lr": 5e-4}],
            "scaling": {"workers": 1, "resources_per_worker": {"CPU": 2}, "max_failures": 2},
            "eval_suites": ["data_specs/eval/sample-tiny-shape-zh.yaml"], "mlflow": {"experiment": "zh-stages", "tracking_uri": uri}}
    s1, s2 = tmp_path / "run/stage-1-lock-image", tmp_path / "run/stage-2-unlocked"
    # the worker dies after step 5 of each stage, once: after the checkpoint at step 4 and, with three
    # steps to spare on a busy machine, before the one at step 8, so steps are redone from the checkpoint
    with TrainWorkerKiller([s1, s2], at_step=5) as killer:
        res = pretrain(spec=spec)
    assert set(killer.killed) == {s1, s2} and all(5 <= k < 8 for k in killer.killed.values())
    want = expected_samples(tiny_zh_build, 8, batch_per_rank=32, world=1)  # each stage reads the build from its start
    assert_exact_resume(s1, want)
    assert_exact_resume(s2, want)
    start = load_file(str(donor / "model.safetensors"))
    one, two = load_file(str(s1 / "model/model.safetensors")), load_file(str(s2 / "model/model.safetensors"))
    visual = [k for k in one if k.startswith("visual.")]
    assert visual and all(torch.equal(one[k], start[k]) for k in visual)  # stage 1: no image-tower weight or statistic moved
    torch.manual_seed(0)  # the worker's initial model (train.seed)
    fresh = CLIP(CLIPConfig.from_dict(preset_dict("debug-rn-bert"))).state_dict()
    text = [k for k in one if k.startswith("text.")]
    assert sum(not torch.equal(one[k], fresh[k]) for k in text) > len(text) // 2  # ... while the text tower learned
    assert any(not torch.equal(two[k], one[k]) for k in visual if "weight" in k)  # stage 2: the image tower trains
    assert sum(not torch.equal(two[k], one[k]) for k in text) > len(text) // 2  # and the text tower still does
    assert json.loads((s2 / "model/config.json").read_text())["model"]["text_cfg"]["kind"] == "bert"

    client = MlflowClient(uri)
    parent = client.get_run(res["run_id"])
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{res['run_id']}'")
    assert sorted(c.info.run_name for c in children) == ["zh-stages/lock-image", "zh-stages/unlocked"]
    assert all(c.info.status == "FINISHED" for c in children) and parent.info.status == "FINISHED"
    for c in children:
        steps = sorted({h.step for h in client.get_metric_history(c.info.run_id, "train/loss")})
        assert steps == list(range(1, 9))  # continuous across the restart
        assert "zeroshot/sample-tiny-shape-zh/top1" in c.data.metrics
    assert parent.data.metrics["zeroshot/sample-tiny-shape-zh/top1"] == next(
        c for c in children if c.info.run_name.endswith("unlocked")).data.metrics["zeroshot/sample-tiny-shape-zh/top1"]

    again = pretrain(spec=spec)  # a rerun: both stages are done, nothing trains again
    assert again["run_id"] == res["run_id"] and again["metrics"]["step"] == 8
    assert len(client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{res['run_id']}'")) == 2
