"""BaseDataset: the class count comes from the data set's definition, labels are checked
against it, and the data fingerprint identifies the original data."""

from __future__ import annotations

import gzip
import shutil
import time
from pathlib import Path

import pytest
import torch

from src.datasets import BaseDataset, DataError, DatasetRegistry
from src.datasets.mnist import MNIST, SAMPLE_DIR

LABELS = "train-labels-idx1-ubyte.gz"
IDX_LABEL_HEADER = 8  # magic + one dimension


def copy_sample(data_dir: Path) -> Path:
    """The bundled mnist-sample files as ``<data_dir>/MNIST/raw`` (how MNIST finds them)."""
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for path in SAMPLE_DIR.glob("*.gz"):
        shutil.copy(path, raw / path.name)
    return raw


def patch_byte(path: Path, offset: int, value: int) -> None:
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[offset] = value
    path.write_bytes(gzip.compress(bytes(data)))


class Custom(BaseDataset):
    """A third-party data set: no files, and possibly no declared class count."""

    name = "custom"

    def __init__(self, train_labels, test_labels, **set_data_options):
        super().__init__(augment=False)
        images = torch.zeros(len(train_labels), 1, 4, 4, dtype=torch.uint8)
        test_images = torch.zeros(len(test_labels), 1, 4, 4, dtype=torch.uint8)
        self._set_data(images, torch.tensor(train_labels), test_images, torch.tensor(test_labels), **set_data_options)


# -- class count and label range ------------------------------------------------------


def test_class_count_comes_from_the_definition():
    assert DatasetRegistry.get("mnist").classes_count == 10
    assert DatasetRegistry.get("fashion_mnist").classes_count == 10
    assert DatasetRegistry.get("mnist-sample").classes_count == 10
    assert DatasetRegistry.create("synthetic", num_samples=8, num_classes=3).num_classes == 3
    # Synthetic with more classes than samples: the count is the argument, not max(label) + 1.
    assert DatasetRegistry.create("synthetic", num_samples=4, num_classes=7).num_classes == 7


def test_damaged_label_file_names_the_file_index_and_value(tmp_path):
    raw = copy_sample(tmp_path)
    patch_byte(raw / LABELS, IDX_LABEL_HEADER + 17, 255)
    with pytest.raises(DataError) as error:
        MNIST(data_dir=str(tmp_path), download=False)
    message = str(error.value)
    assert str(raw / LABELS) in message
    assert "has 1 label outside 0..9 (first at index 17: 255)" in message and "replace it" in message
    assert message.count(".") >= 1 and "\n" not in message


def test_damaged_test_labels_are_caught_too(tmp_path):
    raw = copy_sample(tmp_path)
    for index in (3, 5):
        patch_byte(raw / "t10k-labels-idx1-ubyte.gz", IDX_LABEL_HEADER + index, 10)
    expected = r"t10k-labels-idx1-ubyte.gz has 2 labels outside 0..9 \(first at index 3: 10\)"
    with pytest.raises(DataError, match=expected):
        MNIST(data_dir=str(tmp_path), download=False)


def test_labels_without_files_name_the_split():
    with pytest.raises(DataError, match=r"custom test split has 1 label outside 0..2 \(first at index 1: -1\)"):
        Custom([0, 1, 2], [0, -1], num_classes=3)
    with pytest.raises(DataError, match=r"custom train split has 1 label outside 0..1 \(first at index 2: 2\)"):
        Custom([0, 1, 2], [0, 1], num_classes=2)


def test_third_party_class_count_falls_back_to_the_largest_label():
    assert Custom([0, 4], [1]).num_classes == 5
    with pytest.raises(DataError, match="outside"):
        Custom([0, -3], [1])

    class Declared(Custom):
        classes_count = 6

    assert Declared([0, 1], [1]).num_classes == 6
    with pytest.raises(DataError, match=r"outside 0..5"):
        Declared([0, 6], [1])


# -- fingerprint ----------------------------------------------------------------------


def test_fingerprint_describes_the_data():
    dataset = DatasetRegistry.create("mnist-sample", augment=False)
    fingerprint = dataset.fingerprint()
    assert fingerprint["train_samples"] == 4000 and fingerprint["val_samples"] == 1000
    assert fingerprint["input_shape"] == [1, 28, 28] and fingerprint["num_classes"] == 10
    assert len(fingerprint["sha256"]) == 64 and int(fingerprint["sha256"], 16) >= 0
    fingerprint["input_shape"].append(99)  # the caller's copy, not the cache
    assert dataset.fingerprint()["input_shape"] == [1, 28, 28]


def test_same_data_same_fingerprint_and_augmentation_does_not_change_it():
    plain = DatasetRegistry.create("mnist-sample", augment=False).fingerprint()
    augmented = DatasetRegistry.create("mnist-sample", augment=True, seed=3)
    assert augmented.fingerprint() == plain
    augmented.reapply_transforms(5)
    assert augmented.fingerprint() == plain
    fresh = DatasetRegistry.create("mnist-sample", augment=True, seed=3)
    fresh.reapply_transforms(5)  # hashed after augmentation: still the original data
    assert fresh.fingerprint() == plain


def test_one_changed_pixel_changes_the_hash(tmp_path):
    copy_sample(tmp_path)
    original = MNIST(data_dir=str(tmp_path), download=False, augment=False).fingerprint()
    assert original == DatasetRegistry.create("mnist-sample", augment=False).fingerprint()
    images = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    data = gzip.decompress(images.read_bytes())
    offset = len(data) - 1  # the last pixel of the last test image
    patch_byte(images, offset, (data[offset] + 1) % 256)
    changed = MNIST(data_dir=str(tmp_path), download=False, augment=False).fingerprint()
    assert changed["sha256"] != original["sha256"]
    assert {k: v for k, v in changed.items() if k != "sha256"} == {k: v for k, v in original.items() if k != "sha256"}


def test_hash_covers_shapes_and_labels():
    base = Custom([0, 1, 1, 0], [1, 0], num_classes=2).fingerprint()["sha256"]
    assert Custom([0, 1, 1, 1], [1, 0], num_classes=2).fingerprint()["sha256"] != base
    # The same bytes split differently between train and test are different data.
    assert Custom([0, 1, 1], [0, 1, 0], num_classes=2).fingerprint()["sha256"] != base


def test_fingerprint_is_cached_and_reset_by_new_data():
    dataset = DatasetRegistry.create("synthetic", num_samples=64, num_classes=4, input_shape=(1, 8, 8))
    first = dataset.fingerprint()
    dataset.train_images[0] += 1  # not how data should change; shows the hash is not recomputed
    assert dataset.fingerprint() == first
    dataset._set_data(dataset.train_images[:32], dataset.train_labels[:32], dataset.test_images, dataset.test_labels)
    assert dataset.fingerprint()["train_samples"] == 32 and dataset.fingerprint()["sha256"] != first["sha256"]


def test_fingerprint_of_full_fashion_mnist_is_cheap(shared_data):
    dataset = DatasetRegistry.create("fashion_mnist", data_dir=str(shared_data), augment=False, download=False)
    start = time.perf_counter()
    fingerprint = dataset.fingerprint()
    elapsed = time.perf_counter() - start
    assert fingerprint["train_samples"] == 60000 and fingerprint["val_samples"] == 10000
    assert elapsed < 2.0, f"hashing 55 MB took {elapsed:.2f}s"
