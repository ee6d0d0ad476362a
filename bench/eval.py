"""Evaluation throughput: images per second through a whole suite (zero-shot + linear probe).

    python bench/eval.py [--model debug-rn] [--suite data_specs/eval/sample-concepts.yaml]

  ours:     training.eval.suite.run_suite (decode, resize, encode images, class embeddings from
            every template, classify, confusion matrix, linear-probe sweep);
  baseline: encoding the same images alone (the forward passes it cannot avoid).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, debug_model, report, row


def main() -> None:
    import torch

    from flows.configs import suite_config
    from training.eval.datasets import image_batches, suite_data
    from training.eval.suite import run_suite
    from training.tokenizer import Tokenizer
    from training.zero_shot import image_features

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="debug-rn")
    ap.add_argument("--suite", default=str(ROOT / "data_specs/eval/sample-concepts.yaml"))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    suite = suite_config(a.suite)
    data = suite_data(suite)
    build = ROOT / ".openwit/builds/sample/tokenizer.json"
    model = debug_model(a.model)
    if build.exists():
        tok = Tokenizer.load(str(build), model.cfg.text.context_length)
    else:
        from tasks.manifest.bpe import train_bpe

        tok = Tokenizer(train_bpe([f"a photo of a {c}." for c in data.classnames] * 20, vocab_size=300), model.cfg.text.context_length)
    model = debug_model(a.model, tok.vocab_size, tok.eot_id).eval()
    size, cpu = model.cfg.vision.image_size, torch.device("cpu")
    with torch.inference_mode():
        image_features(model.encode_image, image_batches(data.images, data.labels, size, cpu))  # warm up
        t0 = time.perf_counter()
        image_features(model.encode_image, image_batches(data.images, data.labels, size, cpu))
        enc = len(data.images) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_suite(model, tok, suite, data, size)
        full = len(data.images) / (time.perf_counter() - t0)
    report("eval", [row(f"images/s, suite {suite.name} ({', '.join(suite.tasks)}) vs encoding alone", full, enc, "images/s",
                        f"{len(data.images)} images, {a.threads} threads")])


if __name__ == "__main__":
    main()
