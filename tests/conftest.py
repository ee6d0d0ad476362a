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
