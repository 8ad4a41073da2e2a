"""The tensor-resident batch loader: the data set as one uint8 tensor, batches by index.

Holds uint8 images and int64 labels (on the training device when they fit, or a memory
map when the data set is larger than memory) and yields normalised float batches, each
optionally transformed by an augmentation draw on the device. No per-sample Python work. The shuffle order of epoch ``e`` is
a function of ``(seed, e)`` only, so the loader's whole state is (epoch, position in the
epoch): that is what makes a mid-epoch resume exact.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch

from ..errors import ConfigError
from ..utils.seed import derive_seed


class TensorLoader:
    """Iterates ``(images, labels)`` batches like a ``DataLoader``; supports ``len()``.

    Each complete pass advances ``epoch`` (so the next pass has a new order); a pass
    abandoned part-way is restarted from its beginning by the next ``iter()``.

    Args:
        images: uint8 tensor ``(N, C, H, W)``.
        labels: int64 tensor ``(N,)``.
        batch_size: samples per batch (the last batch may be smaller).
        mean, std: normalisation applied as ``(x / 255 - mean) / std``: numbers, or one
            per channel.
        shuffle: draw a fresh permutation each epoch from ``(seed, epoch)``.
        device: where batches are produced. The uint8 data is moved there once when it
            fits (on a GPU: under half its free memory); otherwise it stays in (pinned)
            host memory and each uint8 batch is copied over (non-blocking), then
            normalised on the device.
        transform: an augmentation draw, ``transform(images, index)`` for the uint8 batch
            of samples ``index``, applied on the device (``None``: serve ``images`` as
            they are).
        mapped: ``images`` is a memory map: it is never pinned or copied whole to the
            host; batches are gathered from the map.
        release_pages, release_bytes: for a memory map, called once the batches read
            may have made ``release_bytes`` of the map resident (each sample counts its size
            plus the kernel's 64 KiB fault-around window), to drop the mapped pages from the
            resident set (``BaseDataset.release_mapped_pages``).
    """

    DEVICE_MEMORY_SHARE = 0.5

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean: float,
        std: float,
        shuffle: bool = False,
        seed: int = 0,
        device: Optional[torch.device] = None,
        transform: Optional[Callable[..., torch.Tensor]] = None,
        mapped: bool = False,
        release_pages: Optional[Callable[[], None]] = None,
        release_bytes: int = 256 << 20,
    ):
        import numbers

        if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
        batch_size = int(batch_size)
        if images.shape[0] != labels.shape[0]:
            raise ConfigError(f"{images.shape[0]} images but {labels.shape[0]} labels.")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = int(seed)
        self.mapped = bool(mapped)
        self.release_pages, self.release_bytes = release_pages, max(int(release_bytes), 1)
        self._read_since_release = 0
        self.transform = transform
        self._set_normalisation(mean, std, images.shape[1])
        self.images, self.labels = images, labels
        self.to_device(torch.device(device) if device is not None else images.device)
        self.rank, self.world_size, self.whole_batches = 0, 1, False  # see shard()
        self.batch_weight = 1.0  # this rank's share of the current global batch, x world size
        self.batch_index = 0
        self.epoch = 0
        self.position = 0  # batches already served in ``self.epoch`` (global batches when sharded)
        self._resume_position = 0  # set by load_state_dict: where the next pass starts

    @property
    def dataset_size(self) -> int:
        return self.labels.shape[0]

    def set_images(self, images: torch.Tensor) -> None:
        """Swap in a new draw of (augmented) images of the same shape."""
        if images.shape != self.images.shape:
            raise ConfigError(f"New images have shape {tuple(images.shape)}, expected {tuple(self.images.shape)}.")
        self.images = self._store(images)

    def set_transform(self, transform: Optional[Callable[..., torch.Tensor]]) -> None:
        """Swap in a new augmentation draw (the memory-mapped path)."""
        self.transform = transform

    def _set_normalisation(self, mean, std, channels: int) -> None:
        means = list(mean) if isinstance(mean, (list, tuple)) else [mean]
        stds = list(std) if isinstance(std, (list, tuple)) else [std]
        if len(means) not in (1, channels) or len(stds) not in (1, channels):
            raise ConfigError(f"mean/std need 1 or {channels} values, got {mean!r} and {std!r}.")
        if len(set(means)) == 1 and len(set(stds)) == 1:
            # One number for all channels: a scalar scale (the fused path below).
            self.scale = 1.0 / (255.0 * stds[0])
            self.offset = -means[0] / stds[0]
            self._channel_scale = None
        else:
            means = means * channels if len(means) == 1 else means
            stds = stds * channels if len(stds) == 1 else stds
            self.scale = [1.0 / (255.0 * s) for s in stds]
            self.offset = [-m / s for m, s in zip(means, stds)]
            self._channel_scale = True

    def to_device(self, device: torch.device) -> "TensorLoader":
        """Produce batches on ``device``, moving the data there once if it fits."""
        self.device = torch.device(device)
        self.storage_device = self.device if self._fits(self.device) else torch.device("cpu")
        self.images, self.labels = self._store(self.images), self._store(self.labels)
        if self._channel_scale is None:
            self._offset = torch.tensor(self.offset, dtype=torch.float32, device=self.device)
        else:
            self._offset = torch.tensor(self.offset, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
            self._scale = torch.tensor(self.scale, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        return self

    def _fits(self, device: torch.device) -> bool:
        if device.type != "cuda":
            return True
        free, _ = torch.cuda.mem_get_info(device)
        return self.images.nbytes + self.labels.nbytes < self.DEVICE_MEMORY_SHARE * free

    def _store(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.to(self.storage_device)
        if (
            self.storage_device != self.device
            and self.device.type == "cuda"
            and not tensor.is_pinned()
            and not self.mapped
        ):
            tensor = tensor.pin_memory()
        return tensor

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle order of ``epoch`` (any integer; the Trainer passes 1, 2, ...) and
        start at its first batch."""
        if epoch != self.epoch:
            self.epoch = int(epoch)
            self.position = 0
            self._resume_position = 0

    def shard(self, rank: int, world_size: int, whole_batches: bool = False) -> "TensorLoader":
        """Serve only rank ``rank``'s part of every batch (multi-process training).

        Training (``whole_batches=False``): global batch ``g`` is the block
        ``[g * B * world_size, (g + 1) * B * world_size)`` of the epoch's order (the same on
        every rank) and each rank takes its slice of ``B`` samples, so every rank runs the
        same number of steps and ``position`` counts global batches. A short last global
        batch is split as evenly as possible (a rank may get none), and ``batch_weight``
        is set so that the mean of the ranks' weighted mean losses is the mean over the
        real samples: no sample is repeated or dropped.

        Validation (``whole_batches=True``): the single-process batches, batch ``b`` to
        rank ``b % world_size``; ``batch_index`` names the batch being served.
        """
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside 0..{world_size - 1}.")
        self.rank, self.world_size, self.whole_batches = int(rank), int(world_size), bool(whole_batches)
        return self

    def __len__(self) -> int:
        if self.world_size == 1:
            return (self.dataset_size + self.batch_size - 1) // self.batch_size
        if self.whole_batches:
            return len(range(self.rank, self._batches(self.batch_size), self.world_size))
        return self._batches(self.batch_size * self.world_size)

    def _batches(self, size: int) -> int:
        return (self.dataset_size + size - 1) // size

    def _bounds(self, batch: int) -> Tuple[int, int]:
        """The sample range ``[lo, hi)`` of the epoch's order this rank serves as ``batch``."""
        size, world = self.batch_size, self.world_size
        if world == 1:
            return batch * size, min((batch + 1) * size, self.dataset_size)
        if self.whole_batches:
            index = self.rank + batch * world
            self.batch_index = index
            return index * size, min((index + 1) * size, self.dataset_size)
        start = batch * size * world
        count = min(size * world, self.dataset_size - start)  # samples in this global batch
        if count == size * world:
            self.batch_weight = 1.0
            return start + self.rank * size, start + (self.rank + 1) * size
        share, extra = divmod(count, world)
        lo = start + self.rank * share + min(self.rank, extra)
        hi = lo + share + (1 if self.rank < extra else 0)
        self.batch_weight = (hi - lo) * world / count
        return lo, hi

    def _order(self) -> Optional[torch.Tensor]:
        if not self.shuffle:
            return None
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        return torch.randperm(self.dataset_size, generator=generator).to(self.storage_device)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        # A pass starts at the beginning of the epoch's order, except the first pass
        # after load_state_dict, which continues where the saved one stopped.
        start_batch, self._resume_position = self._resume_position, 0
        self.position = start_batch
        for batch in range(start_batch, len(self)):
            lo, hi = self._bounds(batch)
            if order is None:
                index = None
                images, labels = self.images[lo:hi], self.labels[lo:hi]
            else:
                index = order[lo:hi]
                images, labels = self.images.index_select(0, index), self.labels.index_select(0, index)
            if self.storage_device != self.device:  # data too large for the device
                images = images.to(self.device, non_blocking=True)
                labels = labels.to(self.device, non_blocking=True)
            if self.release_pages is not None:
                # A page fault maps the whole fault-around window (64 KiB on Linux) of a
                # file, so a scattered sample can make that much resident.
                self._read_since_release += images.shape[0] * (images[0].nbytes + 65536) if images.shape[0] else 0
                if self._read_since_release >= self.release_bytes:
                    self.release_pages()
                    self._read_since_release = 0
            if self.transform is not None:
                images = self.transform(images, index, start=lo)
            self.position = batch + 1
            yield self._normalise(images), labels
        # A finished pass starts the next one at the beginning of the next epoch's order.
        self.epoch += 1
        self.position = 0

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        if self._channel_scale is None:
            # One fused op: uint8 -> float32, scaled and shifted (offset + scale * x).
            return torch.add(self._offset, images, alpha=self.scale)
        return torch.addcmul(self._offset, images.to(torch.float32), self._scale)

    def state_dict(self) -> Dict[str, Any]:
        state = {"epoch": self.epoch, "position": self.position, "seed": self.seed, "shuffle": self.shuffle}
        if self.world_size > 1:
            state["world_size"] = self.world_size
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue at a saved position.

        Raises:
            ValueError: the state was saved mid-epoch by a different number of processes
                (its position counts global batches of another size).
        """
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.world_size and int(state["position"]) > 0:
            raise ConfigError(
                f"The data position was saved mid-epoch by {saved_world} process(es); this run has "
                f"{self.world_size}. Resume with {saved_world}."
            )
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._resume_position = self.position
        self.seed = int(state["seed"])
        self.shuffle = bool(state["shuffle"])
