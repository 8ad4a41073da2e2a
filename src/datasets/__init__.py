"""Datasets: the registry, BaseDataset, and the built-in data sets.

Importing this package registers ``mnist``, ``fashion_mnist``, ``mnist-sample``,
``cifar10``, ``cifar100`` and ``synthetic``; nothing is read or downloaded until a data set is created.
"""

from .arrays import ArrayDataset
from .base import BaseDataset, channel_statistics
from .idx import DataError
from .loader import TensorLoader
from .registry import DatasetRegistry
from . import mnist as _mnist  # noqa: F401  (registers mnist, fashion_mnist, mnist-sample)
from . import cifar as _cifar  # noqa: F401  (registers cifar10, cifar100)
from . import synthetic as _synthetic  # noqa: F401  (registers synthetic)
from . import imagefolder as _imagefolder  # noqa: F401  (registers imagefolder)

__all__ = ["ArrayDataset", "BaseDataset", "DataError", "DatasetRegistry", "TensorLoader", "channel_statistics"]
