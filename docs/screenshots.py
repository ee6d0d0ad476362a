"""README screenshots of both UIs, and a check that every link and image in the artifacts resolves.

    make demo                         # the stack running, with a sample build and training run
    python docs/screenshots.py        # writes docs/img/*.png, exits 1 if a link or image is broken
    python docs/screenshots.py --check-only

Screenshots are taken with headless Chromium from Debian (`apt-get install chromium`):
  prefect-build.png      the build-wit/sample flow run: stage summaries and progress in its logs
  prefect-datacard.png   the data card artifact of that run, with its balance plot
  mlflow-run.png         the pretrain/sample MLflow run: overview (params, tags, lineage)
  mlflow-metrics.png     its model metrics (loss, zero-shot), mlflow-system.png its system metrics

The check reads every artifact of the newest build-wit and pretrain flow runs (Prefect's API)
and every markdown artifact of the MLflow run, and fetches each link and image: http(s) links
must answer 200, data: images must decode, and relative links must name a file that exists
beside the markdown (MLflow) — in the Prefect UI a relative link is always broken.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "img"
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def check_markdown(markdown: str, base: Path | None = None, fetch=None) -> list[str]:
    """Broken links and images of one markdown text: a list of `what: why`."""
    from PIL import Image

    fetch = fetch or http_status
    broken = []
    for m in LINK.finditer(markdown):
        is_image, ref = m.group(1) == "!", m.group(3)
        if ref.startswith("data:"):
            try:
                Image.open(io.BytesIO(base64.b64decode(ref.split(",", 1)[1]))).verify()
            except Exception as e:  # noqa: BLE001 - reported, not raised
                broken.append(f"{ref[:40]}...: not a decodable image ({type(e).__name__})")
        elif ref.startswith(("http://", "https://")):
            status = fetch(ref)
            if status != 200:
                broken.append(f"{ref}: HTTP {status}")
        elif ref.startswith("#"):
            continue
        elif base is None or not (base / ref).exists():
            broken.append(f"{ref}: a relative {'image' if is_image else 'link'} that {'no file backs' if base else 'the Prefect UI cannot serve'}")
    return broken


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def prefect_artifacts(api: str, flow_name: str) -> tuple[str | None, list[dict]]:
    """(flow run id, its artifacts) of the newest completed run of `flow_name`."""
    def post(path: str, body: dict) -> list:
        req = urllib.request.Request(f"{api}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    runs = post("/flow_runs/filter", {"flows": {"name": {"any_": [flow_name]}}, "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
                                      "sort": "START_TIME_DESC", "limit": 1})
    if not runs:
        return None, []
    run_id = runs[0]["id"]
    return run_id, post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})


def mlflow_markdown(uri: str, run_id: str) -> list[tuple[str, str, Path]]:
    """(artifact path, text, local folder) of every .md artifact of a run (downloaded)."""
    from mlflow.tracking import MlflowClient

    client, found = MlflowClient(uri), []

    def walk(path: str | None) -> None:
        for a in client.list_artifacts(run_id, path):
            if a.is_dir:
                walk(a.path)
            elif a.path.endswith(".md"):
                local = Path(client.download_artifacts(run_id, str(Path(a.path).parent) if "/" in a.path else ""))
                found.append((a.path, (local / Path(a.path).name).read_text(), local))

    walk(None)
    return found


def screenshot(url: str, out: Path, size: str = "1400,1000", wait_ms: int = 60000, crop_top: int = 0) -> None:
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not chrome:
        sys.exit("headless Chromium is needed: apt-get install chromium")
    subprocess.run([chrome, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={size}",
                    f"--virtual-time-budget={wait_ms}", "--run-all-compositor-stages-before-draw", f"--screenshot={out}", url],
                   check=True, capture_output=True, timeout=180)
    if crop_top:  # keep the lower part of a tall page (the data card's balance plot)
        from PIL import Image

        img = Image.open(out)
        img.crop((0, crop_top, img.width, img.height)).save(out)
    print(f"  {out.relative_to(ROOT)}  <- {url}")


def main() -> int:
    from flows import stack

    ap = argparse.ArgumentParser()
    ap.add_argument("--check-only", action="store_true")
    a = ap.parse_args()
    u = stack.urls()
    api = u["prefect"] + "/api"
    broken: list[str] = []
    build_run, build_artifacts = prefect_artifacts(api, "build-wit")
    pre_run, pre_artifacts = prefect_artifacts(api, "pretrain")
    if build_run is None or pre_run is None:
        print("no completed build-wit and pretrain runs on the stack: run `make demo` first")
        return 1
    for art in build_artifacts + pre_artifacts:
        if art.get("type") == "markdown":
            broken += [f"Prefect artifact {art['key']}: {b}" for b in check_markdown(art["data"])]
    run_dir = ROOT / ".openwit/runs/sample"
    mlflow_run = (run_dir / "mlflow_run_id").read_text().strip()
    for path, text, local in mlflow_markdown(u["mlflow"], mlflow_run):
        broken += [f"MLflow artifact {path}: {b}" for b in check_markdown(text, local)]
    print(f"checked the links and images of {len(build_artifacts) + len(pre_artifacts)} Prefect artifacts and the MLflow run's markdown:"
          f" {len(broken)} broken")
    for b in broken:
        print("  BROKEN", b)
    if not a.check_only:
        from mlflow.tracking import MlflowClient

        from training.tracking import TRAINING_VIEW

        exp = MlflowClient(u["mlflow"]).get_run(mlflow_run).info.experiment_id
        datacard = next(x for x in build_artifacts if x["key"].endswith("-datacard"))
        OUT.mkdir(parents=True, exist_ok=True)
        screenshot(f"{u['prefect']}/runs/flow-run/{build_run}", OUT / "prefect-build.png", "1400,2000")
        screenshot(f"{u['prefect']}/artifacts/artifact/{datacard['id']}", OUT / "prefect-datacard.png", "1400,1500")
        screenshot(f"{u['prefect']}/artifacts/artifact/{datacard['id']}", OUT / "prefect-datacard-plot.png", "1400,4200", crop_top=2400)
        base = f"{u['mlflow']}/#/experiments/{exp}/runs/{mlflow_run}"
        mode = f"?{TRAINING_VIEW}"  # MLflow 3's model-training mode, as the links openwit prints open it
        screenshot(base + mode, OUT / "mlflow-run.png", "1400,1200")
        screenshot(f"{base}/model-metrics{mode}", OUT / "mlflow-metrics.png", "1400,2600")
        screenshot(f"{base}/system-metrics{mode}", OUT / "mlflow-system.png", "1400,1000")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
