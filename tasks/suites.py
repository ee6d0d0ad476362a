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
