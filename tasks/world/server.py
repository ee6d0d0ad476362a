"""The loopback web server of the sample world: serves `www/` with per-path behaviour.

    python -m tasks.world.server --root .openwit/worlds/default-s0-127.0.0.1-8765/www --port 8765

`_serve.json` maps a path to its content type or extra headers (`X-Robots-Tag: noai`), so the
world can show img2dataset every case it meets on the web. Binds to 127.0.0.1 unless told.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar


class WorldHandler(SimpleHTTPRequestHandler):
    serve: ClassVar[dict[str, dict]] = {}

    def __init__(self, *args, serve: dict[str, dict], **kwargs):
        self.serve = serve
        super().__init__(*args, **kwargs)

    def guess_type(self, path):
        rel = Path(path).relative_to(Path(self.directory)).as_posix()
        rule = self.serve.get(rel, {})
        return rule.get("content_type") or mimetypes.guess_type(path)[0] or "application/octet-stream"

    def end_headers(self):
        rel = self.path.lstrip("/").split("?")[0]
        for k, v in self.serve.get(rel, {}).get("headers", {}).items():
            self.send_header(k, v)
        super().end_headers()

    def do_GET(self):
        delay = getattr(self.server, "delay_s", 0.0)
        if delay and not self.path.endswith((".html", ".json")):
            time.sleep(delay)
        target = self.serve.get(self.path.lstrip("/").split("?")[0], {}).get("redirect")
        if target:  # a hop the download guard must check again
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, fmt, *args):  # quiet: img2dataset makes thousands of requests
        pass


def make_server(root: Path, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    serve_file = root / "_serve.json"
    serve = json.loads(serve_file.read_text()) if serve_file.exists() else {}
    handler = partial(WorldHandler, directory=str(root), serve=serve)
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 256
    return ThreadingHTTPServer((host, port), handler)


def serve_in_thread(root: Path, host: str = "127.0.0.1", port: int = 0) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """For tests: a server on a free port (port=0) in a daemon thread."""
    srv = make_server(root, host, port)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    return srv, t


def serves(root: Path, host: str, port: int) -> str:
    """"free", "ours" (a server on host:port serves this `root`), or "other" (anything else holds the port)."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.settimeout(1)
        if s.connect_ex((host, port)) != 0:
            return "free"
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"http://{host}:{port}/_serve.json", timeout=5) as r:
            return "ours" if r.read() == (root / "_serve.json").read_bytes() else "other"
    except Exception:  # noqa: BLE001 - whatever answers there, it is not our world
        return "other"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8765)
    a = ap.parse_args()
    srv = make_server(a.root, a.host, a.port)
    print(f"serving {a.root} on http://{a.host}:{a.port}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
