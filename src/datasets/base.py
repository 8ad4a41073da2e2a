"""BaseDataset: an image classification data set with seeded augmentation, in memory or
memory-mapped.

A subclass loads uint8 images and int64 labels for its train and test splits; this class
owns normalisation, the augmentation draws and the loaders. The training images the
loaders serve are one augmentation draw of the original images: drawn at creation from
``(seed, 0)``, and redrawn from ``(seed, epoch)`` by ``reapply_transforms(epoch)``, so a
resumed run sees exactly the draws an uninterrupted one saw. Sample ``i``'s parameters
are a function of (seed, draw, i) (``transforms.py``): an in-memory training set is
transformed once per draw (an augmented copy, the fastest path); a memory-mapped one, or
one over the memory budget, is transformed batch by batch on the training device, with
the same bytes.

The class count is part of a data set's definition (``classes_count``, or the count its
constructor passes to ``_set_data``), never inferred from the labels: every label of both
splits is checked against it, so one damaged label cannot silently widen the model.
``fingerprint()`` identifies the original (un-augmented) data by a hash of its content.
"""

from __future__ import annotations

import hashlib
import math
import warnings
import weakref
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import ConfigError, InputTypeError
from ..utils.seed import derive_seed
from .idx import DataError
from .loader import TensorLoader
from ..checks import check_bool, check_int, is_integer, memory_budget_bytes
from .transforms import AugmentationDraw, build_policy, check_policy

Normalisation = Union[float, Sequence[float]]


def _advise(array: np.memmap, advice: str) -> None:
    """``madvise`` the whole mapping of ``array`` (where the platform has it)."""
    import mmap

    mapping = getattr(array, "_mmap", None)
    if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, advice):
        try:
            mapping.madvise(getattr(mmap, advice))
        except (OSError, ValueError):  # advice is a hint: never fail a run on it
            pass


