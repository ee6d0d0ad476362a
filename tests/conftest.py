"""Shared fixtures: a tiny sample world served on a free loopback port, and the shared data."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
from flows.env import apply_quiet_env  # noqa: E402

apply_quiet_env()


def shared(rel: str) -> Path:
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"{p} not present (../shared/data is optional)")
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """(world folder, port): the tiny world generated for a free port and served from a thread."""
    from tasks.specs import WorldSpec
    from tasks.world.generate import ensure_world
    from tasks.world.server import serve_in_thread

    port = free_port()
    spec = WorldSpec(size="tiny", seed=0, port=port)
    world = ensure_world(spec, root=tmp_path_factory.mktemp("worlds"), log=lambda *_: None)
    srv, _t = serve_in_thread(world / "www", port=port)
    yield TinyWorld((world, port, spec), srv)
    srv.shutdown()


class TinyWorld(tuple):
    """(world folder, port, spec), plus `.server` (set `.server.delay_s` to slow every image down)."""

    def __new__(cls, items, server):
        t = super().__new__(cls, items)
        t.server = server
        return t


def build_on_tiny_world(tiny_world, spec_file: str, out: Path) -> Path:
    """build-wit in-process with a repository spec of the tiny world (`data_specs/sample-tiny*.yaml`),
    on the session's tiny world served on its port."""
    import yaml

    from flows.build_wit import build_wit
    from tasks.world import generate

    world, port, _ = tiny_world
    spec = yaml.safe_load((REPO / spec_file).read_text())
    spec["world"]["port"] = port
    orig = generate.world_dir
    generate.world_dir = lambda s, root=None: world  # the fixture's world, served on its port
    try:
        build_wit(spec=spec, out=str(out))
    finally:
        generate.world_dir = orig
    return out
