"""A pretrain run resumes only on the data it started on: a rebuilt build (other shards or
tokenizer) or another subset is refused, or with on_new_build: restart the old run is set aside
whole and a new one starts. (`make demo` after an upgrade that changed the sample build crashed
with a state_dict size mismatch: the rerun resumed a checkpoint made for the old tokenizer.)"""

import json

import pytest

from flows.configs import build_fingerprint, run_dir_for
from tasks.specs import PretrainSpec, SpecError
from training.run_dir import RunDir


def _build(folder, shard_sha="a" * 64, vocab=b'{"vocab": 975}'):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_bytes(vocab)
    manifest = {"name": "sample", "spec_hash": "s1", "tokenizer": "tokenizer.json",
                "shards": [{"path": "shards/00000.parquet", "sha256": shard_sha, "rows": 10}]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _spec(tmp_path, build, subset="balanced", **kw):
    return PretrainSpec(name="t", output_dir=str(tmp_path / "run"), model="debug-rn", data={"build": str(build), "subset": subset},
                        mlflow={"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}, **kw)


def test_the_fingerprint_follows_the_shards_and_the_tokenizer(tmp_path):
    a = _build(tmp_path / "a")
    fp = build_fingerprint(a, json.loads((a / "manifest.json").read_text()))
    b = _build(tmp_path / "b")  # the same shards and tokenizer elsewhere: the same data
    assert build_fingerprint(b, json.loads((b / "manifest.json").read_text())) == fp
    for changed in (_build(tmp_path / "c", shard_sha="b" * 64), _build(tmp_path / "d", vocab=b'{"vocab": 978}')):
        assert build_fingerprint(changed, json.loads((changed / "manifest.json").read_text())) != fp


def test_a_rerun_on_the_same_build_resumes_and_on_another_is_refused_with_what_to_do(tmp_path):
    build = _build(tmp_path / "build")
    spec = _spec(tmp_path, build)
    run = run_dir_for(spec, build, spec.mlflow.tracking_uri)
    (run.path / "ray").mkdir()  # checkpoints of the first run
    assert run.data_record["fingerprint"] and run.data_record["subset"] == "balanced"
    assert run_dir_for(spec, build, spec.mlflow.tracking_uri).path == run.path and (run.path / "ray").exists()

    _build(tmp_path / "build", vocab=b'{"vocab": 978}')  # rebuilt: another tokenizer
    with pytest.raises(SpecError, match="does not resume on other data.*new output_dir.*on_new_build: restart"):
        run_dir_for(spec, build, spec.mlflow.tracking_uri)
    assert (run.path / "ray").exists()  # nothing was touched
    other_subset = _spec(tmp_path, _build(tmp_path / "build"), subset="unbalanced")
    with pytest.raises(SpecError, match="data.subset balanced"):
        run_dir_for(other_subset, build, spec.mlflow.tracking_uri)


def test_restart_sets_the_old_run_aside_whole_and_starts_anew(tmp_path):
    build = _build(tmp_path / "build")
    spec = _spec(tmp_path, build, on_new_build="restart")
    run = run_dir_for(spec, build, spec.mlflow.tracking_uri)
    run.set_mlflow_run_id("old-run")
    (run.path / "ray").mkdir()
    (run.path / "ray" / "step-0000100").write_text("checkpoint")
    _build(tmp_path / "build", shard_sha="c" * 64)
    lines = []
    new = run_dir_for(spec, build, spec.mlflow.tracking_uri, log=lines.append)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.superseded-")]
    assert len(aside) == 1 and (aside[0] / "ray" / "step-0000100").read_text() == "checkpoint"
    assert RunDir(aside[0]).mlflow_run_id == "old-run" and "set aside as" in lines[0]
    assert new.path == run.path and new.mlflow_run_id is None and not (new.path / "ray").exists()
    assert new.data_record["fingerprint"] == build_fingerprint(build, json.loads((build / "manifest.json").read_text()))


def test_a_run_folder_from_before_data_records_is_judged_by_its_mlflow_run(tmp_path):
    """Its MLflow run logged the build's manifest (build/manifest.json): the same shards resume even
    when the build's spec hash moved (a new spec field); other shards do not. Without that
    artifact, the run's build spec-hash tag decides."""
    from mlflow.tracking import MlflowClient

    build = _build(tmp_path / "build")
    spec = _spec(tmp_path, build)
    client = MlflowClient(spec.mlflow.tracking_uri)
    exp = client.create_experiment("e", artifact_location=str(tmp_path / "artifacts"))
    run = RunDir(tmp_path / "run").create()

    def old_run(spec_hash: str, manifest: dict | None) -> str:
        run_id = client.create_run(exp, tags={"openwit.manifest_spec_hash": spec_hash}).info.run_id
        if manifest is not None:
            f = tmp_path / "logged" / "manifest.json"
            f.parent.mkdir(exist_ok=True)
            f.write_text(json.dumps(manifest))
            client.log_artifact(run_id, str(f), artifact_path="build")
        return run_id

    now = json.loads((build / "manifest.json").read_text())
    run.set_mlflow_run_id(old_run("s0", {**now, "spec_hash": "s0"}))  # same shards, older spec hash
    assert run_dir_for(spec, build, spec.mlflow.tracking_uri).data_record["build_name"] == "sample"
    (run.path / "data.json").unlink()
    other_shards = {**now, "shards": [{"path": "shards/00000.parquet", "sha256": "f" * 64, "rows": 10}]}
    run.set_mlflow_run_id(old_run("s1", other_shards))
    with pytest.raises(SpecError, match="other shards"):
        run_dir_for(spec, build, spec.mlflow.tracking_uri)
    run.set_mlflow_run_id(old_run("s0", None))  # nothing logged: the tag decides
    with pytest.raises(SpecError, match="spec hash s0"):
        run_dir_for(spec, build, spec.mlflow.tracking_uri)
    run.set_mlflow_run_id(old_run("s1", None))
    assert run_dir_for(spec, build, spec.mlflow.tracking_uri).data_record["fingerprint"]
