"""Run ``train.py ARGS`` and print ``FIRST_STEP <unix time>`` when its first optimizer
step has finished (``time_to_accuracy.py`` measures process start to first step with it).
The only addition to the CLI's own work is this one print."""

from __future__ import annotations

import sys
import time

import _common  # noqa: F401  (puts the repository on sys.path)
import train
from src.training import Trainer

_original = Trainer._optimizer_step


def _reporting_step(self) -> None:
    _original(self)
    if Trainer._optimizer_step is _reporting_step:
        Trainer._optimizer_step = _original  # report once, then get out of the way
        print(f"FIRST_STEP {time.time():.6f}", flush=True)


Trainer._optimizer_step = _reporting_step
sys.exit(train.main(sys.argv[1:], exiting=True))
