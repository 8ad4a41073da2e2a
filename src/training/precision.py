"""Mixed precision: the autocast context and, for fp16, the gradient scaler.

``bf16`` needs no scaler (same exponent range as fp32); ``fp16`` uses a
``torch.amp.GradScaler`` whose state is part of the checkpoint.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Dict, Optional

import torch

from ..errors import ConfigError
from ..config import AMP_MODES


class Precision:
    """Args: amp: None (full fp32), ``"bf16"`` or ``"fp16"``; device: the training device."""

    def __init__(self, amp: Optional[str], device: torch.device):
        if amp not in (None, *AMP_MODES):
            raise ConfigError(f"Unknown AMP mode {amp!r}; choose one of: {', '.join(AMP_MODES)} (or leave it off).")
        self.amp = amp
        self.device_type = torch.device(device).type
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler(self.device_type) if amp == "fp16" else None

    def autocast(self):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring gradients back to their true scale (before clipping)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def state_dict(self) -> Optional[Dict[str, Any]]:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: Optional[Dict[str, Any]]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
