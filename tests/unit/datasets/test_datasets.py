"""The built-in data sets, the tensor loader and the seeded augmentation."""

from __future__ import annotations

import torch
import pytest

from src.datasets import BaseDataset, DataError, DatasetRegistry, TensorLoader


def test_mnist_sample_is_bundled_and_real():
    dataset = DatasetRegistry.create("mnist-sample", augment=False)
    assert isinstance(dataset, BaseDataset)
    assert dataset.num_classes == 10 and dataset.input_shape == (1, 28, 28)
    assert len(dataset.train_labels) == 4000 and len(dataset.test_labels) == 1000
    assert torch.bincount(dataset.test_labels).tolist() == [100] * 10
    assert dataset.train_images.dtype == torch.uint8 and dataset.train_images.max() == 255


def test_mnist_reads_data_dir_argument_and_env(shared_data, monkeypatch):
    by_argument = DatasetRegistry.create("mnist", data_dir=str(shared_data), augment=False, download=False)
    monkeypatch.setenv("EXPTRAIN_DATA_DIR", str(shared_data))
    by_env = DatasetRegistry.create("mnist", augment=False, download=False)
    assert torch.equal(by_argument.train_images, by_env.train_images)


def test_fashion_mnist_full(shared_data):
    dataset = DatasetRegistry.create("fashion_mnist", data_dir=str(shared_data), augment=False, download=False)
    assert len(dataset.train_labels) == 60000 and len(dataset.test_labels) == 10000


def test_missing_data_without_download_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="not downloaded"):
        DatasetRegistry.create("mnist", data_dir=str(tmp_path), download=False)


def test_loader_batches_normalised_and_complete():
    dataset = DatasetRegistry.create("synthetic", num_samples=100, num_classes=4, input_shape=(3, 8, 8))
    train, val = dataset.get_dataloaders(batch_size=32)
    assert len(train) == 4  # 32 + 32 + 32 + 4
    batches = list(train)
    assert [b[0].shape[0] for b in batches] == [32, 32, 32, 4]
    images, labels = batches[0]
    assert images.dtype == torch.float32 and images.shape[1:] == (3, 8, 8) and labels.dtype == torch.int64
    seen = torch.cat([b[1] for b in batches])
    assert torch.equal(torch.sort(seen).values, torch.sort(dataset.train_labels).values)
    expected = (dataset.test_images.float() / 255 - dataset.mean) / dataset.std
    assert torch.allclose(torch.cat([b[0] for b in val]), expected, atol=1e-6), (
        "validation is unshuffled and normalised"
    )


def test_shuffle_depends_only_on_seed_and_epoch():
    def order(seed, epoch):
        dataset = DatasetRegistry.create("synthetic", num_samples=64, seed=seed)
        loader, _ = dataset.get_dataloaders(batch_size=64)
        loader.set_epoch(epoch)
        return next(iter(loader))[1]

    assert torch.equal(order(1, 1), order(1, 1))
    assert not torch.equal(order(1, 1), order(1, 2))
    assert not torch.equal(order(1, 1), order(2, 1))


def test_loader_state_resumes_mid_epoch():
    dataset = DatasetRegistry.create("synthetic", num_samples=80, seed=3)
    loader, _ = dataset.get_dataloaders(batch_size=16)
    loader.set_epoch(2)
    full = [labels for _, labels in loader]
    loader.set_epoch(2)
    iterator = iter(loader)
    first_two = [next(iterator)[1] for _ in range(2)]
    state = loader.state_dict()
    assert state["position"] == 2
    fresh, _ = DatasetRegistry.create("synthetic", num_samples=80, seed=3).get_dataloaders(batch_size=16)
    fresh.load_state_dict(state)
    rest = [labels for _, labels in fresh]
    assert all(torch.equal(a, b) for a, b in zip(first_two + rest, full)) and len(first_two + rest) == len(full)
    # The pass after the resumed one starts at the beginning of the next epoch.
    assert fresh.epoch == 3 and len(list(fresh)) == len(fresh)


def test_augmentation_is_seeded_and_redrawn_per_epoch():
    a = DatasetRegistry.create("mnist-sample", seed=7)
    b = DatasetRegistry.create("mnist-sample", seed=7)
    assert torch.equal(a.augmented_train_images, b.augmented_train_images), "same seed, same first draw"
    assert not torch.equal(a.augmented_train_images, a.train_images), "augmentation changes the images"
    loader, _ = a.get_dataloaders(batch_size=4000, shuffle=False)
    first_batch = next(iter(loader))[0]
    a.reapply_transforms(1)
    assert not torch.equal(a.augmented_train_images, b.augmented_train_images)
    assert not torch.equal(next(iter(loader))[0], first_batch), "the loader serves the new draw"
    b.reapply_transforms(1)
    assert torch.equal(a.augmented_train_images, b.augmented_train_images), "draw depends on (seed, epoch) only"
    # Restoring state recomputes the live draw.
    c = DatasetRegistry.create("mnist-sample", seed=7)
    c.load_state_dict(a.state_dict())
    assert torch.equal(c.augmented_train_images, a.augmented_train_images)


def test_augmentation_keeps_digits_recognisable():
    dataset = DatasetRegistry.create("mnist-sample", seed=1)
    original = dataset.train_images.float()
    augmented = dataset.augmented_train_images.float()
    # Small warps: ink mass is roughly preserved and the image still correlates with itself.
    ratio = augmented.sum() / original.sum()
    assert 0.85 < ratio < 1.15
    flat_o, flat_a = original.flatten(1), augmented.flatten(1)
    correlation = torch.nn.functional.cosine_similarity(flat_o, flat_a).mean()
    assert correlation > 0.5


def test_no_augment_serves_original_images():
    dataset = DatasetRegistry.create("mnist-sample", augment=False)
    dataset.reapply_transforms(3)
    assert torch.equal(dataset.augmented_train_images, dataset.train_images)


def test_synthetic_any_shape_and_validation():
    dataset = DatasetRegistry.create("synthetic", num_samples=40, num_classes=5, input_shape=(3, 16, 12))
    assert dataset.input_shape == (3, 16, 12) and dataset.num_classes == 5
    with pytest.raises(ValueError, match="input_shape"):
        DatasetRegistry.create("synthetic", input_shape=(28, 28))


def test_bad_batch_size_is_rejected():
    dataset = DatasetRegistry.create("synthetic", num_samples=8)
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            dataset.get_dataloaders(batch_size=bad)


def test_tensor_loader_len_and_plain_iteration():
    loader = TensorLoader(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.arange(10), 3, 0.0, 1.0)
    assert len(loader) == 4 and sum(1 for _ in loader) == 4 and sum(1 for _ in loader) == 4


def test_fast_affine_grid_matches_torch():
    import torch.nn.functional as F

    from src.datasets.transforms import affine_grid

    theta = torch.randn(16, 2, 3) * 0.2 + torch.eye(2, 3)
    expected = F.affine_grid(theta, [16, 1, 9, 13], align_corners=False)
    assert torch.allclose(affine_grid(theta, 9, 13), expected, atol=1e-6)
