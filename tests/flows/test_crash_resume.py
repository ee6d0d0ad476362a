"""A build killed (SIGKILL, whole process group) in the middle of the download stage and run
again ends with every expected pair exactly once: nothing lost, nothing duplicated."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tasks import engine
from tests.conftest import REPO

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _build(spec_file: Path, out: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "openwit"), "build", str(spec_file), "--out", str(out)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_sigkill_mid_download_then_rerun_gives_each_pair_once(tiny_world, tmp_path):
    world, port, _ = tiny_world
    state = tmp_path / "state"
    state.mkdir()
    (state / "worlds").symlink_to(world.parent)  # the subprocess finds the fixture's world
    spec = yaml.safe_load((REPO / "data_specs/sample-tiny.yaml").read_text())
    spec["world"]["port"] = port
    spec["download"].update(processes=1, threads=4, number_sample_per_shard=40)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    out = tmp_path / "build"
    env = dict(os.environ, OPENWIT_STATE=str(state))
    env.pop("PREFECT_API_URL", None)

    tiny_world.server.delay_s = 0.15  # ~25 images/s: the download stage takes several seconds
    try:
        p = _build(spec_file, out, env)
        deadline = time.time() + 240
        while time.time() < deadline and p.poll() is None:
            if len(list((out / "download" / "raw").glob("*_stats.json"))) >= 1:
                break
            time.sleep(0.1)
        assert p.poll() is None, f"the build ended before it could be killed:\n{p.stdout.read()[-3000:]}"
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(30)
    finally:
        tiny_world.server.delay_s = 0.0
    to_fetch = pq.read_table(out / "download" / "input", columns=["uid"])["uid"].to_pylist()
    done_shards = list((out / "download" / "raw").glob("*_stats.json"))
    assert 1 <= len(done_shards) < -(-len(to_fetch) // 40), "the kill did not land in the middle of the download"
    assert engine.read_marker(out / "download")["state"] == "started" and not (out / "manifest.json").exists()

    p = _build(spec_file, out, env)
    log = p.communicate(timeout=600)[0]
    assert p.returncode == 0, log[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    shard_uids = [u for s in m["shards"] for u in pq.read_table(out / s["path"], columns=["uid"])["uid"].to_pylist()]
    assert len(shard_uids) == len(set(shard_uids)) == m["totals"]["rows"]  # nothing duplicated
    reasons = {}
    for f in sorted((out / "download" / "raw").glob("*.reasons.parquet")):
        for r in pq.read_table(f).to_pylist():
            assert r["uid"] not in reasons, f"{r['uid']} downloaded twice"
            reasons[r["uid"]] = r["reason"]
    assert sorted(reasons) == sorted(to_fetch)  # every pair accounted for exactly once
    assert sorted(u for u, r in reasons.items() if r == "ok") == sorted(shard_uids)  # every success reached a shard
    assert sum(m["totals"]["by_status"].values()) == len(to_fetch)
