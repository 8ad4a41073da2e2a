"""A bad data folder (--data-dir, $EXPTRAIN_DATA_DIR, or a file where MNIST/raw should be)
is one clear DataError, raised before anything is read or downloaded."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from src.datasets import DataError, DatasetRegistry
from src.datasets import idx
from src.datasets.idx import IDX_FILES, resolve_data_root


@pytest.fixture
def no_io(monkeypatch):
    """Fail the test if a file is read or a download is started."""

    def forbidden(*args, **kwargs):
        raise AssertionError("nothing may be read or downloaded from a bad data folder")

    monkeypatch.setattr(idx, "download_file", forbidden)
    monkeypatch.setattr(idx, "read_idx", forbidden)
    import src.datasets.mnist as mnist

    monkeypatch.setattr(mnist, "read_idx", forbidden)


def deny(monkeypatch, target: Path, mode: int) -> None:
    """Make ``os.access(target, m)`` false when ``m`` asks for any bit of ``mode`` (root
    bypasses real permissions, so unreadable folders are simulated)."""
    real_access = os.access

    def access(path, requested, *args, **kwargs):
        if Path(path) == target and requested & mode:
            return False
        return real_access(path, requested, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def one_sentence(message: str) -> bool:
    return "\n" not in message and message.endswith(".") and "Traceback" not in message


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_data_dir_that_is_a_file(tmp_path, no_io, name):
    not_a_folder = tmp_path / "data.tar"
    not_a_folder.write_bytes(b"x")
    with pytest.raises(DataError) as error:
        DatasetRegistry.create(name, data_dir=str(not_a_folder), progress=False)
    message = str(error.value)
    assert str(not_a_folder) in message and "is a file, not a folder" in message and "--data-dir" in message
    assert one_sentence(message)


def test_data_dir_below_a_file(tmp_path, no_io):
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(DataError, match=r"is a file, not a folder") as error:
        DatasetRegistry.create("mnist", data_dir=str(tmp_path / "file" / "data"), progress=False)
    assert str(tmp_path / "file") in str(error.value)


def test_data_dir_from_the_environment_is_named_as_such(tmp_path, monkeypatch, no_io):
    (tmp_path / "file").write_bytes(b"x")
    monkeypatch.setenv("EXPTRAIN_DATA_DIR", str(tmp_path / "file"))
    with pytest.raises(DataError, match=r"\$EXPTRAIN_DATA_DIR"):
        resolve_data_root()
    with pytest.raises(DataError, match=r"\$EXPTRAIN_DATA_DIR"):
        DatasetRegistry.create("mnist", progress=False)


def test_unreadable_data_dir(tmp_path, monkeypatch, no_io):
    deny(monkeypatch, tmp_path, os.R_OK | os.X_OK)
    with pytest.raises(DataError) as error:
        DatasetRegistry.create("mnist", data_dir=str(tmp_path), progress=False)
    message = str(error.value)
    assert str(tmp_path) in message and "cannot be read" in message and one_sentence(message)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_really_unreadable_data_dir(tmp_path, no_io):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0)
    try:
        with pytest.raises(DataError, match="cannot be read"):
            DatasetRegistry.create("mnist", data_dir=str(folder), progress=False)
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize("blocked", ["MNIST", "MNIST/raw"])
def test_file_where_the_raw_folder_should_be(tmp_path, no_io, blocked):
    (tmp_path / blocked).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / blocked).write_bytes(b"x")
    with pytest.raises(DataError) as error:
        DatasetRegistry.create("mnist", data_dir=str(tmp_path), progress=False)
    message = str(error.value)
    assert str(tmp_path / blocked) in message and "is a file, not a folder" in message and one_sentence(message)


def test_unreadable_raw_folder(tmp_path, monkeypatch, no_io):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    deny(monkeypatch, raw, os.R_OK)
    with pytest.raises(DataError, match="cannot be read") as error:
        DatasetRegistry.create("mnist", data_dir=str(tmp_path), progress=False)
    assert str(raw) in str(error.value)


def test_unwritable_folder_is_refused_before_downloading(tmp_path, monkeypatch, no_io):
    deny(monkeypatch, tmp_path, os.W_OK)
    with pytest.raises(DataError) as error:
        DatasetRegistry.create("mnist", data_dir=str(tmp_path), progress=False)
    message = str(error.value)
    assert str(tmp_path) in message and "cannot write" in message and one_sentence(message)


def test_read_only_folder_holding_the_files_is_fine(tmp_path, monkeypatch, shared_data):
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(shared_data / "MNIST" / "raw", raw)
    for folder in (tmp_path, tmp_path / "MNIST", raw):
        deny(monkeypatch, folder, os.W_OK)
    dataset = DatasetRegistry.create("mnist", data_dir=str(tmp_path), augment=False, progress=False)
    assert len(dataset) == 4000 and sorted(p.name for p in raw.iterdir()) == sorted(IDX_FILES)


def test_missing_data_dir_is_fine_until_files_are_needed(tmp_path, monkeypatch):
    monkeypatch.delenv("EXPTRAIN_DATA_DIR", raising=False)
    assert resolve_data_root(str(tmp_path / "new")) == tmp_path / "new"
    assert resolve_data_root(None) == Path("data")
    with pytest.raises(DataError, match="not downloaded"):
        DatasetRegistry.create("mnist", data_dir=str(tmp_path / "new"), download=False)


def test_data_error_is_bad_input_for_the_cli():
    assert issubclass(DataError, RuntimeError) and DataError.exit_code == 2
