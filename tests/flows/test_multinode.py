"""A real two-node Ray cluster started with `ray start` (a head and a worker node, each with its
own CPUs, on one shared filesystem): `openwit build` runs its parallel stages and img2dataset's
Ray distributor on it, and `openwit pretrain` spreads its workers over both nodes, loses one
mid-run and finishes with a continuous step count."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, free_port

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _alive_nodes(address: str, env: dict) -> int:
    code = (f"import ray; ray.init(address={address!r}, logging_level='ERROR'); "
            "print(sum(n['Alive'] for n in ray.nodes()))")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False)
    return int(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 and r.stdout.strip() else 0


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """(address, env) of a head node and one worker node, 2 CPUs each, token-authenticated."""
    port = free_port()
    # its own Ray temp dir (short: Ray's unix sockets live there): nothing of this cluster stays in /tmp/ray
    ray_tmp = tempfile.mkdtemp(prefix="owray", dir="/tmp")
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16), RAY_USAGE_STATS_ENABLED="0",
               RAY_TMPDIR=ray_tmp)
    tmp = tmp_path_factory.mktemp("ray")
    common = ["--num-cpus=2", "--disable-usage-stats", "--block"]
    procs = [subprocess.Popen([str(BIN / "ray"), "start", "--head", f"--port={port}", "--include-dashboard=false",
                               "--resources={\"node_head\": 1}", *common], env=env, cwd=tmp, start_new_session=True,
                              stdout=open(tmp / "head.log", "w"), stderr=subprocess.STDOUT)]  # noqa: SIM115 - the node's log while it runs
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while _alive_nodes(address, env) < 1:
            assert time.time() < deadline, (tmp / "head.log").read_text()[-2000:]
            time.sleep(1)
        procs.append(subprocess.Popen([str(BIN / "ray"), "start", f"--address={address}", "--resources={\"node_b\": 1}", *common],
                                      env=env, cwd=tmp, start_new_session=True, stdout=open(tmp / "worker.log", "w"),  # noqa: SIM115
                                      stderr=subprocess.STDOUT))
        while _alive_nodes(address, env) < 2:
            assert time.time() < deadline, (tmp / "worker.log").read_text()[-2000:]
            time.sleep(1)
        yield address, env
    finally:
        for p in reversed(procs):  # `ray start --block` takes half a minute to stop gracefully: no need here
            try:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        subprocess.run(["pkill", "-9", "-f", ray_tmp], check=False)  # workers the raylets started, in other sessions
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_build_and_pretrain_on_a_two_node_cluster_resumes_exactly_every_rank(ray_cluster, tiny_world, tmp_path):
    import mlflow

    address, env = ray_cluster
    world, port, _ = tiny_world
    state = tmp_path / "state"
    state.mkdir()
    (state / "worlds").symlink_to(world.parent)  # the subprocess finds the fixture's world
    env = dict(env, OPENWIT_STATE=str(state))
    env.pop("PREFECT_API_URL", None)

    spec = yaml.safe_load((REPO / "data_specs/sample-tiny.yaml").read_text())
    spec["world"]["port"] = port
    spec["ray"] = {"address": address}
    spec["download"].update(distributor="ray", processes=2, threads=4)
    (tmp_path / "build.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "build"
    r = subprocess.run([str(BIN / "openwit"), "build", str(tmp_path / "build.yaml"), "--out", str(out)], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    assert m["totals"]["rows"] > 300
    # the connection guard ran inside img2dataset's Ray tasks: both redirect traps were refused
    assert m["totals"]["by_status"]["refused_redirect"] == 2 and m["totals"]["refused_at_connection"] == {
        "loopback_address": 1, "metadata_address": 1}

    pre = yaml.safe_load((REPO / "data_specs/pretrain-tiny.yaml").read_text())
    pre["data"]["build"] = str(out)
    pre["output_dir"] = str(tmp_path / "run")
    pre["eval_suites"] = []
    pre["scaling"].update(address=address, placement_strategy="STRICT_SPREAD")
    pre["train"].update(steps=30, record_samples=True)
    pre["mlflow"]["tracking_uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "pretrain.yaml").write_text(yaml.safe_dump(pre))
    from tests.conftest import TrainWorkerKiller, assert_exact_resume, expected_samples

    with TrainWorkerKiller([tmp_path / "run"], at_step=6, rank=1) as killer:  # a worker on one of the nodes dies mid-run
        r = subprocess.run([str(BIN / "openwit"), "pretrain", str(tmp_path / "pretrain.yaml")], cwd=REPO, text=True,
                           capture_output=True, env=env, timeout=300, check=False)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert 6 <= killer.killed[tmp_path / "run"] < 30
    assert_exact_resume(tmp_path / "run", expected_samples(out, 30, batch_per_rank=32, world=2))
    client = mlflow.tracking.MlflowClient(pre["mlflow"]["tracking_uri"])
    run_id = (tmp_path / "run/mlflow_run_id").read_text()
    assert sorted({h.step for h in client.get_metric_history(run_id, "train/loss")}) == list(range(2, 31, 2))
    tags = client.get_run(run_id).data.tags
    assert tags["ray.num_nodes"] == "2", tags.get("ray.worker_nodes")  # one worker on each node
