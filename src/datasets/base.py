"""BaseDataset: an in-memory image classification data set with seeded augmentation.

A subclass loads uint8 images and int64 labels for its train and test splits; this class
owns normalisation, the augmentation draws and the loaders. The training images the
loaders serve are one augmentation draw of the original images: drawn once at creation
from ``(seed, 0)``, and redrawn from ``(seed, epoch)`` by ``reapply_transforms(epoch)``,
so a resumed run sees exactly the draws an uninterrupted one saw.

The class count is part of a data set's definition (``classes_count``, or the count its
constructor passes to ``_set_data``), never inferred from the labels: every label of both
splits is checked against it, so one damaged label cannot silently widen the model.
``fingerprint()`` identifies the original (un-augmented) data by a hash of its content.
"""

from __future__ import annotations

import hashlib
import weakref
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from ..utils.seed import derive_seed
from .idx import DataError
from .loader import TensorLoader
from .options import check_bool, check_int, is_integer
from .transforms import AffineAugmentation


class BaseDataset:
    """Holds ``train_images``/``train_labels`` and ``test_images``/``test_labels``.

    Subclasses call ``_set_data(...)`` from their constructor. The validation split is the
    data set's test split.

    Args:
        augment: apply the random affine augmentation to the training images.
        seed: the run seed (an integer >= 0) the augmentation draws and the shuffle order
            derive from.

    Raises:
        ConfigError: ``augment`` is not a bool, or ``seed`` not an integer >= 0.

    Attributes:
        classes_count: the number of classes a subclass defines (labels are ``0 ..
            classes_count - 1``); ``None`` when the constructor passes it to ``_set_data``
            (or, for a third-party subclass that does neither, ``max(label) + 1``).
    """

    name = "base"
    mean = 0.5
    std = 0.5
    classes_count: Optional[int] = None

    def __init__(self, augment: bool = True, seed: int = 42):
        self.augment = check_bool(augment, self.name, "augment")
        self.seed = check_int(seed, self.name, "seed", 0)
        self.augmentation = AffineAugmentation()
        self.augmentation_epoch: Optional[int] = None  # which draw is live; None = no augmentation
        self.augmentation_fingerprint: Optional[str] = None  # SHA-1 identifying the live draw (audits, tests)
        self._train_loaders: List[weakref.ref] = []
        self._data_fingerprint: Optional[Dict[str, Any]] = None

    # -- data ----------------------------------------------------------------------
    def _set_data(
        self,
        train_images,
        train_labels,
        test_images,
        test_labels,
        num_classes: Optional[int] = None,
        sources: Optional[Mapping[str, Any]] = None,
    ) -> None:
        """Install both splits (uint8 images, integer labels) and check the labels.

        Args:
            num_classes: the class count; default ``classes_count``, else (third-party
                subclasses only) the largest label + 1.
            sources: ``{"train": path, "test": path}``, the label files, named in errors.

        Raises:
            DataError: a split has not one label per image, or a label outside
                ``0 .. num_classes - 1``; the message names the file (or the split).
        """
        self.train_images = self._as_nchw(train_images)
        self.train_labels = torch.as_tensor(train_labels).long()
        self.test_images = self._as_nchw(test_images)
        self.test_labels = torch.as_tensor(test_labels).long()
        if num_classes is None:
            num_classes = self.classes_count
        if num_classes is None:  # a third-party subclass that declares no count
            labels = torch.cat([self.train_labels, self.test_labels])
            num_classes = max(int(labels.max()) + 1, 1) if labels.numel() else 0
        if not is_integer(num_classes) or num_classes < 0:
            raise ValueError(f"{self.name}: num_classes must be a non-negative integer, got {num_classes!r}.")
        sources = sources or {}
        for split, images, labels in (("train", self.train_images, self.train_labels),
                                      ("test", self.test_images, self.test_labels)):
            source = sources.get(split)
            where = str(source) if source else f"The {self.name} {split} split"
            self._check_labels(where, images, labels, num_classes, from_file=bool(source))
        self._num_classes = int(num_classes)
        self._data_fingerprint = None
        self.augmented_train_images = self.train_images
        self.augmentation_epoch, self.augmentation_fingerprint = None, None  # new data: no draw is live yet
        if self.augment:
            self.reapply_transforms(0)

    @staticmethod
    def _check_labels(where: str, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                      from_file: bool) -> None:
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
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8:
            raise TypeError(f"Images must be uint8, got {images.dtype}.")
        if images.dim() == 3:  # (N, H, W) grey images
            images = images.unsqueeze(1)
        if images.dim() != 4:
            raise ValueError(f"Images must be (N, H, W) or (N, C, H, W), got shape {tuple(images.shape)}.")
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
            then its raw bytes. Augmentation never changes it. Computed on the first call
            (about 0.05 s for the 55 MB of Fashion-MNIST) and cached until ``_set_data``
            installs new data; the data is not expected to change in place meanwhile.
        """
        if getattr(self, "_data_fingerprint", None) is None:
            digest = hashlib.sha256()
            for name in ("train_images", "train_labels", "test_images", "test_labels"):
                array = getattr(self, name).detach().cpu().contiguous().numpy()
                digest.update(f"{name} {array.dtype.str} {list(array.shape)}\n".encode())
                digest.update(array.reshape(-1).view("uint8"))
            self._data_fingerprint = {
                "train_samples": int(self.train_labels.shape[0]),
                "val_samples": int(self.test_labels.shape[0]),
                "input_shape": [int(d) for d in self.input_shape],
                "num_classes": int(self.num_classes),
                "sha256": digest.hexdigest(),
            }
        return {**self._data_fingerprint, "input_shape": list(self._data_fingerprint["input_shape"])}

    def describe(self) -> str:
        return (
            f"{self.name}: {len(self.train_labels)} train / {len(self.test_labels)} validation samples, "
            f"input {self.input_shape}, {self.num_classes} classes, augmentation {'on' if self.augment else 'off'}"
        )

    # -- augmentation --------------------------------------------------------------
    def reapply_transforms(self, epoch: Optional[int] = None) -> None:
        """Draw fresh random augmentations for the whole training set.

        Args:
            epoch: the draw number; the draw is seeded from ``(seed, epoch)``. ``None``
                takes the draw after the current one.
        """
        if not self.augment:
            return
        if epoch is None:
            epoch = 0 if self.augmentation_epoch is None else self.augmentation_epoch + 1
        if epoch == self.augmentation_epoch:
            return
        generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch, 0xA06))
        self.augmented_train_images = self.augmentation(self.train_images, generator)
        self.augmentation_epoch = int(epoch)
        self.augmentation_fingerprint = _augmentation_fingerprint(self.augmented_train_images)
        for ref in self._train_loaders:
            loader = ref()
            if loader is not None:
                loader.set_images(self.augmented_train_images)

    def state_dict(self) -> Dict[str, Any]:
        return {
            "augment": self.augment, "seed": self.seed, "augmentation_epoch": self.augmentation_epoch,
            "augmentation_fingerprint": self.augmentation_fingerprint,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore the live augmentation draw (recomputed from its seed, not stored)."""
        if bool(state["augment"]) != self.augment or int(state["seed"]) != self.seed:
            raise ValueError(
                f"Dataset state was saved with augment={state['augment']} seed={state['seed']}, "
                f"this dataset has augment={self.augment} seed={self.seed}."
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
            device: where batches are produced (``None``: CPU). The uint8 data is moved
                there once, so there is no per-batch host-to-device copy.
            val_batch_size: validation batch size (default: ``max(batch_size, 256)``).
        """
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        train_loader = TensorLoader(
            self.augmented_train_images, self.train_labels, batch_size, self.mean, self.std,
            shuffle=shuffle, seed=self.seed, device=device,
        )
        val_loader = TensorLoader(
            self.test_images, self.test_labels, val_batch_size or max(batch_size, 256), self.mean, self.std,
            shuffle=False, device=device,
        )
        self._train_loaders.append(weakref.ref(train_loader))
        # Where the batches come from, so a run built in Python records a configuration
        # train.py can rebuild (see src/training/run_config.py).
        train_loader.source_dataset = self
        return train_loader, val_loader


def _augmentation_fingerprint(images: torch.Tensor, samples: int = 1024) -> str:
    """SHA-1 of evenly spaced images of a draw: tells draws apart (a fresh warp changes
    nearly every image) at a few hundred kB of hashing instead of the whole set."""
    index = torch.linspace(0, images.shape[0] - 1, min(samples, images.shape[0])).long()
    return hashlib.sha1(images[index].cpu().contiguous().numpy().tobytes()).hexdigest()
