"""Python imports this module at start-up when its folder is on PYTHONPATH (the `site` module's
documented hook; coverage.py measures subprocesses the same way). The download stage puts this
folder on the PYTHONPATH of img2dataset's worker processes with the guard's policy in
OPENWIT_GUARD, so every connection they make through Python's socket module is checked by
tasks/download/guard.py. Without OPENWIT_GUARD it does nothing.

It fails closed: when the guard cannot be installed (`tasks` not importable here, a broken
policy), every connection and datagram of this process is refused instead, and the reason is
what `socket.openwit_guard` says (the download stage's pre-flight check reads it)."""

import os

if os.environ.get("OPENWIT_GUARD"):
    try:
        from tasks.download.guard import install_from_env

        install_from_env()
    except Exception as e:  # noqa: BLE001 - any failure leaves the process unable to connect, never unguarded
        import socket

        why = f"openwit-guard not active: {type(e).__name__}: {e}"

        def _refuse(self, *args, **kwargs):
            raise ConnectionRefusedError(111, why)  # ECONNREFUSED; strerror carries the reason

        socket.socket.connect = socket.socket.connect_ex = socket.socket.sendto = _refuse
        socket.openwit_guard = why
