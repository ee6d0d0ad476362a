"""Python imports this module at start-up when its folder is on PYTHONPATH (the `site` module's
documented hook; coverage.py measures subprocesses the same way). The download stage puts this
folder on the PYTHONPATH of img2dataset's worker processes with the guard's policy in
OPENWIT_GUARD, so every connection they open passes tasks/download/guard.py's ConnectionGuard.
Without OPENWIT_GUARD it does nothing."""

import os

if os.environ.get("OPENWIT_GUARD"):
    from tasks.download.guard import install_from_env

    install_from_env()
