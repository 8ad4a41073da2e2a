"""The Trainer's parts built once, when it is built: its loaders as ``ResumableLoader``s
(adapted, moved, sharded), the DDP and compiled wrappers of its model and the warmup; and
the epoch-end scheduler step.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn

from ..errors import ConfigError
from .distributed import Distributed
from .protocols import ResumableLoader, as_resumable, loader_length
from .schedules import LinearWarmup, optimizer_steps_per_epoch
from .trainer_options import TrainerOptions


def prepare_loader(loader, device: torch.device, dist: Distributed, whole_batches: bool) -> ResumableLoader:
    """``loader`` as a ``ResumableLoader``, on ``device`` and sharded for this rank. The
    built-in loader moves its uint8 data once; other loaders are copied per batch."""
    loader = as_resumable(loader)
    loader.to_device(device)
    if not dist.enabled:
        return loader
    return as_resumable(loader.shard(dist.rank, dist.world_size, whole_batches=whole_batches))


def build_models(
    model: nn.Module, device: torch.device, dist: Distributed, options: TrainerOptions
) -> Tuple[nn.Module, nn.Module]:
    """``(parallel model, forward model)``: DDP's wrapper under torchrun, and the compiled
    one with ``compile_model``. The compiled wrapper shares the model's parameters;
    checkpoints use the model itself, so their keys never carry torch.compile's
    "_orig_mod." prefix."""
    if options.channels_last:
        model.to(memory_format=torch.channels_last)
    parallel = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ids = (
            [device.index if device.index is not None else torch.cuda.current_device()]
            if device.type == "cuda"
            else None
        )
        parallel = DistributedDataParallel(model, device_ids=ids)
    return parallel, torch.compile(parallel) if options.compile_model else parallel


def build_warmup(train_loader: ResumableLoader, warmup_epochs: int, grad_accum_steps: int) -> Optional[LinearWarmup]:
    if not warmup_epochs:
        return None
    steps = optimizer_steps_per_epoch(loader_length(train_loader), grad_accum_steps)
    if steps is None:
        raise ConfigError("warmup_epochs needs a training loader with a length (to count the steps of an epoch).")
    return LinearWarmup(warmup_epochs * steps)
