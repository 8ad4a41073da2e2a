"""``imagefolder``: a folder of images in class sub-folders, the layout torchvision's
``ImageFolder`` and Ultralytics' classification use::

    ROOT/train/<class>/<image>      the training split; its sorted folder names are the classes
    ROOT/val/<class>/<image>        the validation split (``test/`` when there is no ``val/``)

Images may sit in nested folders below their class folder. Hidden files and folders (a
name starting with ".") are ignored, and so are files whose extension is not one Pillow
decodes (``.txt``, ``.csv``; named in one warning). A class missing from ``val/`` is
fine; a ``val/`` class that ``train/`` lacks is an error. Any file directly in ``train/``
or ``val/`` is an error (it would belong to no class).

The images are decoded once into a uint8 cache (``image_cache.py`` says how, and what
each decoding policy is) and reused by every later run in a fraction of a second. A data
set larger than the memory budget is memory-mapped from that cache instead of read in;
batches are then gathered from the map, with the same order and results.
"""

from __future__ import annotations

import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional
from ..errors import ConfigError
from .. import checks
from .base import BaseDataset
from .idx import DataError
from .image_cache import (
    SPLITS,
    SourceImage,
    image_extensions,
    load_split,
    open_cache,
    resolve_cache_dir,
    skipped_warning,
)
from ..checks import BUDGET_TEXT, check_bool, check_int, check_number, format_bytes
from .registry import DatasetRegistry

FLAG = "--dataset-option"
LAYOUT = "ROOT/train/<class>/<images> and ROOT/val/<class>/<images> (or test/)"
LISTED = 5  # names listed in one message


@dataclass
class FolderListing:
    """What ``scan_image_folder`` found: classes, the files of each split in sample order
    (by class, then path), the split folder names, and the files ignored for their extension."""

    root: Path
    class_names: List[str]
    splits: Dict[str, List[SourceImage]]
    folders: Dict[str, str]
    ignored: List[str] = field(default_factory=list)


def scan_image_folder(root: Path) -> FolderListing:
    """List the images of ``root`` (no image is opened).

    Raises:
        DataError: the root or a split folder is missing or not a folder, ``train/`` has no
            class folders or a class folder with no images, ``val/`` has no images or a class
            ``train/`` lacks, a file lies where only class folders belong, or a folder
            cannot be read.
    """
    root = Path(root)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"The image folder {root} {what}; pass a folder laid out as {LAYOUT}.")
    train = root / "train"
    if not train.is_dir():
        raise DataError(f"The image folder {root} has no train/ folder; lay it out as {LAYOUT}.")
    for name in ("val", "test"):
        if (root / name).exists() and not (root / name).is_dir():
            raise DataError(f"{root / name} is a file where the {name}/ folder belongs; move it away.")
    test_name = "val" if (root / "val").is_dir() else "test" if (root / "test").is_dir() else None
    if test_name is None:
        raise DataError(f"The image folder {root} has no val/ or test/ folder for validation; lay it out as {LAYOUT}.")
    class_names = _class_folders(train)
    if not class_names:
        raise DataError(f"{train} holds no class folders; put each class's images in {train}/<class>/.")
    labels = {name: label for label, name in enumerate(class_names)}
    test_classes = _class_folders(root / test_name)
    unknown = [name for name in test_classes if name not in labels]
    if unknown:
        raise DataError(
            f"{root / test_name} has class folder{'s' if len(unknown) > 1 else ''} {_names(unknown)} that "
            f"{train} lacks; the classes are the folders of train/ ({_names(class_names)}): rename or remove "
            f"{'them' if len(unknown) > 1 else 'it'}."
        )
    listing = FolderListing(root, class_names, {"train": [], "test": []}, {"train": "train", "test": test_name})
    for split, folder, names in (("train", train, class_names), ("test", root / test_name, test_classes)):
        for name in names:
            images = _image_files(root, f"{folder.name}/{name}", labels[name], listing.ignored)
            if split == "train" and not images:
                raise DataError(f"The class folder {folder / name} holds no images; add images or remove the folder.")
            listing.splits[split].extend(images)
    listing.ignored.sort()
    if not listing.splits["test"]:
        raise DataError(f"{root / test_name} holds no images; put validation images in {root / test_name}/<class>/.")
    return listing


