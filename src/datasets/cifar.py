"""CIFAR-10 and CIFAR-100 (fine labels) from the official "python version" archives.

The folder layout is torchvision's (``<root>/cifar-10-batches-py/``,
``<root>/cifar-100-python/``), so existing downloads are reused as they are. The pickled
batches are read without executing anything from them (``archive.load_restricted_pickle``)
and every field is checked: a damaged or foreign file is a ``DataError`` naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .archive import ensure_archive_folder, load_restricted_pickle
from .base import BaseDataset
from .idx import DataError, check_data_folder, resolve_data_root
from .options import check_download_options
from .registry import DatasetRegistry

IMAGE_SHAPE = (3, 32, 32)  # channel-planar: 1024 red, then 1024 green, then 1024 blue values
_PIXELS = 3 * 32 * 32
_WHAT = "a CIFAR batch"


def _as_str_keys(content: Any, path: Path) -> Dict[str, Any]:
    """The pickled dict with ``str`` keys (Python 2 files give ``str`` under latin1
    decoding; a file re-saved by Python 3 may have ``bytes`` keys)."""
    if not isinstance(content, dict):
        raise DataError(
            f"{path} holds a {type(content).__name__}, not {_WHAT} (a dict); "
            "replace it with the file from the official archive."
        )
    return {(key.decode("latin1") if isinstance(key, bytes) else key): value for key, value in content.items()}


def _field(content: Dict[str, Any], key: str, path: Path) -> Any:
    if key not in content:
        found = ", ".join(sorted(str(k) for k in content)) or "nothing"
        raise DataError(
            f"{path} has no {key!r} entry (it holds {found}); it is not the expected CIFAR file, "
            "replace it with the file from the official archive."
        )
    return content[key]


def read_batch(path: Path, labels_key: str, num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR batch file.

    Args:
        labels_key: ``"labels"`` (CIFAR-10) or ``"fine_labels"`` (CIFAR-100).

    Returns:
        ``(images, labels)``: uint8 ``(N, 3, 32, 32)`` and int64 ``(N,)``.

    Raises:
        DataError: the file is not a safe pickle of a dict, lacks ``data`` or the labels,
            or they have the wrong type, shape or length, or a label is outside
            ``0 .. num_classes - 1``; the message names the file and says to replace it.
    """
    path = Path(path)
    content = _as_str_keys(load_restricted_pickle(path, _WHAT), path)
    data = _field(content, "data", path)
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != _PIXELS
        or data.shape[0] == 0
    ):
        described = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(
            f"{path} holds 'data' as a {described}, not uint8 images of shape (N, {_PIXELS}) with N >= 1; "
            "the file is damaged, replace it with the file from the official archive."
        )
    raw_labels = _field(content, labels_key, path)
    try:
        labels = np.asarray(raw_labels) if isinstance(raw_labels, (list, tuple, np.ndarray)) else None
    except (ValueError, TypeError, OverflowError):
        labels = None
    if labels is None or labels.dtype.kind not in "iu" or labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        described = (
            f"{labels.dtype} values of shape {labels.shape}" if labels is not None else type(raw_labels).__name__
        )
        raise DataError(
            f"{path} holds {labels_key!r} as {described}, not one integer per image ({data.shape[0]}); "
            "the file is damaged, replace it with the file from the official archive."
        )
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        first = int(np.argmax(bad))
        count = int(bad.sum())
        what = labels_key[:-1] if count == 1 else labels_key  # "1 label", "3 fine_labels"
        raise DataError(
            f"{path} has {count} {what} outside 0..{num_classes - 1} (first at index {first}: {labels[first]}); "
            "the file is damaged, replace it with the file from the official archive."
        )
    return data.reshape(-1, *IMAGE_SHAPE), labels.astype(np.int64)