def channel_statistics(images, chunk_bytes: int = 16 << 20) -> Tuple[List[float], List[float]]:
    """Per-channel mean and standard deviation of uint8 ``images`` ``(N, C, H, W)`` on the
    0..1 scale, from exact integer sums taken ``chunk_bytes`` of images at a time (a
    memory-mapped array is never loaded whole, and no float copy of a chunk is made). An
    empty or constant channel gets std 1, so normalising never divides by 0."""
    array = images.numpy() if torch.is_tensor(images) else np.asarray(images)
    if array.ndim == 3:
        array = array[:, None]
    channels = array.shape[1]
    per_image = max(int(np.prod(array.shape[1:])), 1)
    step = max(1, chunk_bytes // per_image)
    total = np.zeros(channels, dtype=np.float64)
    squares = np.zeros(channels, dtype=np.float64)
    for start in range(0, array.shape[0], step):
        block = np.asarray(array[start : start + step])
        total += block.sum(axis=(0, 2, 3), dtype=np.float64)
        squares += np.square(block, dtype=np.uint16).sum(axis=(0, 2, 3), dtype=np.float64)
    count = max(array.shape[0] * array.shape[2] * array.shape[3], 1)
    mean = total / count / 255.0
    variance = np.maximum(squares / count / 255.0**2 - mean**2, 0.0)
    std = np.sqrt(variance)
    return [float(m) for m in mean], [float(s) if s > 1e-6 else 1.0 for s in std]


class BaseDataset:
    """Holds ``train_images``/``train_labels`` and ``test_images``/``test_labels``.

    Subclasses call ``_set_data(...)`` from their constructor (the one method a data set
    implements). The validation split is the data set's test split.

    Args:
        augment: augment the training images (``False``: serve the originals).
        seed: the run seed (an integer >= 0) the augmentation draws and the shuffle order
            derive from.
        augmentation: the policy, ``"affine"``, ``"crop-flip"`` or ``"none"`` (see
            ``transforms.py``); ``None`` takes the data set's ``default_augmentation``.

    Raises:
        ConfigError: ``augment`` is not a bool, ``seed`` not an integer >= 0, or an
            unknown policy.

    Attributes:
        classes_count: the number of classes a subclass defines (labels are ``0 ..
            classes_count - 1``); ``None`` when the constructor passes it to ``_set_data``
            (or, for a third-party subclass that does neither, ``max(label) + 1``).
        mean, std: normalisation, ``(x / 255 - mean) / std``: numbers, per-channel lists,
            or ``None`` to compute per-channel values from the training split.
        default_augmentation: the policy when none is given; ``None`` picks ``affine``
            for one channel (digits, clothes) and ``crop-flip`` for colour images.
        class_names: one name per class (set by ``_set_data``; default ``"0"``, ``"1"``, ...).
    """

    name = "base"
    mean: Optional[Normalisation] = 0.5
    std: Optional[Normalisation] = 0.5
    classes_count: Optional[int] = None
    default_augmentation: Optional[str] = None

    def __init__(self, augment: bool = True, seed: int = 42, augmentation: Optional[str] = None):
        self.augment = check_bool(augment, self.name, "augment")
        self.seed = check_int(seed, self.name, "seed", 0)
        self.requested_augmentation = None if augmentation is None else check_policy(augmentation, self.name)
        self.augmentation_policy: Optional[str] = None  # the policy in use, set by _set_data
        self.augmentation = None
        self.augmentation_epoch: Optional[int] = None  # which draw is live; None = no augmentation
        self.augmentation_fingerprint: Optional[str] = None  # SHA-1 identifying the live draw (audits, tests)
        self.augmented_train_images: Optional[torch.Tensor] = None
        self.memory_mapped = False
        # A memory-mapped data set keeps at most about this many bytes of its pages resident.
        self.page_budget_bytes = memory_budget_bytes() // 4
        self.materialize_augmentation = True
        self._draw: Optional[AugmentationDraw] = None
        self._train_loaders: List[weakref.ref] = []
        self._data_fingerprint: Optional[Dict[str, Any]] = None
        self._content_sha256: Optional[str] = None

    # -- data ----------------------------------------------------------------------
    def _set_data(
        self,
        train_images,
        train_labels,
        test_images,
        test_labels,
        num_classes: Optional[int] = None,
        sources: Optional[Mapping[str, Any]] = None,
        class_names: Optional[Sequence[str]] = None,
        mean: Optional[Normalisation] = None,
        std: Optional[Normalisation] = None,
        content_sha256: Optional[str] = None,
    ) -> None:
        """Install both splits and check the labels.

        Args:
            train_images, test_images: uint8 ``(N, H, W)`` or ``(N, C, H, W)``, a tensor or
                a NumPy array. A ``numpy.memmap`` is used in place, never copied: the
                training set is then augmented batch by batch.
            train_labels, test_labels: integer labels, one per image.
            num_classes: the class count; default ``classes_count``, else (third-party
                subclasses only) the largest label + 1.
            sources: ``{"train": path, "test": path}``, the label files, named in errors.
            class_names: one name per class (default ``"0"``, ``"1"``, ...).
            mean, std: per-channel normalisation (e.g. stored in a cache); default the
                class's ``mean``/``std``, computed from the training split when ``None``.
            content_sha256: the data's SHA-256 when already known (a cache records it),
                so ``fingerprint()`` does not read a huge memory-mapped array again.

        Raises:
            DataError: a split has not one label per image, or a label outside
                ``0 .. num_classes - 1``; the message names the file (or the split).
            ValueError: images that are not uint8 ``(N, [C,] H, W)``, splits with
                different image shapes, or class names that do not match the count.
        """
        self.memory_mapped = isinstance(train_images, np.memmap) or isinstance(test_images, np.memmap)
        self._maps = [array for array in (train_images, test_images) if isinstance(array, np.memmap)]
        if isinstance(train_images, np.memmap):
            _advise(train_images, "MADV_RANDOM")  # batches gather scattered samples: no read-ahead
        sources = sources or {}
        self.train_images = self._as_nchw(train_images)
        self.test_images = self._as_nchw(test_images)
        self.train_labels = self._as_labels(train_labels, sources.get("train") or f"The {self.name} train split")
        self.test_labels = self._as_labels(test_labels, sources.get("test") or f"The {self.name} test split")
        if self.train_images.shape[0] == 0:
            raise DataError(f"The {self.name} train split holds no images; a data set needs training images.")
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise ConfigError(
                f"{self.name}: train images are {tuple(self.train_images.shape[1:])} but test images "
                f"{tuple(self.test_images.shape[1:])}; both splits need one image shape."
            )
        if num_classes is None:
            num_classes = self.classes_count
        if num_classes is None:  # a third-party subclass that declares no count
            labels = torch.cat([self.train_labels.reshape(-1), self.test_labels.reshape(-1)])
            num_classes = max(int(labels.max()) + 1, 1) if labels.numel() else 0
        if not is_integer(num_classes) or num_classes < 0:
            raise ConfigError(f"{self.name}: num_classes must be a non-negative integer, got {num_classes!r}.")
        for split, images, labels in (
            ("train", self.train_images, self.train_labels),
            ("test", self.test_images, self.test_labels),
        ):
            source = sources.get(split)
            where = str(source) if source else f"The {self.name} {split} split"
            self._check_labels(where, images, labels, num_classes, from_file=bool(source))
        self._num_classes = int(num_classes)
        if class_names is None:
            class_names = [str(i) for i in range(self._num_classes)]
        class_names = [str(name) for name in class_names]
        if len(class_names) != self._num_classes:
            raise ConfigError(f"{self.name}: {len(class_names)} class names for {self._num_classes} classes.")
        self.class_names = class_names
        self._set_normalisation(mean, std)
        self._content_sha256 = content_sha256
        self._data_fingerprint = None
        policy = self.requested_augmentation or self.default_augmentation
        if policy is None:
            policy = "affine" if self.train_images.shape[1] == 1 else "crop-flip"
        self.augmentation_policy = check_policy(policy, self.name)
        self.augmentation = build_policy(self.augmentation_policy)
        # An augmented copy only when the originals are in memory and the copy fits the budget.
        self.materialize_augmentation = not self.memory_mapped and self.train_images.numel() <= memory_budget_bytes()
        self.augmented_train_images = self.train_images if self.materialize_augmentation else None
        self._draw = None
        self.augmentation_epoch, self.augmentation_fingerprint = None, None  # new data: no draw is live yet
        if self.augment and self.augmentation is not None:
            self.reapply_transforms(0)

    def release_mapped_pages(self) -> None:
        """Drop the pages of the memory-mapped arrays from this process's resident memory
        (they stay in the page cache; the next read maps them back). The loaders call it
        after every ``page_budget_bytes`` they read, so the resident set of a data set
        larger than memory stays bounded."""
        for array in getattr(self, "_maps", ()):
            _advise(array, "MADV_DONTNEED")

    def _set_normalisation(self, mean: Optional[Normalisation], std: Optional[Normalisation]) -> None:
        """Per-instance ``mean``/``std``: given, else the class's, else computed (per channel)."""
        channels = self.train_images.shape[1]
        if mean is None:
            mean = type(self).mean
        if std is None:
            std = type(self).std
        self.normalisation_computed = mean is None or std is None
        if self.normalisation_computed:
            computed_mean, computed_std = channel_statistics(self.train_images)
            mean = computed_mean if mean is None else mean
            std = computed_std if std is None else std
        for label, values in (("mean", mean), ("std", std)):
            listed = list(values) if isinstance(values, (list, tuple)) else None
            if listed is not None and len(listed) not in (1, channels):
                raise ConfigError(f"{self.name}: {label} has {len(listed)} values for {channels} channels.")
            numbers = listed if listed is not None else [values]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
                raise ConfigError(f"{self.name}: {label} must be finite numbers, got {values!r}.")
            if label == "std" and not all(v > 0 for v in numbers):
                raise ConfigError(f"{self.name}: std must be positive, got {values!r}.")
        self.mean = [float(v) for v in mean] if isinstance(mean, (list, tuple)) else float(mean)
        self.std = [float(v) for v in std] if isinstance(std, (list, tuple)) else float(std)

    @staticmethod
    def _as_labels(labels, where) -> torch.Tensor:
        """Integer labels as int64; fractional, NaN or infinite values are refused (a cast
        would silently turn 0.7 into 0), naming the first one."""
        array = labels.detach().cpu().numpy() if torch.is_tensor(labels) else np.asarray(labels)
        if array.dtype.kind == "f":
            bad = ~np.isfinite(array) | (array != np.round(array))
            if bad.any():
                first = int(np.flatnonzero(bad.reshape(-1))[0])
                raise DataError(
                    f"{where} has {int(bad.sum())} label(s) that are not whole numbers (first at index "
                    f"{first}: {float(array.reshape(-1)[first]):g}); labels must be class indices 0, 1, 2, ..."
                )
        elif array.dtype.kind not in "iub":
            raise DataError(f"{where} holds labels of type {array.dtype}; labels must be integer class indices.")
        if array.dtype.kind == "u" and array.size and array.max() > np.iinfo(np.int64).max:
            raise DataError(f"{where} has a label of {int(array.max())}, beyond any class index.")
        return torch.from_numpy(np.ascontiguousarray(array).astype(np.int64))

    @staticmethod
    def _check_labels(
        where: str, images: torch.Tensor, labels: torch.Tensor, num_classes: int, from_file: bool
    ) -> None:
        fix = "the file is damaged, replace it" if from_file else "fix the labels or the data set's class count"
        if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            raise DataError(f"{where} holds labels of shape {tuple(labels.shape)} for {images.shape[0]} images; {fix}.")
        bad = (labels < 0) | (labels >= num_classes)
        count = int(bad.sum())
        if count:
            first = int(torch.argmax(bad.to(torch.uint8)))
            raise DataError(
                f"{where} has {count} label{'s' if count != 1 else ''} outside 0..{num_classes - 1} "
                f"(first at index {first}: {int(labels[first])}); {fix}."
            )

    @staticmethod
    def _as_nchw(images) -> torch.Tensor:
        if isinstance(images, np.ndarray):
            if images.dtype != np.uint8:
                raise InputTypeError(f"Images must be uint8, got {images.dtype}.")
            with warnings.catch_warnings():  # a read-only memory map: the data is only ever read
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                images = torch.from_numpy(images if images.flags.c_contiguous else np.ascontiguousarray(images))
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8:
            raise InputTypeError(f"Images must be uint8, got {images.dtype}.")
        if images.dim() == 3:  # (N, H, W) grey images
            images = images.unsqueeze(1)
        if images.dim() != 4:
            raise ConfigError(f"Images must be (N, H, W) or (N, C, H, W), got shape {tuple(images.shape)}.")
        if images.shape[-1] in (1, 3, 4) and images.shape[1] not in (1, 3, 4):
            raise ConfigError(
                f"Images of shape {tuple(images.shape)} look channels-last (N, H, W, C); give them as "
                "(N, C, H, W), e.g. array.transpose(0, 3, 1, 2)."
            )
        if 0 in tuple(images.shape[1:]):
            raise ConfigError(
                f"Images of shape {tuple(images.shape)} have an empty dimension; each image needs "
                "at least one channel and one pixel."
            )
        return images.contiguous()

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        """``(channels, height, width)`` of one input."""
        return tuple(self.train_images.shape[1:])

    def __len__(self) -> int:
        return self.train_images.shape[0]

    def fingerprint(self) -> Dict[str, Any]:
        """What the data is, for provenance records and for telling data sets apart.

        Returns:
            ``{"train_samples", "val_samples", "input_shape": [c, h, w], "num_classes",
            "sha256"}``, where ``sha256`` hashes the original (un-augmented) train images,
            train labels, test images and test labels: each one's name, dtype and shape,
            then its raw bytes (or is the ``content_sha256`` a cache recorded). Augmentation
            never changes it. When the normalisation was computed from the data, ``"mean"``
            and ``"std"`` are recorded too. Computed on the first call (about 0.05 s for the
            55 MB of Fashion-MNIST) and cached until ``_set_data`` installs new data; the
            data is not expected to change in place meanwhile.
        """
        if getattr(self, "_data_fingerprint", None) is None:
            sha256 = getattr(self, "_content_sha256", None) or self._hash_content()
            self._data_fingerprint = {
                "train_samples": int(self.train_labels.shape[0]),
                "val_samples": int(self.test_labels.shape[0]),
                "input_shape": [int(d) for d in self.input_shape],
                "num_classes": int(self.num_classes),
                "sha256": sha256,
            }
            if getattr(self, "normalisation_computed", False):
                self._data_fingerprint["mean"] = self.mean
                self._data_fingerprint["std"] = self.std
        return {key: list(value) if isinstance(value, list) else value for key, value in self._data_fingerprint.items()}

    def _hash_content(self) -> str:
        digest = hashlib.sha256()
        for name in ("train_images", "train_labels", "test_images", "test_labels"):
            tensor = getattr(self, name).detach().cpu()
            array = tensor.contiguous().numpy()
            digest.update(f"{name} {array.dtype.str} {list(array.shape)}\n".encode())
            flat = array.reshape(-1).view("uint8")
            for start in range(0, flat.shape[0], 1 << 26):  # 64 MB at a time: a memory map stays paged
                digest.update(flat[start : start + (1 << 26)])
        return digest.hexdigest()

    def describe(self) -> str:
        augmentation = self.augmentation_policy if self.augment and self.augmentation is not None else "off"
        stored = ", memory-mapped" if self.memory_mapped else ""
        return (
            f"{self.name}: {len(self.train_labels)} train / {len(self.test_labels)} validation samples, "
            f"input {self.input_shape}, {self.num_classes} classes, augmentation {augmentation}{stored}"
        )

    # -- augmentation --------------------------------------------------------------
    def reapply_transforms(self, epoch: Optional[int] = None) -> None:
        """Draw fresh random augmentations for the whole training set.

        Args:
            epoch: the draw number; the draw is seeded from ``(seed, epoch)``. ``None``
                takes the draw after the current one.
        """
        if not self.augment or self.augmentation is None:
            return
        if epoch is None:
            epoch = 0 if self.augmentation_epoch is None else self.augmentation_epoch + 1
        if epoch == self.augmentation_epoch:
            return
        generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch, 0xA06))
        _, _, height, width = self.train_images.shape
        draw = AugmentationDraw(self.augmentation, len(self), generator, height, width)
        if self.materialize_augmentation:
            augmented = torch.empty_like(self.train_images)
            for start in range(0, len(self), 4096):  # bounds the temporaries of a crop-flip gather
                augmented[start : start + 4096] = draw(self.train_images[start : start + 4096], start=start)
            self.augmented_train_images, self._draw = augmented, None
        else:
            self.augmented_train_images, self._draw = None, draw
        self.augmentation_epoch = int(epoch)
        self.augmentation_fingerprint = self._draw_fingerprint()
        for ref in self._train_loaders:
            loader = ref()
            if loader is not None:
                if self.materialize_augmentation:
                    loader.set_images(self.augmented_train_images)
                else:
                    loader.set_transform(self._draw)

    def _draw_fingerprint(self, samples: int = 1024) -> str:
        """SHA-1 of evenly spaced images of the live draw (1,024, or fewer large ones: at most
        ~16 MB): tells draws apart (a fresh draw changes nearly every image) without
        transforming and hashing the whole set;
        the same for the in-memory and the memory-mapped path."""
        per_image = max(self.train_images[0].numel(), 1)
        samples = max(1, min(samples, len(self), (16 << 20) // per_image))  # at most ~16 MB of images
        index = torch.linspace(0, len(self) - 1, samples).long()
        if self._draw is None:
            images = self.augmented_train_images[index]
        else:
            images = self._draw(self.train_images.index_select(0, index), index)
        return hashlib.sha1(images.cpu().contiguous().numpy().tobytes()).hexdigest()

    def state_dict(self) -> Dict[str, Any]:
        return {
            "augment": self.augment,
            "seed": self.seed,
            "augmentation_epoch": self.augmentation_epoch,
            "augmentation_fingerprint": self.augmentation_fingerprint,
            "policy": self.augmentation_policy,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore the live augmentation draw (recomputed from its seed, not stored)."""
        if bool(state["augment"]) != self.augment or int(state["seed"]) != self.seed:
            raise ConfigError(
                f"Dataset state was saved with augment={state['augment']} seed={state['seed']}, "
                f"this dataset has augment={self.augment} seed={self.seed}."
            )
        policy = state.get("policy", "affine")  # checkpoints before policies existed: affine
        if self.augment and policy != self.augmentation_policy:
            raise ConfigError(
                f"Dataset state was saved with augmentation {policy!r}, this dataset uses {self.augmentation_policy!r}."
            )
        if state["augmentation_epoch"] is not None:
            self.reapply_transforms(int(state["augmentation_epoch"]))

    # -- loaders -------------------------------------------------------------------
    def get_dataloaders(
        self,
        batch_size: int = 64,
        shuffle: bool = True,
        device: Optional[torch.device] = None,
        val_batch_size: Optional[int] = None,
    ) -> Tuple[TensorLoader, TensorLoader]:
        """Return ``(train_loader, val_loader)`` over the training and test splits.

        Args:
            batch_size: training batch size.
            shuffle: shuffle the training set each epoch (seeded from the dataset seed).
            device: where batches are produced (``None``: CPU). In-memory uint8 data is
                moved there once when it fits, so there is no per-batch host-to-device copy.
            val_batch_size: validation batch size (default: ``max(batch_size, 256)``).
        """
        if not is_integer(batch_size) or batch_size <= 0:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
        if val_batch_size is not None and (not is_integer(val_batch_size) or val_batch_size <= 0):
            raise ConfigError(f"val_batch_size must be a positive integer, got {val_batch_size!r}.")
        batch_size = int(batch_size)
        val_batch_size = int(val_batch_size) if val_batch_size is not None else None
        images = (
            self.augmented_train_images
            if self._draw is None and self.augmented_train_images is not None
            else self.train_images
        )
        train_loader = TensorLoader(
            images,
            self.train_labels,
            batch_size,
            self.mean,
            self.std,
            shuffle=shuffle,
            seed=self.seed,
            device=device,
            transform=self._draw,
            mapped=self.memory_mapped,
            release_pages=self.release_mapped_pages if self.memory_mapped else None,
            release_bytes=self.page_budget_bytes,
        )
        val_loader = TensorLoader(
            self.test_images,
            self.test_labels,
            val_batch_size or max(batch_size, 256),
            self.mean,
            self.std,
            shuffle=False,
            device=device,
            mapped=self.memory_mapped,
            release_pages=self.release_mapped_pages if self.memory_mapped else None,
            release_bytes=self.page_budget_bytes,
        )
        self._train_loaders.append(weakref.ref(train_loader))
        # Where the batches come from, so a run built in Python records a configuration
        # train.py can rebuild (see src/training/run_config.py).
        train_loader.source_dataset = self
        return train_loader, val_loader
