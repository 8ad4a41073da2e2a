"""Augmentation policies, per-sample draws, memory-mapped data and per-channel normalisation.

The memory-mapped path augments batch by batch; the in-memory path transforms the whole
training set once per draw. Both must serve the same bytes, in the same order, and a
loader restored from a saved state continues exactly where an uninterrupted one goes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from src.config import ConfigError
from src.datasets import ArrayDataset, DatasetRegistry, channel_statistics
from src.datasets.transforms import CropFlipAugmentation, POLICIES


def arrays(shape=(3, 16, 16), train=120, test=30, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, (train, *shape), dtype=np.uint8),
        rng.integers(0, classes, train),
        rng.integers(0, 256, (test, *shape), dtype=np.uint8),
        rng.integers(0, classes, test),
    )


def mapped(tmp_path: Path, *data):
    """The image arrays of ``data`` as read-only memory maps of .npy files."""
    out = list(data)
    for i in (0, 2):
        path = tmp_path / f"images{i}.npy"
        np.save(path, data[i])
        out[i] = np.load(path, mmap_mode="r")
    return out


def batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


@pytest.mark.parametrize("policy", ["crop-flip", "affine"])
@pytest.mark.parametrize("shape", [(3, 16, 16), (1, 12, 12)])
def test_memory_mapped_data_serves_the_same_batches_as_in_memory_data(tmp_path, policy, shape):
    data = arrays(shape)
    memory = ArrayDataset(*data, seed=3, augmentation=policy)
    disk = ArrayDataset(*mapped(tmp_path, *data), seed=3, augmentation=policy)
    assert memory.materialize_augmentation and not disk.materialize_augmentation
    assert disk.memory_mapped and "memory-mapped" in disk.describe()
    assert memory.augmentation_fingerprint == disk.augmentation_fingerprint
    for draw in (0, 2):
        memory.reapply_transforms(draw)
        disk.reapply_transforms(draw)
        a, _ = memory.get_dataloaders(batch_size=37)
        b, _ = disk.get_dataloaders(batch_size=37)
        a.set_epoch(draw + 1)
        b.set_epoch(draw + 1)
        left, right = batches(a), batches(b)
        assert len(left) == len(right) == 4
        for (x1, y1), (x2, y2) in zip(left, right):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(memory.augmented_train_images, memory.train_images), "augmentation changed the images"


def test_a_restored_memory_mapped_loader_continues_exactly_mid_epoch(tmp_path):
    data = mapped(tmp_path, *arrays())
    straight = ArrayDataset(*data, seed=7, augmentation="crop-flip")
    straight.reapply_transforms(1)
    loader, _ = straight.get_dataloaders(batch_size=16)
    loader.set_epoch(2)
    expected = batches(loader)

    first = ArrayDataset(*data, seed=7, augmentation="crop-flip")
    first.reapply_transforms(1)
    loader, _ = first.get_dataloaders(batch_size=16)
    loader.set_epoch(2)
    served = []
    for x, y in loader:
        served.append((x.clone(), y.clone()))
        if len(served) == 3:
            break
    data_state, loader_state = first.state_dict(), loader.state_dict()

    resumed = ArrayDataset(*data, seed=7, augmentation="crop-flip")  # a fresh process: draw 0 live
    resumed_loader, _ = resumed.get_dataloaders(batch_size=16)
    resumed.load_state_dict(data_state)
    resumed_loader.load_state_dict(loader_state)
    served += batches(resumed_loader)
    assert len(served) == len(expected)
    for (x1, y1), (x2, y2) in zip(served, expected):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_training_on_memory_mapped_data_is_bit_identical_to_in_memory(tmp_path):
    from src.training import ExperimentManager, Trainer

    data = arrays((3, 8, 8), train=96, test=24)

    def train(dataset, runs):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
        train_loader, val_loader = dataset.get_dataloaders(batch_size=32)
        experiment = ExperimentManager(base_dir=str(runs))
        trainer = Trainer(
            model=model,
            train_loader=train_loader,
            val_loader=val_loader,
            criterion=nn.CrossEntropyLoss(),
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            device="cpu",
            experiment_manager=experiment,
            dataset=dataset,
            show_progress=False,
        )
        try:
            trainer.train(epochs=3)
        finally:
            experiment.release()
        return model.state_dict()

    a = train(ArrayDataset(*data, seed=1), tmp_path / "memory")
    b = train(ArrayDataset(*mapped(tmp_path, *data), seed=1), tmp_path / "mapped")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_crop_flip_is_a_padded_crop_and_a_mirror_of_each_image():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.int64).remainder(251).add(1).to(torch.uint8).view(2, 3, 8, 8)
    policy = CropFlipAugmentation()
    assert policy.pad_for(8, 8) == 1 and policy.pad_for(32, 32) == 4 and policy.pad_for(28, 28) == 4
    params = torch.tensor([[1, 1, 0], [0, 2, 1]])  # image 0: centred, no flip; image 1: corner (0, 2), flipped
    out = policy.apply(images, params)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert torch.equal(out[0], images[0])
    padded = torch.nn.functional.pad(images[1], (1, 1, 1, 1))
    assert torch.equal(out[1], padded[:, 0:8, 2:10].flip(-1))
    assert int(out[1, :, 0].sum()) == 0, "the top row came from the zero padding"

    generator = torch.Generator().manual_seed(0)
    drawn = policy.draw(4000, generator, 32, 32)
    assert drawn[:, :2].min() == 0 and drawn[:, :2].max() == 8
    assert 0.45 < drawn[:, 2].float().mean() < 0.55, "flips with probability 1/2"


def test_policies_by_name_default_and_errors():
    assert set(POLICIES) == {"affine", "crop-flip", "none"}
    grey = ArrayDataset(*arrays((1, 8, 8)))
    colour = ArrayDataset(*arrays((3, 8, 8)))
    assert grey.augmentation_policy == "affine" and colour.augmentation_policy == "crop-flip"
    assert DatasetRegistry.create("mnist-sample").augmentation_policy == "affine"
    plain = ArrayDataset(*arrays((3, 8, 8)), augmentation="none")
    assert plain.augmentation_epoch is None and torch.equal(plain.augmented_train_images, plain.train_images)
    with pytest.raises(ConfigError, match="'rotate'.*affine, crop-flip, none"):
        ArrayDataset(*arrays(), augmentation="rotate")


def test_the_affine_draws_of_runs_made_before_policies_are_unchanged():
    """A checkpoint of an earlier version resumes on the same augmented images: the first
    draw of mnist-sample with seed 42 is identified by this fingerprint since that version."""
    dataset = DatasetRegistry.create("mnist-sample")
    assert dataset.augmentation_fingerprint == "99ab2bbfe70245054f51ca5032a6e9d49a73c586"
    old_state = {"augment": True, "seed": 42, "augmentation_epoch": 3, "augmentation_fingerprint": None}
    dataset.load_state_dict(old_state)  # no "policy" key: affine
    assert dataset.augmentation_epoch == 3
    with pytest.raises(ValueError, match="crop-flip"):
        dataset.load_state_dict({**old_state, "policy": "crop-flip"})


def test_per_channel_normalisation_is_computed_from_the_training_split_and_fingerprinted():
    train = np.zeros((10, 3, 4, 4), dtype=np.uint8)
    train[:, 0] = 255
    train[:5, 1] = 255
    test = np.full((4, 3, 4, 4), 128, dtype=np.uint8)
    dataset = ArrayDataset(
        train, np.zeros(10, dtype=np.int64), test, np.zeros(4, dtype=np.int64), class_names=["only"], augment=False
    )
    assert dataset.mean == pytest.approx([1.0, 0.5, 0.0])
    assert dataset.std == pytest.approx([1.0, 0.5, 1.0]), "a constant channel gets std 1, never 0"
    assert channel_statistics(dataset.train_images) == (dataset.mean, dataset.std)
    loader, _ = dataset.get_dataloaders(batch_size=10, shuffle=False)
    x, _ = next(iter(loader))
    assert torch.allclose(x[:, 0], torch.zeros(1), atol=1e-6) and torch.allclose(x[:5, 1], torch.ones(1))
    assert torch.allclose(x[5:, 1], -torch.ones(1))
    fingerprint = dataset.fingerprint()
    assert fingerprint["mean"] == dataset.mean and fingerprint["num_classes"] == 1
    assert "mean" not in DatasetRegistry.create("mnist-sample").fingerprint(), "fixed constants are not recorded"


def test_array_dataset_refuses_bad_input_clearly():
    train_x, train_y, test_x, test_y = arrays((1, 8, 8))
    with pytest.raises(TypeError, match="uint8"):
        ArrayDataset(train_x.astype(np.float32), train_y, test_x, test_y)
    with pytest.raises(ValueError, match="one image shape"):
        ArrayDataset(train_x, train_y, test_x[:, :, :4], test_y)
    with pytest.raises(ValueError, match="num_classes=3 but 2 class names"):
        ArrayDataset(train_x, train_y, test_x, test_y, class_names=["a", "b"], num_classes=3)
    with pytest.raises(Exception, match="outside 0..1"):
        ArrayDataset(train_x, train_y, test_x, test_y, class_names=["a", "b"])
    with pytest.raises(ValueError, match="names 'x' more than once"):
        ArrayDataset(train_x, train_y, test_x, test_y, class_names=["w", "x", "y", "x"])
    with pytest.raises(ValueError, match="class_names is empty"):
        ArrayDataset(train_x, train_y, test_x, test_y, class_names=[])
    with pytest.raises(ValueError, match="std must be positive"):
        ArrayDataset(train_x, train_y, test_x, test_y, std=0.0)
    named = ArrayDataset(train_x, train_y, test_x, test_y, class_names=["w", "x", "y", "z"])
    assert named.class_names == ["w", "x", "y", "z"] and named.num_classes == 4


def _resident_file_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    pytest.skip("this kernel reports no RssFile")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_reading_a_memory_mapped_data_set_keeps_its_resident_pages_bounded(tmp_path):
    train = np.lib.format.open_memmap(tmp_path / "train.npy", "w+", np.uint8, (16384, 3, 32, 32))  # 48 MiB
    train[:] = 7
    train.flush()
    del train
    test = np.zeros((8, 3, 32, 32), dtype=np.uint8)
    labels = np.zeros(16384, dtype=np.int64)

    def read_all(budget: int) -> int:
        """Peak growth of the resident file pages (KiB) over one epoch with a page budget."""
        dataset = ArrayDataset(
            np.load(tmp_path / "train.npy", mmap_mode="r"),
            labels,
            test,
            labels[:8],
            num_classes=1,
            mean=0.5,
            std=0.5,
            augment=False,
        )
        dataset.page_budget_bytes = budget
        loader, _ = dataset.get_dataloaders(batch_size=64)
        start, peak = _resident_file_kib(), 0
        for _ in loader:
            peak = max(peak, _resident_file_kib() - start)
        return peak

    unbounded = read_all(1 << 40)
    bounded = read_all(4 << 20)
    assert unbounded > 40 * 1024, "without a budget the whole 48 MiB map becomes resident"
    assert bounded < 12 * 1024, f"with a 4 MiB page budget the resident growth stayed at {bounded} KiB"
