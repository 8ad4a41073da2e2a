"""CIFAR-10/100: tiny folders written exactly as the official Python 2 pickles, hostile
pickles and archives, and the download from a local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import pickle
import re
import shutil
import socket
import tarfile
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from src.datasets import DataError, DatasetRegistry
from src.datasets.archive import extract_folder, load_restricted_pickle
from src.datasets.cifar import CIFAR10, CIFAR100, read_batch, read_class_names
from tests.fake_data import CIFAR10_FILES, CIFAR10_NAMES, PER_BATCH, py2_pickle, write_cifar10

CIFAR100_NAMES = [f"class_{i:02d}" for i in range(100)]
CIFAR100_FILES = ["train", "test", "meta"]
# -- writing the official format (Python 2 pickles, CIFAR-10: tests/fake_data.py) -----


def write_cifar100(root: Path, seed: int = 1) -> dict:
    """A tiny ``cifar-100-python``: 100 train and 20 test images, fine and coarse labels."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    written = {}
    for name, count in (("train", 100), ("test", PER_BATCH)):
        data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, count)]
        batch = {
            b"filenames": [f"{name}_{i}.png".encode() for i in range(count)],
            b"batch_label": name.encode(),
            b"fine_labels": fine,
            b"coarse_labels": [v // 5 for v in fine],
            b"data": data,
        }
        (folder / name).write_bytes(py2_pickle(batch))
        written[name] = (data, fine)
    meta = {
        b"fine_label_names": [n.encode() for n in CIFAR100_NAMES],
        b"coarse_label_names": [f"super_{i}".encode() for i in range(20)],
    }
    (folder / "meta").write_bytes(py2_pickle(meta))
    return written


def make_archive(root: Path, folder_name: str, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / folder_name, arcname=folder_name)
    return archive


def listing(folder: Path) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# -- loading ---------------------------------------------------------------------------


def test_fixture_is_the_python2_format(tmp_path):
    write_cifar10(tmp_path)
    raw = (tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    assert raw.startswith(b"\x80\x02}q\x00(U\x0bbatch_label")
    assert re.search(rb"cnumpy\.core\.multiarray\n_reconstruct\nq.cnumpy\nndarray\n", raw, re.S)
    assert re.search(rb"cnumpy\ndtype\nq.U\x02u1q.K\x00K\x01\x87", raw, re.S)
    assert b"\x89T\x00\xf0\x00\x00" in raw, "the pixels: a Python 2 str of 20 * 3072 bytes"
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as handle:
        assert b"data" in pickle.load(handle, encoding="bytes"), "keys are bytes under encoding='bytes'"


def test_cifar10_images_labels_and_names(tmp_path):
    written = write_cifar10(tmp_path)
    dataset = DatasetRegistry.create("cifar10", data_dir=str(tmp_path), download=False, augment=False)
    assert dataset.input_shape == (3, 32, 32) and dataset.num_classes == 10
    assert len(dataset.train_labels) == 5 * PER_BATCH and len(dataset.test_labels) == PER_BATCH
    assert dataset.class_names == CIFAR10_NAMES
    data, labels = written["data_batch_2"]
    # image 3 of batch 2, green channel, row 5, column 7: channel-planar, row-major
    assert int(dataset.train_images[PER_BATCH + 3, 1, 5, 7]) == int(data[3, 1024 + 5 * 32 + 7])
    assert int(dataset.train_images[PER_BATCH + 3, 2, 31, 0]) == int(data[3, 2048 + 31 * 32])
    expected_train = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    np.testing.assert_array_equal(dataset.train_images.numpy(), expected_train)
    np.testing.assert_array_equal(dataset.test_images.numpy(), written["test_batch"][0].reshape(-1, 3, 32, 32))
    assert dataset.train_labels.tolist() == sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert dataset.test_labels.tolist() == written["test_batch"][1]


def test_cifar100_uses_fine_labels_and_names(tmp_path):
    written = write_cifar100(tmp_path)
    dataset = DatasetRegistry.create("cifar100", data_dir=str(tmp_path), download=False, augment=False)
    assert dataset.num_classes == 100 and dataset.class_names == CIFAR100_NAMES
    assert dataset.train_labels.tolist() == written["train"][1]
    assert dataset.test_labels.tolist() == written["test"][1]
    np.testing.assert_array_equal(dataset.train_images.numpy(), written["train"][0].reshape(-1, 3, 32, 32))


def test_python3_pickles_with_str_or_bytes_keys_load(tmp_path):
    data = np.arange(2 * 3072, dtype=np.uint64).astype(np.uint8).reshape(2, 3072)
    for protocol, keys in ((4, str), (3, bytes), (5, str)):
        path = tmp_path / f"batch{protocol}"
        key = (lambda k: k.encode()) if keys is bytes else (lambda k: k)
        path.write_bytes(pickle.dumps({key("data"): data, key("labels"): np.array([1, 9])}, protocol=min(protocol, 4)))
        images, labels = read_batch(path, "labels", 10)
        assert images.shape == (2, 3, 32, 32) and labels.tolist() == [1, 9] and labels.dtype == np.int64


# -- hostile pickles ---------------------------------------------------------------------


class _CreatesFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_hostile_pickle_is_refused_and_runs_nothing(tmp_path):
    victim = tmp_path / "created"
    payload = pickle.dumps({"data": _CreatesFile(victim)}, protocol=2)
    pickle.loads(payload).get("data").close()  # the payload is real: plain pickle creates the file
    assert victim.exists()
    victim.unlink()
    path = tmp_path / "data_batch_1"
    path.write_bytes(payload)
    with pytest.raises(DataError, match=r"is not a CIFAR batch: it asks for (builtins|io)\.open.*not loaded"):
        read_batch(path, "labels", 10)
    assert not victim.exists()


@pytest.mark.parametrize(
    "payload, asks_for",
    [
        (b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R.", "os.system"),
        (b"\x80\x02c__builtin__\neval\nX\x01\x00\x00\x001\x85R.", "__builtin__.eval"),
        (b"\x80\x02cbuiltins\neval\nX\x01\x00\x00\x001\x85R.", "builtins.eval"),
        (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00bX\x06\x00\x00\x00latin1\x86R.", "_codecs.encode"),
        (b"\x80\x04\x8c\x05numpy\x8c\x04load\x93.", "numpy.load"),
        (b"\x80\x02cnumpy\nndarray\nJ\x00\xca\x9a;\x85R.", "calls numpy.ndarray directly"),  # a 1 GB array
        (
            b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ\x00\xca\x9a;\x85U\x01b\x87R.",
            "unusual arguments",
        ),
        (b"\x80\x02cnumpy\ndtype\nU\x01OK\x00K\x01\x87R.", "non-numeric|numpy.dtype 'O'"),
        (b"\x80\x02U\x01xQ.", "a persistent object"),
        # a uint8 dtype given fields by BUILD: it still compares equal to numpy.uint8
        (
            b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R(K\x01K\x01\x85cnumpy\n"
            b"dtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|N(U\x01at}U\x01a(cnumpy\ndtype\nU\x02u1K\x00K\x01\x87RK\x00tsK\x01"
            b"K\x01K\x00tb\x89U\x01\x07tb.",
            "altered type",
        ),
    ],
)
def test_other_globals_are_refused(tmp_path, payload, asks_for):
    path = tmp_path / "batch"
    path.write_bytes(payload)
    with pytest.raises(DataError, match="was not loaded") as error:
        load_restricted_pickle(path, "a CIFAR batch")
    assert str(path) in str(error.value)
    assert any(part in str(error.value) for part in asks_for.split("|"))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b.__setitem__(b"labels", b.pop(b"labels")[:-1]), "not one integer per image"),
        (lambda b: b[b"labels"].__setitem__(3, 10), r"has 1 label outside 0\.\.9 \(first at index 3: 10\)"),
        (lambda b: b[b"labels"].__setitem__(0, -1), "outside 0..9"),
        (lambda b: b[b"labels"].__setitem__(0, "cat"), "not one integer per image"),
        (lambda b: b[b"labels"].__setitem__(0, 2**70), "not one integer per image"),
        (lambda b: b.pop(b"labels"), "has no 'labels' entry"),
        (lambda b: b.pop(b"data"), "has no 'data' entry"),
        (lambda b: b.__setitem__(b"data", b[b"data"].astype(np.float32)), "float32 array"),
        (lambda b: b.__setitem__(b"data", b[b"data"][:, :3000]), r"shape \(20, 3000\)"),
        (lambda b: b.__setitem__(b"data", b[b"data"].reshape(20, 3, 32, 32)), "not uint8 images"),
        (lambda b: b.__setitem__(b"data", b"raw bytes"), "holds 'data' as a str"),
    ],
)
def test_damaged_batches_name_the_file(tmp_path, damage, message):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch = pickle.loads(path.read_bytes(), encoding="bytes")
    damage(batch)
    path.write_bytes(py2_pickle(batch))
    with pytest.raises(DataError, match=message) as error:
        DatasetRegistry.create("cifar10", data_dir=str(tmp_path), download=False, augment=False)
    assert str(path) in str(error.value) and "replace it" in str(error.value)


def test_truncated_and_foreign_files(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match="is not a CIFAR batch .unpickling failed") as error:
        read_batch(path, "labels", 10)
    assert str(path) in str(error.value)
    path.write_bytes(py2_pickle([1, 2, 3]))
    with pytest.raises(DataError, match="holds a list, not a CIFAR batch"):
        read_batch(path, "labels", 10)


@pytest.mark.parametrize(
    "names, ok",
    [
        (CIFAR10_NAMES, True),
        (CIFAR10_NAMES[:9], False),
        (CIFAR10_NAMES[:9] + ["cat"], False),
        (CIFAR10_NAMES[:9] + [""], False),
        (CIFAR10_NAMES[:9] + [7], False),
        ("airplane", False),
    ],
)
def test_class_names_are_checked(tmp_path, names, ok):
    path = tmp_path / "batches.meta"
    path.write_bytes(py2_pickle({"label_names": names}))
    if ok:
        assert read_class_names(path, "label_names", 10) == CIFAR10_NAMES
    else:
        with pytest.raises(DataError, match="not 10 distinct class names"):
            read_class_names(path, "label_names", 10)


# -- safe extraction -------------------------------------------------------------------


def hostile_tar(path: Path, member: tarfile.TarInfo, data: bytes = b"evil") -> Path:
    """A tar holding one good file of the expected folder, then ``member``."""
    with tarfile.open(path, "w") as tar:
        good = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        good.size = 4
        tar.addfile(good, io.BytesIO(b"good"))
        if member.isfile():
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        else:
            tar.addfile(member)
    return path


def _member(name, kind=tarfile.REGTYPE, linkname=""):
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, linkname
    return member


@pytest.mark.parametrize(
    "member, refusal",
    [
        (_member("cifar-10-batches-py/../../evil"), "'..'"),
        (_member("../evil"), "'..'"),
        (_member("/ABSOLUTE/evil"), "absolute path"),
        (_member("cifar-10-batches-py/link", tarfile.SYMTYPE, "../../outside"), "a link"),
        (_member("cifar-10-batches-py/hard", tarfile.LNKTYPE, "/etc/passwd"), "a link"),
        (_member("cifar-10-batches-py/dev", tarfile.CHRTYPE), "device"),
        (_member("cifar-10-batches-py/fifo", tarfile.FIFOTYPE), "device"),
    ],
)
def test_unsafe_archive_members_are_refused(tmp_path, member, refusal):
    if member.name.startswith("/ABSOLUTE"):
        member.name = str(tmp_path / "evil")
    root = tmp_path / "data" / "deep"
    root.mkdir(parents=True)
    archive = hostile_tar(tmp_path / "hostile.tar", member)
    before = listing(tmp_path)
    with pytest.raises(DataError, match=refusal) as error:
        extract_folder(archive, root / "cifar-10-batches-py", ["data_batch_1"])
    assert str(archive) in str(error.value) and "nothing was extracted" in str(error.value)
    assert listing(tmp_path) == before, "nothing written anywhere, the staging folder removed"


def test_link_then_write_through_it_is_refused(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        tar.addfile(_member("cifar-10-batches-py", tarfile.SYMTYPE, str(tmp_path)))
        evil = _member("cifar-10-batches-py/evil")
        evil.size = 1
        tar.addfile(evil, io.BytesIO(b"x"))
    with pytest.raises(DataError, match="a link"):
        extract_folder(archive, root / "cifar-10-batches-py", ["evil"])
    assert not (tmp_path / "evil").exists() and listing(root) == []


def test_damaged_or_incomplete_archive(tmp_path):
    root = tmp_path / "data"
    write_cifar10(tmp_path / "src")
    archive = make_archive(tmp_path / "src", "cifar-10-batches-py", tmp_path / "c.tar.gz")
    truncated = tmp_path / "t.tar.gz"
    truncated.write_bytes(archive.read_bytes()[:3000])
    with pytest.raises(DataError, match="damaged or not a tar"):
        extract_folder(truncated, root / "cifar-10-batches-py", CIFAR10_FILES)
    with pytest.raises(DataError, match="does not hold cifar-10-batches-py/readme"):
        extract_folder(archive, root / "cifar-10-batches-py", [*CIFAR10_FILES, "readme"])
    assert not root.exists() or listing(root) == []


def test_extraction_fills_a_partial_folder_and_keeps_present_files(tmp_path):
    write_cifar10(tmp_path / "src")
    archive = make_archive(tmp_path / "src", "cifar-10-batches-py", tmp_path / "c.tar.gz")
    folder = tmp_path / "data" / "cifar-10-batches-py"
    write_cifar10(tmp_path / "data", seed=5)  # a different, valid copy: must not be overwritten
    kept = (folder / "data_batch_1").read_bytes()
    (folder / "data_batch_2").unlink()
    extract_folder(archive, folder, CIFAR10_FILES)
    assert (folder / "data_batch_1").read_bytes() == kept
    assert (folder / "data_batch_2").read_bytes() == (
        tmp_path / "src" / "cifar-10-batches-py" / "data_batch_2"
    ).read_bytes()
    assert sorted(os.listdir(tmp_path / "data")) == ["cifar-10-batches-py"], "no staging folder left"


# -- download ----------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path):
    """Official-format archives of both data sets served on 127.0.0.1: (url, {name: md5})."""
    source, site = tmp_path / "source", tmp_path / "site"
    site.mkdir()
    write_cifar10(source)
    write_cifar100(source)
    md5s = {}
    for folder, name in (
        ("cifar-10-batches-py", "cifar-10-python.tar.gz"),
        ("cifar-100-python", "cifar-100-python.tar.gz"),
    ):
        md5s[name] = hashlib.md5(make_archive(source, folder, site / name).read_bytes()).hexdigest()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", md5s
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "name, cls, archive, files",
    [
        ("cifar10", CIFAR10, "cifar-10-python.tar.gz", CIFAR10_FILES),
        ("cifar100", CIFAR100, "cifar-100-python.tar.gz", CIFAR100_FILES),
    ],
)
def test_download_with_the_right_md5(tmp_path, served, monkeypatch, name, cls, archive, files):
    url, md5s = served
    monkeypatch.setattr(cls, "md5", md5s[archive])
    root = tmp_path / "data"
    dataset = DatasetRegistry.create(name, data_dir=str(root), mirrors=[url], augment=False, progress=False)
    assert len(dataset.test_labels) == PER_BATCH
    assert sorted(os.listdir(root)) == sorted([archive, cls.folder_name]), "archive kept (as torchvision does), no temp"
    assert sorted(os.listdir(root / cls.folder_name)) == sorted(files)
    # the kept archive is reused when files go missing, without the network
    shutil.rmtree(root / cls.folder_name)
    again = DatasetRegistry.create(
        name, data_dir=str(root), mirrors=["http://127.0.0.1:9/"], augment=False, progress=False
    )
    assert again.train_labels.tolist() == dataset.train_labels.tolist()


def test_leftovers_of_a_killed_download_are_removed(tmp_path, served, monkeypatch):
    url, md5s = served
    monkeypatch.setattr(CIFAR10, "md5", md5s["cifar-10-python.tar.gz"])
    root = tmp_path / "data"
    dead_pid = 2**22 + 1  # above Linux's largest pid_max: no process has it
    staging = root / f".cifar-10-batches-py.tmp-{dead_pid}-0123abcd"
    (staging / "cifar-10-batches-py").mkdir(parents=True)
    (root / f".cifar-10-python.tar.gz.tmp-{dead_pid}-0123abcd").write_bytes(b"partial")
    alive = root / f".cifar-10-batches-py.tmp-{os.getpid()}-0123abcd"  # a running process's: kept
    alive.mkdir()
    DatasetRegistry.create("cifar10", data_dir=str(root), mirrors=[url], augment=False, progress=False)
    assert sorted(os.listdir(root)) == sorted(["cifar-10-python.tar.gz", "cifar-10-batches-py", alive.name])


def test_download_with_a_wrong_md5_leaves_nothing(tmp_path, served, monkeypatch):
    url, _ = served
    monkeypatch.setattr(CIFAR10, "md5", "0" * 32)
    root = tmp_path / "data"
    with pytest.raises(DataError, match="Checksum mismatch") as error:
        DatasetRegistry.create("cifar10", data_dir=str(root), mirrors=[url], augment=False, progress=False)
    assert str(root / "cifar-10-batches-py") in str(error.value)
    assert not root.exists() or listing(root) == [], "no archive, temporary file or folder left"


def _dead_url() -> str:
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/"


@pytest.mark.parametrize("download", [False, True])
def test_offline_is_one_error_naming_folder_and_files(tmp_path, download):
    folder = tmp_path / "cifar-100-python"
    with pytest.raises(DataError) as error:
        DatasetRegistry.create(
            "cifar100", data_dir=str(tmp_path), download=download, mirrors=[_dead_url()], progress=False
        )
    message = str(error.value)
    assert str(folder) in message and all(name in message for name in CIFAR100_FILES)
    assert "cifar-100-python.tar.gz" in message and "\n" not in message
    assert ("not downloaded" in message) == (not download)
    assert listing(tmp_path) == []


@pytest.mark.parametrize(
    "option, value",
    [
        ("download", "no"),
        ("progress", 1),
        ("mirrors", "http://x/"),
        ("mirrors", []),
        ("mirrors", [""]),
    ],
)
def test_bad_option_types(tmp_path, option, value):
    from src.config import ConfigError

    with pytest.raises(ConfigError, match=f"{option} for cifar10"):
        DatasetRegistry.create("cifar10", data_dir=str(tmp_path), **{option: value})
    assert listing(tmp_path) == []


def test_a_folder_where_a_file_should_be(tmp_path):
    write_cifar10(tmp_path)
    blocker = tmp_path / "cifar-10-batches-py" / "test_batch"
    blocker.unlink()
    blocker.mkdir()
    with pytest.raises(DataError, match="test_batch is not a file") as error:
        DatasetRegistry.create("cifar10", data_dir=str(tmp_path), mirrors=[_dead_url()], progress=False)
    assert str(blocker) in str(error.value)


def test_data_dir_that_is_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        DatasetRegistry.create("cifar10", data_dir=str(blocker), download=False)


# -- the data set API and the command line ----------------------------------------------


def test_dataset_defaults_crop_flip_and_per_channel_normalisation(tmp_path):
    written = write_cifar10(tmp_path)
    dataset = DatasetRegistry.create("cifar10", data_dir=str(tmp_path), download=False)
    assert dataset.augmentation_policy == "crop-flip"
    train = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)]).reshape(-1, 3, 1024) / 255.0
    np.testing.assert_allclose(dataset.mean, train.mean(axis=(0, 2)), rtol=1e-9)
    np.testing.assert_allclose(dataset.std, train.std(axis=(0, 2)), rtol=1e-6)
    train_loader, val_loader = dataset.get_dataloaders(batch_size=32)
    images, labels = next(iter(val_loader))
    assert images.shape == (PER_BATCH, 3, 32, 32) and labels.tolist() == written["test_batch"][1]
    expected = (
        written["test_batch"][0].reshape(-1, 3, 32, 32) / 255.0 - np.array(dataset.mean)[:, None, None]
    ) / np.array(dataset.std)[:, None, None]
    np.testing.assert_allclose(images.numpy(), expected, atol=1e-5)
    plain = DatasetRegistry.create("cifar10", data_dir=str(tmp_path), download=False, augmentation="none")
    assert plain.augmentation_policy == "none"
