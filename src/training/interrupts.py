"""Graceful stops: SIGINT, SIGTERM and SIGHUP are noted, not obeyed at once.

While a ``StopRequest`` is active, a signal only records itself; the training loop checks
``requested`` between optimizer steps, saves, and raises ``TrainingInterrupted``. A second
signal during that save is absorbed, so the save cannot be torn.

The noted signal is process-wide: ``StopRequest`` contexts nest (the CLI holds one for the
whole run, the Trainer one for ``train``), and a signal noted by the outer one (say while
the experiment is being created) is seen by the inner one. In ``immediate`` mode (the
CLI's start-up, before anything is written) a signal raises ``StartupInterrupted`` at once
instead, so a long data load or download stops without delay.
"""

from __future__ import annotations

import signal
import threading
from typing import Callable, Dict, Optional

from ..errors import ExptrainError

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

_pending: Optional[int] = None  # the first signal noted by the active StopRequest(s)
_depth = 0  # how many StopRequest contexts are active (handlers are installed by the outermost)


_native_waits = 0  # > 0 inside native_wait()


class native_wait:
    """``with native_wait(): ...``: a start-up wait inside native code (joining a torchrun
    process group waits in C++ for the other ranks, and Python runs no signal handler until
    it returns). A SIGINT/SIGTERM/SIGHUP there ends the process at once with 128 + N:
    nothing is written during start-up. Python's own C-level handler still writes the
    signal number to a wake-up socket, and a watcher thread acts on it."""

    def __enter__(self) -> "native_wait":
        global _native_waits
        import socket

        _native_waits += 1
        self._previous = None
        if threading.current_thread() is not threading.main_thread():
            return self
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        try:
            self._previous = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        except ValueError:
            self._reader.close()
            self._writer.close()
            return self
        self._watcher = threading.Thread(target=self._watch, name="exptrain-native-wait", daemon=True)
        self._watcher.start()
        return self

    def _watch(self) -> None:
        import os

        try:
            data = self._reader.recv(1)
        except OSError:
            return
        if not data or data[0] not in SIGNALS:
            return
        name = signal.Signals(data[0]).name
        os.write(2, f"Interrupted by {name} during start-up; nothing was written.\n".encode())
        os._exit(128 + data[0])

    def __exit__(self, *exc) -> None:
        global _native_waits
        _native_waits -= 1
        if self._previous is not None:
            signal.set_wakeup_fd(self._previous)
            self._writer.close()
            self._reader.shutdown(2) if hasattr(self._reader, "shutdown") else None
            self._reader.close()


class TrainingInterrupted(ExptrainError):
    """Training stopped on a signal; ``signum`` says which and ``saved`` whether the
    state at the stop was written (the CLI exits with 128 + ``signum``)."""

    def __init__(self, signum: int, saved: bool, message: Optional[str] = None):
        self.signum = signum
        self.saved = saved
        self.exit_code = 128 + int(signum)
        name = signal.Signals(signum).name
        super().__init__(
            message
            or f"Interrupted by {name}; " + ("state saved, resume to continue." if saved else "nothing new saved.")
        )


class StartupInterrupted(BaseException):
    """A signal during start-up (immediate mode): nothing has been written yet. A
    ``BaseException``, like ``KeyboardInterrupt``, so no ``except Exception`` swallows it."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"Interrupted by {signal.Signals(signum).name} during start-up; nothing was written.")


class StopRequest:
    """Context manager noting SIGINT/SIGTERM/SIGHUP (handlers are installed in the main
    thread only; elsewhere ``requested`` still reflects what the owner sets).

    Args:
        log: where the "finishing the current step" note goes.
        enabled: install handlers at all (False: the caller handles signals).
        immediate: raise ``StartupInterrupted`` from the handler instead of noting
            (switch off with ``defer()`` before anything is written).
    """

    def __init__(self, log: Callable[[str], None] = print, enabled: bool = True, immediate: bool = False):
        self.enabled = enabled
        self.immediate = immediate
        self._log = log
        self._previous: Dict[int, object] = {}
        self._installed = False

    @property
    def signum(self) -> Optional[int]:
        return _pending

    @signum.setter
    def signum(self, value: Optional[int]) -> None:
        global _pending
        _pending = value

    @property
    def requested(self) -> bool:
        return _pending is not None

    def defer(self) -> None:
        """From now on a signal is only noted (a write may be under way)."""
        self.immediate = False

    def _note(self, signum, frame) -> None:
        global _pending
        if _pending is not None:
            return
        if self.immediate:
            _pending = signum
            if _native_waits:  # an exception would be swallowed by the C++ wait: nothing is written yet, so go
                import os

                os.write(
                    2, f"Interrupted by {signal.Signals(signum).name} during start-up; nothing was written.\n".encode()
                )
                os._exit(128 + signum)
            raise StartupInterrupted(signum)
        _pending = signum
        self._log(f"\n{signal.Signals(signum).name} received: finishing the current step and saving...")

    def __enter__(self) -> "StopRequest":
        global _depth, _pending
        if _depth == 0:
            _pending = None
        _depth += 1
        if _depth == 1 and self.enabled and threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._note) for sig in SIGNALS}
            self._installed = True
        return self

    def __exit__(self, *exc) -> None:
        global _depth, _pending
        _depth -= 1
        if self._installed:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            self._previous, self._installed = {}, False
        if _depth == 0:
            _pending = None
