"""What the Trainer needs of its collaborators, written down as protocols.

``ResumableLoader`` is the training loader as the loop uses it: the built-in loader
(``src.datasets.loader.TensorLoader``) is one as it is; any other iterable (a plain
``torch.utils.data.DataLoader``, torchdata's ``StatefulDataLoader``, a list of batches) is
wrapped once, when the Trainer is built, in ``LoaderAdapter``. The loop then calls the
protocol and never asks a loader what it can do.

``ExperimentLike`` is what the Trainer writes to: ``ExperimentManager`` and the torchrun
followers' ``FollowerExperiment`` both are one.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, Optional, Protocol, runtime_checkable

import torch

from ..errors import ConfigError


def loader_length(loader) -> Optional[int]:
    """``len(loader)``, or None for an unsized one (a DataLoader over an IterableDataset
    has ``__len__`` but raises TypeError)."""
    try:
        return len(loader)
    except TypeError:
        return None


@runtime_checkable
class ResumableLoader(Protocol):
    """A training loader whose place in an epoch can be saved and restored.

    ``position``: batches already served in the current epoch (> 0 before a pass when the
    pass continues a saved epoch). ``batch_weight``: this rank's share of the current
    global batch times the world size (1.0 in one process). ``state_dict()`` is None when
    the loader cannot record its position (then no mid-epoch checkpoint is written)."""

    position: int
    batch_weight: float

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...

    def state_dict(self) -> Optional[Dict[str, Any]]: ...

    def load_state_dict(self, state: Dict[str, Any]) -> None: ...

    def to_device(self, device: torch.device) -> Any: ...

    def shard(self, rank: int, world_size: int, whole_batches: bool = False) -> Any: ...


@runtime_checkable
class BatchIndexedLoader(Protocol):
    """A validation loader sharded by whole batches: ``batch_index`` names the batch being
    served, so the ranks' results add up exactly as in one process."""

    batch_index: int
    batch_size: int
    dataset_size: int


@runtime_checkable
class _Stateful(Protocol):
    def state_dict(self) -> Dict[str, Any]: ...

    def load_state_dict(self, state: Dict[str, Any]) -> None: ...


@runtime_checkable
class _EpochAware(Protocol):
    def set_epoch(self, epoch: int) -> None: ...


@runtime_checkable
class ExperimentLike(Protocol):
    """The experiment a Trainer writes its config, log, curves and status to."""

    name: str
    experiment_dir: Any
    config_file: Any
    log_file: Any
    plot_file: Any

    def load_config(self) -> Dict[str, Any]: ...

    def save_config(self, config: Dict[str, Any]) -> None: ...

    def write_status(self, state: str, **details: Any) -> None: ...

    def reacquire(self) -> None: ...

    def release(self) -> None: ...


