"""The `openwit` command.

    openwit up | down | status            the local stack (Prefect, worker, MLflow, sample web)
    openwit build SPEC [--out DIR] [--stages vocabulary,candidates,...]
    openwit pretrain SPEC
    openwit evaluate SPEC                 evaluate a checkpoint / registered model on suites
    openwit validate SPEC... [--resolve]  check specs without running anything (offline; --resolve also
                                          resolves inputs named instead of listed, which fetches listings)
    openwit resolve SPEC                  print what a build spec's named inputs resolve to
    openwit world [--size tiny]           generate the sample world (cached)
    openwit import-weights WEIGHTS --model ViT-B-32-quickgelu --out DIR [--bpe FILE]
                                          open_clip / OpenAI / Chinese-CLIP weights -> an openwit checkpoint
    openwit import-weights HF_FOLDER --out DIR
                                          a transformers CLIPModel / ChineseCLIPModel folder -> a checkpoint
    openwit export-open-clip CHECKPOINT --out DIR
                                          -> a folder open_clip loads as local-dir:DIR
    openwit export-hf CHECKPOINT --out DIR
                                          -> a folder transformers loads (CLIPModel / ChineseCLIPModel)
    openwit export-cn-clip BUILD --out DIR
                                          a build's shards -> Chinese-CLIP's dataset layout (tsv, jsonl, LMDB)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from tasks.specs import SpecError, state_dir


def _ephemeral_prefect() -> None:
    """In-process runs use a throwaway Prefect unless the user points at a server."""
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true")
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def cmd_build(a) -> int:
    from tasks.context import make_context
    from tasks.specs import BuildSpec, load_spec

    make_context(load_spec(a.spec, BuildSpec), log=lambda *_: None)  # invalid spec / missing input: one line, no work
    _ephemeral_prefect()
    from flows.build_wit import build_wit

    stages = a.stages.split(",") if a.stages else None
    state = build_wit(spec=a.spec, out=a.out, stages=stages, return_state=True)
    if state.is_failed():  # the stage already said why, in one line
        return 1
    print(json.dumps(state.result(), indent=1))
    return 0


def _run_flow(spec: str, spec_kind: str, module: str, flow_name: str) -> int:
    """Validate first (one clear line, no work), then run the flow in-process."""
    import importlib

    from tasks.specs import SPEC_KINDS, load_spec

    load_spec(spec, SPEC_KINDS[spec_kind])
    _ephemeral_prefect()
    res = getattr(importlib.import_module(module), flow_name)(spec=spec)
    print(json.dumps(res, indent=1, default=str))
    return 0


def cmd_pretrain(a) -> int:
    return _run_flow(a.spec, "pretrain", "flows.pretrain", "pretrain")


def cmd_evaluate(a) -> int:
    return _run_flow(a.spec, "evaluate", "flows.evaluate", "evaluate")


def cmd_validate(a) -> int:
    """Offline by default: the schema, local files and table columns; `--resolve` also resolves
    named inputs (a dump by date, pageview days, a crawl by id), which reads their listings."""
    from tasks.context import make_context
    from tasks.specs import load_spec

    for s in a.specs:
        spec = load_spec(s)
        if spec.kind == "build-wit":  # inputs too: files exist, table columns are there
            make_context(spec, log=lambda *_: None, resolve_named=a.resolve)
        print(f"{s}: ok ({spec.kind} {spec.name})" + ("" if a.resolve or spec.kind != "build-wit" else
                                                       "; named inputs not resolved (add --resolve)"))
    return 0


def cmd_resolve(a) -> int:
    """What a build spec's inputs resolve to: every file it would read, and the names resolved."""
    from tasks.context import make_context
    from tasks.specs import BuildSpec, load_spec

    ctx = make_context(load_spec(a.spec, BuildSpec), log=lambda m: print(m, file=sys.stderr))
    print(json.dumps({"resolved": ctx.resolved, "inputs": ctx.inputs}, indent=1))
    return 0


def cmd_world(a) -> int:
    from tasks.specs import WorldSpec
    from tasks.world.generate import ensure_world

    print(ensure_world(WorldSpec(size=a.size, seed=a.seed, port=a.port)))
    return 0


def cmd_import_weights(a) -> int:
    from pathlib import Path

    from training.convert import import_weights

    if (Path(a.weights) / "config.json").is_file():  # a transformers folder (save_pretrained, or a Hub snapshot)
        from training.hf import import_hf

        out = import_hf(a.weights, a.out)
    elif a.model is None:
        raise ValueError("--model is required for a weights file (open_clip's model name, e.g. ViT-B-32-quickgelu); "
                         "a transformers folder (with config.json) needs none")
    else:
        out = import_weights(a.weights, a.model, a.out, bpe=a.bpe)
    print(f"{out}: openwit checkpoint. Fine-tune it with `init_from: {out}` in a pretrain spec, "
          f"or evaluate it with `checkpoint: {out}` in an evaluate spec")
    return 0


def cmd_export_open_clip(a) -> int:
    from flows.configs import checkpoint_folder
    from training import tracking
    from training.convert import export_open_clip

    folder = checkpoint_folder(a.checkpoint, tracking.tracking_uri(None, state_dir()))
    out = export_open_clip(folder, a.out)
    print(f"{out}: open_clip.create_model_and_transforms('local-dir:{out}') loads it; tokenizer: "
          f"open_clip.get_tokenizer('local-dir:{out}') if it was trained with CLIP's BPE, else "
          f"training.tokenizer.Tokenizer.load('{out}/tokenizer.json')")
    return 0


