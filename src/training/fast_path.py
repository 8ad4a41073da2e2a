"""``--amp auto`` (the default): the CPU fast path, bf16 autocast with channels-last.

On a CPU with native bf16 arithmetic (the ``avx512_bf16`` or ``amx_bf16`` flag), bf16
autocast with channels-last tensors makes small CNNs' steps 2-2.5x faster than float32
(measured for mynet: ``benchmarks/time_to_accuracy.py``) at the same accuracy. ``auto``
turns both on there, for models that declare they were measured with it
(``fast_cpu_path = True``: mynet); everywhere else (GPUs, other CPUs, other models) it
means float32, as before. The start-up line says which was chosen; ``--amp off`` forces
float32 and ``--amp bf16`` / ``fp16`` choose explicitly.

``auto`` is recorded as ``auto`` and resolved again when a run is resumed, like
``--device auto``: on the same machine it resolves the same, so the resume is exact.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import torch
import torch.nn as nn

from .protocols import has_fast_cpu_path

AUTO = "auto"


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU advertises bf16 instructions (Linux ``/proc/cpuinfo``); False
    where that cannot be read (other systems: the fast path stays off)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


class FastPath(NamedTuple):
    """What the run uses: ``amp`` (None, ``"bf16"`` or ``"fp16"``), ``channels_last``,
    and a few words for the start-up line."""

    amp: Optional[str]
    channels_last: bool
    description: str


def resolve_fast_path(amp: Optional[str], channels_last: bool, model: nn.Module, device: torch.device) -> FastPath:
    """Resolve ``amp`` (``"auto"`` included) for ``model`` on ``device``."""
    if amp != AUTO:
        words = f"{amp} autocast" if amp else "float32"
        return FastPath(amp, channels_last, words + (", channels-last" if channels_last else ""))
    if torch.device(device).type == "cpu" and has_fast_cpu_path(model) and cpu_has_native_bf16():
        return FastPath("bf16", True, "bf16 autocast, channels-last (--amp auto on a bf16 CPU; --amp off for float32)")
    return FastPath(
        None,
        channels_last,
        "float32" + (", channels-last" if channels_last else "") + " (--amp auto: no bf16 fast path here)",
    )
