"""The decoded-image cache of an image folder: decode once, in parallel, reuse in milliseconds.

One directory per cache key under the cache folder::

    <key>/train_images.u8, test_images.u8   raw uint8 (N, C, H, W), C order, no header
    <key>/train_labels.npy, test_labels.npy int64 (N,)
    <key>/meta.json                         shapes, class names, per-channel mean/std of the
                                            training split, the content SHA-256, skipped files

The key is a SHA-256 of everything the pixels depend on: each file's relative path, size
and modification time (ns), the class names, the resize policy and image size, the
channel policy, the cache format and the Pillow version (decoders differ between
releases). Editing, adding or removing one image therefore builds a new cache; the one it
supersedes (same folder, same image size) is removed once the new one is in place.

A cache is built in a staging directory and renamed into place, so a killed build leaves
no half cache (its staging directory is removed by the next build on this host). Two
processes building the same key at once both finish; the first rename wins and the other
process uses that cache. Each use checks meta.json and every file's size against it; a
damaged cache is rebuilt with a warning, never trusted. The pixels are not re-hashed on
use (that would cost seconds per GB): a byte flipped inside an image file goes unnoticed.

Decoding (``decode_image``): pixels as stored (EXIF orientation ignored, as torchvision's
``ImageFolder`` does); the first frame of an animation. Channels: 1 when every image is
grey ("1", "L", "LA", "I", "I;16", "F"), else 3 (RGB). Transparency (RGBA, LA, palette or
tRNS transparency) is composited on black. 16-bit grey is scaled to 8 bits (v / 257,
rounded); float grey is rounded and clipped to 0..255. With ``image_size`` N, the shorter
side is resized to N with Pillow's BILINEAR filter (it widens its support when shrinking,
so it antialiases) and the centre N x N is cropped, as torchvision's ``Resize(N)`` plus
``CenterCrop(N)`` do.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import socket
import sys
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..errors import WriteError
from ..layout import pid_alive
from ..utils.io import atomic_write_text, fsync_directory
from .idx import DataError
from ..checks import format_bytes

FORMAT_VERSION = 1
RESIZE_POLICY = "shorter side to N (Pillow BILINEAR), centre crop N x N"
CHANNEL_POLICY = "1 if every image is grey, else RGB; transparency composited on black"
CACHE_DIR_ENV = "EXPTRAIN_CACHE_DIR"
SPLITS = ("train", "test")
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
HEADER_CHUNK = 256  # files per header-reading task
DECODE_CHUNK = 64  # files per decoding task
STREAM_BYTES = 8 << 20  # read size when hashing a built cache
LISTED = 5  # bad files named in an error or warning


@dataclass(frozen=True)
class SourceImage:
    """One image file of the folder: ``path`` relative to the root (POSIX), its label, and
    its size and modification time (``problem`` says why it could not even be stat'ed)."""

    path: str
    label: int
    size: int
    mtime_ns: int
    problem: str = ""


class CacheEntry(NamedTuple):
    directory: Path
    meta: Dict[str, Any]
    reused: bool


# -- decoding ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def image_extensions() -> frozenset:
    """Lower-case extensions (``".png"``) of the formats this Pillow can decode (formats it
    can only identify, such as WMF on Linux, are left out)."""
    from PIL import Image, ImageFile

    Image.init()
    stubs = {
        name
        for name, (factory, _) in Image.OPEN.items()
        if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile)
    }
    return frozenset(
        ext.lower() for ext, name in Image.registered_extensions().items() if name in Image.OPEN and name not in stubs
    )


def read_header(path: str) -> Tuple[int, int, str]:
    """``(width, height, mode)`` from the file's header, without decoding its pixels."""
    from PIL import Image

    with Image.open(path) as image:
        return image.size[0], image.size[1], image.mode


