"""End to end: build-wit on the tiny world, then pretrain on it with 2 Ray workers (one killed)."""

import json
import os

import pyarrow.parquet as pq
import pytest
import yaml

from tasks.manifest.manifest import sha256_file
from tests.conftest import REPO, build_on_tiny_world

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_build(tiny_world, tmp_path_factory):
    return build_on_tiny_world(tiny_world, "data_specs/sample-tiny.yaml", tmp_path_factory.mktemp("build"))


def test_manifest_matches_shards_and_failures_have_reasons(tiny_build):
    m = json.loads((tiny_build / "manifest.json").read_text())
    assert m["schema_version"] == 1 and m["shards"]
    total = 0
    for s in m["shards"]:
        path = tiny_build / s["path"]
        assert sha256_file(path) == s["sha256"]
        t = pq.read_table(path)
        assert t.num_rows == s["rows"] and set(t["status"].to_pylist()) == {"success"}
        assert {"uid", "entry_ids", "page_url", "lang", "jpg", "caption"} <= set(t.column_names)
        total += t.num_rows
    uids = [u for s in m["shards"] for u in pq.read_table(tiny_build / s["path"])["uid"].to_pylist()]
    assert len(uids) == len(set(uids)) == total == m["totals"]["rows"]
    by = m["totals"]["by_status"]
    for reason in ("decompression_bomb", "corrupt_image", "not_an_image", "http_404", "opt_out_x_robots_tag", "empty_body"):
        assert by.get(reason, 0) >= 1, reason
    from tasks.reasons import REASONS

    assert set(by) <= set(REASONS) | {"ok"}  # one closed set, each with its explanation in the data card
    assert set(m["totals"]["refused_before_fetch"]) == {"loopback_address", "private_address", "metadata_address"}
    # redirects to 127.0.0.2 and 169.254.169.254 were stopped by the guard proxy at the hop
    assert by.get("refused_redirect") == 2 and m["totals"]["refused_at_connection"] == {"loopback_address": 1, "metadata_address": 1}
    card = (tiny_build / "datacard.md").read_text()
    assert "decompression_bomb" in card and "balance/balance.png" in card and (tiny_build / "balance/balance.png").exists()
    assert (tiny_build / "tokenizer.json").exists()
    from tasks.stages import stage_stats

    bal = stage_stats(tiny_build, "balance")  # typed: the head's share in both currencies, shown in the card
    assert bal.head_share_drawn < bal.head_share_before and f"**{bal.head_share_drawn:.1%}**" in card


def test_rerun_skips_every_complete_stage(tiny_build, tiny_world, monkeypatch):
    from tasks import stages as build_stages
    from tasks.context import make_context
    from tasks.specs import BuildSpec, load_spec
    from tasks.world import generate

    world, _port, _ = tiny_world
    monkeypatch.setattr(generate, "world_dir", lambda s, root=None: world)
    spec = load_spec(json.loads((tiny_build / "manifest.json").read_text())["spec"], BuildSpec)
    ctx = make_context(spec, tiny_build, log=lambda *_: None)
    before = (tiny_build / "manifest.json").read_bytes()
    for stage in build_stages.STAGES:
        stats, skipped = build_stages.run_stage(ctx, stage)
        assert skipped, stage
        assert stats.to_dict() == json.loads((tiny_build / stage / "_stage.json").read_text())["stats"]
    assert (tiny_build / "manifest.json").read_bytes() == before


