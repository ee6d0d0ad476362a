"""The MLflow run tells the truth: RUNNING while training, then FINISHED / FAILED / KILLED."""

from mlflow.tracking import MlflowClient

from training import tracking


def test_a_run_is_running_until_it_ends_with_its_true_status(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    manifest = {"name": "b", "spec_hash": "abc", "shards": [{"path": "shards/00000.parquet", "rows": 3}]}
    run_id = tracking.start_run(uri, "exp", "r", {"spec": {"train": {"lr": 0.1}}}, {"openwit.spec": "r"}, manifest, tmp_path / "art")
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING"
    assert run.data.params["spec.train.lr"] == "0.1" and run.data.tags["openwit.spec"] == "r"
    assert run.inputs.dataset_inputs[0].dataset.digest == "abc"
    tracking.end_run(uri, run_id, "FAILED")
    assert client.get_run(run_id).info.status == "FAILED"
    assert tracking.start_run(uri, "exp", "r", {}, {}, None, resume_run_id=run_id) == run_id  # a rerun resumes it
    assert client.get_run(run_id).info.status == "RUNNING"
    tracking.end_run(uri, run_id, "FINISHED")
    assert client.get_run(run_id).info.status == "FINISHED"