class LoaderAdapter:
    """Any iterable of ``(images, labels)`` batches as a ``ResumableLoader``.

    It counts ``position`` itself (a pass starts at 0: it cannot skip into an epoch), and
    saves and restores the wrapped loader's own ``state_dict`` when it has one (torchdata's
    ``StatefulDataLoader`` continues mid-epoch that way); otherwise ``state_dict()`` is None."""

    batch_weight = 1.0

    def __init__(self, loader, set_epoch=None):
        self.loader = loader
        self.position = 0
        self.stateful = isinstance(loader, _Stateful)
        self._set_epoch = (
            set_epoch if set_epoch is not None else loader.set_epoch if isinstance(loader, _EpochAware) else None
        )

    def __iter__(self) -> Iterator[Any]:
        self.position = 0
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        for batch in self.loader:
            self.position += 1
            yield batch
        self.position = 0

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.position = 0
        if self._set_epoch is not None:
            self._set_epoch(epoch)

    def state_dict(self) -> Optional[Dict[str, Any]]:
        return self.loader.state_dict() if self.stateful else None

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.position = 0  # the wrapped loader may continue mid-epoch; the count starts here
        if self.stateful:
            self.loader.load_state_dict(state)

    def to_device(self, device: torch.device) -> "LoaderAdapter":
        return self  # batches are copied to the device one by one

    def shard(self, rank: int, world_size: int, whole_batches: bool = False) -> "LoaderAdapter":
        """This rank's part: the whole set for evaluation (exact, only slower); for
        training, a DataLoader over a sized dataset resampled by torch's DistributedSampler
        (it repeats a few samples so every rank gets as many; its shuffle is seeded by the
        run's torch seed and the epoch)."""
        if whole_batches:
            return self
        from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler

        loader = self.loader
        if (
            not isinstance(loader, DataLoader)
            or isinstance(loader.dataset, IterableDataset)
            or loader.batch_size is None
        ):
            raise ConfigError(
                f"Under torchrun the training loader must be the built-in one (dataset.get_dataloaders()) or a "
                f"DataLoader over a sized dataset with a batch_size; a {type(loader).__name__} cannot be split "
                f"across {world_size} processes."
            )
        sampler = DistributedSampler(
            loader.dataset,
            num_replicas=world_size,
            rank=rank,
            shuffle=isinstance(loader.sampler, RandomSampler),
            seed=int(torch.initial_seed()) % (2**63),
            drop_last=False,
        )
        sharded = DataLoader(
            loader.dataset,
            batch_size=loader.batch_size,
            sampler=sampler,
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            drop_last=loader.drop_last,
            worker_init_fn=loader.worker_init_fn,
            generator=loader.generator,
        )
        return LoaderAdapter(sharded, set_epoch=sampler.set_epoch)


def as_resumable(loader) -> ResumableLoader:
    """``loader`` itself when it is a ``ResumableLoader``, else wrapped in ``LoaderAdapter``
    (the one place that looks at what a loader can do)."""
    return loader if isinstance(loader, ResumableLoader) else LoaderAdapter(loader)


def records_position(loader: ResumableLoader) -> bool:
    """Whether ``loader.state_dict()`` can hold a place inside an epoch."""
    return not isinstance(loader, LoaderAdapter) or loader.stateful


def unwrap(loader) -> Any:
    """The loader the user gave (or its torchrun shard), for reading its own attributes."""
    return loader.loader if isinstance(loader, LoaderAdapter) else loader


@runtime_checkable
class DescribedModel(Protocol):
    """A model built from the registry: ``model_config`` rebuilds it (name and options)."""

    model_config: Dict[str, Any]


def model_config(model) -> Optional[Dict[str, Any]]:
    """The model's ``model_config``, or None for a model built by other code."""
    return model.model_config if isinstance(model, DescribedModel) else None


@runtime_checkable
class FastCpuModel(Protocol):
    """A model that declares whether bf16 autocast with channels-last is its fast CPU path."""

    fast_cpu_path: bool


def has_fast_cpu_path(model) -> bool:
    return isinstance(model, FastCpuModel) and bool(model.fast_cpu_path)


@runtime_checkable
class AugmentedDataset(Protocol):
    """A data set that names the augmentation policy it uses (None: none)."""

    augmentation_policy: Optional[str]


def augmentation_policy(dataset) -> Optional[str]:
    return dataset.augmentation_policy if isinstance(dataset, AugmentedDataset) else None


@runtime_checkable
class DescribedData(Protocol):
    """A data set made by ``DatasetRegistry.create``: ``origin`` says how (its name and
    options), ``fingerprint()`` which data it holds."""

    origin: Dict[str, Any]

    def fingerprint(self) -> Dict[str, Any]: ...


@runtime_checkable
class DatasetLoader(Protocol):
    """A built-in loader (``BaseDataset.get_dataloaders``): it knows its data set and batch size."""

    source_dataset: Any
    batch_size: int


def loader_dataset(loader) -> Optional[DescribedData]:
    """The registry-made data set a loader serves, or None (a loader built by other code)."""
    if isinstance(loader, DatasetLoader) and isinstance(loader.source_dataset, DescribedData):
        return loader.source_dataset
    return None


def loader_batch_size(loader) -> Optional[int]:
    """The batch size of a built-in loader or a ``DataLoader``, or None."""
    from torch.utils.data import DataLoader

    if isinstance(loader, (DatasetLoader, DataLoader)) and isinstance(loader.batch_size, int):
        return loader.batch_size
    return None