def read_class_names(path: Path, names_key: str, num_classes: int) -> List[str]:
    """Read the class names from a CIFAR meta file.

    Args:
        names_key: ``"label_names"`` (CIFAR-10) or ``"fine_label_names"`` (CIFAR-100).

    Raises:
        DataError: the file is not a safe pickle of a dict, or its names are not
            ``num_classes`` distinct non-empty strings.
    """
    path = Path(path)
    content = _as_str_keys(load_restricted_pickle(path, "a CIFAR meta file"), path)
    raw = _field(content, names_key, path)
    names: Optional[List[str]] = None
    if isinstance(raw, (list, tuple)):
        try:
            names = [item.decode("utf-8") if isinstance(item, bytes) else item for item in raw]
        except UnicodeDecodeError:
            names = None
    if (
        names is None
        or len(names) != num_classes
        or not all(isinstance(n, str) and n.strip() for n in names)
        or len(set(names)) != num_classes
    ):
        raise DataError(
            f"{path} holds {names_key!r} as {_describe(raw)}, not {num_classes} distinct class names; "
            "the file is damaged, replace it with the file from the official archive."
        )
    return names


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class CIFAR(BaseDataset):
    """A CIFAR data set from the official python-version archive, downloaded when missing.

    Args:
        data_dir: the data root (default ``$EXPTRAIN_DATA_DIR``, else ``./data``).
        download: fetch the archive when files are missing (``False``: that is an error).
        mirrors: base URLs the archive is downloaded from, tried in order (default: the
            official site).
        progress: show a download progress bar.
        augmentation: ``"crop-flip"`` (the default), ``"affine"`` or ``"none"``.

    Normalisation is per channel, computed from the training split.

    Raises:
        ConfigError: an option of the wrong type (``download="no"``, ``mirrors="http://..."``).
        DataError: the data folder is a file or unreadable; files are missing and cannot be
            downloaded; the archive fails its MD5 or holds an unsafe member; or a file is
            damaged, foreign or hostile (the message names it).
    """

    name = "cifar"
    folder_name = ""
    archive_name = ""
    md5: Optional[str] = None
    train_files: Sequence[str] = ()
    test_file = "test_batch"
    meta_file = "batches.meta"
    labels_key = "labels"
    names_key = "label_names"
    classes_count: Optional[int] = None
    mirrors: Sequence[str] = ("https://www.cs.toronto.edu/~kriz/",)
    mean = None  # per channel, computed from the training split
    std = None
    default_augmentation = "crop-flip"

    def __init__(
        self,
        data_dir: Optional[str] = None,
        augment: bool = True,
        seed: int = 42,
        download: bool = True,
        mirrors: Optional[Sequence[str]] = None,
        progress: bool = True,
        augmentation: Optional[str] = None,
    ):
        super().__init__(augment=augment, seed=seed, augmentation=augmentation)
        download, progress, mirrors = check_download_options(self.name, download, progress, mirrors, self.mirrors[0])
        self.folder = resolve_data_root(data_dir) / self.folder_name
        check_data_folder(self.folder, f"The {self.name} folder {self.folder}")
        required = (*self.train_files, self.test_file, self.meta_file)
        files = ensure_archive_folder(
            self.folder,
            required,
            self.archive_name,
            mirrors or self.mirrors,
            self.md5,
            self.name,
            download=download,
            progress=progress,
        )
        self._load_files(files)

    def _load_files(self, files: Dict[str, Path]) -> None:
        count = self.classes_count
        class_names = read_class_names(files[self.meta_file], self.names_key, count)
        train = [read_batch(files[name], self.labels_key, count) for name in self.train_files]
        train_images = np.concatenate([images for images, _ in train]) if len(train) > 1 else train[0][0]
        train_labels = np.concatenate([labels for _, labels in train]) if len(train) > 1 else train[0][1]
        del train
        test_images, test_labels = read_batch(files[self.test_file], self.labels_key, count)
        self._set_data(
            train_images,
            train_labels,
            test_images,
            test_labels,
            num_classes=count,
            sources={"train": files[self.train_files[0]], "test": files[self.test_file]},
            class_names=class_names,
        )


@DatasetRegistry.register("cifar10")
class CIFAR10(CIFAR):
    """CIFAR-10 from ``<data root>/cifar-10-batches-py``: 50,000 train and 10,000 test
    32x32 colour images in 10 classes, names from ``batches.meta``."""

    name = "cifar10"
    folder_name = "cifar-10-batches-py"
    archive_name = "cifar-10-python.tar.gz"
    md5 = "c58f30108f718f92721af3b95e74349a"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_file = "test_batch"
    meta_file = "batches.meta"
    labels_key = "labels"
    names_key = "label_names"
    classes_count = 10


@DatasetRegistry.register("cifar100")
class CIFAR100(CIFAR):
    """CIFAR-100 from ``<data root>/cifar-100-python``: 50,000 train and 10,000 test
    32x32 colour images in 100 fine classes, names from ``meta``."""

    name = "cifar100"
    folder_name = "cifar-100-python"
    archive_name = "cifar-100-python.tar.gz"
    md5 = "eb9058c3a382ffc7106e4002c42a8d85"
    train_files = ("train",)
    test_file = "test"
    meta_file = "meta"
    labels_key = "fine_labels"
    names_key = "fine_label_names"
    classes_count = 100
