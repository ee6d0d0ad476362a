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


def test_runs_open_in_mlflows_model_training_view(tmp_path):
    """MLflow 3's UI opens in its GenAI mode unless told: our experiments carry the model-training
    kind, and the run links we print carry the mode (`workflowType=machine_learning`)."""
    from mlflow.tracking import MlflowClient

    from training import tracking

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    run_id = tracking.start_run(uri, "e", "r", {}, {})
    client = MlflowClient(uri)
    exp = client.get_experiment(client.get_run(run_id).info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert tracking.run_link("http://127.0.0.1:5000/", exp.experiment_id, run_id) == (
        f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs/{run_id}?workflowType=machine_learning")