def _class_folders(folder: Path) -> List[str]:
    """Sorted names of the visible sub-folders of a split folder; a visible file is an error."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as exc:
        raise DataError(f"Cannot read {folder}: {exc.strerror or exc}; give this user read access.") from None
    names, files = [], []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        (names if entry.is_dir() else files).append(entry.name)
    if files:
        raise DataError(
            f"{folder} holds file{'s' if len(files) > 1 else ''} {_names(files)} where only class "
            f"folders belong; move {'them' if len(files) > 1 else 'it'} into a class folder or away."
        )
    return names


def _image_files(root: Path, relative: str, label: int, ignored: List[str]) -> List[SourceImage]:
    """The image files below ``root/relative`` (nested folders too, symbolic links followed,
    each folder read once), sorted by path; files with other extensions go to ``ignored``.
    Plain strings and ``os.scandir``: pathlib would triple the time of a cache reuse."""
    extensions = image_extensions()
    top = str(root)
    found: List[SourceImage] = []
    seen = set()
    pending = [relative]
    while pending:
        folder = pending.pop()
        try:
            info = os.stat(os.path.join(top, folder))
            entries = list(os.scandir(os.path.join(top, folder)))
        except OSError as exc:
            raise DataError(
                f"Cannot read {os.path.join(top, folder)}: {exc.strerror or exc}; give this user read access."
            ) from None
        if (info.st_dev, info.st_ino) in seen:  # a link loop, or a second link to one folder
            continue
        seen.add((info.st_dev, info.st_ino))
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = f"{folder}/{entry.name}"
            try:
                is_folder = entry.is_dir()
            except OSError:
                is_folder = False
            if is_folder:
                pending.append(path)
            elif os.path.splitext(entry.name)[1].lower() not in extensions:
                ignored.append(path)
            else:
                found.append(_source_image(entry, path, label))
    return sorted(found, key=lambda image: image.path)


def _source_image(entry: os.DirEntry, relative: str, label: int) -> SourceImage:
    try:
        info = entry.stat()  # follows a symbolic link
    except OSError as exc:
        return SourceImage(relative, label, -1, 0, problem=f"cannot be read: {exc.strerror or exc}")
    if not stat.S_ISREG(info.st_mode):
        return SourceImage(relative, label, -1, 0, problem="not a regular file")
    return SourceImage(relative, label, info.st_size, info.st_mtime_ns)


def _names(names: List[str]) -> str:
    shown = ", ".join(repr(name) for name in names[:LISTED])
    return shown + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")


@DatasetRegistry.register("imagefolder")
class ImageFolderDataset(BaseDataset):
    """Images in class folders (see the module docstring for the layout), decoded once into
    a cache and memory-mapped when larger than the memory budget.

    Args:
        root: the folder holding ``train/`` and ``val/`` (or ``test/``).
        image_size: resize the shorter side to this many pixels (Pillow BILINEAR) and crop
            the centre square; an integer >= 1. Without it all images must share one size.
        cache_dir: where the decoded cache lives (default ``ROOT/.exptrain-cache``; when
            the root cannot be written, ``$EXPTRAIN_CACHE_DIR`` or ``~/.cache/exptrain``,
            with a warning).
        memory_budget_mb: the most MiB (2**20 bytes) of decoded images read into memory, a
            number >= 0; a larger data set is memory-mapped from its cache (default: the
            smaller of 1 GiB and a quarter of physical memory).
        skip_bad_images: skip unreadable or truncated images with a warning (default: one
            error listing them).
        workers: decoding processes, an integer >= 1 (default ``min(4, cpu count)``).
        progress: show progress bars on stderr while the cache is built.
        data_dir: accepted for a uniform interface and ignored.
        augment, seed, augmentation: as for every data set (``BaseDataset``).

    Raises:
        ConfigError: a bad option value.
        DataError: a bad folder layout, unreadable images, mixed sizes without
            ``image_size`` (naming two files), or a cache folder that cannot be written.
        WriteError: the cache could not be written (disk full).

    Attributes:
        root, cache_path: the image folder, and the cache directory in use.
        cache_reused: the cache existed and was intact (nothing was decoded).
        memory_mapped: the images are a memory map of the cache, not in memory.
        skipped_files: ``[{"path", "reason"}]`` of the unreadable files skipped.
    """

    name = "imagefolder"
    mean = None
    std = None
    default_augmentation = "crop-flip"

    def __init__(
        self,
        root: Optional[Any] = None,
        image_size: Optional[int] = None,
        cache_dir: Optional[Any] = None,
        memory_budget_mb: Optional[float] = None,
        skip_bad_images: bool = False,
        workers: Optional[int] = None,
        progress: bool = True,
        data_dir: Optional[str] = None,
        augment: bool = True,
        seed: int = 42,
        augmentation: Optional[str] = None,
    ):
        super().__init__(augment=augment, seed=seed, augmentation=augmentation)
        if root is None:
            raise ConfigError(f"The imagefolder data set needs {FLAG} root=PATH, a folder laid out as {LAYOUT}.")
        root = _check_path(root, "root")
        if image_size is not None:
            image_size = check_int(image_size, self.name, "image_size", 1, flag=FLAG)
        if cache_dir is not None:
            cache_dir = _check_path(cache_dir, "cache_dir")
        budget = checks.memory_budget_bytes()
        if memory_budget_mb is not None:
            budget = int(check_number(memory_budget_mb, self.name, "memory_budget_mb", 0, flag=FLAG) * (1 << 20))
        skip_bad_images = check_bool(skip_bad_images, self.name, "skip_bad_images", flag=FLAG)
        workers = (
            check_int(workers, self.name, "workers", 1, flag=FLAG)
            if workers is not None
            else min(4, os.cpu_count() or 1)
        )
        progress = check_bool(progress, self.name, "progress", flag=FLAG)
        if image_size is not None:
            _check_decoding_memory(image_size, workers)

        listing = scan_image_folder(root)
        if listing.ignored:
            warnings.warn(
                f"Ignored {len(listing.ignored)} file{'s' if len(listing.ignored) > 1 else ''} in {root} "
                f"that {'are' if len(listing.ignored) > 1 else 'is'} not an image by extension: "
                f"{_names(listing.ignored)}.",
                stacklevel=2,
            )
        if cache_dir is not None:
            _check_cache_outside_splits(cache_dir, listing)
        cache_root = resolve_cache_dir(root, cache_dir)
        entry = open_cache(
            root,
            listing.class_names,
            listing.splits,
            listing.folders,
            image_size,
            cache_root,
            skip_bad_images=skip_bad_images,
            workers=workers,
            progress=progress,
        )
        meta = entry.meta
        if meta["skipped"]:
            warnings.warn(skipped_warning(root, meta["skipped"]), stacklevel=2)
        size = sum(_bytes(meta["splits"][split]["shape"]) for split in SPLITS)
        self.root, self.cache_path, self.cache_reused = root, entry.directory, entry.reused
        self.memory_mapped = size > budget
        self.memory_budget_bytes = budget
        self.skipped_files = list(meta["skipped"])
        self.image_size = image_size
        train_images, train_labels = load_split(entry, "train", self.memory_mapped)
        test_images, test_labels = load_split(entry, "test", self.memory_mapped)
        self._set_data(
            train_images,
            train_labels,
            test_images,
            test_labels,
            num_classes=len(listing.class_names),
            sources={split: entry.directory / f"{split}_labels.npy" for split in SPLITS},
            class_names=list(listing.class_names),
            mean=meta["mean"],
            std=meta["std"],
            content_sha256=meta["content_sha256"],
        )

    def describe(self) -> str:
        return f"{super().describe()}, from {self.root}"


def _check_path(value: Any, name: str) -> Path:
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise ConfigError(f"{FLAG} {name} for imagefolder must be a folder path, got {value!r}.")
    return Path(value)


def _check_decoding_memory(image_size: int, workers: int) -> None:
    """Refuse an image size whose decoding alone would exhaust memory: each process holds
    about four copies of one image (decoded, converted, resized, cropped)."""
    budget = checks.memory_budget_bytes()
    needed = 4 * 3 * image_size * image_size * workers
    if needed > budget:
        largest = int((budget / (12 * workers)) ** 0.5)
        raise ConfigError(
            f"{FLAG} image_size={image_size} for imagefolder would need about {format_bytes(needed)} to decode "
            f"with {workers} process{'es' if workers > 1 else ''}, over the {format_bytes(budget)} limit "
            f"({BUDGET_TEXT}); use image_size <= {largest:,}."
        )


def _check_cache_outside_splits(cache_root: Path, listing: FolderListing) -> None:
    """A cache inside train/ or val/ would become a class folder of the next scan."""
    resolved = cache_root.resolve()
    for split in SPLITS:
        folder = (listing.root / listing.folders[split]).resolve()
        if resolved == folder or folder in resolved.parents:
            raise ConfigError(
                f"{FLAG} cache_dir {cache_root} lies inside {folder}, where it would be read as "
                "images; choose a folder outside train/ and val/."
            )


def _bytes(shape: List[int]) -> int:
    total = 1
    for dimension in shape:
        total *= int(dimension)
    return total
