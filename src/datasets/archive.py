"""Data sets shipped as one archive of pickled files: fetch the archive, extract it
safely, and unpickle its files without running code from them.

Extraction refuses any member that could land outside the target folder (an absolute
path, a ``..`` component) and anything but plain files and folders (links, devices,
FIFOs). It writes into a staging folder next to the target and renames the result into
place, so an interrupted download or extraction never leaves a half-written folder.

Unpickling allows only plain containers, bytes, strings and numbers, plus exactly the
numpy globals an ndarray of numbers needs; any other global (``os.system``,
``builtins.eval``, ...) is refused before it is looked up.
"""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..utils.io import fsync_directory, remove_stale_temporaries, temp_path_for
from .idx import DATA_DIR_ENV, DataError, check_writable, download_file, md5_of

MAX_EXTRACTED_BYTES = 1 << 30  # an official archive unpacks to ~180 MB; more is a bomb
MAX_MEMBERS = 10_000


# -- restricted unpickling ---------------------------------------------------------


class _Refused(Exception):
    """A pickle asked for something a data file never needs."""


def _numpy_reconstruct():
    try:  # numpy >= 2 moved it; numpy.core still works there but warns
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _NdarrayToken:
    """Stands for ``numpy.ndarray`` in a pickle: only ``_reconstruct`` may take it.

    Calling the real class from a pickle could allocate an array of any size that no
    bytes in the file back; ``_reconstruct`` then fills the array from the file's bytes.
    Instances have no ``__dict__``, so a pickle's BUILD cannot change them.
    """

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _Refused("calls numpy.ndarray directly")