def cmd_export_hf(a) -> int:
    from flows.configs import checkpoint_folder
    from training import tracking
    from training.hf import export_hf

    folder = checkpoint_folder(a.checkpoint, tracking.tracking_uri(None, state_dir()))
    out = export_hf(folder, a.out)
    kind = "ChineseCLIP" if "chinese_clip" in (out / "config.json").read_text() else "CLIP"
    print(f"{out}: transformers.{kind}Model.from_pretrained('{out}') and {kind}Processor.from_pretrained('{out}') load it")
    return 0


def cmd_export_cn_clip(a) -> int:
    from tasks.manifest.cn_clip_layout import export_cn_clip

    out, stats = export_cn_clip(a.build, a.out, valid=a.valid, test=a.test, seed=a.seed)
    print(f"{out}: {stats.summary()}")
    print(f"Chinese-CLIP reads it as --train-data={out}/lmdb/train --val-data={out}/lmdb/valid "
          "(cn_clip/training/main.py); the tsv/jsonl files are its preprocess inputs")
    return 0


def cmd_stack(a) -> int:
    from flows import stack

    return {"up": stack.up, "down": stack.down, "status": stack.status}[a.cmd]()


def main(argv: list[str] | None = None) -> int:
    from flows.env import apply_quiet_env

    apply_quiet_env()
    ap = argparse.ArgumentParser(prog="openwit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("up", "down", "status"):
        sub.add_parser(name).set_defaults(fn=cmd_stack)
    b = sub.add_parser("build", help="run build-wit in-process")
    b.add_argument("spec")
    b.add_argument("--out", default=None)
    b.add_argument("--stages", default=None, help="comma-separated subset of: vocabulary,candidates,match,balance,download,manifest")
    b.set_defaults(fn=cmd_build)
    p = sub.add_parser("pretrain", help="run pretrain in-process")
    p.add_argument("spec")
    p.set_defaults(fn=cmd_pretrain)
    e = sub.add_parser("evaluate", help="run evaluate in-process")
    e.add_argument("spec")
    e.set_defaults(fn=cmd_evaluate)
    v = sub.add_parser("validate", help="validate specs (offline)")
    v.add_argument("specs", nargs="+")
    v.add_argument("--resolve", action="store_true", help="also resolve named inputs (reads their listings over the network)")
    v.set_defaults(fn=cmd_validate)
    r = sub.add_parser("resolve", help="print what a build spec's named inputs resolve to")
    r.add_argument("spec")
    r.set_defaults(fn=cmd_resolve)
    w = sub.add_parser("world", help="generate the sample world")
    w.add_argument("--size", default="default", choices=["default", "tiny"])
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--port", type=int, default=8765)
    w.set_defaults(fn=cmd_world)
    i = sub.add_parser("import-weights", help="open_clip / OpenAI CLIP weights -> an openwit checkpoint folder")
    i.add_argument("weights", help="a .safetensors file, a torch state dict (.bin/.pt; loaded with weights_only=True), "
                                   "or a transformers folder (config.json + *.safetensors)")
    i.add_argument("--model", default=None, help="for a weights file: open_clip model name (ViT-B-32, RN50, "
                                                 "ViT-B-32-quickgelu, ...), a cn_clip one (CN-ViT-B-16) or a JSON config")
    i.add_argument("--out", required=True)
    i.add_argument("--bpe", default=None, help="CLIP's bpe_simple_vocab_16e6.txt.gz (default: the copy inside open_clip_torch)")
    i.set_defaults(fn=cmd_import_weights)
    x = sub.add_parser("export-open-clip", help="an openwit checkpoint -> a folder open_clip loads as local-dir:OUT")
    x.add_argument("checkpoint", help="a checkpoint folder (<run_dir>/model) or models:/<name>/<version>")
    x.add_argument("--out", required=True)
    x.set_defaults(fn=cmd_export_open_clip)
    h = sub.add_parser("export-hf", help="an openwit checkpoint -> a folder transformers loads (CLIPModel / ChineseCLIPModel)")
    h.add_argument("checkpoint", help="a checkpoint folder (<run_dir>/model) or models:/<name>/<version>")
    h.add_argument("--out", required=True)
    h.set_defaults(fn=cmd_export_hf)
    c = sub.add_parser("export-cn-clip", help="a build's shards -> Chinese-CLIP's dataset layout (tsv, jsonl, LMDB)")
    c.add_argument("build", help="a build folder (with shards/ and manifest.json) or a folder of shards")
    c.add_argument("--out", required=True)
    c.add_argument("--valid", type=float, default=0.02, help="share of images held out as valid (default 0.02)")
    c.add_argument("--test", type=float, default=0.0, help="share of images held out as test (default 0)")
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(fn=cmd_export_cn_clip)
    a = ap.parse_args(argv)
    try:
        return a.fn(a)
    except SpecError as e:
        print(f"openwit: invalid spec: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        if a.cmd not in ("import-weights", "export-open-clip", "export-hf", "export-cn-clip"):
            raise
        print(f"openwit {a.cmd}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # img2dataset's multiprocessing distributor spawns: keep this guard
    sys.exit(main())
