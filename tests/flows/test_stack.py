"""The local stack as users run it: `openwit up`, the deployments through the Prefect worker,
MLflow on its server, `openwit down` leaving nothing behind.

Everything runs in a private state folder on free ports with the tiny world, so a user's own
stack on the default ports is never touched.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tasks.manifest.manifest import sha256_file
from tests.conftest import REPO, free_port
from tests.flows.test_inputs_by_name import CRAWL, _named, mirror  # noqa: F401 - mirror: a fixture the wit-400m test uses

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    ports = {"prefect": free_port(), "mlflow": free_port(), "world": free_port()}
    env = dict(os.environ, OPENWIT_STATE=str(state), OPENWIT_WORLD_SIZE="tiny", OPENWIT_PREFECT_PORT=str(ports["prefect"]),
               OPENWIT_MLFLOW_PORT=str(ports["mlflow"]), OPENWIT_WORLD_PORT=str(ports["world"]))
    for k in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "PREFECT_HOME"):
        env.pop(k, None)
    up = subprocess.run([str(BIN / "openwit"), "up"], env=env, capture_output=True, text=True, timeout=400, cwd=REPO, check=False)
    info = {"state": state, "ports": ports, "env": env, "up": up}
    yield info
    subprocess.run([str(BIN / "openwit"), "down"], env=env, capture_output=True, text=True, timeout=120, cwd=REPO, check=False)


def _stack_env(stack) -> dict:
    """The environment `openwit up` gives the worker: the same server, the same MLflow."""
    p = stack["ports"]
    return dict(stack["env"], PREFECT_API_URL=f"http://127.0.0.1:{p['prefect']}/api", MLFLOW_TRACKING_URI=f"http://127.0.0.1:{p['mlflow']}",
                PREFECT_HOME=str(stack["state"] / "prefect"))


def _run_deployment(stack, name: str, spec: dict, timeout: int = 600) -> str:
    cmd = [str(BIN / "prefect"), "deployment", "run", name, "--watch", "--param", f"spec={json.dumps(spec)}"]
    r = subprocess.run(cmd, env=_stack_env(stack), capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False)
    assert r.returncode == 0 and "Completed" in r.stdout, f"{name}: {r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def test_a_taken_port_is_named_in_the_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        env = dict(os.environ, OPENWIT_STATE=str(tmp_path), OPENWIT_MLFLOW_PORT=str(taken), OPENWIT_PREFECT_PORT=str(free_port()),
                   OPENWIT_WORLD_PORT=str(free_port()), OPENWIT_WORLD_SIZE="tiny")
        r = subprocess.run([str(BIN / "openwit"), "up"], env=env, capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
    assert r.returncode == 1
    assert f"port {taken} for the mlflow service is already taken" in r.stderr
    assert not list((tmp_path / "pids").glob("*.pid")) if (tmp_path / "pids").exists() else True


def test_up_starts_four_healthy_services_and_registers_every_deployment(stack):
    up = stack["up"]
    assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
    st = subprocess.run([str(BIN / "openwit"), "status"], env=stack["env"], capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert st.returncode == 0, st.stdout
    for name in ("prefect", "worker", "mlflow", "world"):
        assert any(line.startswith(name) and "healthy" in line for line in st.stdout.splitlines()), st.stdout
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    flows = {"build_wit": "build-wit", "pretrain": "pretrain", "evaluate": "evaluate"}
    for d in deployments:
        assert f"{flows[d['entrypoint'].split(':')[1]]}/{d['name']}" in st.stdout, st.stdout
    assert (stack["state"] / "prefect" / "prefect.db").exists() and (stack["state"] / "mlflow.db").exists()
    assert (stack["state"] / "logs" / "prefect.log").exists()
    again = subprocess.run([str(BIN / "openwit"), "up"], env=stack["env"], capture_output=True, text=True, timeout=300, cwd=REPO, check=False)
    assert again.returncode == 0, again.stderr[-2000:]  # idempotent: the same services, no second copy
    pids = {f.stem: f.read_text() for f in (stack["state"] / "pids").glob("*.pid")}
    assert len(pids) == 4


def test_build_pretrain_evaluate_through_the_deployments(stack, tmp_path_factory):
    import mlflow
    from mlflow.tracking import MlflowClient

    assert stack["up"].returncode == 0
    port = stack["ports"]["world"]
    out = tmp_path_factory.mktemp("build")
    spec = yaml.safe_load((REPO / "data_specs/sample-tiny.yaml").read_text())
    spec["world"]["port"], spec["output_dir"] = port, str(out)
    watched = _run_deployment(stack, "build-wit/sample", spec)
    assert "download: shards:" in watched and "in ->" in watched, watched[-3000:]  # --watch shows the run's logs
    m = json.loads((out / "manifest.json").read_text())
    assert m["shards"] and sum(s["rows"] for s in m["shards"]) == m["totals"]["rows"] > 100
    for s in m["shards"]:
        assert sha256_file(out / s["path"]) == s["sha256"] and pq.read_metadata(out / s["path"]).num_rows == s["rows"]
    card = (out / "datacard.md").read_text()
    assert str(m["totals"]["rows"]) in card and "decompression_bomb" in card
    sys.path.insert(0, str(REPO / "docs"))
    from screenshots import check_markdown, prefect_artifacts

    _, artifacts = prefect_artifacts(f"http://127.0.0.1:{stack['ports']['prefect']}/api", "build-wit")
    cards = [a for a in artifacts if a["key"].endswith("-datacard")]
    assert cards and "data:image/png;base64," in cards[0]["data"]  # the balance plot shows in the Prefect UI
    assert [b for a in artifacts if a["type"] == "markdown" for b in check_markdown(a["data"])] == []

    run_dir = tmp_path_factory.mktemp("run")
    pspec = yaml.safe_load((REPO / "data_specs/pretrain-tiny.yaml").read_text())
    pspec.update(output_dir=str(run_dir), name="stack-tiny")
    pspec["data"]["build"] = str(out)
    pspec["train"].update(steps=6, checkpoint_every=3, log_every=2)
    pspec["mlflow"] = {"experiment": "openwit-stack-test", "register_model": "openwit-stack-test"}
    watched = _run_deployment(stack, "pretrain/sample", pspec)
    assert "step 6/6 (100%) loss" in watched, watched[-3000:]  # training progress in the terminal of --watch
    uri = f"http://127.0.0.1:{stack['ports']['mlflow']}"
    client = MlflowClient(uri)
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    run = client.get_run(run_id)
    assert run.data.params["spec.model"] == "debug-vit" and run.data.params["dataset.spec_hash"] == m["spec_hash"]
    assert [x.step for x in client.get_metric_history(run_id, "train/loss")][-1] == 6
    assert "zeroshot/sample-tiny-shape/top1" in run.data.metrics
    assert run.data.tags["prefect.flow_run_id"]
    mlflow.set_tracking_uri(uri)
    assert client.search_model_versions("name='openwit-stack-test'")

    espec = {"kind": "evaluate", "name": "stack-tiny", "checkpoint": "models:/openwit-stack-test/latest",
             "suites": ["data_specs/eval/sample-tiny-shape.yaml"], "mlflow": {"experiment": "openwit-stack-test"}}
    _run_deployment(stack, "evaluate/sample", espec)
    evals = client.search_runs([run.info.experiment_id], "tags.`openwit.kind` = 'evaluate'")
    assert len(evals) == 1
    ev = evals[0]
    assert ev.data.metrics["zeroshot/sample-tiny-shape/top1"] == pytest.approx(run.data.metrics["zeroshot/sample-tiny-shape/top1"], abs=1e-6)
    arts = [a.path for a in client.list_artifacts(ev.info.run_id, "eval/sample-tiny-shape")]
    assert any(a.endswith("confusion.png") for a in arts)


def test_build_wit_sample_zh_through_its_deployment(stack, tmp_path_factory):
    """`prefect deployment run build-wit/sample-zh` (the tiny world's Chinese part here): shards,
    manifest and a data card with the zh row, through the worker like any build."""
    assert stack["up"].returncode == 0
    out = tmp_path_factory.mktemp("build-zh")
    spec = yaml.safe_load((REPO / "data_specs/sample-tiny-zh.yaml").read_text())
    spec["world"]["port"], spec["output_dir"] = stack["ports"]["world"], str(out)
    watched = _run_deployment(stack, "build-wit/sample-zh", spec)
    assert "download: shards:" in watched, watched[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    assert m["totals"]["rows"] > 300 and m["spec"]["vocabulary"]["language"] == "zh"
    card = (out / "datacard.md").read_text()
    assert "## Languages" in card and any(line.startswith("| zh | ") for line in card.splitlines())
    assert {"language"} <= set(pq.read_table(out / "vocabulary/queries.parquet").column_names)


def test_build_wit_400m_through_its_deployment_resolves_inputs_from_names(stack, mirror, tmp_path_factory):  # noqa: F811 - the fixture imported above
    """`prefect deployment run build-wit/wit-400m` with the shipped spec's named inputs (enwiki by
    dump date, pageview days, a crawl id) pointed at the loopback mirror of the public sites, and
    its cluster settings scaled to this machine: the worker resolves every input by name, builds,
    and the manifest cites each file it read."""
    assert stack["up"].returncode == 0
    _, url, files, _ = mirror
    out = tmp_path_factory.mktemp("build-400m")
    spec = _named(yaml.safe_load((REPO / "data_specs/wit-400m.yaml").read_text()), url, url)
    spec["output_dir"] = str(out)
    spec.pop("ray")  # no Ray cluster here: processes on this machine
    spec["vocabulary"]["wikipedia"].update(min_unigram_count=5, min_bigram_count=5, min_pmi=3.0)  # a tiny wiki
    spec["vocabulary"]["pageviews"]["min_title_views"] = 50
    spec["crawl"]["workers"] = spec["matching"]["workers"] = spec["balancing"]["workers"] = 1
    spec["download"].update(image_size=32, processes=1, threads=8, retries=0, timeout=5, distributor="multiprocessing",
                            allow_networks=["127.0.0.1/32"], number_sample_per_shard=1000, webdataset=False)
    spec["tokenizer_vocab_size"] = 300
    watched = _run_deployment(stack, "build-wit/wit-400m", spec)
    assert f"{CRAWL} resolves to 2 WARC files" in watched, watched[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    assert m["totals"]["rows"] > 300
    by_url = {i["url"]: i for i in m["inputs"]}
    for name, meta in files.items():  # every multistream part and index, with the checksum the dump publishes
        assert by_url[f"{url}/enwiki/20240601/{name}"]["sha1"] == meta["sha1"]
    assert sum(i["source"] == "pageviews" for i in m["inputs"]) == 24
    assert sum(i["source"] == "common_crawl" for i in m["inputs"]) == 2


def test_down_leaves_nothing_running(stack):
    pids = [int(f.read_text()) for f in (stack["state"] / "pids").glob("*.pid")]
    assert pids
    r = subprocess.run([str(BIN / "openwit"), "down"], env=stack["env"], capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
    assert r.returncode == 0, r.stderr
    time.sleep(1)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(), pid
    assert not list((stack["state"] / "pids").glob("*.pid"))
    for name, port in stack["ports"].items():
        assert not _port_open(port), f"{name} still listens on {port}"
    marker = f"OPENWIT_STACK={stack['state']}".encode()
    left = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (d / "environ").read_bytes().split(b"\0"):
                left.append(d.name)
        except OSError:
            continue
    assert not left, f"processes of the stack still running: {left}"
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{stack['ports']['prefect']}/api/health", timeout=2)
