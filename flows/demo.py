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


BARS = {"zeroshot/sample-colour/top1": 0.85, "zeroshot/sample-shape/top1": 0.30}  # the pretrain issue's bars


def _stage_stats(build, stage: str) -> dict:
    f = build / stage / "_DONE.json"
    return json.loads(f.read_text())["stats"] if f.exists() else {}


def summary() -> None:
    build = REPO_ROOT / ".openwit/builds/sample"
    m = json.loads((build / "manifest.json").read_text())
    run_dir = REPO_ROOT / ".openwit/runs/sample"
    final = run_dir / "final_metrics.json"
    u = stack.urls()
    v, c, mt, b, d = (_stage_stats(build, s) for s in ("vocabulary", "candidates", "match", "balance", "download"))
    print("\n== openwit demo summary")
    print(f"vocabulary : {v.get('entries', '?'):,} entries by source {v.get('by_source', {})}")
    drops = {k.removeprefix('drop:'): n for k, n in c.items() if k.startswith('drop:')}
    print(f"candidates : {c.get('candidates', '?'):,} pairs from {c.get('img_tags', '?'):,} <img> tags; dropped {drops}")
    print(f"match      : {mt.get('matched', '?'):,} pairs matched {mt.get('entries_matched', '?')} entries; "
          f"dropped {({k.removeprefix('drop:'): n for k, n in mt.items() if k.startswith('drop:')})}")
    print(f"balance    : kept {b.get('kept', '?'):,} of {b.get('pool', '?'):,} (expected {b.get('expected_kept', '?')}, t = {b.get('t')}); "
          f"head share {b.get('head_share_before')} -> {b.get('head_share_after')}")
    print(f"download   : {d.get('success', '?'):,} images of {d.get('to_fetch', '?'):,}; failures {({k: n for k, n in d.get('by_status', {}).items() if k != 'ok'})}; "
          f"refused before fetching {d.get('refused_by_reason', {})}")
    print(f"shards     : {m['totals']['rows']:,} rows in {len(m['shards'])} shards, {m['totals']['bytes'] / 1e6:.1f} MB")
    if final.exists():
        res = json.loads(final.read_text())
        print("zero-shot  :")
        for k, val in sorted(res.items()):
            bar = BARS.get(k)
            print(f"  {k:50s} {val:.3f}" + (f"  ({'meets' if val >= bar else 'BELOW'} the bar {bar})" if bar else ""))
    run_id = (run_dir / "mlflow_run_id").read_text().strip() if (run_dir / "mlflow_run_id").exists() else None
    print(f"Prefect UI : {u['prefect']}/runs")
    print(f"MLflow UI  : {u['mlflow']}" + (f"  (run {run_id}, experiment openwit-sample)" if run_id else ""))
    print(f"data card  : {build / 'datacard.md'}")
    print("The stack keeps running for browsing; `make down` stops it.")


def compare(seeds: int = 1) -> None:
    """The MetaCLIP finding at toy scale: balanced pairs vs an unbalanced pool of the same size,
    trained with the same steps and seed; with seeds > 1, once per seed (0, 1, ...)."""
    import statistics

    results: dict[str, list[dict]] = {"balanced": [], "unbalanced": []}
    for seed in range(seeds):
        for subset in ("balanced", "unbalanced"):
            name = f"compare-{subset}" + (f"-seed{seed}" if seed else "")  # a rerun of a finished run only re-evaluates
            spec = yaml.safe_load((REPO_ROOT / "data_specs/pretrain-sample.yaml").read_text())
            spec["name"], spec["output_dir"] = name, f".openwit/runs/{name}"
            spec["data"]["subset"] = subset
            spec["train"]["seed"] = seed
            spec["mlflow"]["register_model"] = None
            run_deployment("pretrain/sample", {"spec": spec})
            f = REPO_ROOT / f".openwit/runs/{name}/final_metrics.json"
            results[subset].append(json.loads(f.read_text()) if f.exists() else {})
    print(f"\n== make compare: same steps, same number of pairs, seeds 0..{seeds - 1} (MLflow experiment openwit-sample)")
    keys = sorted(k for k in results["balanced"][0] if k.startswith(("zeroshot/", "retrieval/")) and k.endswith(("top1", "recall_at_1")))

    def cell(rs: list[dict], k: str) -> str:
        xs = [r.get(k, float("nan")) for r in rs]
        return f"{statistics.mean(xs):.3f}" + (f" ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else "")

    print(f"{'metric':50s} {'balanced':>15s} {'unbalanced':>15s}")
    for k in keys:
        print(f"{k:50s} {cell(results['balanced'], k):>15s} {cell(results['unbalanced'], k):>15s}")
    means = {s: [sum(r.get(k, 0) for k in keys) / max(1, len(keys)) for r in rs] for s, rs in results.items()}
    wins = sum(b > u for b, u in zip(means["balanced"], means["unbalanced"]))
    mb, mu = statistics.mean(means["balanced"]), statistics.mean(means["unbalanced"])
    print(f"mean of these: balanced {mb:.3f}, unbalanced {mu:.3f} -> {'balanced' if mb > mu else 'unbalanced'} did better"
          + (f"; balanced won {wins} of {seeds} seeds" if seeds > 1 else " (one seed: run `make compare SEEDS=3` for a spread)"))
    print(f"Compare the runs side by side at {stack.urls()['mlflow']}")


def main() -> int:
    if stack.up() != 0:
        return 1
    run_deployment("build-wit/sample")
    if "--compare" in sys.argv:
        seeds = int(sys.argv[sys.argv.index("--seeds") + 1]) if "--seeds" in sys.argv else 1
        compare(seeds)
        return 0
    run_deployment("pretrain/sample")
    summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
