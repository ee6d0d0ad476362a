"""Evaluation throughput: images per second through a whole suite (zero-shot + linear probe).

    python bench/eval.py [--model debug-rn] [--suite data_specs/eval/sample-concepts.yaml]

  ours:     training.eval_data.run_suite (decode, resize, encode images, class embeddings from
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
    from tasks.suites import resolve_suite
    from training.eval_data import batches, run_suite
    from training.eval_report import suite_data

    from training.tokenizer import Tokenizer
    from training.zero_shot import image_features

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="debug-rn")
    ap.add_argument("--suite", default=str(ROOT / "data_specs/eval/sample-concepts.yaml"))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    suite = resolve_suite(a.suite)
    data = suite_data(suite)
    build = ROOT / ".openwit/builds/sample/tokenizer.json"
    model = debug_model(a.model)
    if build.exists():
        tok = Tokenizer.load(str(build), model.cfg.text.context_length)
    else:
        from training.tokenizer import train_bpe

        tok = train_bpe([f"a photo of a {c}." for c in data.classnames] * 20, vocab_size=300)
        tok.context_length = model.cfg.text.context_length
    model = debug_model(a.model, tok.vocab_size, tok.eot_id).eval()
    size = model.cfg.vision.image_size
    with torch.inference_mode():
        image_features(model.encode_image, batches(data.images, data.labels, size))  # warm up
        t0 = time.perf_counter()
        image_features(model.encode_image, batches(data.images, data.labels, size))
        enc = len(data.images) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        metrics, _ = run_suite(model, tok, suite, data, size)
        full = len(data.images) / (time.perf_counter() - t0)
    report("eval", [row(f"images/s, suite {suite['name']} ({', '.join(suite['tasks'])}) vs encoding alone", full, enc, "images/s",
                        f"{len(data.images)} images, {a.threads} threads")])


if __name__ == "__main__":
    main()
