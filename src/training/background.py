"""Checkpoint writes off the training thread.

At an epoch end the training thread only takes a consistent copy of the state
(``FrozenState`` for the model and optimizer, ``freeze`` for the rest: tensors are cloned,
so the next optimizer step cannot change what is saved). ``BackgroundWrites`` then runs the
save and the bookkeeping that describes it (log, metrics.csv, status) as one job on a worker
thread: serializing, hashing, writing, fsync, rename and manifests overlap the next epoch.

The guarantees of a synchronous save stay:

* one job at a time: the next ``submit`` (and every other write of the run) first waits
  for the previous job, so files are written in order and the newest committed checkpoint
  is always valid (each file is still written atomically with its manifest);
* the log, metrics.csv and status of an epoch are written after its checkpoint, in the
  same job, and only when the checkpoint was written;
* a failed job's exception is kept and raised, unchanged (same message, same exit code),
  by the next ``wait`` or ``submit``: at the next epoch boundary, or on the way out;
* the worker is not a daemon thread, so even an unexpected exit lets the interpreter
  finish the write in progress (only SIGKILL or power loss can cut it, and the atomic
  writes cover those).
"""

from __future__ import annotations

import copy
import threading
from typing import Any, Callable, Optional

import torch

from .protocols import model_config


def freeze(value: Any, to_host: Callable[[torch.Tensor], bool] = lambda t: t.device.type != "cpu") -> Any:
    """A deep copy of ``value`` that no later training step can change.

    CPU tensors are cloned (views of one storage stay views of one copied storage).
    Tensors for which ``to_host`` holds (those on a GPU) are copied to host memory instead,
    so a snapshot never doubles the accelerator's memory; a tensor that appears twice
    (tied weights) is copied once. Checkpoints are loaded with ``map_location="cpu"``, so
    the saved device makes no difference."""
    memo: dict = {}
    _host_copies(value, memo, to_host, set())
    return copy.deepcopy(value, memo)


def _host_copies(value: Any, memo: dict, to_host, seen: set) -> None:
    """Put a host copy of every ``to_host`` tensor inside ``value`` into ``memo`` (keyed by
    ``id`` as ``copy.deepcopy`` expects), so the deep copy uses it."""
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        if to_host(value) and id(value) not in memo:
            memo[id(value)] = value.detach().to("cpu", copy=True)
    elif isinstance(value, dict):
        for item in value.values():
            _host_copies(item, memo, to_host, seen)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _host_copies(item, memo, to_host, seen)


class FrozenState:
    """A copy of a module's or optimizer's ``state_dict()`` (and a model's
    ``model_config``), taken now, standing in for the live object when the checkpoint
    is written later: ``CheckpointManager`` only calls ``state_dict()`` and reads
    ``model_config``."""

    def __init__(self, source: Any):
        self._state = freeze(source.state_dict())
        self.model_config = freeze(model_config(source))

    def state_dict(self) -> Any:
        return self._state


class BackgroundWrites:
    """Run write jobs one at a time on a worker thread (inline when ``enabled`` is False,
    e.g. under torchrun, where a save is a collective step of every rank)."""

    def __init__(self, enabled: bool = True, name: str = "exptrain-writer"):
        self.enabled = bool(enabled)
        self.name = name
        self._done: Optional[threading.Event] = None  # set when the running job has ended
        self._error: Optional[BaseException] = None

    @property
    def busy(self) -> bool:
        """True while a job is running."""
        return self._done is not None and not self._done.is_set()

    def submit(self, job: Callable[[], None], inline: bool = False) -> None:
        """Wait for the previous job (raising its error), then start ``job`` (or run it
        here and now when ``inline``)."""
        self.wait()
        if inline or not self.enabled:
            job()
            return
        done = threading.Event()
        thread = threading.Thread(target=self._run, args=(job, done), name=self.name, daemon=False)
        thread.start()
        self._done = done

    def _run(self, job: Callable[[], None], done: threading.Event) -> None:
        try:
            job()
        except BaseException as exc:  # raised on the training thread by the next wait()
            self._error = exc
        finally:
            done.set()

    def wait(self) -> None:
        """Wait for the running job; raise its exception (once) if it failed."""
        error = self.wait_quietly()
        if error is not None:
            raise error

    def wait_quietly(self) -> Optional[BaseException]:
        """Wait for the running job; return (and forget) its exception instead of raising.

        An exception raised while waiting (Ctrl-C as ``KeyboardInterrupt`` where signals
        are not handled) does not cut the wait short: the job is waited for, then that
        exception is raised (the job's own error, if any, is kept for the next wait). An
        event is waited on, not the thread: an interrupted ``Thread.join`` can leave the
        thread marked as ended while it still runs (CPython gh-90882)."""
        interrupted = None
        while self._done is not None and not self._done.is_set():
            try:
                self._done.wait()
            except BaseException as exc:  # noqa: BLE001 - re-raised once the write is done
                interrupted = interrupted or exc
        self._done = None
        if interrupted is not None:
            raise interrupted
        error, self._error = self._error, None
        return error


__all__ = ["BackgroundWrites", "FrozenState", "freeze"]
