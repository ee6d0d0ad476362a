"""The README's "fine-tune on your own data" example: images with captions, an evaluation suite of
the same images, and a small transformers CLIPModel folder to start from.

    python docs/example_images.py examples/own-images

writes
    examples/own-images/images/<colour>_<shape>_<k>.jpg + .txt   36 images with their captions (name.jpg + name.txt)
    examples/own-images/suite/<colour> <shape>/*.jpg              the same images by class (an imagefolder suite)
    examples/own-images/hf-start/                                 a CLIPModel folder (random ViT weights, a BPE
                                                                  trained on the captions): it stands in for the
                                                                  Hub checkpoint you would download

The images are the tests' (tests/tasks/test_own_data.py: coloured circles and squares).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(out: Path) -> None:
    import torch

    from tests.conftest import train_bpe
    from tests.tasks.test_own_data import COLORS, SHAPES, make_pairs_folder
    from training.checkpoint import save_model
    from training.hf import export_hf
    from training.model import CLIP, CLIPConfig, preset_dict

    captions = make_pairs_folder(out / "images", per_class=6)
    for color in COLORS:
        for shape in SHAPES:
            (out / "suite" / f"{color} {shape}").mkdir(parents=True, exist_ok=True)
            for f in (out / "images").glob(f"{color}_{shape}_*.jpg"):
                shutil.copy(f, out / "suite" / f"{color} {shape}" / f.name)
    tok = train_bpe(list(captions.values()) * 20, vocab_size=300)
    cfg = CLIPConfig.from_dict(preset_dict("debug-vit"))
    cfg.text.vocab_size, cfg.text.eot_id = tok.vocab_size, tok.eot_id
    torch.manual_seed(0)
    tmp = save_model(CLIP(cfg).eval(), out / ".checkpoint", tok)
    export_hf(tmp, out / "hf-start")
    shutil.rmtree(tmp)
    print(f"{out}: {len(captions)} images with captions in images/, a suite in suite/, a CLIPModel folder in hf-start/")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "examples/own-images"))