def decode_image(path: str, channels: int, image_size: Optional[int]) -> np.ndarray:
    """Decode one image to uint8 ``(channels, H, W)`` under the module's policies.

    Raises:
        Whatever Pillow raises for an unreadable or truncated file (the caller lists it).
    """
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        pixels = _to_grey(image) if channels == 1 else _to_rgb(image)
    if image_size is not None:
        pixels = resize_and_crop(pixels, image_size)
    array = np.asarray(pixels)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def _grey_array(image) -> np.ndarray:
    mode = image.mode
    if mode.startswith("I"):  # 16-bit (or 32-bit integer) grey: scale 0..65535 to 0..255
        values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        return ((values * 255 + 32767) // 65535).astype(np.uint8)
    if mode == "F":
        return np.clip(np.rint(np.nan_to_num(np.asarray(image))), 0, 255).astype(np.uint8)
    if "A" in mode or "a" in mode or "transparency" in image.info:
        grey_alpha = np.asarray(image.convert("LA")).astype(np.uint16)
        return ((grey_alpha[..., 0] * grey_alpha[..., 1] + 127) // 255).astype(np.uint8)
    return np.asarray(image.convert("L"))


def _to_grey(image):
    from PIL import Image

    return Image.fromarray(_grey_array(image))


def _to_rgb(image):
    from PIL import Image

    if image.mode in GREY_MODES:
        return Image.fromarray(_grey_array(image)).convert("RGB")
    if "A" in image.mode or "a" in image.mode or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA")).astype(np.uint16)
        return Image.fromarray(((rgba[..., :3] * rgba[..., 3:] + 127) // 255).astype(np.uint8))
    return image.convert("RGB")


def resize_and_crop(image, size: int):
    """Resize the shorter side to ``size`` (BILINEAR), then crop the centre ``size`` square."""
    from PIL import Image

    width, height = image.size
    if min(width, height) != size:
        if width <= height:
            new_size = (size, max(size, int(size * height / width)))
        else:
            new_size = (max(size, int(size * width / height)), size)
        image = image.resize(new_size, getattr(Image, "Resampling", Image).BILINEAR)  # Pillow < 9.1: Image.BILINEAR
        width, height = image.size
    left, top = int(round((width - size) / 2.0)), int(round((height - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _headers_task(paths: Sequence[str]) -> List[Any]:
    """Worker: ``(width, height, mode)`` per file, or the reason it cannot be opened."""
    results: List[Any] = []
    for path in paths:
        try:
            results.append(read_header(path))
        except Exception as exc:  # any Pillow plugin error means "cannot be read"
            results.append(_error_text(exc))
    return results


def _decode_task(
    output: str, shape: Tuple[int, int, int], image_size: Optional[int], items: Sequence[Tuple[int, str]]
) -> List[Tuple[int, str]]:
    """Worker: decode ``items`` (row, path) straight into row ``row`` of ``output``;
    returns ``(row, reason)`` for each file that failed to decode."""
    failures = []
    row_bytes = int(np.prod(shape))
    fd = os.open(output, os.O_WRONLY)
    try:
        for row, path in items:
            try:
                array = decode_image(path, shape[0], image_size)
                if array.shape != shape:
                    raise ValueError(
                        f"decoded to {array.shape[2]}x{array.shape[1]}, not {shape[2]}x{shape[1]} "
                        "(did the file change while it was read?)"
                    )
            except Exception as exc:
                failures.append((row, _error_text(exc)))
                continue
            data = memoryview(np.ascontiguousarray(array, dtype=np.uint8)).cast("B")
            offset = row * row_bytes
            while data:
                written = os.pwrite(fd, data, offset)
                data, offset = data[written:], offset + written
    finally:
        os.close(fd)
    return failures


def _run_tasks(
    function, tasks: Sequence[tuple], workers: int, progress: bool, description: str, sizes: Sequence[int]
) -> List[Any]:
    """``[function(*task) for task in tasks]``, in a process pool when ``workers > 1``, with a
    progress bar counting ``sizes[i]`` items for task ``i``."""
    from tqdm import tqdm

    results: List[Any] = [None] * len(tasks)
    with tqdm(
        total=sum(sizes),
        desc=description,
        unit="img",
        file=sys.stderr,
        disable=not progress,
        leave=description.startswith("Decoding"),
        dynamic_ncols=True,
    ) as bar:
        if workers <= 1 or len(tasks) <= 1:
            for index, task in enumerate(tasks):
                results[index] = function(*task)
                bar.update(sizes[index])
            return results
        # fork starts workers in milliseconds; spawn would re-import torch in each one.
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        pool = concurrent.futures.ProcessPoolExecutor(min(workers, len(tasks)), mp_context=context)
        try:
            futures = {pool.submit(function, *task): index for index, task in enumerate(tasks)}
            for future in concurrent.futures.as_completed(futures):
                index = futures[future]
                results[index] = future.result()
                bar.update(sizes[index])
        except concurrent.futures.process.BrokenProcessPool:
            raise DataError(
                f"A worker decoding images died (out of memory?); pass a smaller workers option (it was {workers})."
            ) from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return results


# -- the cache folder ---------------------------------------------------------------------


def resolve_cache_dir(root: Path, cache_dir: Optional[Any]) -> Path:
    """The folder that holds the caches, created if needed.

    ``cache_dir`` when given, else ``<root>/.exptrain-cache``; when the root cannot be
    written, ``$EXPTRAIN_CACHE_DIR`` or ``~/.cache/exptrain`` instead, with a warning.

    Raises:
        DataError: the chosen folder cannot be created or written.
    """
    if cache_dir is not None:
        return _writable_folder(
            Path(cache_dir), f"The image cache folder {cache_dir} (cache_dir)", "pass another cache_dir"
        )
    default = root / ".exptrain-cache"
    if _try_folder(default):
        return default
    fallback = Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "exptrain")
    warnings.warn(
        f"Cannot write the image cache next to the data ({default}); caching in {fallback} instead "
        f"(set ${CACHE_DIR_ENV} or the cache_dir option to choose).",
        stacklevel=3,
    )
    return _writable_folder(fallback, f"The image cache folder {fallback}", "pass a cache_dir you can write to")


def _try_folder(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def _writable_folder(folder: Path, described: str, remedy: str) -> Path:
    if not _try_folder(folder):
        raise DataError(f"{described} cannot be created or written; {remedy}.")
    return folder


def cache_key(
    root: Path,
    class_names: Sequence[str],
    splits: Mapping[str, Sequence[SourceImage]],
    folders: Mapping[str, str],
    image_size: Optional[int],
) -> str:
    """SHA-256 hex of everything the cached pixels and labels depend on."""
    from PIL import __version__ as pillow_version

    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            {
                "format": FORMAT_VERSION,
                "pillow": pillow_version,
                "image_size": image_size,
                "resize": RESIZE_POLICY if image_size is not None else "none",
                "channels": CHANNEL_POLICY,
                "classes": list(class_names),
                "folders": dict(folders),
            }
        ).encode()
    )
    digest.update(
        json.dumps(
            [
                [split, image.path, image.label, image.size, image.mtime_ns]
                for split in SPLITS
                for image in splits[split]
            ]
        ).encode()
    )
    return digest.hexdigest()


def _lineage(root: Path, image_size: Optional[int]) -> str:
    """What a cache is a version of: caches of one lineage supersede each other."""
    return hashlib.sha256(json.dumps([str(root.resolve()), image_size, FORMAT_VERSION]).encode()).hexdigest()


def open_cache(
    root: Path,
    class_names: Sequence[str],
    splits: Mapping[str, Sequence[SourceImage]],
    folders: Mapping[str, str],
    image_size: Optional[int],
    cache_root: Path,
    skip_bad_images: bool = False,
    workers: int = 1,
    progress: bool = True,
) -> CacheEntry:
    """The valid cache of this listing: reused when present and intact, else built.

    Args:
        splits: ``{"train": [...], "test": [...]}`` in sample order.
        folders: the split folder names (``{"train": "train", "test": "val"}``), for messages.

    Raises:
        DataError: unreadable images (unless ``skip_bad_images``), mixed sizes without
            ``image_size``, a split left empty, too little disk space, or files that changed
            while they were decoded.
        WriteError: the cache could not be written (disk full, permissions).
    """
    key = cache_key(root, class_names, splits, folders, image_size)
    directory = cache_root / key
    meta = _valid_meta(directory, key, len(class_names))
    if meta is None:
        meta = _build(
            root, class_names, splits, folders, image_size, cache_root, key, skip_bad_images, workers, progress
        )
        entry = CacheEntry(directory, meta, reused=False)
    else:
        entry = CacheEntry(directory, meta, reused=True)
    if entry.meta["skipped"] and not skip_bad_images:  # built by a run that skipped them
        raise DataError(_bad_files_message(root, entry.meta["skipped"]))
    return entry


def load_split(entry: CacheEntry, split: str, memory_map: bool) -> Tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` of one split: images read into memory, or a read-only
    ``np.memmap`` of the cache file when ``memory_map``."""
    shape = tuple(entry.meta["splits"][split]["shape"])
    path = entry.directory / f"{split}_images.u8"
    if memory_map:
        images = np.memmap(path, dtype=np.uint8, mode="r", shape=shape)
    else:
        images = np.fromfile(path, dtype=np.uint8).reshape(shape)
    labels = np.load(entry.directory / f"{split}_labels.npy", allow_pickle=False)
    return images, labels


def _valid_meta(directory: Path, key: str, num_classes: int) -> Optional[Dict[str, Any]]:
    """The cache's meta.json when the cache is complete and consistent; ``None`` when it
    does not exist; a damaged cache is moved away (with a warning) and ``None`` returned."""
    if not os.path.lexists(directory):
        return None
    try:
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        problem = _meta_problem(directory, meta, key, num_classes)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        problem = _error_text(exc)
    if problem is None:
        return meta
    warnings.warn(f"The image cache {directory} is damaged ({problem}); rebuilding it.", stacklevel=4)
    _remove_tree(directory)
    return None


def _meta_problem(directory: Path, meta: Dict[str, Any], key: str, num_classes: int) -> Optional[str]:
    if meta.get("format_version") != FORMAT_VERSION or meta.get("key") != key:
        return "meta.json belongs to another cache format or key"
    if len(meta["class_names"]) != num_classes or not isinstance(meta["content_sha256"], str):
        return "meta.json disagrees with the folder's classes"
    channels = None
    for split in SPLITS:
        info = meta["splits"][split]
        shape = [int(d) for d in info["shape"]]
        if len(shape) != 4 or min(shape) < 1 or (channels is not None and shape[1:] != channels):
            return f"bad {split} shape {shape} in meta.json"
        channels = shape[1:]
        images = directory / f"{split}_images.u8"
        if images.stat().st_size != math.prod(shape):
            return f"{images.name} holds {images.stat().st_size} bytes, meta.json says {math.prod(shape)}"
        labels_file = directory / f"{split}_labels.npy"
        if hashlib.sha256(labels_file.read_bytes()).hexdigest() != info["labels_sha256"]:
            return f"{labels_file.name} does not match meta.json"
        labels = np.load(labels_file, allow_pickle=False)
        if labels.shape != (shape[0],) or labels.dtype != np.int64:
            return f"{labels_file.name} holds {labels.dtype} {labels.shape}, not int64 ({shape[0]},)"
    statistics = [float(v) for v in meta["mean"] + meta["std"]]
    if len(statistics) != 2 * channels[0] or not all(math.isfinite(v) for v in statistics):
        return "bad mean/std in meta.json"
    return None


# -- building --------------------------------------------------------------------------


def _build(
    root: Path,
    class_names: Sequence[str],
    splits: Mapping[str, Sequence[SourceImage]],
    folders: Mapping[str, str],
    image_size: Optional[int],
    cache_root: Path,
    key: str,
    skip_bad_images: bool,
    workers: int,
    progress: bool,
) -> Dict[str, Any]:
    _remove_abandoned(cache_root)
    staging = cache_root / f".staging-{key[:16]}-{_owner_tag()}-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir()
        meta = _decode_into(staging, root, class_names, splits, folders, image_size, skip_bad_images, workers, progress)
        meta["key"] = key
        meta["lineage"] = _lineage(root, image_size)
        atomic_write_text(staging / "meta.json", json.dumps(meta, indent=1))
        fsync_directory(staging)
        final = cache_root / key
        try:
            os.rename(staging, final)
        except OSError:  # another process finished first: keep its cache
            other = _valid_meta(final, key, len(class_names))
            if other is None:
                raise
            return other
        fsync_directory(cache_root)
    except OSError as exc:
        raise WriteError(
            f"Could not write the image cache in {cache_root}: {exc.strerror or exc}; "
            "free disk space or pass another cache_dir."
        ) from None
    finally:
        if os.path.lexists(staging):
            _remove_tree(staging)
    _remove_superseded(cache_root, key, meta["lineage"])
    return meta


def _decode_into(
    staging: Path,
    root: Path,
    class_names: Sequence[str],
    splits: Mapping[str, Sequence[SourceImage]],
    folders: Mapping[str, str],
    image_size: Optional[int],
    skip_bad_images: bool,
    workers: int,
    progress: bool,
) -> Dict[str, Any]:
    """Read the headers, decide the shape, decode every image into ``staging``; returns the
    meta without key and lineage."""
    everything = [image for split in SPLITS for image in splits[split]]
    bad: Dict[str, str] = {image.path: image.problem for image in everything if image.problem}
    readable = [image for image in everything if not image.problem]
    paths = [str(root / image.path) for image in readable]
    tasks = [(paths[i : i + HEADER_CHUNK],) for i in range(0, len(paths), HEADER_CHUNK)]
    headers = [
        h
        for part in _run_tasks(
            _headers_task, tasks, workers, progress, "Reading image headers", [len(t[0]) for t in tasks]
        )
        for h in part
    ]
    sizes: Dict[str, Tuple[int, int]] = {}
    all_grey = True
    for image, header in zip(readable, headers):
        if isinstance(header, str):
            bad[image.path] = header
        else:
            sizes[image.path] = header[:2]
            all_grey = all_grey and header[2] in GREY_MODES
    if not sizes:
        raise DataError(
            _bad_files_message(root, _as_list(bad))
            if not skip_bad_images
            else f"No image in {root} could be read ({len(bad)} unreadable files skipped); fix or replace the files."
        )
    # Files that cannot be opened are reported with the truncated ones after decoding, in one error.
    if image_size is None:
        height, width = _common_size(root, sizes)
    else:
        height = width = image_size
    shape = (1 if all_grey else 3, height, width)
    row_bytes = math.prod(shape)
    kept = {split: [image for image in splits[split] if image.path in sizes] for split in SPLITS}
    _check_disk_space(staging, row_bytes * sum(len(v) for v in kept.values()))

    tasks, counts = [], []
    for split in SPLITS:
        output = staging / f"{split}_images.u8"
        with open(output, "wb") as handle:
            handle.truncate(row_bytes * len(kept[split]))
        rows = [(row, str(root / image.path)) for row, image in enumerate(kept[split])]
        for i in range(0, len(rows), DECODE_CHUNK):
            tasks.append((str(output), shape, image_size, rows[i : i + DECODE_CHUNK]))
            counts.append(len(rows[i : i + DECODE_CHUNK]))
    failures = _run_tasks(_decode_task, tasks, workers, progress, "Decoding images", counts)
    failed_rows = {split: set() for split in SPLITS}
    for task, failed in zip(tasks, failures):
        split = Path(task[0]).name.split("_")[0]
        for row, reason in failed:
            bad[kept[split][row].path] = reason
            failed_rows[split].add(row)
    if bad and not skip_bad_images:
        raise DataError(_bad_files_message(root, _as_list(bad)))
    _check_unchanged(root, kept)

    meta_splits = {}
    labels = {}
    for split in SPLITS:
        if failed_rows[split]:
            keep = [row for row in range(len(kept[split])) if row not in failed_rows[split]]
            _compact(staging / f"{split}_images.u8", row_bytes, keep)
            kept[split] = [kept[split][row] for row in keep]
        if not kept[split]:
            raise DataError(
                f"No image in {root / folders[split]} could be read ({len(bad)} unreadable files "
                f"skipped); fix or replace the files."
            )
        labels[split] = np.array([image.label for image in kept[split]], dtype=np.int64)
        _save_npy(staging / f"{split}_labels.npy", labels[split])
        meta_splits[split] = {
            "folder": folders[split],
            "shape": [len(kept[split]), *shape],
            "labels_sha256": hashlib.sha256((staging / f"{split}_labels.npy").read_bytes()).hexdigest(),
        }
    content_sha256, mean, std = _digest_and_statistics(staging, meta_splits, labels)
    for split in SPLITS:
        with open(staging / f"{split}_images.u8", "rb+") as handle:
            os.fsync(handle.fileno())
    from PIL import __version__ as pillow_version

    return {
        "format_version": FORMAT_VERSION,
        "root": str(root.resolve()),
        "image_size": image_size,
        "resize": RESIZE_POLICY if image_size is not None else "none",
        "channel_policy": CHANNEL_POLICY,
        "pillow": pillow_version,
        "class_names": list(class_names),
        "splits": meta_splits,
        "mean": mean,
        "std": std,
        "content_sha256": content_sha256,
        "skipped": _as_list(bad),
    }


def _as_list(bad: Mapping[str, str]) -> List[Dict[str, str]]:
    return [{"path": path, "reason": bad[path]} for path in sorted(bad)]


def _bad_files_message(root: Path, bad: Sequence[Mapping[str, str]]) -> str:
    listed = "; ".join(f"{item['path']} ({item['reason']})" for item in bad[:LISTED])
    more = f" and {len(bad) - LISTED} more" if len(bad) > LISTED else ""
    count = f"{len(bad)} image file{'s' if len(bad) != 1 else ''}"
    return (
        f"{count} in {root} cannot be read: {listed}{more}; replace or remove "
        f"{'them' if len(bad) != 1 else 'it'}, or pass --dataset-option skip_bad_images=true to skip "
        f"{'them' if len(bad) != 1 else 'it'}."
    )


def skipped_warning(root: Path, skipped: Sequence[Mapping[str, str]]) -> str:
    listed = ", ".join(item["path"] for item in skipped[:LISTED])
    more = f" and {len(skipped) - LISTED} more" if len(skipped) > LISTED else ""
    return f"Skipped {len(skipped)} unreadable image file{'s' if len(skipped) != 1 else ''} in {root}: {listed}{more}."


def _common_size(root: Path, sizes: Mapping[str, Tuple[int, int]]) -> Tuple[int, int]:
    """The one ``(height, width)`` all images share, or a DataError naming two that differ."""
    paths = sorted(sizes)
    first = paths[0]
    for path in paths:
        if sizes[path] != sizes[first]:
            (w1, h1), (w2, h2) = sizes[first], sizes[path]
            raise DataError(
                f"The images in {root} have different sizes ({first} is {w1}x{h1}, {path} is {w2}x{h2}); "
                "pass --image-size N to resize the shorter side to N and centre-crop N x N."
            )
    width, height = sizes[first]
    return height, width


def _check_disk_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed + (16 << 20) > free:
        raise DataError(
            f"The image cache needs {format_bytes(needed)} in {folder.parent}, but only "
            f"{format_bytes(free)} is free; free disk space or pass a cache_dir on a larger disk."
        )


def _check_unchanged(root: Path, kept: Mapping[str, Sequence[SourceImage]]) -> None:
    for split in SPLITS:
        for image in kept[split]:
            try:
                stat = os.stat(root / image.path)
                changed = (stat.st_size, stat.st_mtime_ns) != (image.size, image.mtime_ns)
            except OSError:
                changed = True
            if changed:
                raise DataError(f"{root / image.path} changed while the image cache was built; run again.")


def _compact(path: Path, row_bytes: int, keep: Sequence[int]) -> None:
    """Move the rows ``keep`` (ascending) to the front of ``path`` and cut the rest."""
    with open(path, "r+b") as handle:
        for destination, source in enumerate(keep):
            if destination != source:
                handle.seek(source * row_bytes)
                data = handle.read(row_bytes)
                handle.seek(destination * row_bytes)
                handle.write(data)
        handle.truncate(len(keep) * row_bytes)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())


def _digest_and_statistics(
    staging: Path, meta_splits: Mapping[str, Any], labels: Mapping[str, np.ndarray]
) -> Tuple[str, List[float], List[float]]:
    """One streaming pass over the image files: the content SHA-256 exactly as
    ``BaseDataset.fingerprint`` computes it, and the training split's per-channel mean and
    (population) std on the 0..1 scale, from exact integer histograms (std 1 for a
    constant channel, as ``channel_statistics``)."""
    digest = hashlib.sha256()
    shape = meta_splits["train"]["shape"]
    channels, row_bytes = shape[1], math.prod(shape[1:])
    histogram = np.zeros((channels, 256), dtype=np.int64)
    for split in SPLITS:
        split_shape = meta_splits[split]["shape"]
        digest.update(f"{split}_images |u1 {list(split_shape)}\n".encode())
        rows_per_read = max(1, STREAM_BYTES // row_bytes)
        buffer = bytearray(rows_per_read * row_bytes)
        with open(staging / f"{split}_images.u8", "rb") as handle:
            while True:
                count = handle.readinto(buffer)
                if not count:
                    break
                view = memoryview(buffer)[:count]
                digest.update(view)
                if split == "train":
                    block = np.frombuffer(view, dtype=np.uint8).reshape(-1, channels, row_bytes // channels)
                    for channel in range(channels):
                        histogram[channel] += np.bincount(block[:, channel].ravel(), minlength=256)
        array = labels[split]
        digest.update(f"{split}_labels {array.dtype.str} {list(array.shape)}\n".encode())
        digest.update(array.tobytes())
    values = np.arange(256, dtype=np.int64)
    mean, std = [], []
    for channel in range(channels):
        count = int(histogram[channel].sum())
        total = int((histogram[channel] * values).sum())
        squares = sum(int(c) * v * v for v, c in enumerate(histogram[channel].tolist()))
        mean.append(total / (255 * count))
        deviation = math.sqrt(max(count * squares - total * total, 0)) / (255 * count)
        std.append(deviation if deviation > 1e-6 else 1.0)  # as channel_statistics: never divide by 0
    return digest.hexdigest(), mean, std


# -- housekeeping -----------------------------------------------------------------------


def _owner_tag() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _remove_tree(directory: Path) -> None:
    """Rename ``directory`` out of the way (atomic), then delete it; quiet if it is gone."""
    trash = directory.with_name(f".trash-{_owner_tag()}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(directory, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _remove_abandoned(cache_root: Path) -> None:
    """Delete staging and trash folders left by killed processes of this host."""
    host = socket.gethostname()
    for entry in cache_root.iterdir():
        if not entry.name.startswith((".staging-", ".trash-")):
            continue
        owner, pid, _ = (entry.name.rsplit("-", 2) + ["", ""])[:3]  # ".staging-<key>-<host>", pid, random
        if owner.endswith("-" + host) and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _remove_superseded(cache_root: Path, key: str, lineage: str) -> None:
    """Remove the caches of the same folder and image size that this one replaces."""
    for entry in cache_root.iterdir():
        if entry.name == key or len(entry.name) != 64 or not entry.is_dir():
            continue
        try:
            meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("lineage") == lineage:
            _remove_tree(entry)
