"""The per-epoch progress bar (tqdm): batches, it/s and the running loss.

The loss readout reads the device only when the bar redraws (at most once a second),
so the bar adds no per-step synchronisation.
"""

from __future__ import annotations

import time

from .metrics import MetricsTracker


class ProgressBar:
    def __init__(self, loader, description: str):
        from tqdm.auto import tqdm

        try:
            total = len(loader) - loader.position  # a ResumableLoader (protocols.py)
        except TypeError:  # an unsized loader (a DataLoader over an IterableDataset)
            total = None
        self.bar = tqdm(total=total, desc=description, leave=False, mininterval=0.5, dynamic_ncols=True)
        self.last_postfix = 0.0

    def step(self, tracker: MetricsTracker) -> None:
        self.bar.update(1)
        now = time.monotonic()
        if now - self.last_postfix >= 1.0:
            self.last_postfix = now
            self.bar.set_postfix(loss=f"{tracker.get_metrics()['loss']:.4f}", refresh=False)

    def close(self) -> None:
        self.bar.close()
