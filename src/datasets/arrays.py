"""Your own arrays as a data set, with every feature of the built-in ones."""

from __future__ import annotations

from typing import Optional, Sequence

from ..errors import ConfigError
from .base import BaseDataset, Normalisation
from ..checks import check_bool


class ArrayDataset(BaseDataset):
    """A data set from train/test uint8 arrays you already hold (NumPy or torch).

    Example::

        from src.datasets import ArrayDataset
        data = ArrayDataset(x_train, y_train, x_test, y_test, class_names=["cat", "dog"])
        train_loader, val_loader = data.get_dataloaders(batch_size=128)

    Args:
        train_images, test_images: uint8 ``(N, H, W)`` (grey) or ``(N, C, H, W)``; a
            ``numpy.memmap`` is used in place (batches are gathered from the map).
        train_labels, test_labels: integer labels ``0 .. num_classes - 1``, one per image.
        class_names: one name per class; its length is the class count.
        num_classes: the class count when ``class_names`` is not given (default: the
            largest label + 1).
        augment, seed, augmentation: as for every data set (``BaseDataset``); the default
            policy is ``affine`` for one channel and ``crop-flip`` for colour.
        mean, std: normalisation (numbers or one per channel); default computed per
            channel from the training images.
        name: shown in messages and descriptions.

    Raises:
        ValueError, TypeError: arrays of the wrong type or shape; DataError: a label
        outside the classes; ConfigError: a bad option.

    A run of an ``ArrayDataset`` trains, saves and resumes through the Python API like any
    other; ``train.py --resume`` cannot rebuild it (its config records
    ``custom:TensorLoader``), so resume it in Python.
    """

    name = "arrays"
    mean = None
    std = None

    def __init__(
        self,
        train_images,
        train_labels,
        test_images,
        test_labels,
        class_names: Optional[Sequence[str]] = None,
        num_classes: Optional[int] = None,
        augment: bool = True,
        seed: int = 42,
        augmentation: Optional[str] = None,
        mean: Optional[Normalisation] = None,
        std: Optional[Normalisation] = None,
        name: str = "arrays",
    ):
        if not isinstance(name, str) or not name:
            raise ConfigError(f"name must be a non-empty text, got {name!r}.")
        self.name = name
        super().__init__(augment=check_bool(augment, name, "augment"), seed=seed, augmentation=augmentation)
        if class_names is not None:
            if isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names):
                raise ConfigError(f"class_names must be a list of texts, got {class_names!r}.")
            class_names = [str(c) for c in class_names]  # a numpy array of names, a tuple: a plain list
            if any(not c.strip() for c in class_names):
                raise ConfigError(f"class_names holds an empty name ({class_names!r}); give every class a name.")
            repeated = sorted({c for c in class_names if list(class_names).count(c) > 1})
            if repeated:
                raise ConfigError(f"class_names names {repeated[0]!r} more than once; give each class its own name.")
            if not class_names:
                raise ConfigError("class_names is empty; give one name per class.")
            if num_classes is not None and num_classes != len(class_names):
                raise ConfigError(f"num_classes={num_classes!r} but {len(class_names)} class names were given.")
            num_classes = len(class_names)
        self._set_data(
            train_images,
            train_labels,
            test_images,
            test_labels,
            num_classes=num_classes,
            class_names=class_names,
            mean=mean,
            std=std,
        )
