"""IDX files (the MNIST family's format): locate, read and validate, download and verify,
and the checks that a data folder can be used at all (before anything is read or fetched).

The folder layout is torchvision's (``<root>/<Name>/raw/<file>``, gzipped or not), so
existing torchvision downloads are reused as they are.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from ..errors import BadInputError, ConfigError, DataError  # noqa: F401 (DataError: re-exported, its old home)
from ..utils.io import temp_path_for, fsync_directory

IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

DATA_DIR_ENV = "EXPTRAIN_DATA_DIR"
DOWNLOAD_TIMEOUT_S = 30
_IDX_DTYPE = {0x08: np.uint8}


def resolve_data_root(data_dir: Optional[str] = None) -> Path:
    """The data root: the argument, else ``$EXPTRAIN_DATA_DIR``, else ``./data``.

    A root that does not exist yet is fine (a download creates it).

    Raises:
        ConfigError: ``data_dir`` is not a path.
        DataError: the root (or a folder above it) is a file, or a folder this process
            cannot read; the message says which setting named it.
    """
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise ConfigError(f"--data-dir must be a folder path, got {data_dir!r}.")
    if data_dir:
        root = Path(data_dir)
        described = f"The data folder {root} (from --data-dir)"
    elif os.environ.get(DATA_DIR_ENV):
        root = Path(os.environ[DATA_DIR_ENV])
        described = f"The data folder {root} (from ${DATA_DIR_ENV})"
    else:
        root = Path("data")
        described = f"The default data folder {root} (no --data-dir or ${DATA_DIR_ENV} given)"
    check_data_folder(root, described)
    return root


def check_data_folder(
    folder: Path, described: str, remedy: str = f"point --data-dir or ${DATA_DIR_ENV} at another folder"
) -> None:
    """Refuse a data folder that is a file (or lies below one) or cannot be read.

    A folder that does not exist yet passes; the nearest existing folder above it must
    then be one this process can enter. ``os.access`` asks the kernel, so a process with
    the rights to bypass permissions (root) passes where a user would not.

    Args:
        described: the sentence's subject, e.g. ``"The data folder x (from --data-dir)"``.
        remedy: the alternative to fixing the folder, e.g. ``"point --data-dir at another folder"``.

    Raises:
        DataError: one sentence naming the path and what to do.
    """
    folder = Path(folder)
    existing = folder
    while not os.path.lexists(existing) and existing.parent != existing:
        existing = existing.parent
    if os.path.lexists(existing) and not os.path.isdir(existing):
        where = "" if existing == folder else f" lies inside {existing}, which"
        raise DataError(f"{described}{where} is a file, not a folder; move the file away or {remedy}.")
    mode = os.R_OK | os.X_OK if existing == folder else os.X_OK
    if os.path.isdir(existing) and not os.access(existing, mode):
        where = "" if existing == folder else f" ({existing} above it cannot be entered)"
        raise DataError(f"{described} cannot be read{where}; give this user read access (chmod u+rx) or {remedy}.")


def find_idx_file(folder: Path, name: str) -> Optional[Path]:
    """``folder/name`` or its uncompressed twin (``name`` without ``.gz``), if present."""
    for candidate in (folder / name, folder / name[: -len(".gz")]):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzipped when its name ends in ``.gz``).

    Raises:
        DataError: the file is truncated, not IDX, or its size disagrees with its header.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                raw = handle.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"Cannot read {path}: {exc}; delete it and download or copy it again.") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPE:
        raise DataError(f"{path} is not an IDX file (bad header); delete it and download or copy it again.")
    ndim = raw[3]
    header_size = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header_size:
        raise DataError(f"{path} has a truncated IDX header; delete it and download or copy it again.")
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    expected = int(np.prod(shape)) + header_size
    if len(raw) != expected:
        raise DataError(
            f"{path} holds {len(raw)} bytes but its header {tuple(shape)} needs {expected}; "
            "the file is truncated or corrupt, delete it and download or copy it again."
        )
    return np.frombuffer(raw, dtype=_IDX_DTYPE[raw[2]], offset=header_size).reshape(shape)


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(url: str, destination: Path, md5: Optional[str], progress: bool = True) -> None:
    """Download ``url`` to ``destination`` atomically, verifying its MD5 before the rename.

    Raises:
        DataError: on a network error or a checksum mismatch; nothing is left at
            ``destination`` (nor a temporary file) in either case.
    """
    from tqdm.auto import tqdm

    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(destination)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=destination.name, disable=not progress, leave=False
            ) as bar:
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if md5 is not None and digest.hexdigest() != md5:
            raise DataError(
                f"Checksum mismatch for {url}: got MD5 {digest.hexdigest()}, expected {md5}; "
                "the mirror served a different or damaged file."
            )
        os.replace(tmp, destination)
        fsync_directory(destination.parent)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DataError(f"Download of {url} failed: {exc}.") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def ensure_idx_files(
    folder: Path,
    mirrors: Sequence[str],
    md5s: Dict[str, str],
    display_name: str,
    extra_folders: Iterable[Path] = (),
    download: bool = True,
    progress: bool = True,
) -> Dict[str, Path]:
    """Return the path of each of the four IDX files, downloading the missing ones.

    Files are looked for in ``folder`` and then in ``extra_folders`` (e.g. a system
    package); missing ones are downloaded into ``folder`` from the first mirror that works.

    Raises:
        DataError: when a file is missing and cannot be downloaded (offline, say, or
            ``folder`` cannot be written, which is checked before any download); the
            message names the folder, the four files and the offline alternative.
    """
    found: Dict[str, Path] = {}
    for name in IDX_FILES:
        for candidate_folder in (folder, *extra_folders):
            path = find_idx_file(candidate_folder, name)
            if path is not None:
                found[name] = path
                break
    missing = [name for name in IDX_FILES if name not in found]
    if not missing:
        return found
    offline_help = (
        f"{display_name} needs the files {', '.join(IDX_FILES)} in {folder}; "
        f"copy them there (gzipped or not), point --data-dir / ${DATA_DIR_ENV} at a folder "
        "holding them, or use --dataset mnist-sample, which needs no download."
    )
    if not download:
        raise DataError(f"{display_name} is not downloaded. {offline_help}")
    check_writable(folder, display_name, f"copy {', '.join(IDX_FILES)} there")
    errors: List[str] = []
    for name in missing:
        for mirror in mirrors:
            try:
                download_file(mirror.rstrip("/") + "/" + name, folder / name, md5s.get(name), progress=progress)
                found[name] = folder / name
                break
            except DataError as exc:
                errors.append(str(exc))
        else:
            raise DataError(f"Could not download {display_name} ({errors[-1]}). {offline_help}")
    return found


def check_writable(folder: Path, display_name: str, alternative: str) -> None:
    """Before downloading: ``folder`` exists or can be created, and can be written.

    Raises:
        DataError: naming the folder and ``alternative`` (what to put there instead).
    """
    existing = folder
    while not os.path.lexists(existing) and existing.parent != existing:
        existing = existing.parent
    if os.path.isdir(existing) and os.access(existing, os.W_OK | os.X_OK):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return
        except OSError as exc:
            reason = exc.strerror or str(exc)
    else:
        reason = f"{existing} is not a folder" if not os.path.isdir(existing) else "permission denied"
    raise DataError(
        f"Cannot download {display_name}: this user cannot write to {folder} ({reason}); make it writable, "
        f"point --data-dir or ${DATA_DIR_ENV} at a writable folder, or {alternative}."
    )
