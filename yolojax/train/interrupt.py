"""Ctrl-C during training: the first one asks the loop to stop after the current step (and save a checkpoint),
a second one aborts."""
from __future__ import annotations

import signal
import sys


class StopFlag:
    """Turns the first Ctrl-C into a request to stop after the current step (a second one aborts)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if sys.platform != "win32":
            try:
                self._previous = signal.signal(signal.SIGINT, self._handle)
            except ValueError:  # not the main thread
                self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to abort)", flush=True)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
