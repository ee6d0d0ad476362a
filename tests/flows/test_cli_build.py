"""`openwit build` as a new user runs it: no stack, the tiny sample spec as written. The build
serves its own sample world, prints one line per stage, and no traceback or telemetry noise."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port

pytestmark = pytest.mark.slow


def test_openwit_build_tiny_prints_stage_lines_and_no_tracebacks(tmp_path):
    env = dict(os.environ, OPENWIT_STATE=str(tmp_path / "state"), OPENWIT_WORLD_PORT=str(free_port()))
    for k in ("PREFECT_API_URL", "DO_NOT_TRACK", "MLFLOW_DISABLE_TELEMETRY", "PREFECT_SERVER_ANALYTICS_ENABLED"):
        env.pop(k, None)  # as a fresh shell has it: the CLI must quiet telemetry itself
    p = subprocess.run([str(Path(sys.executable).parent / "openwit"), "build", "data_specs/sample-tiny.yaml", "--out", str(tmp_path / "b")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    assert "Traceback" not in out and "telemetry" not in out.lower() and "database is locked" not in out, out[-3000:]
    for stage in ("vocabulary", "candidates", "match", "balance", "download", "manifest"):
        assert any(line.startswith(stage) and " in -> " in line for line in out.splitlines()), stage
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["totals"]["rows"] > 300


def _cli(args, tmp_path, **env_extra):
    env = dict(os.environ, OPENWIT_STATE=str(tmp_path / "state"), **env_extra)
    env.pop("PREFECT_API_URL", None)
    return subprocess.run([str(Path(sys.executable).parent / "openwit"), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


def _table_spec(tmp_path, table: Path, **table_keys) -> Path:
    import yaml

    spec = {"kind": "build-wit", "name": "table", "output_dir": str(tmp_path / "b"),
            "vocabulary": {"wordnet": {"path": "/usr/share/wordnet"}},
            "crawl": {"tables": [{"path": str(table), **table_keys}], "languages": ["en"]},
            "download": {"image_size": 32, "processes": 1, "threads": 4, "retries": 0, "timeout": 2}}
    f = tmp_path / "spec.yaml"
    f.write_text(yaml.safe_dump(spec))
    return f


def test_a_wrong_column_fails_validation_naming_the_key_and_the_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = tmp_path / "laion.parquet"
    pq.write_table(pa.table({"URL": ["http://example.com/a.jpg"], "TEXT": ["a red circle"]}), table)
    p = _cli(["validate", str(_table_spec(tmp_path, table, url_col="URL", caption_col="text"))], tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "crawl.tables[0].caption_col: column 'text' is not in" in p.stderr and "URL, TEXT" in p.stderr


def test_a_build_that_refuses_every_url_fails_and_says_why(tiny_world, tmp_path):
    """A table of loopback URLs without download.allow_networks: every URL is refused. The build
    must stop at the download stage with the reason and the key to change, not exit 0 empty."""
    world, port, _ = tiny_world
    rows = ["url,caption"] + [f"http://127.0.0.1:{port}/{p.relative_to(world / 'www').as_posix()},a red circle on a white background"
                              for p in sorted((world / "www" / "img").glob("0*.jpg"))[:40]]
    table = tmp_path / "t.csv"
    table.write_text("\n".join(rows) + "\n")
    p = _cli(["build", str(_table_spec(tmp_path, table))], tmp_path)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out[-3000:]
    assert "download: all 40 input rows were dropped, most (40) as loopback_address" in out and "download.allow_networks" in out
    assert "Traceback" not in out
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_training_progress_reaches_the_prefect_logs(tmp_path):
    """The pretrain task relays the progress lines rank 0 writes, from where the file ended."""
    import threading
    import time

    from flows.pretrain import _relay_progress

    log = tmp_path / "progress.log"
    log.write_text("step 1/10 from an earlier attempt\n")
    got = []

    class Logger:
        def info(self, msg):
            got.append(msg)

    stop = threading.Event()
    t = threading.Thread(target=_relay_progress, args=(log, Logger(), stop, 0.05))
    t.start()
    time.sleep(0.3)  # the relay has noted where the file ends
    with open(log, "a") as f:
        f.write("step 2/10 (20%) loss 4.1\nstep 3/10 (30%) loss 4.0\n")
    stop.set()
    t.join(5)
    assert got == ["step 2/10 (20%) loss 4.1", "step 3/10 (30%) loss 4.0"]
