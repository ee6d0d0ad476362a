"""Evaluation suite specs -> plain dicts with absolute paths (generating the sample world if needed)."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.specs import SpecError, SuiteSpec, load_spec, resolve_path


def resolve_suite(path_or_spec) -> dict:
    s: SuiteSpec = load_spec(path_or_spec, SuiteSpec) if not isinstance(path_or_spec, SuiteSpec) else path_or_spec
    d = s.model_dump(mode="json")
    _resolve_source(d["source"], s.source)
    if s.train_source:
        _resolve_source(d["train_source"], s.train_source)
    if s.class_groups:
        groups = {"path": s.class_groups}
        _resolve_source(groups, s.source)
        d["class_groups"] = groups["path"]
    if "cn_clip_imagenet" in (s.classnames, s.templates):
        names, templates = cn_clip_imagenet()
        d["classnames"] = names if s.classnames == "cn_clip_imagenet" else d["classnames"]
        d["templates"] = templates if s.templates == "cn_clip_imagenet" else d["templates"]
    if s.classnames_file:
        names = {"path": s.classnames_file}
        _resolve_source(names, s.source)
        try:
            d["classnames"] = json.loads(Path(names["path"]).read_text())
        except (OSError, ValueError) as e:
            raise SpecError(f"suite {s.name}: classnames_file {names['path']}: {e}") from None
        if not isinstance(d["classnames"], list | dict):
            raise SpecError(f"suite {s.name}: classnames_file must hold a list of names or {{class folder: name}}")
    return d


def _resolve_source(src: dict, spec) -> None:
    """Resolve `src["path"]` in place (`world:` paths inside `spec.world`, generated if needed)."""
    if src["path"].startswith("world:"):
        from tasks.specs import WorldSpec
        from tasks.world.generate import ensure_world

        world = ensure_world(spec.world or WorldSpec(), log=lambda *_: None)
        src["path"] = str(world / src["path"].removeprefix("world:"))
    else:
        src["path"] = str(resolve_path(src["path"]))
    if src.get("synset_map"):
        src["synset_map"] = str(resolve_path(src["synset_map"]))


def resolve_suites(paths: list) -> list[dict]:
    return [resolve_suite(p) for p in paths]


def cn_clip_imagenet() -> tuple[list[str], list[str]]:
    """Chinese-CLIP's zero-shot ImageNet class names (1,000, in Chinese) and templates, from the
    installed cn_clip package's `eval/imagenet_zeroshot_templates.py` (a data file: read, not
    imported as a package). Its templates are lambdas; they become `{}` format strings."""
    import importlib.util
    import runpy

    spec = importlib.util.find_spec("cn_clip")
    f = Path(next(iter(spec.submodule_search_locations))) / "eval" / "imagenet_zeroshot_templates.py" if spec else None
    if f is None or not f.exists():
        raise SpecError("classnames/templates `cn_clip_imagenet` come with the cn_clip package: pip install --no-deps cn_clip==1.6.0")
    data = runpy.run_path(str(f))
    return list(data["imagenet_classnames"]), [t("{}") for t in data["openai_imagenet_template"]]
