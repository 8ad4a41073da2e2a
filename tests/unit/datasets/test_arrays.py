"""ArrayDataset (data sets from arrays): labels, shapes, class names, channel statistics of a
memory map, and a NumPy integer batch size."""

from __future__ import annotations

import numpy as np
import pytest


def _arrays(n: int = 10):
    return np.zeros((n, 1, 4, 4), np.uint8), np.arange(n) % 2


@pytest.mark.parametrize("labels", [np.full(10, 0.5), np.arange(10) % 2 + 0.7, np.full(10, 1.7)])
def test_array_dataset_refuses_fractional_labels(labels):
    # 0.5 -> class 0, 1.7 -> class 1: the labels a user passed are not the ones trained on.
    from src.datasets import ArrayDataset
    from src.datasets.idx import DataError

    x, y = _arrays()
    with pytest.raises((DataError, ValueError, TypeError)) as caught:
        ArrayDataset(x, labels, x, y, num_classes=2)
    assert "label" in str(caught.value).lower()


def test_array_dataset_nan_label_message_names_nan_not_int64_min():
    from src.datasets import ArrayDataset
    from src.datasets.idx import DataError

    x, y = _arrays()
    labels = y.astype(np.float64)
    labels[3] = np.nan
    with pytest.raises((DataError, ValueError, TypeError)) as caught:
        ArrayDataset(x, labels, x, y, num_classes=2)
    assert "-9223372036854775808" not in str(caught.value)
    assert "nan" in str(caught.value).lower()


def test_array_dataset_empty_training_split_is_a_clear_error():
    from src.datasets import ArrayDataset
    from src.datasets.idx import DataError

    x, y = _arrays()
    with pytest.raises((DataError, ValueError)) as caught:  # today: IndexError from _draw_fingerprint
        ArrayDataset(x[:0], y[:0], x, y, num_classes=2)
    assert not isinstance(caught.value, IndexError)
    assert "train" in str(caught.value)


def test_array_dataset_column_labels_are_a_clear_error():
    # (N, 1) labels, as Keras-style code produces them: today a RuntimeError from torch.cat.
    from src.datasets import ArrayDataset
    from src.datasets.idx import DataError

    x, y = _arrays()
    with pytest.raises((DataError, ValueError)) as caught:
        ArrayDataset(x, y[:, None], x, y)
    assert "label" in str(caught.value).lower()


@pytest.mark.parametrize("shape", [(10, 0, 4, 4), (10, 1, 0, 4)])
def test_array_dataset_images_with_an_empty_dimension_are_a_clear_error(shape):
    from src.datasets import ArrayDataset

    x, y = _arrays()
    with pytest.raises((ValueError, TypeError)) as caught:  # today: RuntimeError from reshape / grid_sample
        ArrayDataset(np.zeros(shape, np.uint8), y, np.zeros(shape, np.uint8), y)
    assert "shape" in str(caught.value).lower() or "channel" in str(caught.value).lower()


def test_array_dataset_channels_last_images_are_not_taken_silently():
    # (N, H, W, 3) arrays -- what PIL, NumPy and Keras give -- are read as 32 channels of
    # 32 x 3 pixels and train on scrambled images without a word.
    import warnings

    from src.datasets import ArrayDataset

    x = np.zeros((10, 32, 32, 3), np.uint8)
    y = np.arange(10) % 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ArrayDataset(x, y, x, y)
        except (ValueError, TypeError) as exc:
            assert "channel" in str(exc).lower() or "(N, C, H, W)" in str(exc)
            return
    assert any("channel" in str(w.message).lower() for w in caught), [str(w.message) for w in caught]


def test_channel_statistics_of_a_memory_map_stay_bounded(tmp_path):
    # ArrayDataset's default mean/std=None computes statistics in chunks of 4,096 *images*,
    # as float64 with two more temporaries: ~24x the chunk's bytes. 12 MB of 3x32x32 images
    # peak at ~300 MB; a memory-mapped set of 3x224x224 images (the larger-than-memory case
    # the map is for) would need ~15 GB at construction, whatever the memory budget.
    import tracemalloc

    from src.datasets.base import channel_statistics

    path = tmp_path / "images.npy"
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(4096, 3, 32, 32))
    images[:] = 7
    images.flush()
    del images
    mapped = np.load(path, mmap_mode="r")
    tracemalloc.start()
    try:
        mean, std = channel_statistics(mapped)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert mean == pytest.approx([7 / 255] * 3)
    assert peak < 64 << 20, f"peak {peak / 2**20:.0f} MiB for {mapped.nbytes / 2**20:.0f} MiB of images"


def test_get_dataloaders_takes_a_numpy_integer_batch_size():
    # "batch_size must be a positive integer, got np.int64(4)" -- it is one (the seed
    # argument of the same class accepts np.int64).
    from src.datasets import ArrayDataset

    x, y = _arrays()
    train_loader, _ = ArrayDataset(x, y, x, y).get_dataloaders(np.int64(4))
    assert len(train_loader) == 3


def test_array_dataset_takes_class_names_as_a_numpy_array():
    """FAILS ON MAIN: ``class_names=np.unique(string_labels)`` (a natural input) raises
    numpy's "The truth value of an array with more than one element is ambiguous" from
    ``if not class_names`` in src/datasets/arrays.py. Accept any sequence of texts (or
    refuse it in one sentence naming class_names)."""
    import numpy as np

    from src.datasets import ArrayDataset

    images, labels = np.zeros((4, 1, 8, 8), np.uint8), np.array([0, 1, 0, 1])
    dataset = ArrayDataset(images, labels, images, labels, class_names=np.array(["cat", "dog"]))
    assert list(dataset.class_names) == ["cat", "dog"]
