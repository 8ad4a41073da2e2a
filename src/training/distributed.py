"""Multi-process training under ``torchrun``: the process group and the few collective
steps the run needs.

``torchrun --nproc_per_node=N train.py ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address in each process's environment;
``Distributed.from_environment()`` joins that group (gloo on CPU, nccl with one GPU per
local rank) and a single process, with no such variables, gets ``Distributed.single()``:
no process group, every collective a no-op, so a single-process run is unchanged.

Collective steps, each one call on every rank at the same point of the run:

- ``agree(values)``: the element-wise maximum of a few small integers over all ranks
  (a stop signal, a save that is due, a non-finite loss), through a CPU (gloo) group so
  it never forces a GPU sync. The trainer calls it every ``AGREE_EVERY`` optimizer steps.
- ``sum_float64(values)``: exact sums of per-rank numbers (metrics).
- ``gather_object`` / ``broadcast_object``: the per-rank RNG states for a checkpoint,
  the experiment name rank 0 created, the outcome of a write only rank 0 made.

A rank that dies makes the others' next collective fail (gloo notices the closed
connection at once; a hung rank is noticed after ``EXPTRAIN_DIST_TIMEOUT`` seconds,
default 300): they stop with ``PeerFailedError``.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any, List, Optional, Sequence

import torch

from ..errors import ConfigError, PeerFailedError  # noqa: F401 (PeerFailedError: re-exported)
from ..layout import ExperimentPaths, read_experiment_config
from .interrupts import native_wait

TIMEOUT_ENV = "EXPTRAIN_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0
AGREE_EVERY = 8  # optimizer steps between two agreements on stop / save / divergence


class Distributed:
    """The ranks of this job (see the module docstring).

    Attributes:
        rank, world_size, local_rank: this process's place in the job.
        enabled: ``world_size > 1`` (a process group is in use).
        is_main: ``rank == 0``: the one process that writes files and prints.
    """

    def __init__(
        self, rank: int = 0, world_size: int = 1, local_rank: int = 0, cpu_group: Any = None, owns_group: bool = False
    ):
        self.rank, self.world_size, self.local_rank = int(rank), int(world_size), int(local_rank)
        self.cpu_group = cpu_group
        self.owns_group = owns_group

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def single(cls) -> "Distributed":
        return cls()

    @classmethod
    def from_environment(cls, device: Optional[str] = None) -> "Distributed":
        """Join the group torchrun describes in the environment (or reuse one a Python
        caller initialised); a single process without it gets ``single()``.

        Args:
            device: the ``--device`` choice: nccl is used only when it resolves to CUDA.

        Raises:
            ConfigError: a malformed ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``, or a timeout
                that is not a positive number.
        """
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(
                dist.get_rank(),
                dist.get_world_size(),
                _env_int("LOCAL_RANK", 0),
                cpu_group=_cpu_group(),
                owns_group=False,
            )
        world_size = _env_int("WORLD_SIZE", 1)
        if world_size <= 1:
            return cls.single()
        rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
        if not 0 <= rank < world_size:
            raise ConfigError(
                f"RANK={rank} is outside 0..{world_size - 1} (WORLD_SIZE={world_size}); start the job with torchrun."
            )
        timeout = timeout_seconds()
        use_cuda = torch.cuda.is_available() and (device in (None, "auto") or str(device).startswith("cuda"))
        if use_cuda:
            torch.cuda.set_device(local_rank % torch.cuda.device_count())

        with native_wait():  # waits for every rank to join
            dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(seconds=timeout))
        import atexit

        atexit.register(_destroy_at_exit)
        if not dist.is_initialized():  # pragma: no cover - init raises instead
            raise ConfigError("torch.distributed could not start a process group.")
        return cls(rank, world_size, local_rank, cpu_group=_cpu_group(), owns_group=True)

    # -- collectives ------------------------------------------------------------------
    def agree(self, values: Sequence[int]) -> List[int]:
        """The element-wise maximum of ``values`` over all ranks (a CPU all-reduce)."""
        if not self.enabled:
            return [int(v) for v in values]
        import torch.distributed as dist

        tensor = torch.tensor([int(v) for v in values], dtype=torch.int64)
        self._collective(dist.all_reduce, tensor, op=dist.ReduceOp.MAX, group=self.cpu_group)
        return [int(v) for v in tensor.tolist()]

    def sum_float64(self, values: Sequence[float]) -> List[float]:
        """Element-wise sums over all ranks, in float64 on the CPU."""
        if not self.enabled:
            return [float(v) for v in values]
        import torch.distributed as dist

        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64)
        self._collective(dist.all_reduce, tensor, op=dist.ReduceOp.SUM, group=self.cpu_group)
        return [float(v) for v in tensor.tolist()]

    def sum_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` (CPU, float64) summed element-wise over all ranks, in place."""
        if self.enabled:
            import torch.distributed as dist

            self._collective(dist.all_reduce, tensor, op=dist.ReduceOp.SUM, group=self.cpu_group)
        return tensor

    def gather_object(self, obj: Any) -> List[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out: List[Any] = [None] * self.world_size
        self._collective(dist.all_gather_object, out, obj, group=self.cpu_group)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        self._collective(dist.broadcast_object_list, box, src=0, group=self.cpu_group)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            self._collective(dist.barrier, group=self.cpu_group)

    def _collective(self, function, *args, **kwargs) -> None:
        try:
            function(*args, **kwargs)
        except RuntimeError as exc:  # DistBackendError and gloo's own errors derive from it
            raise self.peer_failed(exc) from None

    def peer_failed(self, exc: BaseException) -> PeerFailedError:
        if os.environ.get("EXPTRAIN_DEBUG"):
            import traceback

            traceback.print_stack()
        import re

        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        first = re.sub(r"^\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", first)  # gloo's source location
        first = first.split(". ")[0].rstrip(".")[:200] or type(exc).__name__
        return PeerFailedError(
            f"Rank {self.rank} of {self.world_size}: another process of this torchrun job stopped or cannot be "
            f"reached ({first}); this process stops too. Resume the experiment with the same torchrun command "
            "and --resume."
        )

    def close(self) -> None:
        """Leave the process group (only one this object created)."""
        if self.owns_group:
            import gc

            import torch.distributed as dist

            gc.collect()  # a DistributedDataParallel reducer must go before its process group
            if dist.is_initialized():
                try:
                    dist.destroy_process_group()
                except RuntimeError:
                    pass
            self.owns_group = False


def timeout_seconds() -> float:
    """The process-group timeout: ``$EXPTRAIN_DIST_TIMEOUT`` seconds (default 300)."""

    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r} must be a positive number of seconds.")
    return value


