"""The local stack: `openwit up | down | status`.

    prefect server   127.0.0.1:4200   SQLite under .openwit/prefect
    prefect worker   process pool `openwit-process`
    mlflow server    127.0.0.1:5000   SQLite .openwit/mlflow.db, artifacts .openwit/mlartifacts, 1 worker
    sample web       127.0.0.1:8765   the generated sample world (tasks/world/server.py)

State folder: $OPENWIT_STATE (default .openwit/); ports: OPENWIT_PREFECT_PORT, OPENWIT_MLFLOW_PORT,
OPENWIT_WORLD_PORT; OPENWIT_WORLD_SIZE=tiny serves the tiny world (tests). `up` is idempotent and registers every deployment in prefect.yaml; `down`
stops exactly the processes `up` started (PID files under .openwit/pids) and waits for them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tasks.specs import REPO_ROOT, WorldSpec, state_dir

BIN = Path(sys.executable).parent
POOL = "openwit-process"


def ports() -> dict[str, int]:
    return {"prefect": int(os.environ.get("OPENWIT_PREFECT_PORT", "4200")), "mlflow": int(os.environ.get("OPENWIT_MLFLOW_PORT", "5000")),
            "world": int(os.environ.get("OPENWIT_WORLD_PORT", "8765"))}


def urls() -> dict[str, str]:
    p = ports()
    return {"prefect": f"http://127.0.0.1:{p['prefect']}", "mlflow": f"http://127.0.0.1:{p['mlflow']}", "world": f"http://127.0.0.1:{p['world']}"}


def stack_env() -> dict[str, str]:
    sd, u = state_dir(), urls()
    from flows.env import QUIET_ENV

    env = {**QUIET_ENV, **os.environ}
    env.update({
        "PREFECT_HOME": str(sd / "prefect"), "PREFECT_API_URL": f"{u['prefect']}/api",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{sd / 'prefect' / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_API_URL": f"{u['prefect']}/api",
        # `prefect deployment run ... --watch` interleaves the run's logs (stage summaries, training
        # progress) with its events only when the server streams logs out; Prefect's default is off
        "PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED": "true", "PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED": "true",
        "MLFLOW_TRACKING_URI": u["mlflow"], "OPENWIT_ROOT": str(REPO_ROOT), "NO_ALBUMENTATIONS_UPDATE": "1",
        "PYTHONUNBUFFERED": "1", "OPENWIT_STATE": str(sd), "OPENWIT_STACK": str(sd),  # marks every process the stack starts, Ray's included
    })
    return env


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _pidfile(name: str) -> Path:
    return state_dir() / "pids" / f"{name}.pid"


def _running(name: str) -> int | None:
    f = _pidfile(name)
    if f.exists():
        pid = int(f.read_text())
        if _pid_alive(pid):
            return pid
        f.unlink()
    return None


def _spawn(name: str, cmd: list[str], env: dict) -> int:
    logs = state_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    _pidfile(name).parent.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT, start_new_session=True)
    _pidfile(name).write_text(str(p.pid))
    return p.pid


def _wait_http(url: str, timeout: float, name: str) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except Exception:  # noqa: BLE001
            time.sleep(0.5)
    raise RuntimeError(f"{name} did not become healthy at {url} within {timeout:.0f}s; see {state_dir() / 'logs' / (name + '.log')}")


def _health(name: str) -> bool:
    u = urls()
    url = {"prefect": f"{u['prefect']}/api/health", "mlflow": f"{u['mlflow']}/health", "world": f"{u['world']}/_serve.json"}.get(name)
    if name == "worker":  # alive and reported ONLINE to the server by its heartbeat
        try:
            workers = _api(f"/work_pools/{POOL}/workers/filter", {"workers": {"status": {"any_": ["ONLINE"]}}, "limit": 10, "offset": 0})
        except Exception:  # noqa: BLE001
            return False
        return _running(name) is not None and bool(workers)
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except Exception:  # noqa: BLE001
        return False


def up() -> int:
    from tasks.world.generate import ensure_world

    env, p, sd = stack_env(), ports(), state_dir()
    (sd / "prefect").mkdir(parents=True, exist_ok=True)
    for name in ("prefect", "mlflow", "world"):
        if _running(name) is None and _port_open(p[name]):
            print(f"openwit up: port {p[name]} for the {name} service is already taken by another process; "
                  f"stop it or set OPENWIT_{name.upper()}_PORT", file=sys.stderr)
            return 1
    world = ensure_world(WorldSpec(size=os.environ.get("OPENWIT_WORLD_SIZE", "default"), port=p["world"]))
    if _running("world") is None:
        _spawn("world", [str(BIN / "python"), "-m", "tasks.world.server", "--root", str(world / "www"), "--port", str(p["world"])], env)
    if _running("mlflow") is None:
        _spawn("mlflow", [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(p["mlflow"]), "--workers", "1",
                          "--backend-store-uri", f"sqlite:///{sd / 'mlflow.db'}", "--artifacts-destination", str(sd / "mlartifacts")], env)
    if _running("prefect") is None:
        _spawn("prefect", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(p["prefect"])], env)
    _wait_http(f"{urls()['prefect']}/api/health", 120, "prefect")
    subprocess.run([str(BIN / "prefect"), "work-pool", "create", POOL, "--type", "process", "--overwrite"], env=env, cwd=REPO_ROOT,
                   check=True, capture_output=True)
    if _running("worker") is None:
        _spawn("worker", [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--limit", "1"], env)
    dep = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if dep.returncode != 0:
        print(dep.stdout[-3000:], dep.stderr[-3000:], file=sys.stderr)
        return 1
    _wait_http(f"{urls()['mlflow']}/health", 120, "mlflow")
    _wait_http(f"{urls()['world']}/_serve.json", 30, "world")
    t0 = time.time()
    while not _health("worker") and time.time() - t0 < 60:  # the worker reports ONLINE with its first heartbeat
        time.sleep(1)
    return status()


def _api(path: str, body: dict | None = None) -> object:
    req = urllib.request.Request(f"{urls()['prefect']}/api{path}", data=json.dumps(body or {}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def deployments() -> list[str]:
    """`flow/deployment` names registered on the server (REST API: the CLI's json lacks flow names)."""
    flows = {f["id"]: f["name"] for f in _api("/flows/filter")}
    return sorted(f"{flows.get(d['flow_id'], '?')}/{d['name']}" for d in _api("/deployments/filter"))


def status() -> int:
    u = urls()
    ok = True
    mlflow_ui = f"{u['mlflow']}/#/?workflowType=machine_learning"  # MLflow 3's model-training mode (training/tracking.py)
    for name, url in (("prefect", u["prefect"]), ("worker", f"pool {POOL}"), ("mlflow", mlflow_ui), ("world", u["world"])):
        healthy = _health(name)
        ok &= healthy
        pid = _running(name)
        print(f"{name:8s} {'healthy' if healthy else 'DOWN':8s} {url}  (pid {pid or '-'})")
    if _health("prefect"):
        deps = deployments()
        print(f"deployments: {', '.join(deps) if deps else 'none'}")
    return 0 if ok else 1


def _marked_processes() -> list[int]:
    """PIDs whose environment carries this stack's marker: the services and everything they
    started, including processes that left the process group (Ray's raylet and agents)."""
    marker = f"OPENWIT_STACK={state_dir()}".encode()
    pids = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (d / "environ").read_bytes().split(b"\0") and int(d.name) != os.getpid():
                pids.append(int(d.name))
        except (OSError, ValueError):
            continue
    return pids


def _stop(pids: list[int], grace: float = 15) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    t0 = time.time()
    while any(_pid_alive(p) for p in pids) and time.time() - t0 < grace:
        for p in pids:
            try:
                os.waitpid(p, os.WNOHANG)
            except ChildProcessError:
                pass
        time.sleep(0.2)
    for pid in pids:
        if _pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def down() -> int:
    """Stop the services `up` started (PID files), then anything they left behind."""
    for name in ("worker", "prefect", "mlflow", "world"):
        pid = _running(name)
        if pid is None:
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        _stop([pid])
        try:
            os.killpg(pid, signal.SIGKILL)  # the rest of its process group (flow runs, img2dataset workers)
        except ProcessLookupError:
            pass
        _pidfile(name).unlink(missing_ok=True)
        print(f"stopped {name} (pid {pid})")
    left = _marked_processes()
    if left:
        _stop(left, grace=5)
        print(f"stopped {len(left)} leftover process(es) started by the stack (flow runs, Ray)")
    return 0
