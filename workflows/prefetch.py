"""Imports done in the background while the driver waits (for Ray to start, mostly).

Ray's start spends most of its seconds waiting for the processes it launches, with the driver's
interpreter idle; an import run in a thread meanwhile costs little wall time. The driver prefetches
Ray Tune and the trainable's modules there (1.2–2.3 s on this project's 2-core machine). Prefetching
the analysis too (about 2 s of imports) gained nothing measurable: the imports share one
interpreter lock, and Ray's start then took longer.
"""
from __future__ import annotations

import importlib
import threading


class prefetch:
    """Imports `module` in a background thread (Ray's start spends most of its time waiting for
    the processes it starts); `.module()` waits for it and returns it. Should the background import
    fail, `.module()` imports it again in the caller's thread, so that an error is the ordinary one."""

    def __init__(self, module: str):
        self.name = module
        self.thread = threading.Thread(target=self._import, name=f"import {module}", daemon=True)
        self.thread.start()

    def _import(self):
        try:
            importlib.import_module(self.name)
        except BaseException:                 # noqa: BLE001 (imported again, in the caller's thread)
            pass

    def module(self):
        self.thread.join()
        return importlib.import_module(self.name)
