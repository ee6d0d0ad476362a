"""`make demo`: the whole product on the embedded default, through the deployments.

    python -m flows.demo            # up, build-wit/sample, pretrain/sample, summary
    python -m flows.demo --compare  # pretrain on the balanced and on an unbalanced pool of equal size
"""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from flows import stack
from tasks.specs import REPO_ROOT


def run_deployment(name: str, params: dict | None = None) -> None:
    cmd = [str(stack.BIN / "prefect"), "deployment", "run", name, "--watch"]
    for k, v in (params or {}).items():
        cmd += ["--param", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
    print(f"\n== prefect deployment run {name}", flush=True)
    subprocess.run(cmd, env=stack.stack_env(), cwd=REPO_ROOT, check=True)


def summary() -> None:
    build = REPO_ROOT / ".openwit/builds/sample"
    m = json.loads((build / "manifest.json").read_text())
    final = REPO_ROOT / ".openwit/runs/sample/final_metrics.json"
    u = stack.urls()
    print("\n== openwit demo summary")
    print(f"training rows: {m['totals']['rows']} in {len(m['shards'])} shards; download status: {m['totals']['by_status']}")
    print(f"refused before fetching: {m['totals']['refused_before_fetch']}")
    if final.exists():
        for k, v in sorted(json.loads(final.read_text()).items()):
            print(f"  {k}: {v:.3f}")
    print(f"Prefect UI: {u['prefect']}   MLflow UI: {u['mlflow']}   data card: {build / 'datacard.md'}")
    print("The stack keeps running for browsing; `make down` stops it.")


def main() -> int:
    if stack.up() != 0:
        return 1
    run_deployment("build-wit/sample")
    if "--compare" in sys.argv:
        for subset in ("balanced", "unbalanced"):
            spec = yaml.safe_load((REPO_ROOT / "data_specs/pretrain-sample.yaml").read_text())
            spec["name"], spec["output_dir"] = f"compare-{subset}", f".openwit/runs/compare-{subset}"
            spec["data"]["subset"] = subset
            run_deployment("pretrain/sample", {"spec": spec})
        for subset in ("balanced", "unbalanced"):
            f = REPO_ROOT / f".openwit/runs/compare-{subset}/final_metrics.json"
            print(subset, json.loads(f.read_text()) if f.exists() else "no result")
        return 0
    run_deployment("pretrain/sample")
    summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
