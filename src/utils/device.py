"""Device selection: CUDA, then Apple MPS, then CPU, with an explicit override."""

from __future__ import annotations

from typing import Optional, Union

import torch

from ..errors import ConfigError


def get_device(preferred: Optional[Union[str, torch.device]] = None) -> torch.device:
    """Return the device to train on.

    Under torchrun (``LOCAL_RANK`` set), ``auto`` and ``cuda`` mean this rank's GPU,
    ``cuda:LOCAL_RANK``.

    Args:
        preferred: ``None`` or ``"auto"`` picks CUDA, then MPS, then CPU. Anything else
            (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) is used as given after
            checking that it exists here.

    Raises:
        ValueError: the requested device is malformed or not available on this machine.
    """
    if preferred is None or str(preferred) == "auto":
        if torch.cuda.is_available():
            return (
                torch.device("cuda", _local_rank() % torch.cuda.device_count())
                if _local_rank() is not None
                else torch.device("cuda")
            )
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(preferred)
    except (RuntimeError, TypeError):
        raise ConfigError(f"Unknown device {preferred!r}; use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda" and device.index is None and _local_rank() is not None and torch.cuda.is_available():
        device = torch.device("cuda", _local_rank() % torch.cuda.device_count())  # torchrun: this rank's GPU
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"Device {preferred!r} was requested but CUDA is not available here; use --device cpu or auto."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"Device {preferred!r} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)."
            )
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(
                f"Device {preferred!r} was requested but MPS is not available here; use --device cpu or auto."
            )
    elif device.type != "cpu":
        raise ConfigError(f"Unsupported device {preferred!r}; use auto, cpu, cuda, cuda:N or mps.")
    return device


def _local_rank() -> Optional[int]:
    """torchrun's ``LOCAL_RANK`` (None outside torchrun or when malformed)."""
    import os

    try:
        return int(os.environ["LOCAL_RANK"])
    except (KeyError, ValueError):
        return None
