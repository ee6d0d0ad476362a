"""The README's commands work as written: every block marked `<!-- runnable ... -->` runs, line by
line, in a fresh folder with the project's commands on PATH (paths to a trained model point at a
small checkpoint made here)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def runnable_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"<!-- runnable[^>]*-->\s*```bash\n(.*?)```", text, re.DOTALL)


def test_readme_blocks_run(tmp_path):
    from tests.conftest import train_bpe
    from training.checkpoint import save_model
    from training.model import CLIP, CLIPConfig, preset_dict

    blocks = runnable_blocks()
    assert blocks, "README.md marks no runnable block"
    cfg = CLIPConfig.from_dict(preset_dict("debug-rn"))
    tok = train_bpe(["a red circle", "a blue square", "a green star"] * 20, vocab_size=300)
    tok.context_length = cfg.text.context_length
    cfg.text.vocab_size, cfg.text.eot_id = tok.vocab_size, tok.eot_id
    ckpt = save_model(CLIP(cfg), tmp_path / "ckpt", tok)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    outputs = []
    for block in blocks:
        for line in block.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            line = line.replace(".openwit/runs/sample/model", str(ckpt))
            p = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
            assert p.returncode == 0, f"README line failed: {line}\n{p.stderr[-2000:]}"
            outputs.append(p.stdout.strip().splitlines()[-1] if p.stdout.strip() else "")
    assert "CLIP" in outputs and f"torch.Size([1, {cfg.text.context_length}])" in outputs
