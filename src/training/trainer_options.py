"""``TrainerOptions``: every Trainer setting beyond the 11 arguments SPEC.md specifies.

A new option the Trainer uses is one field here (and its use); ``Trainer(...)`` also
takes each field as a keyword argument, as it always did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Dict, Optional

import torch.nn as nn

from ..errors import ConfigError
from .distributed import Distributed
from .tb_logger import TensorBoardLogger


@dataclass
class TrainerOptions:
    """Args:
    config: the run configuration (a plain dict) stored in checkpoints.
    show_progress: draw a progress bar (default: only when stderr is a terminal).
    handle_signals: catch SIGINT/SIGTERM during ``train`` (main thread only).
    amp: mixed precision, ``"bf16"`` or ``"fp16"`` (fp16 uses a grad scaler).
    compile_model: run the forward pass through ``torch.compile``.
    channels_last: use the channels-last memory format for model and inputs.
    grad_accum_steps: batches per optimizer step (gradients are averaged).
    grad_clip: clip the gradient norm to this value (0 disables).
    plot_interval: redraw the curves at most every this many seconds, and always
        after the last epoch (0 redraws every epoch). Drawing costs ~0.1 s.
    checkpoint_interval: also refresh ``latest_checkpoint.pt`` mid-epoch at most
        every this many seconds (0 disables; needs a loader with ``state_dict``).
    eval_criterion: the validation loss (default: ``criterion``, without its label
        smoothing when it is a smoothed ``CrossEntropyLoss``).
    ema_decay: keep an exponential moving average of the weights with this decay
        (0 < decay < 1; 0 disables); it is what ``validate`` evaluates and what
        checkpoints hold as the model (see ``ema.py``).
    warmup_epochs: scale the learning rate linearly up over the optimizer steps of
        the first N epochs (see ``schedules.py``; needs a sized training loader).
    tta_flip: evaluate on each image and its mirror image (averaged logits); only
        for data whose images may be flipped horizontally.
    distributed: the ranks of a torchrun job (default: joined from the environment;
        a single process otherwise). With several ranks the model is wrapped in
        ``DistributedDataParallel``, the built-in loaders are sharded, metrics are
        reduced, and only rank 0 writes files and prints (``distributed.py``).
    background_writes: write epoch-end checkpoints on a writer thread (not under torchrun).
    tensorboard: a ``TensorBoardLogger`` (``tb_logger.py``) for the training loss
        every ``tensorboard.every`` steps and each epoch's record; used on rank 0 only.
    """

    config: Optional[Dict[str, Any]] = None
    show_progress: Optional[bool] = None
    handle_signals: bool = True
    amp: Optional[str] = None
    compile_model: bool = False
    channels_last: bool = False
    grad_accum_steps: int = 1
    grad_clip: float = 0.0
    plot_interval: float = 10.0
    checkpoint_interval: float = 300.0
    eval_criterion: Optional[nn.Module] = None
    ema_decay: float = 0.0
    warmup_epochs: int = 0
    tta_flip: bool = False
    distributed: Optional[Distributed] = None
    background_writes: bool = True
    tensorboard: Optional[TensorBoardLogger] = None

    @classmethod
    def from_keywords(cls, options: Optional["TrainerOptions"], keywords: Dict[str, Any]) -> "TrainerOptions":
        """``options`` with ``keywords`` (the Trainer's keyword arguments) applied over it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(keywords) - known)
        if unknown:
            raise TypeError(
                f"Trainer() got an unexpected keyword argument {unknown[0]!r}; "
                f"the options are {', '.join(sorted(known))}."
            )
        return replace(options if options is not None else cls(), **keywords)

    def validate(self) -> None:
        """Raise ValueError naming the first bad number."""
        interval = self.checkpoint_interval
        if not isinstance(interval, (int, float)) or not interval >= 0 or not math.isfinite(interval):
            raise ConfigError(f"checkpoint_interval must be a non-negative number of seconds, got {interval!r}.")
        if not isinstance(self.grad_accum_steps, int) or self.grad_accum_steps < 1:
            raise ConfigError(f"grad_accum_steps must be a positive integer, got {self.grad_accum_steps!r}.")
        clip = self.grad_clip
        if not isinstance(clip, (int, float)) or not clip >= 0 or not math.isfinite(clip):
            raise ConfigError(f"grad_clip must be a finite number >= 0 (0 disables clipping), got {clip!r}.")
        warmup = self.warmup_epochs
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ConfigError(f"warmup_epochs must be an integer >= 0, got {warmup!r}.")