def _env_int(name: str, default: int) -> int:

    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} in the environment is not an integer; start the job with torchrun."
        ) from None


_CPU_GROUP: Any = None


def _cpu_group():
    """A gloo group for the small CPU collectives (the default group when it is gloo);
    created once per process (``new_group`` is itself a collective)."""
    global _CPU_GROUP
    import torch.distributed as dist

    if dist.get_backend() == "gloo":
        return None
    if _CPU_GROUP is None:
        _CPU_GROUP = dist.new_group(backend="gloo")
    return _CPU_GROUP


_SOLO = 0  # > 0 inside ``solo()``


class solo:
    """``with solo(): ...``: work that one rank does alone (rank 0 bringing a finished run's
    records up to date) sees no job, so an ``ExperimentManager`` made there does not wait
    for the other ranks."""

    def __enter__(self) -> "solo":
        global _SOLO
        _SOLO += 1
        return self

    def __exit__(self, *exc) -> None:
        global _SOLO
        _SOLO -= 1


def current_job() -> Optional[Distributed]:
    """The job this process belongs to when it is one of several (joining torchrun's group
    if nobody has yet), else ``None`` (also inside ``solo()``)."""
    import torch.distributed as dist

    if _SOLO:
        return None
    if not (dist.is_available() and (dist.is_initialized() or _env_int("WORLD_SIZE", 1) > 1)):
        return None
    job = Distributed.from_environment()
    return job if job.enabled else None


def _destroy_at_exit() -> None:
    """A group this process started and nobody closed goes before the interpreter does
    (a DDP reducer outliving its group aborts the process at exit)."""
    import gc

    import torch.distributed as dist

    gc.collect()
    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except RuntimeError:
            pass


class agreement:
    """``with agreement(dist): checks...``: every rank runs the same checks; on leaving the
    block all ranks learn whether any failed, and a rank whose own checks passed raises
    the first failure's error too (same class, its message), so no rank goes on alone and
    waits for the others at its next collective."""

    def __init__(self, dist: Distributed):
        self.dist = dist

    def __enter__(self) -> "agreement":
        return self

    def __exit__(self, kind, exc, traceback) -> bool:
        if not self.dist.enabled:
            return False
        if exc is not None and not isinstance(exc, Exception):
            return False  # an interrupt during start-up: this process ends; the others see it go
        mine = None if exc is None else (type(exc), str(exc))
        try:
            outcomes = self.dist.gather_object(mine)
        except PeerFailedError:
            if exc is not None:
                return False
            raise
        if exc is not None:
            return False
        for rank, outcome in enumerate(outcomes):
            if outcome is not None:
                kind, message = outcome
                try:
                    error = kind(message)
                except Exception:  # an exception class with another signature
                    error = PeerFailedError(f"Rank {rank}: {message}")
                raise error
        return False


class FollowerExperiment(ExperimentPaths):
    """What a rank other than 0 sees of the experiment: its paths and files, read-only.
    Every write (status, config, lineage) is rank 0's and is a no-op here."""

    def __init__(self, base_dir, name: str, resume_exp=None, fork_exp=None, parent_checkpoint=None):
        self.base_dir = Path(base_dir)
        self.name = name
        self.resume_exp, self.fork_exp = resume_exp, fork_exp
        self.parent_dir = self.base_dir / fork_exp if fork_exp else None
        self.parent_checkpoint = Path(parent_checkpoint) if parent_checkpoint else None
        self._parent_state = None
        self._dir = self.base_dir / name

    @property
    def parent_state(self):
        """The fork's starting state: the very file rank 0 chose and verified, read on first use."""
        if self._parent_state is None and self.parent_checkpoint is not None:
            self._parent_state = torch.load(self.parent_checkpoint, map_location="cpu", weights_only=True)
        return self._parent_state

    def load_config(self):

        return read_experiment_config(self._dir)

    def read_status(self):
        return None

    def write_status(self, state: str, **details: Any) -> None:
        pass

    def save_config(self, config) -> None:
        pass

    def reacquire(self) -> None:
        pass

    def release(self) -> None:
        pass