class _CheckedReconstruct:
    """``numpy``'s ``_reconstruct(ndarray, (0,), b"b")``, refusing any other arguments."""

    __slots__ = ()

    def __call__(self, subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
        if not isinstance(subtype, _NdarrayToken) or shape not in ((0,), [0]) or typecode not in (b"b", "b"):
            raise _Refused("calls numpy's _reconstruct with unusual arguments")
        return _numpy_reconstruct()(np.ndarray, (0,), b"b")


class _CheckedDtype:
    """``numpy.dtype(code, align, copy)`` for a plain bool, integer or float type only.

    Always a copy, so a pickle's BUILD (``__setstate__``) cannot alter numpy's shared
    ``uint8`` descriptor.
    """

    __slots__ = ()

    def __call__(self, code: Any, align: Any = False, copy: Any = True) -> np.dtype:
        if isinstance(code, bytes):
            code = code.decode("ascii", "replace")
        if not isinstance(code, str) or len(code) > 8:
            raise _Refused("asks for a numpy.dtype that is not a number type")
        dtype = np.dtype(code)
        if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
            raise _Refused(f"asks for the non-numeric numpy.dtype {code!r}")
        return np.dtype(code, align=False, copy=True)


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _CheckedReconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _CheckedReconstruct(),
    ("numpy", "ndarray"): _NdarrayToken(),
    ("numpy", "dtype"): _CheckedDtype(),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise _Refused(f"asks for {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("asks for a persistent object")


def _check_arrays(content: Any) -> None:
    """Refuse an array whose dtype a pickle's BUILD turned structured (``__setstate__``
    can give a ``uint8`` descriptor fields, and it still compares equal to ``uint8``)."""
    stack, seen = [content], set()
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, np.ndarray):
            dtype = item.dtype
            if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
                raise _Refused(f"holds a numpy array of the altered type {dtype!r}")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


def load_restricted_pickle(path: Path, what: str) -> Any:
    """Unpickle ``path`` allowing only containers, bytes, strings, numbers and numeric
    numpy arrays; nothing in the file is executed.

    Python 2 pickles (the official CIFAR files) are read with ``encoding="latin1"``, as
    numpy advises, so their byte strings come back as ``str``; a file written by
    Python 3 may hold ``bytes`` keys. Callers accept both.

    Args:
        what: what the file should be, for messages, e.g. ``"a CIFAR batch"``.

    Raises:
        DataError: the file asks for any other global (refused before it is imported:
            the message says the file was not loaded), or is unreadable or damaged.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            content = _RestrictedUnpickler(handle, encoding="latin1").load()
        _check_arrays(content)
        return content
    except _Refused as refused:
        raise DataError(
            f"{path} is not {what}: it {refused}, which {what} never does, so it was not loaded; "
            "replace it with the file from the official archive."
        ) from None
    except OSError as exc:
        raise DataError(
            f"Cannot read {path}: {exc.strerror or exc}; replace it with the file from the official archive."
        ) from None
    except Exception as exc:  # untrusted bytes: any failure of the unpickler means a damaged file
        raise DataError(
            f"{path} is not {what} (unpickling failed: {type(exc).__name__}: {exc}); "
            "replace it with the file from the official archive."
        ) from None


# -- safe extraction ---------------------------------------------------------------


def _refuse_member(archive: Path, member: tarfile.TarInfo, why: str) -> DataError:
    return DataError(
        f"The archive {archive} holds the member {member.name!r}, {why}; nothing was extracted. "
        "Delete the archive and download it again from the official site."
    )


def _check_member(archive: Path, member: tarfile.TarInfo) -> None:
    name = member.name
    parts = PurePosixPath(name).parts
    if not name or name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute():
        raise _refuse_member(archive, member, "an absolute path")
    if ".." in parts or ".." in name.split("\\"):
        raise _refuse_member(archive, member, "a path with '..' that leads outside the target folder")
    if member.issym() or member.islnk():
        raise _refuse_member(archive, member, f"a link (to {member.linkname!r}), which a data archive never holds")
    if not (member.isfile() or member.isdir()):
        raise _refuse_member(archive, member, "a device, FIFO or other special file")


def extract_folder(archive: Path, folder: Path, required: Sequence[str], max_bytes: int = MAX_EXTRACTED_BYTES) -> None:
    """Extract the folder ``folder.name`` of a tar archive into ``folder``.

    The archive unpacks into a staging folder next to ``folder``; if ``folder`` does not
    exist the extracted folder is renamed into place in one step, otherwise only the
    ``required`` files it lacks are moved in (each by an atomic rename). The staging
    folder is removed in every case. Python's ``filter="data"`` is applied where it
    exists (3.11.4+), on top of this module's own checks.

    Raises:
        DataError: the archive is damaged or not a tar, holds a member that is absolute,
            has a ``..`` component, is a link or special file, unpacks to more than
            ``max_bytes``, or lacks ``folder.name/<file>`` for a required file; or the
            extraction failed (a full disk). Nothing is left behind in any case.
    """
    archive, folder = Path(archive), Path(folder)
    staging = temp_path_for(folder)
    extract_options = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    try:
        staging.mkdir(parents=True)
        total, count = 0, 0
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:  # one streaming pass: check each member, then extract it
                _check_member(archive, member)
                total, count = total + member.size, count + 1
                if total > max_bytes or count > MAX_MEMBERS:
                    raise _refuse_member(
                        archive, member, f"past the limit of {max_bytes:,} bytes or {MAX_MEMBERS:,} members"
                    )
                tar.extract(member, staging, set_attrs=False, **extract_options)
        extracted = staging / folder.name
        lacking = [name for name in required if not (extracted / name).is_file()]
        if lacking:
            raise DataError(
                f"The archive {archive} does not hold {', '.join(folder.name + '/' + n for n in lacking)}; "
                "it is not the expected archive, delete it and download it again."
            )
        for name in required:  # durable before the rename makes them visible
            _fsync_file(extracted / name)
        _move_into_place(extracted, folder, required)
    except DataError:
        raise
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise DataError(
            f"The archive {archive} is damaged or not a tar archive ({exc}); delete it and download it again."
        ) from None
    except OSError as exc:
        raise DataError(
            f"Could not extract {archive} into {folder.parent}: {exc.strerror or exc}; "
            "free disk space or fix the permissions, then try again."
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fsync_file(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move_into_place(extracted: Path, folder: Path, required: Sequence[str]) -> None:
    if not os.path.lexists(folder):
        try:
            os.rename(extracted, folder)
            fsync_directory(folder.parent)
            return
        except OSError:  # another process created it meanwhile: fill in what it lacks
            pass
    for name in required:
        if not (folder / name).is_file():
            _replace_across(extracted / name, folder / name)
    fsync_directory(folder)


def _replace_across(source: Path, destination: Path) -> None:
    """``os.replace``, or where ``destination`` lies on another file system (a data
    folder that is a symlink elsewhere), a copy to a temporary sibling then a replace."""
    try:
        os.replace(source, destination)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = temp_path_for(destination)
        try:
            shutil.copyfile(source, tmp)
            _fsync_file(tmp)
            os.replace(tmp, destination)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)


# -- the whole fetch ---------------------------------------------------------------


def _is_verified(archive: Path, md5: Optional[str]) -> bool:
    """``archive`` is a readable file with the expected MD5 (an unreadable one is fetched again)."""
    try:
        return md5 is not None and archive.is_file() and md5_of(archive) == md5
    except OSError:
        return False


def ensure_archive_folder(
    folder: Path,
    required: Sequence[str],
    archive_name: str,
    mirrors: Sequence[str],
    md5: Optional[str],
    display_name: str,
    download: bool = True,
    progress: bool = True,
) -> Dict[str, Path]:
    """Return the path of each ``required`` file in ``folder``, fetching the archive
    (``<folder's parent>/archive_name``) and extracting it when any is missing.

    An archive already next to ``folder`` is reused when its MD5 matches (torchvision
    keeps it there too); otherwise it is downloaded from the first mirror that works,
    verified and kept. What a killed earlier attempt left (a temporary archive, a staging
    folder) is removed first.

    Raises:
        DataError: a required path is not a file; files are missing and ``download`` is
            false, every mirror failed, or the parent folder cannot be written; one message names ``folder``, the
            files to put there and where the archive comes from. Also any error of
            ``extract_folder``.
    """
    folder = Path(folder)
    for name in required:
        if os.path.lexists(folder / name) and not (folder / name).is_file():
            raise DataError(
                f"{folder / name} is not a file (a folder or a broken link); remove it, or put the {display_name} "
                f"file {name} there."
            )
    missing = [name for name in required if not (folder / name).is_file()]
    if not missing:
        return {name: folder / name for name in required}
    source = mirrors[0].rstrip("/") + "/" + archive_name if mirrors else archive_name
    put_there = (
        f"{display_name} needs the files {', '.join(required)} in {folder}; put them there "
        f"(extract {source} into {folder.parent}), or point --data-dir / ${DATA_DIR_ENV} at a folder holding {folder.name}."
    )
    if not download:
        raise DataError(f"{display_name} is not downloaded ({', '.join(missing)} missing). {put_there}")
    root = folder.parent
    check_writable(root, display_name, f"extract {source} there yourself")
    remove_stale_temporaries(root, (archive_name, folder.name))
    archive = root / archive_name
    if not _is_verified(archive, md5):
        errors: List[str] = []
        for mirror in mirrors:
            try:
                download_file(mirror.rstrip("/") + "/" + archive_name, archive, md5, progress=progress)
                break
            except DataError as exc:
                errors.append(str(exc))
        else:
            reason = errors[-1] if errors else "no mirror given"
            raise DataError(f"Could not download {display_name} ({reason}). {put_there}")
    extract_folder(archive, folder, required)
    return {name: folder / name for name in required}
