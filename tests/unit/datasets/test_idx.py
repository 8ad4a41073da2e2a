"""IDX reading and the downloader, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import gzip
import http.server
import shutil
import socket
import struct
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from src.datasets import DatasetRegistry
from src.datasets.idx import IDX_FILES, DataError, download_file, ensure_idx_files, md5_of, read_idx


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, compress):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / ("x.gz" if compress else "x"), array, compress)
    np.testing.assert_array_equal(read_idx(path), array)


def test_truncated_file_is_a_clear_error(tmp_path):
    path = write_idx(tmp_path / "x", np.zeros((10, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"truncated or corrupt"):
        read_idx(path)


def test_not_idx_and_bad_gzip_are_clear_errors(tmp_path):
    (tmp_path / "a").write_bytes(b"hello world, not idx")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "a")
    (tmp_path / "b.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match="Cannot read"):
        read_idx(tmp_path / "b.gz")


def test_real_shared_files_read(shared_data):
    images = read_idx(shared_data / "MNIST" / "raw" / "train-images-idx3-ubyte.gz")
    labels = read_idx(shared_data / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz")
    assert images.shape == (4000, 28, 28) and labels.shape == (4000,)
    assert np.bincount(labels).tolist() == [400] * 10


@pytest.fixture
def http_server(shared_data):
    """Serves ../shared/data/FashionMNIST/raw on 127.0.0.1; yields its base URL."""
    handler = partial(_QuietHandler, directory=str(shared_data / "FashionMNIST" / "raw"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_verifies_md5_and_loads(tmp_path, http_server, shared_data):
    raw = shared_data / "FashionMNIST" / "raw"
    md5s = {name: md5_of(raw / name) for name in IDX_FILES}
    folder = tmp_path / "FashionMNIST" / "raw"
    files = ensure_idx_files(folder, [http_server], md5s, "fashion_mnist", progress=False)
    assert sorted(p.name for p in folder.iterdir()) == sorted(IDX_FILES)
    for name in IDX_FILES:
        assert files[name] == folder / name and md5_of(folder / name) == md5s[name]


def test_dataset_downloads_when_missing(tmp_path, http_server, shared_data, monkeypatch):
    from src.datasets.mnist import FashionMNIST

    raw = shared_data / "FashionMNIST" / "raw"
    monkeypatch.setattr(FashionMNIST, "md5s", {name: md5_of(raw / name) for name in IDX_FILES})
    monkeypatch.setattr(FashionMNIST, "system_folders", ())
    dataset = DatasetRegistry.create(
        "fashion_mnist", data_dir=str(tmp_path), mirrors=[http_server], augment=False, progress=False
    )
    assert len(dataset) == 60000 and dataset.num_classes == 10
    assert (tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").is_file()


def test_checksum_mismatch_leaves_nothing(tmp_path, http_server):
    destination = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with pytest.raises(DataError, match="Checksum mismatch"):
        download_file(http_server + "t10k-labels-idx1-ubyte.gz", destination, md5="0" * 32, progress=False)
    assert list(tmp_path.iterdir()) == [], "neither the file nor a temporary file may remain"


def test_offline_error_names_folder_files_and_alternative(tmp_path):
    with socket.socket() as probe:  # a port with nothing listening: the "offline" case
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/"
    folder = tmp_path / "MNIST" / "raw"
    with pytest.raises(DataError) as error:
        ensure_idx_files(folder, [dead], {}, "mnist", progress=False)
    message = str(error.value)
    assert str(folder) in message and "mnist-sample" in message
    assert all(name in message for name in IDX_FILES)
    assert not any(folder.iterdir())


def test_existing_uncompressed_files_are_used(tmp_path, shared_data):
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    for name in IDX_FILES:
        with gzip.open(shared_data / "MNIST" / "raw" / name) as src, open(folder / name[:-3], "wb") as dst:
            shutil.copyfileobj(src, dst)
    dataset = DatasetRegistry.create("mnist", data_dir=str(tmp_path), download=False, augment=False)
    assert len(dataset) == 4000