def test_a_killed_worker_resumes_exactly_on_every_rank(tiny_build, tmp_path):
    """2 Ray workers; one is SIGKILLed from outside after a checkpoint. Ray Train replaces it and
    every rank resumes from the checkpoint with its own loader position and RNG: each rank sees
    exactly the sample sequence of an uninterrupted run, and the step count stays continuous."""
    import mlflow

    from flows.pretrain import pretrain
    from tests.conftest import TrainWorkerKiller, assert_exact_resume, expected_samples

    spec = yaml.safe_load((REPO / "data_specs/pretrain-tiny.yaml").read_text())
    spec["data"]["build"] = str(tiny_build)
    spec["output_dir"] = str(tmp_path / "run")
    spec["eval_suites"] = []
    spec["train"].update(steps=30, record_samples=True)
    spec["mlflow"]["tracking_uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with TrainWorkerKiller([tmp_path / "run"], at_step=6, rank=1) as killer:
        res = pretrain(spec=spec)
    assert 6 <= killer.killed[tmp_path / "run"] < 30  # a worker really died mid-run
    assert_exact_resume(tmp_path / "run", expected_samples(tiny_build, 30, batch_per_rank=32, world=2))
    from training.train_loop import latest_checkpoint

    assert latest_checkpoint(tmp_path / "run/ray", "tiny").name == "step-0000030"  # a Ray Train checkpoint
    assert len(list((tmp_path / "run/ray/tiny").glob("step-*"))) == 2  # Ray prunes to CheckpointConfig(num_to_keep=2)
    assert {p.name for p in (tmp_path / "run/ray/tiny/step-0000030").iterdir()} >= {"state.pt", "rank-0.pt", "rank-1.pt"}
    assert res["metrics"]["step"] == 30  # the Result's metrics: those of the last checkpoint
    progress = (tmp_path / "run/progress.log").read_text()  # what the terminal and the Prefect logs show
    assert "step 30/30 (100%) loss" in progress and "samples/s data-wait" in progress and "eta 0m00s" in progress
    client = mlflow.tracking.MlflowClient(spec["mlflow"]["tracking_uri"])
    hist = client.get_metric_history(res["run_id"], "train/loss")
    assert sorted({h.step for h in hist}) == list(range(2, 31, 2))  # continuous after the restart
    run = client.get_run(res["run_id"])
    assert run.data.params["spec.model"] == "debug-vit" and "dataset.spec_hash" in run.data.params
    assert "prefect.flow_run_id" in run.data.tags
    assert "checkpoint" in {a.path for a in client.list_artifacts(res["run_id"])}
    # the truth and the provenance: status, code version, spec, the build it read, system metrics
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.source.name"] == "flows/pretrain.py" and len(run.data.tags["mlflow.source.git.commit"]) == 40
    manifest = json.loads((tiny_build / "manifest.json").read_text())
    assert run.data.tags["openwit.build.prefect_flow_run_id"] == manifest["prefect_flow_run_id"] is not None
    assert {"spec.yaml", "build"} <= {a.path for a in client.list_artifacts(res["run_id"])}
    assert {"build/manifest.json", "build/datacard.md"} <= {a.path for a in client.list_artifacts(res["run_id"], "build")}
    assert any(k.startswith("system/cpu") for k in run.data.metrics), sorted(run.data.metrics)
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    mlflow.set_tracking_uri(spec["mlflow"]["tracking_uri"])
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert any(m.source_run_id == res["run_id"] for m in models)  # MLflow 3: the model is a LoggedModel of the run


def test_a_killed_pretrain_flow_resumes_when_rerun(tiny_build, tmp_path):
    """SIGKILL the whole `openwit pretrain` process group after a checkpoint; the rerun of the
    same spec continues the same MLflow run from that checkpoint instead of starting over."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import mlflow

    spec = yaml.safe_load((REPO / "data_specs/pretrain-tiny.yaml").read_text())
    spec["data"]["build"] = str(tiny_build)
    spec["output_dir"] = str(tmp_path / "run")
    spec["eval_suites"] = []
    spec["train"].update(steps=400, checkpoint_every=2, log_every=2)
    spec["scaling"]["workers"] = 1  # what is killed here is the flow's process, not a rank
    spec["mlflow"]["tracking_uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    cmd = [str(Path(sys.executable).parent / "openwit"), "pretrain", str(spec_file)]
    env = dict(os.environ)
    # a crashed `ray start` leaves its address behind: a local run must start its own Ray anyway
    import tempfile

    ray_tmp = Path(tempfile.mkdtemp(prefix="owr", dir="/tmp"))
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:1")
    env["RAY_TMPDIR"] = str(ray_tmp)
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    from training.train_loop import latest_checkpoint

    def latest() -> int:
        ck = latest_checkpoint(tmp_path / "run/ray", "tiny")
        return int(ck.name.split("-")[1]) if ck else 0

    deadline = time.time() + 300
    while time.time() < deadline and latest() < 4:
        assert p.poll() is None, "pretrain ended before it could be killed"
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(30)
    # Ray's workers live outside the process group and die when Ray notices the driver is gone:
    # wait until no new checkpoint appears
    seen, stable_since = latest(), time.time()
    while time.time() - stable_since < 5:
        time.sleep(0.5)
        if latest() != seen:
            seen, stable_since = latest(), time.time()
    killed_at = seen
    run_id = (tmp_path / "run/mlflow_run_id").read_text()
    assert 4 <= killed_at < 400

    spec["train"]["steps"] = killed_at + 4  # finish a few steps after the kill
    spec_file.write_text(yaml.safe_dump(spec))
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    import re

    resumed = re.search(r"resuming from step (\d+)", r.stdout + r.stderr)
    assert resumed, r.stdout[-2000:]
    # the newest checkpoint in Ray's run snapshot (a folder written but not yet registered when the
    # kill landed does not count): exactly what `latest_checkpoint` reports
    assert int(resumed.group(1)) == killed_at
    assert (tmp_path / "run/mlflow_run_id").read_text() == run_id  # the same MLflow run
    assert latest() == killed_at + 4
    out = r.stdout + r.stderr
    assert out.count(f"step {killed_at + 4}/{killed_at + 4} (100%)") == 1, out[-3000:]  # progress shown once per step
    client = mlflow.tracking.MlflowClient(spec["mlflow"]["tracking_uri"])
    steps = sorted({h.step for h in client.get_metric_history(run_id, "train/loss")})
    assert steps[-1] == killed_at + 4 and killed_at + 2 in steps


def test_fine_tuning_starts_from_imported_weights_with_their_tokenizer(tiny_build, tmp_path):
    """`init_from` an imported open_clip-layout checkpoint (CLIP's 49,408-token BPE, not the build's
    tokenizer): at lr 0 the trained model must be exactly the imported one, with CLIP's tokenizer."""
    import torch
    from safetensors.torch import load_file, save_file

    from flows.pretrain import pretrain
    from training.convert import import_weights, to_open_clip
    from training.model import CLIP, CLIPConfig, preset_dict

    cfg = CLIPConfig.from_dict(preset_dict("debug-vit"))
    cfg.text.vocab_size = 49408
    (tmp_path / "m.json").write_text(json.dumps(cfg.to_dict()))
    torch.manual_seed(123)
    save_file({k: v.contiguous() for k, v in to_open_clip(CLIP(cfg).state_dict()).items()}, str(tmp_path / "w.safetensors"))
    ck = import_weights(tmp_path / "w.safetensors", tmp_path / "m.json", tmp_path / "imported")

    spec = yaml.safe_load((REPO / "data_specs/pretrain-tiny.yaml").read_text())
    del spec["model"]
    spec.update(init_from=str(ck), output_dir=str(tmp_path / "run"), eval_suites=[])
    spec["data"]["build"] = str(tiny_build)
    spec["train"].update(steps=2, lr=0.0, warmup_steps=0, log_every=1)
    spec["scaling"]["workers"] = 1
    spec["mlflow"]["tracking_uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    bad = {**spec, "data": {**spec["data"], "image_size": 64}, "output_dir": str(tmp_path / "bad")}
    with pytest.raises(ValueError, match="trained at 32px but data.image_size is 64"):
        pretrain(spec=bad)
    pretrain(spec=spec)
    before, after = load_file(str(ck / "model.safetensors")), load_file(str(tmp_path / "run/model/model.safetensors"))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    meta = json.loads((tmp_path / "run/model/config.json").read_text())
    assert meta["tokenizer"] == json.loads((ck / "config.json").read_text())["tokenizer"]
    assert meta["model"]["text_cfg"]["vocab_size"] == 49408


def test_match_stage_reads_every_candidate_and_keeps_each_pair_once(tiny_build):
    """The seam between candidates and match: every candidate row is read, a pair found in several
    WARC files is matched once (by the first file), and the dropped copies are counted."""
    import pyarrow.parquet as pq

    stages = {s: json.loads((tiny_build / s / "_stage.json").read_text())["stats"] for s in ("candidates", "match")}
    cand = [u for f in sorted((tiny_build / "candidates").glob("*.parquet")) for u in pq.read_table(f, columns=["uid"])["uid"].to_pylist()]
    assert stages["match"]["rows_in"] == stages["candidates"]["rows_out"] == len(cand)
    assert stages["match"]["dropped"].get("duplicate_across_files", 0) == len(cand) - len(set(cand)) > 0  # the world repeats pages across WARCs
    matched = [u for f in sorted((tiny_build / "match").glob("*.parquet")) if f.name != "entry_counts.parquet"
               for u in pq.read_table(f, columns=["uid"])["uid"].to_pylist()]
    assert len(matched) == len(set(matched)) == stages["match"]["rows_out"] > 0
