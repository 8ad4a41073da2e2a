"""Graceful stops: SIGINT and SIGTERM are noted, not obeyed at once.

While ``StopRequest`` is active, a signal only records itself; the training loop checks
``requested`` between optimizer steps, saves, and raises ``TrainingInterrupted``. A second
signal during that save is absorbed, so the save cannot be torn.
"""

from __future__ import annotations

import signal
import threading
from typing import Callable, Dict, Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Training stopped on a signal; ``signum`` says which and ``saved`` whether the
    state at the stop was written (the CLI exits with 128 + ``signum``)."""

    def __init__(self, signum: int, saved: bool):
        self.signum = signum
        self.saved = saved
        name = signal.Signals(signum).name
        super().__init__(f"Interrupted by {name}; " + ("state saved, resume to continue." if saved else "nothing new saved."))


class StopRequest:
    """Context manager installing the noting handlers (main thread only; elsewhere it
    installs nothing and ``signum`` can still be set by the owner)."""

    def __init__(self, log: Callable[[str], None] = print, enabled: bool = True):
        self.signum: Optional[int] = None
        self.enabled = enabled
        self._log = log
        self._previous: Dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _note(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
            self._log(f"\n{signal.Signals(signum).name} received: finishing the current step and saving...")

    def __enter__(self) -> "StopRequest":
        self.signum = None
        if self.enabled and threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._note) for sig in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
